"""Property test (hypothesis): no client input gives a 5xx; errors and /api/ answers are JSON.

Every route of the app (read from ``app.url_map``, so new routes are covered without
editing this file) gets random methods, path values, query strings, form fields and
multipart shapes: unicode, huge numbers, dates at the calendar's ends with offsets, empty
files, raw bytes under any content type.
"""

from __future__ import annotations

import io
import os
import re
import string
from urllib.parse import quote

import pytest
from apptools import XRAY_NORMAL
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

MAX_EXAMPLES = int(os.environ.get("PNEUMO_FUZZ_EXAMPLES", "40"))
"""Examples per route (bounded: the whole test takes seconds; raise it to hunt)."""

NOT_JSON_OK = {"api.history_csv": "text/csv", "api.history_heatmap": "image/png",
               "api.history_image": "image/png", "static": None}
"""/api/ endpoints whose success is not JSON (their media type); static files: any type."""

KNOWN_NAMES = ["image", "mode", "patient_ref", "preview", "page", "per_page", "from", "to",
               "csrf", "pin", "token", "file"]
EDGE_DATES = ["9999-12-31", "0001-01-01", "0001-01-01T00:00:00+14:00",
              "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999+23:59",
              "0001-01-01T00:00:00-23:59", "2025-02-29", "2024-02-29T24:00:00Z",
              "2025-01-31T14:00:00Z", "2025-01-31T14:00:00", "+10000-01-01", "-0001-01-01"]
HUGE = [str(10**30), str(-(10**30)), "1e309", "-0", "0x10", "nan", "inf", "٣", "1_000"]

texts = st.text(st.characters(codec="utf-8"), max_size=40)
values = st.one_of(texts, st.sampled_from(EDGE_DATES + HUGE + ["", "balanced", "screening"]),
                   st.integers(-(10**40), 10**40).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(st.sampled_from("\u202e\u200b\ufeff\x00\r\n\t ab"), max_size=300))
names = st.one_of(st.sampled_from(KNOWN_NAMES), texts.filter(bool))
fields = st.dictionaries(names, values, max_size=5)
file_bodies = st.one_of(st.just(b""), st.binary(max_size=2048),
                        st.just(XRAY_NORMAL.read_bytes()), st.just(XRAY_NORMAL.read_bytes()),
                        st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"DICM" * 40,
                                         b"II*\x00", b"GIF89a"]))
files = st.dictionaries(names, st.tuples(file_bodies, texts), max_size=3)
# What an HTTP server can hand over: no raw whitespace in a request line (a raw newline only
# reaches the app through the test client, where it breaks Werkzeug's own redirects).
raw_query = st.text(st.sampled_from(string.printable.strip() + "%é€\u202e"), max_size=80)
content_types = st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=x",
                                 "application/x-www-form-urlencoded", "application/json",
                                 "text/plain", "image/png", "", "multipart/mixed; boundary="])
path_values = st.one_of(st.just("RECORD"), texts.filter(bool), st.just("0" * 32),
                        st.sampled_from(["..", "%2e%2e", "a/b", "x" * 300, "F" * 32]))
"""Path variables: "RECORD" stands for a real record's id."""


@st.composite
def requests(draw, methods: list[str]) -> dict:
    """The keyword arguments of one test-client request."""
    method = draw(st.sampled_from(methods * 4 + ["GET", "POST", "PUT", "DELETE"]))
    kw: dict = {"method": method}
    kw["query_string"] = draw(st.one_of(fields, raw_query))
    body = draw(st.sampled_from(["none", "form", "multipart", "multipart", "raw"]))
    if body == "form":
        kw["data"] = draw(fields)
    elif body == "multipart":
        data: dict = dict(draw(fields))
        for name, (blob, filename) in draw(files).items():
            data[name] = (io.BytesIO(blob), filename)
        if draw(st.integers(0, 3)):  # mostly with an image field
            data["image"] = (io.BytesIO(draw(file_bodies)), draw(texts))
        kw["data"] = data
        kw["content_type"] = "multipart/form-data"
    elif body == "raw":
        kw["data"] = draw(file_bodies)
        kw["content_type"] = draw(content_types)
    return kw


def _url(rule, record_id: str, draw_value) -> str:
    """The rule with each path variable filled (a real record id, or random text)."""

    def fill(m: re.Match) -> str:
        value = draw_value()
        value = record_id if value == "RECORD" else value
        return quote(value, safe="/" if m.group(1) == "path" else "")

    return re.sub(r"<(?:(\w+):)?\w+>", fill, rule.rule)


def _fuzz_route(client, rule, record_id: str) -> None:
    """MAX_EXAMPLES random requests to one route; each answer checked."""
    methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
    success_type = NOT_JSON_OK.get(rule.endpoint, "application/json")
    client = client.application.test_client(use_cookies=False)  # no session: no CSRF refusal

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kw=requests(methods), data=st.data())
    def check(kw: dict, data) -> None:
        url = _url(rule, record_id, lambda: data.draw(path_values))
        resp = client.open(url, **kw)
        where = f"{kw['method']} {url} {kw}"
        code = resp.get_json()["error"]["code"] if resp.status_code >= 400 and resp.is_json else ""
        event(f"{rule.endpoint} {resp.status_code} {code}")  # --hypothesis-show-statistics
        assert resp.status_code < 500, f"{resp.status_code} for {where}: {resp.data[:300]}"
        if resp.status_code >= 400:
            assert resp.is_json, f"{resp.status_code} not JSON for {where}"
        elif rule.rule.startswith("/api/") and resp.status_code < 300 and success_type:
            assert resp.mimetype == success_type, f"{resp.mimetype} for {where}"

    check()


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on random "DICM" bytes
def test_every_route_never_answers_5xx(client) -> None:
    """For every route: never a 5xx; every error is JSON; /api/ answers are JSON."""
    r = client.post("/api/v1/predict", data={"image": (io.BytesIO(XRAY_NORMAL.read_bytes()),
                                                       "x.jpeg")})
    assert r.status_code == 200
    record_id = r.get_json()["id"]
    rules = list(client.application.url_map.iter_rules())
    assert len(rules) >= 10
    for rule in rules:
        _fuzz_route(client, rule, record_id)

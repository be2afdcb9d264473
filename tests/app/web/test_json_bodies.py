"""JSON request bodies are parsed within bounds: deep nesting or a large body is a 400
`bad_json` (never a RecursionError 500), and the server keeps answering."""

from __future__ import annotations

import io
import json

import pytest
from apptools import XRAY_NORMAL, http, post_image

from pneumo.app.bounded_json import MAX_DEPTH
from pneumo.app.web.site_api import MAX_JSON_BODY

ROUTES = [("PUT", "/api/v1/history/{rid}/confirmation"), ("POST", "/api/v1/calibration/proposal"),
          ("POST", "/api/v1/calibration")]
DEEP = {
    "100000 lists": "[" * 100_000 + "]" * 100_000,  # over the size limit
    "20000 lists": "[" * 20_000 + "]" * 20_000,  # within it: the depth check refuses it
    "20000 objects": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "unclosed": "[" * 30_000,
    "inside an object": '{"finding": "normal", "note": ' + "[" * 5_000 + "]" * 5_000 + "}",
}


def _record_id(client) -> str:
    r = client.post("/api/v1/predict", data={"image": (io.BytesIO(XRAY_NORMAL.read_bytes()),
                                                       "x.jpeg")})
    assert r.status_code == 200
    return r.get_json()["id"]


def _nested_object(depth: int) -> str:
    """A confirmation body whose nesting is exactly `depth` levels."""
    return '{"finding": "normal", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("method, route", ROUTES)
@pytest.mark.parametrize("body", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_a_400_bad_json(client, method, route, body):
    rid = _record_id(client)
    r = client.open(route.format(rid=rid), method=method, data=body,
                    content_type="application/json")
    assert r.status_code == 400, r.data[:300]
    err = r.get_json()["error"]
    assert err["code"] == "bad_json"
    assert err["message"] == ("The request is too large or too deeply nested: send a JSON object "
                              f"of at most {MAX_JSON_BODY // 1024} kB, nested at most "
                              f"{MAX_DEPTH} levels deep.")
    assert client.get("/healthz").status_code == 200
    assert client.get(f"/api/v1/history/{rid}").get_json()["finding"] is None
    assert client.get("/api/v1/audit").get_json()["items"] == []


def test_the_depth_limit_is_exact_and_valid_bodies_still_work(client):
    rid = _record_id(client)
    url = f"/api/v1/history/{rid}/confirmation"
    r = client.put(url, data=_nested_object(MAX_DEPTH + 1), content_type="application/json")
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_json")
    r = client.put(url, data=_nested_object(MAX_DEPTH), content_type="application/json")
    assert r.status_code == 200 and r.get_json()["finding"] == "normal"
    assert client.put(url, json={"finding": "pneumonia"}).get_json()["finding"] == "pneumonia"


def test_size_limit_and_not_json_bodies(client):
    rid = _record_id(client)
    url = f"/api/v1/history/{rid}/confirmation"
    note = "x" * (MAX_JSON_BODY - 40)
    body = json.dumps({"finding": "normal", "note": note})
    assert len(body) <= MAX_JSON_BODY
    r = client.put(url, data=body, content_type="application/json")
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_note")  # parsed
    r = client.put(url, data=json.dumps({"finding": "normal", "note": "x" * MAX_JSON_BODY}),
                   content_type="application/json")
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_json")
    assert "too large" in r.get_json()["error"]["message"]
    for data, ctype in [("{", "application/json"), ("[1, 2]", "application/json"),
                        (b"\xff\xfe\x00", "application/json"), ('{"finding": "normal"}',
                                                                "text/plain")]:
        r = client.put(url, data=data, content_type=ctype)
        assert r.status_code == 400 and r.get_json()["error"] == {
            "code": "bad_json", "message": "Send a JSON object (Content-Type: application/json)."}
    assert client.get(f"/api/v1/history/{rid}").get_json()["finding"] is None


def test_a_real_server_refuses_deep_nesting_and_keeps_answering(live_server):
    url = live_server.url.rstrip("/")
    rid = post_image(url, XRAY_NORMAL.read_bytes()).json()["id"]
    for method, route in ROUTES:
        for body in (DEEP["100000 lists"], DEEP["20000 lists"]):
            r = http(method, url + route.format(rid=rid), body=body.encode(),
                     headers={"Content-Type": "application/json"})
            assert (r.status, r.json()["error"]["code"]) == (400, "bad_json"), r.body[:300]
    assert http("GET", url + "/healthz").status == 200
    r = http("PUT", url + f"/api/v1/history/{rid}/confirmation",
             body=b'{"finding": "normal"}', headers={"Content-Type": "application/json"})
    assert r.status == 200 and r.json()["finding"] == "normal"
    assert not any("Traceback" in line or "RecursionError" in line for line in live_server.lines)

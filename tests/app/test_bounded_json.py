"""The bounded JSON parser: depth and size limits exactly, strings with brackets and escaped
quotes, valid JSON as json.loads parses it, and no recursion before the depth check."""

from __future__ import annotations

import json
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pneumo.app.bounded_json import MAX_BYTES, MAX_DEPTH, BadJson, load_file, loads, nesting_depth


def _nested(n: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * n + "]" * n
    return '{"a":' * n + "1" + "}" * n


@pytest.mark.parametrize("kind", ["list", "object"])
def test_the_depth_limit_is_exact(kind):
    assert loads(_nested(MAX_DEPTH, kind)) == json.loads(_nested(MAX_DEPTH, kind))
    with pytest.raises(BadJson, match=f"nested more than {MAX_DEPTH} levels deep") as exc:
        loads(_nested(MAX_DEPTH + 1, kind))
    assert exc.value.reason == "too_deep" and isinstance(exc.value, ValueError)
    assert loads(_nested(3, kind), max_depth=3) is not None
    with pytest.raises(BadJson):
        loads(_nested(4, kind), max_depth=3)


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_deep_nesting_is_refused_quickly_without_recursion(n):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + 40)  # the check must not recurse (json.loads does)
    try:
        t0 = time.perf_counter()
        for text in (_nested(n), _nested(n, "object"), "[" * n, '{"a":[' * n):
            with pytest.raises(BadJson) as exc:
                loads(text, max_bytes=10**8)
            assert exc.value.reason == "too_deep"
        assert time.perf_counter() - t0 < 5
    finally:
        sys.setrecursionlimit(limit)


def test_brackets_inside_strings_and_escaped_quotes_do_not_count():
    deep_text = "[" * 1000 + "{" * 1000
    doc = json.dumps({"a": [deep_text, 'say \\"[[[', "\\", '"]]]]', "\\\\\"[{"]})
    assert nesting_depth(doc) == 2
    assert loads(doc) == json.loads(doc)
    # an escaped quote does not end the string: the brackets after it are still inside
    assert nesting_depth(r'["\"[[[[", 1]') == 1
    # an escaped backslash does end it: the bracket after it counts
    assert nesting_depth(r'["\\", [[1]]]') == 3
    # a string that hides the depth is no way around the check
    hidden = '["' + "x" * 10 + '", ' + "[" * 100 + "]" * 100 + "]"
    with pytest.raises(BadJson, match="nested"):
        loads(hidden)


def test_unterminated_strings_and_unbalanced_brackets_are_refused_cleanly():
    for text in ['"' + "\\\"" * 200_000, '["abc', '"abc\\', "]]]]" + "[" * 10_000, "[" * 64 + "]",
                 '{"a": "\\u12"}', "", "nan", "\ufeff{}"]:
        with pytest.raises(BadJson) as exc:
            loads(text, max_bytes=10**7)
        assert exc.value.reason in ("invalid", "too_deep")
    t0 = time.perf_counter()
    assert nesting_depth('"' + "\\\"" * 500_000) == 0  # linear: no rescan from each quote
    assert time.perf_counter() - t0 < 2


def test_the_size_limit_is_exact(tmp_path):
    doc = json.dumps({"k": "x" * 100})
    assert loads(doc, max_bytes=len(doc)) == json.loads(doc)
    with pytest.raises(BadJson, match=f"larger than {len(doc) - 1} bytes") as exc:
        loads(doc, max_bytes=len(doc) - 1)
    assert exc.value.reason == "too_large"
    assert loads(doc.encode(), max_bytes=len(doc)) == json.loads(doc)
    path = tmp_path / "f.json"
    path.write_text(doc)
    assert load_file(path, max_bytes=len(doc)) == json.loads(doc)
    with pytest.raises(BadJson, match="larger than"):
        load_file(path, max_bytes=len(doc) - 1)
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"1," * MAX_BYTES + b"1]")
    with pytest.raises(BadJson, match=f"larger than {MAX_BYTES} bytes"):
        load_file(big)
    with pytest.raises(OSError):
        load_file(tmp_path / "missing.json")


def test_bytes_in_any_json_encoding_parse_as_json_loads_does():
    doc = {"name": "Kibera \u00e9\u20ac \U0001f600", "n": [1, 2.5, None, True]}
    for raw in (json.dumps(doc).encode("utf-8"), json.dumps(doc).encode("utf-16"),
                json.dumps(doc, ensure_ascii=False).encode("utf-32"),
                b"\xef\xbb\xbf" + json.dumps(doc).encode()):
        assert loads(raw) == json.loads(raw) == doc
    with pytest.raises(BadJson, match="not valid JSON"):
        loads(b'{"a": "\xff"}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.sampled_from('ab[]{}"\\\u00e9\n :,')),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.sampled_from('k[]{}"\\'), max_size=4), children, max_size=4),
    max_leaves=30)


@settings(max_examples=200, deadline=None, database=None)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_valid_json_parses_exactly_as_json_loads(value, indent):
    text = json.dumps(value, indent=indent)
    assert loads(text) == json.loads(text)
    assert nesting_depth(text) == _depth(value)


def _stack_depth() -> int:
    frame, n = sys._getframe(), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0

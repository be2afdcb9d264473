"""JSON from outside the app, parsed within bounds: a size limit and a nesting-depth limit.

Python's json parser recurses once per level of nesting, so ``'[' * 100000`` ends in a
RecursionError (a 500 from the server, a traceback from the command line). Here the depth is
measured first by one linear scan of the brackets outside strings, which never recurses;
only input within both limits reaches ``json.loads``. Standard library only, at the lowest
layer: the web API, the model updates, the pipeline and the clinic files all use it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_DEPTH = 64
"""Nesting levels allowed by default (the app's own files use at most 6)."""
MAX_BYTES = 1024 * 1024
"""Bytes allowed by default: the app's small side files (site thresholds, installed models)."""

_TOKENS = re.compile(r'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)|[\[\]{}]', re.DOTALL)
"""A string (escapes included; an unterminated one runs to the end) or one bracket.

Every ``"`` starts a match that needs no backtracking, so the scan stays linear."""


class BadJson(ValueError):
    """JSON refused: too large, nested too deeply, or not JSON at all (``reason`` says which:
    'too_large', 'too_deep' or 'invalid')."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """The deepest bracket nesting of JSON text, brackets inside strings not counted.

    Linear and never recursive; with `stop_above`, it stops as soon as the depth passes it.
    """
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif token == "]" or token == "}":
            depth -= 1
    return deepest


def loads(data: str | bytes | bytearray, *, max_bytes: int = MAX_BYTES,
          max_depth: int = MAX_DEPTH) -> Any:
    """json.loads within a size (bytes; characters of a str) and a nesting-depth limit;
    BadJson otherwise."""
    if len(data) > max_bytes:
        raise BadJson(f"larger than {max_bytes} bytes", "too_large")
    if isinstance(data, (bytes, bytearray)):
        try:  # as json.loads decodes bytes (UTF-8, -16 or -32)
            text = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise BadJson(f"not valid JSON: {exc}", "invalid") from exc
    else:
        text = data
    openers = text.count("[") + text.count("{")  # fewer than the limit: no scan needed
    if openers > max_depth and nesting_depth(text, max_depth) > max_depth:
        raise BadJson(f"nested more than {max_depth} levels deep", "too_deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJson(f"not valid JSON: {exc}", "invalid") from exc
    except RecursionError as exc:  # not reached within MAX_DEPTH; a caller's high limit
        log.warning("JSON nesting hit Python's recursion limit (max_depth %s)", max_depth)
        raise BadJson(f"nested more than {max_depth} levels deep", "too_deep") from exc


def load_file(path: str | Path, *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file parsed within bounds (never more than max_bytes + 1 read); BadJson or
    OSError otherwise."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    return loads(data, max_bytes=max_bytes, max_depth=max_depth)

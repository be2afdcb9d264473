"""What to score: folders (recursive), files, and manifests (CSV or Parquet with a path column).

A path with a scheme (``s3://``, ``gs://``, ``hdfs://``, ``file://``) is read through pyarrow's
file systems (`pyarrow.fs.FileSystem.from_uri`); only ``file://`` is tested here. Each input
becomes an item ``{"path", "size", "mtime_ns"}``: what the resume key needs, stat'ed once.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pneumo.app.pipeline.decoded import IMAGE_SUFFIXES
from pneumo.app.pipeline.files import iter_inputs

PATH_COLUMN = "path"
MANIFEST_SUFFIXES = (".csv", ".parquet")

log = logging.getLogger(__name__)


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` (a pyarrow file system), False for a local path."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.isalnum() and len(scheme) > 1


def _filesystem(uri: str):
    """(pyarrow file system, path inside it) of a URI."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def read_bytes(path: str) -> bytes:
    """A file's bytes, local or through pyarrow's file systems (OSError when unreadable)."""
    if not is_uri(path):
        return Path(path).read_bytes()
    filesystem, inner = _filesystem(path)
    with filesystem.open_input_stream(inner) as f:
        return f.read()


def read_manifest(path: str | Path) -> list[str]:
    """The ``path`` column of a CSV or Parquet manifest; relative paths are taken from the
    manifest's folder."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if PATH_COLUMN not in table.column_names:
            raise ValueError(f"{path}: no '{PATH_COLUMN}' column (has {table.column_names})")
        values = [str(v) for v in table.column(PATH_COLUMN).to_pylist() if v]
    else:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if PATH_COLUMN not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no '{PATH_COLUMN}' column (has {reader.fieldnames})")
            values = [row[PATH_COLUMN].strip() for row in reader if row[PATH_COLUMN].strip()]
    base = path.resolve().parent
    return [v if is_uri(v) or os.path.isabs(v) else str(base / v) for v in values]


def _list_uri(uri: str) -> list[str]:
    """The image files under a URI folder (or the URI itself when it is a file)."""
    from pyarrow import fs

    filesystem, inner = _filesystem(uri)
    info = filesystem.get_file_info(inner)
    if info.type != fs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    found = filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
    return sorted(f"{scheme}://{f.path}" for f in found if f.type == fs.FileType.File
                  and not any(p.startswith(".") for p in f.path[len(inner):].split("/"))
                  and (Path(f.path).suffix.lower() in IMAGE_SUFFIXES or not Path(f.path).suffix))


def list_inputs(paths: Sequence[str], manifests: Sequence[str] = ()) -> list[str]:
    """Every file to score, once each, in a stable order: folders and files as `pneumo predict`
    takes them (hidden files skipped), then each manifest's paths."""
    out: list[str] = []
    local = [p for p in paths if not is_uri(p)]
    for p in paths:
        out.extend(_list_uri(p) if is_uri(p) else [])
    out.extend(os.path.abspath(f) for f in iter_inputs(local))
    for m in manifests:
        out.extend(v if is_uri(v) else os.path.abspath(v) for v in read_manifest(m))
    return list(dict.fromkeys(out))


def stat_items(paths: Iterable[str]) -> list[dict]:
    """One item per path: {path, size, mtime_ns} (size -1 when it cannot be stat'ed: the
    scorer then reports why)."""
    items = []
    for path in paths:
        try:
            if is_uri(path):
                filesystem, inner = _filesystem(path)
                info = filesystem.get_file_info(inner)
                size, mtime = info.size, info.mtime_ns
                if size is None:
                    raise FileNotFoundError(path)
            else:
                st = os.stat(path)
                size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        items.append({"path": path, "size": int(size), "mtime_ns": int(mtime or 0)})
    return items

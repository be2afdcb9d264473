"""Archive scoring: `pneumo predict --engine local|ray` over a folder tree or a manifest.

Every file goes through the app's own pipeline (`pneumo.app.pipeline.files.predict_file`:
decode, checks, model, calibration, outcome at the MODEL's thresholds) and becomes one row
(`rows`), a refused or unreadable file included. The rows go to Parquet shards, a CSV and a
one-screen summary (`output`); a rerun skips what the same model and pipeline already scored.

- `manifest`: the inputs (folders, files, CSV/Parquet manifests with a ``path`` column, URIs).
- `rows`: the row schema, the pipeline version, the resume key, pseudonymised paths.
- `score`: one file -> one row (the app's pipeline plus the archive's DICOM age rule).
- `local`: a process pool, one process per core (the default engine).
- `ray_engine`: Ray Data over the paths, an actor pool with one ONNX Runtime session each.
- `output`: the shard store (resume, de-duplication), the CSV and the summary.
- `cli`: the options `pneumo predict` gains (standard library only).

Needs the ``[scale]`` extra (``ray[data]``, ``pyarrow``); the app and the base install never
import this package's engines, Ray or pyarrow.
"""

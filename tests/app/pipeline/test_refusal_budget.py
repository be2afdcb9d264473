"""One refusal budget for all the "is it a chest X-ray?" checks (reports/refusals/README.md).

Two sides of the same budget:

- ``REFUSED``: every non-X-ray the test suite refuses (scikit-image pictures, synthetic noise,
  blank images and documents, an inverted film, extreme shapes, the six fixture X-rays turned by
  90 degrees either way, DICOM headers of other modalities and views). Its length is committed
  (``REFUSED_COUNT``): a change to the checks may not quietly drop one.
- Real X-rays (slow, shared data): 0 of the 312 external-validation images refused (rescanned),
  and the training refusals of the committed ``reports/refusals/refused.csv`` within 0.1 % of
  the 5216 training images, checked against a fresh scan of a fixed seeded sample of 500
  training images (the full training scan takes minutes: run ``scan.py`` for it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
from apptools import (
    REPO,
    SKIMAGE_PICTURES,
    all_fixture_xrays,
    blank_png,
    document_png,
    encode,
    gray_array,
    noise_png,
    skimage_png,
)
from PIL import Image

from pneumo.app.pipeline.checks import NotAChestXray
from pneumo.app.pipeline.predictor import Predictor

SCAN_PY = REPO / "reports" / "refusals" / "scan.py"
TRAIN_SAMPLE = 500
"""Training images rescanned by the slow test (seeded, ``TRAIN_SEED``)."""
TRAIN_SEED = 0
MAX_TRAIN_REFUSED_FRACTION = 0.001
"""The budget: at most 0.1 % of the training X-rays refused (5 of 5216)."""


def _scan_module():
    """reports/refusals/scan.py as a module (the reports folder is not a package)."""
    spec = importlib.util.spec_from_file_location("refusal_scan", SCAN_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _png(img: Image.Image) -> bytes:
    return encode(img, "PNG")


def _rotated(path, transpose) -> Callable[[], bytes]:
    return lambda: _png(Image.open(path).convert("L").transpose(transpose))


def _dicom(**attrs) -> Callable[[], bytes]:
    def make() -> bytes:
        from bombs import xray_dicom

        return xray_dicom(**attrs)
    return make


ROTATIONS = [(f"rot{deg}-{p.stem}", _rotated(p, t)) for p in all_fixture_xrays()
             for deg, t in ((90, Image.Transpose.ROTATE_90), (270, Image.Transpose.ROTATE_270))]
"""The six fixture X-rays turned by 90 degrees each way: refused as rotated."""

REFUSED: list[tuple[str, Callable[[], bytes]]] = [
    *[(f"skimage-{n}", lambda n=n: skimage_png(n)) for n in SKIMAGE_PICTURES],
    ("noise", noise_png),
    ("blank", blank_png),
    ("black", lambda: blank_png(0)),
    ("document", document_png),
    ("inverted-xray", lambda: _png(Image.fromarray(255 - gray_array()))),
    ("xray-1200x200", lambda: _png(Image.fromarray(gray_array()).resize((1200, 200)))),
    ("xray-20x20", lambda: _png(Image.fromarray(gray_array()).resize((20, 20)))),
    *ROTATIONS,
    ("dicom-ct", _dicom(Modality="CT")),
    ("dicom-lateral", _dicom(ViewPosition="LL")),
    ("dicom-knee", _dicom(BodyPartExamined="KNEE")),
    ("dicom-multi-frame", _dicom(NumberOfFrames=12)),
    ("dicom-for-processing", _dicom(SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1")),
]
"""Every non-X-ray that the test suite refuses, each through the app's whole pipeline."""

REFUSED_COUNT = 49
"""Committed size of REFUSED (25 pictures, 7 synthetic, 12 rotations, 5 DICOM headers)."""


def test_refused_set_size_is_committed():
    assert len(REFUSED) == REFUSED_COUNT
    assert len({name for name, _ in REFUSED}) == REFUSED_COUNT  # no duplicates
    assert len(ROTATIONS) == 12


@pytest.fixture(scope="module")
def predictor(model) -> Predictor:
    """The app's pipeline with the model under test."""
    return Predictor(model)


def _refusal(predictor: Predictor, data: bytes) -> list[str] | None:
    """Reason codes of a refusal, None when the image is accepted."""
    try:
        predictor.predict(data, heatmap=False)
    except NotAChestXray as exc:
        return [r.code for r in exc.reasons]
    return None


@pytest.mark.parametrize("make", [m for _, m in REFUSED], ids=[n for n, _ in REFUSED])
def test_every_non_xray_is_refused(predictor, make):
    try:
        data = make()
    except Exception as exc:  # a scikit-image sample that needs a download in this install
        pytest.skip(f"test image not available offline: {exc}")
    reasons = _refusal(predictor, data)
    assert reasons, "accepted"


@pytest.mark.parametrize("make", [m for _, m in ROTATIONS], ids=[n for n, _ in ROTATIONS])
def test_ninety_degree_rotation_refused_as_rotated(predictor, make):
    assert _refusal(predictor, make()) == ["rotated_image"]


@pytest.mark.parametrize("path", all_fixture_xrays(), ids=lambda p: p.name)
def test_upright_fixture_xrays_accepted(predictor, path):
    assert _refusal(predictor, path.read_bytes()) is None


def _needs(set_name: str):
    root = _scan_module().SETS[set_name]
    return pytest.mark.skipif(not root.is_dir(), reason=f"no data at {root}")


@pytest.fixture(scope="module")
def bundled():
    """The bundled model: the committed refused.csv was scanned with it."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel

    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no bundled model at {DEFAULT_MODEL}")
    return OnnxModel(DEFAULT_MODEL)


@pytest.mark.slow
@_needs("external_val")
def test_external_validation_none_refused(bundled):
    scan = _scan_module()
    res = scan.scan(["external_val"], model=bundled)["external_val"]
    assert res["n"] == 312
    assert res["refused"] == [], res["refused"]


@pytest.mark.slow
@_needs("train")
def test_training_refusals_within_budget(bundled):
    scan = _scan_module()
    committed = scan.read_csv(SCAN_PY.parent / "refused.csv")
    n_train = len(scan.images("train"))
    train_rows = {(r["class"], r["file"]): r["reasons"] for r in committed if r["set"] == "train"}
    assert not [r for r in committed if r["set"] == "external_val"]
    assert len(train_rows) <= MAX_TRAIN_REFUSED_FRACTION * n_train, train_rows
    res = scan.scan(["train"], model=bundled, sample=TRAIN_SAMPLE, seed=TRAIN_SEED)["train"]
    assert res["n"] == TRAIN_SAMPLE
    now = {(r["class"], r["file"]): r["reasons"] for r in res["refused"]}
    sampled = {(c, p.name) for c, p in scan.images("train", TRAIN_SAMPLE, TRAIN_SEED)}
    # the committed list is current: the sample is refused exactly where refused.csv says
    assert now == {k: v for k, v in train_rows.items() if k in sampled}

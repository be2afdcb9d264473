"""Ensemble export (one ONNX graph over several Keras runs) and --external-val calibration."""

import json

import numpy as np
import pytest
from tinydata import fixture_images, make_tiny_kaggle

pytest.importorskip("tf2onnx")

from pneumo.app.pipeline.calibration import apply_calibration, logit, sigmoid  # noqa: E402
from pneumo.app.pipeline.decode import decode_image  # noqa: E402
from pneumo.app.pipeline.onnx_model import OnnxModel, read_metadata  # noqa: E402
from pneumo.app.pipeline.preprocess import to_model_input  # noqa: E402
from pneumo.train.data import Sample, load_arrays, make_split  # noqa: E402

EXTERNAL = "external validation (half of the official test split)"
SIZE = 32
WIDTHS = (8, 8, 8, 16)


def _make_run(root, data, seed: int, *, size: int = SIZE, widths=WIDTHS, arch: str = "cnn",
              intensity: str = "equalize"):
    """A tiny untrained run folder: model.keras, model.json, split.json."""
    import keras

    from pneumo.train.model import build_cnn, build_seed

    keras.utils.set_random_seed(seed)
    model = build_cnn(size, widths) if arch == "cnn" else build_seed(size)
    run = root / f"run-{arch}{size}-s{seed}"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "split.json").write_text(json.dumps(make_split(data, 0.25, seed=0).to_json()))
    (run / "model.json").write_text(json.dumps({
        "name": "pneumo-cnn", "version": f"test-s{seed}", "created": "2026-01-01T00:00:00Z",
        "arch": arch, "input_size": size, "class_names": ["NORMAL", "PNEUMONIA"],
        "thresholds": {"balanced": 0.5, "screening": 0.4}, "train_manifest_sha256": "abc",
        "intensity": intensity,
        "recipe": {"seed": seed, "epochs": 0, "augmentation": "none", "val_fraction": 0.25,
                   "class_weights": {"NORMAL": 1.0, "PNEUMONIA": 1.0}},
    }))
    return run


def _images(intensity: str = "equalize") -> np.ndarray:
    files = [p for v in fixture_images().values() for p in v]
    return np.stack([to_model_input(decode_image(p.read_bytes()).gray, SIZE, intensity)
                     for p in files])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pneumo.export.run import export_model

    data = make_tiny_kaggle(tmp_path_factory.mktemp("data"), per_class=12)
    external = make_tiny_kaggle(tmp_path_factory.mktemp("ext"), per_class=16, seed=1) / "train"
    root = tmp_path_factory.mktemp("runs")
    runs = [_make_run(root, data, 1), _make_run(root, data, 2)]
    out = tmp_path_factory.mktemp("export")
    parity = export_model(runs, data, out, n_calib=16, n_ood_train=20, min_agreement=0.0,
                          max_auc_drop=1.0, external_val=external, n_boot=50)
    return runs, out, parity


def _keras_members(runs):
    import keras

    return [keras.models.load_model(r / "model.keras") for r in runs]


def test_ensemble_probability_is_sigmoid_of_mean_member_logit(exported):
    import onnxruntime as ort

    runs, out, parity = exported
    x = _images()
    z = np.mean([logit(np.asarray(m(x, training=False), np.float64).ravel())
                 for m in _keras_members(runs)], axis=0)
    expected = sigmoid(z)
    sess = ort.InferenceSession(str(out / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    p_fp32, cam, emb = sess.run(["probability", "cam", "embedding"], {"image": x})
    assert p_fp32.shape == (len(x), 1)
    np.testing.assert_allclose(p_fp32.ravel(), expected, atol=2e-5)
    assert cam.shape == (len(x), 2, 2)  # 32 px: stride-2 stem and three poolings
    np.testing.assert_allclose(cam.mean(axis=(1, 2)), z, atol=1e-3)
    assert emb.shape == (len(x), 2 * WIDTHS[-1])
    assert parity["fp32_vs_keras_abs_delta_p_max"] < 1e-5 and parity["members"] == 2

    int8 = OnnxModel(out / "model.int8.onnx")
    res = int8.run(x)
    raw = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"]
                               ).run(["probability"], {"image": x})[0].ravel()
    assert np.max(np.abs(raw - expected)) < 0.05
    # the app's OnnxModel gives calibrated probabilities: the metadata's map of the raw output
    np.testing.assert_allclose(res.probability, apply_calibration(raw, int8.calibration),
                               atol=1e-6)
    assert res.cam.shape == (len(x), 2, 2) and res.embedding.shape == (len(x), 32)


def test_metadata_carries_members_intensity_calibration_and_thresholds(exported):
    runs, out, _ = exported
    meta, card = read_metadata(out / "model.int8.onnx")
    assert meta["name"].endswith("ensemble2") and "ensemble2" in meta["version"]
    assert [m["seed"] for m in meta["members"]] == [1, 2]
    assert all(m["version"] and m["recipe"]["seed"] == m["seed"] for m in meta["members"])
    assert meta["intensity"] == "equalize" and meta["preprocessing"]["intensity"] == "equalize"
    cal = meta["calibration"]
    assert cal["method"] == "platt" and cal["a"] > 0 and cal["fitted_on"] == EXTERNAL
    assert {"ece_before", "ece_after", "n"} <= set(cal)
    assert cal["selection"]["chosen"] in ("platt", "temperature")
    t = meta["thresholds"]
    assert 0 < t["screening"] <= t["balanced"] < 1
    assert meta["operating_points_source"] == EXTERNAL
    assert "0.95" in meta["threshold_rule"] and "0.98" in meta["threshold_rule"]
    ext = meta["external_metrics"]
    assert ext["n"] == 32 and ext["set"] == EXTERNAL and len(ext["halves"]) == 2
    for key in ("auc", "ece_before", "ece_after", "borderline_share"):
        assert key in ext["mean"]
    assert {"accuracy", "sensitivity", "specificity"} <= set(ext["mean"]["balanced"])
    assert "ci95" in ext["pooled"]
    assert set(meta["val_metrics"]) == {"balanced", "screening"} and "val_ece" in meta

    m = OnnxModel(out / "model.int8.onnx")
    assert m.intensity == "equalize" and m.calibration == cal
    assert m.thresholds == {k: float(v) for k, v in t.items()}
    assert "cross-fitted" in card and "all 32 images" in card and EXTERNAL in card
    assert "borderline band" in card and "ensemble of 2" in card
    fp32_meta, _ = read_metadata(out / "model.fp32.onnx")
    assert fp32_meta["precision"] == "fp32" and "calibration" in fp32_meta


def test_reports_written(exported):
    _, out, parity = exported
    for f in ("parity.md", "parity.json", "parity.png", "MODEL_CARD.md",
              "external_reliability.png", "external_roc.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "parity.md").read_text()
    assert EXTERNAL in md and "Cross-fitted" in md and "external_roc.png" in md
    js = json.loads((out / "parity.json").read_text())
    assert js["external"]["n"] == 32 and "cross_fit" in js["external"]["int8"]
    assert js["intensity"] == "equalize" and parity["external"]["set"] == EXTERNAL


def test_model_input_applies_the_models_intensity(tmp_path):
    from pneumo.export.run import model_input

    path = fixture_images()["NORMAL"][0]
    x_u8, _ = load_arrays([Sample(str(path), 0)], SIZE, progress=False)
    for intensity in ("none", "equalize", "stretch"):
        want = to_model_input(decode_image(path.read_bytes()).gray, SIZE, intensity)
        np.testing.assert_array_equal(model_input(x_u8, intensity)[0], want)


def test_members_must_agree(tmp_path):
    from pneumo.export.onnx_export import ExportError, ensemble_serving_function
    from pneumo.export.run import Run, _check_members

    data = make_tiny_kaggle(tmp_path / "data", per_class=4)
    a = _make_run(tmp_path, data, 1)
    b = _make_run(tmp_path, data, 2, size=48)
    c = _make_run(tmp_path, data, 3, intensity="none")
    with pytest.raises(ValueError, match="input size"):
        _check_members([Run.load(a), Run.load(b)])
    with pytest.raises(ValueError, match="intensity"):
        _check_members([Run.load(a), Run.load(c)])
    from pneumo.train.model import build_cnn, build_seed

    with pytest.raises(ExportError, match="CAM size"):
        ensemble_serving_function([build_cnn(SIZE, WIDTHS), build_cnn(SIZE, (8, 8, 16))])
    with pytest.raises(ExportError, match="CAM-ready"):
        ensemble_serving_function([build_cnn(SIZE, WIDTHS), build_seed(SIZE)])


def test_cli_accepts_repeated_model_and_external_val():
    from pneumo.cli import build_parser

    args = build_parser().parse_args([
        "export", "--model", "a", "--model", "b", "--calib-data", "d", "--out", "o",
        "--external-val", "ext", "--calibration", "platt", "--cross-fit-seed", "3"])
    assert args.model == ["a", "b"] and args.external_val == "ext"
    assert args.calibration == "platt" and args.cross_fit_seed == 3
    one = build_parser().parse_args(["export", "--model", "a", "--calib-data", "d", "--out", "o"])
    assert one.model == ["a"] and one.external_val is None

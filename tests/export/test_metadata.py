"""pneumo/export/metadata.py on its own: OOD statistics, the metadata document, card, storage."""

import numpy as np
import pytest

from pneumo.app.pipeline.onnx_model import decode_array, read_metadata
from pneumo.app.pipeline.preprocess import RECIPE
from pneumo.export.metadata import (
    INTERNAL_SOURCE,
    acquisition_variants,
    build_metadata,
    model_card,
    ood_statistics,
    write_metadata,
)
from pneumo.train.shifts import SHIFTS

TRAIN_META = {"name": "pneumo-cnn", "version": "2026.01.01-cnn64-s3", "input_size": 64,
              "created": "2026-01-01T00:00:00Z", "arch": "cnn", "val_n": 40,
              "class_names": ["NORMAL", "PNEUMONIA"], "train_manifest_sha256": "ab" * 32,
              "recipe": {"seed": 3, "epochs": 2, "augmentation": "full", "val_fraction": 0.2,
                         "class_weights": {"NORMAL": 1.5, "PNEUMONIA": 0.75}}}
METRICS = {mode: {"threshold": t, "accuracy": 0.9, "sensitivity": 0.95, "specificity": 0.8,
                  "auc": 0.93, "ci95": {"accuracy": [0.85, 0.94]}}
           for mode, t in (("balanced", 0.61), ("screening", 0.35))}


def _meta(**kw) -> dict:
    return build_metadata(kw.pop("train_meta", TRAIN_META), precision="int8",
                          thresholds={"balanced": 0.61, "screening": 0.35},
                          val_metrics=METRICS, ood={}, source_sha256="cd" * 32, **kw)


def test_ood_statistics_let_validation_images_pass():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(400, 8)), rng.normal(size=(100, 8))
    shifted = rng.normal(scale=1.2, size=(200, 8))
    ood = ood_statistics(train, val, shifted)
    assert ood["reject_distance"] > ood["warn_distance"] > 0
    assert ood["val_pass_rate"] == 1.0 and ood["shifted_val_pass_rate"] >= 0.995
    assert (ood["n_train"], ood["n_val"]) == (400, 100)
    np.testing.assert_allclose(decode_array(ood["mean"]), train.mean(axis=0), rtol=1e-6)
    assert decode_array(ood["precision"]).shape == (8, 8)
    far = rng.normal(loc=10.0, size=(1, 8)) - decode_array(ood["mean"])
    d2 = (far @ decode_array(ood["precision"]) @ far.T).item()
    assert d2 > ood["reject_distance"]  # far from the training cloud: refused


def test_acquisition_variants_stack_every_shift():
    x = np.full((3, 8, 8, 1), 0.5, dtype=np.float32)
    assert acquisition_variants(x).shape == (3 * len(SHIFTS), 8, 8, 1)


def test_internal_metadata():
    meta = _meta()
    assert meta["operating_points_source"] == INTERNAL_SOURCE
    assert meta["thresholds"] == {"balanced": 0.61, "screening": 0.35}
    assert meta["input"]["shape"] == ["N", 64, 64, 1] and meta["input_size"] == 64
    assert meta["preprocessing"]["recipe"] == RECIPE and meta["intensity"] == "none"
    assert meta["trained"] == TRAIN_META["created"] and meta["val_n"] == 40
    assert "calibration" not in meta and "members" not in meta
    assert len(meta["git_commit"]) == 40 or meta["git_commit"] == "unknown"


def test_ensemble_metadata_lists_members_and_describes_the_mean():
    members = [{"name": "pneumo-cnn", "version": f"v{s}", "seed": s, "recipe": {}}
               for s in (42, 43)]
    meta = _meta(train_meta={**TRAIN_META, "members": members})
    assert meta["members"] == members
    assert "mean of the members' logits" in meta["outputs"]["probability"]


def test_model_card_states_use_thresholds_and_metrics():
    card = model_card(_meta())
    assert card.startswith("# Model card: pneumo-cnn 2026.01.01-cnn64-s3 (int8)")
    assert "not a diagnosis" in card
    assert "| balanced | 0.6100 | 0.900 (0.850-0.940) |" in card
    assert "`screening` 0.3500" in card and "NORMAL 1.50, PNEUMONIA 0.75" in card
    assert "## Internal validation metrics (n = 40" in card


def test_model_card_of_a_student_names_its_teacher_and_recipe():
    distillation = {"teacher": {"name": "pneumo-cnn-ensemble2", "version": "2026.11.26",
                                "sha256": "ab" * 32, "input_size": 224,
                                "logit": "mean of its CAM"},
                    "views": 4, "temperature": 2.0, "alpha": 0.7}
    train_meta = {**TRAIN_META, "recipe": {**TRAIN_META.get("recipe", {}),
                                           "distillation": distillation}}
    card = model_card(_meta(train_meta=train_meta))
    assert ("learnt from the teacher `pneumo-cnn-ensemble2` 2026.11.26 (sha256 `" + "ab" * 32
            in card)
    assert "on 4 views" in card and "alpha 0.7, T 2" in card
    assert "Distilled" not in model_card(_meta())


def test_write_metadata_round_trip_keeps_other_properties(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probability"])], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"other": "kept", "pneumo": "old"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    meta = _meta()
    write_metadata(path, meta, "the card")
    write_metadata(path, meta, "the card")  # writing twice leaves one copy of each key
    got, card = read_metadata(path)
    assert got == meta and card == "the card"
    saved = onnx.load(str(path))
    keys = [p.key for p in saved.metadata_props]
    assert sorted(keys) == ["model_card", "other", "pneumo"]
    assert saved.producer_name == "pneumo"
    assert saved.doc_string == "pneumo-cnn 2026.01.01-cnn64-s3 (int8)"

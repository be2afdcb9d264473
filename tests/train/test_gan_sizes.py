"""GAN image sizes, class choice, sampling at the GAN's size and resumable progress logs."""

import csv

import numpy as np
import pytest
from PIL import Image
from tinydata import make_tiny_kaggle

from pneumo.train.data import refuse_external_val
from pneumo.train.gan import sample_classes, size_stages
from pneumo.train.gan_cli import train_classes


@pytest.mark.parametrize(("size", "stages"), [(32, (4, 3)), (64, (4, 4)), (96, (6, 4)),
                                              (128, (4, 5)), (224, (7, 5))])
def test_size_stages(size, stages):
    assert size_stages(size) == stages


@pytest.mark.parametrize("size", [8, 100, 18])
def test_unbuildable_sizes_are_refused(size):
    with pytest.raises(ValueError, match="base"):
        size_stages(size)


def test_class_choice():
    assert train_classes("dcgan", None, None) == ("NORMAL",)
    assert train_classes("dcgan", ["PNEUMONIA"], None) == ("PNEUMONIA",)
    assert train_classes("dcgan", None, "PNEUMONIA") == ("PNEUMONIA",)
    assert train_classes("sngan", None, None) == ("NORMAL", "PNEUMONIA")
    assert train_classes("sngan", ["both"], None) == ("NORMAL", "PNEUMONIA")
    with pytest.raises(ValueError, match="unconditional"):
        train_classes("dcgan", ["both"], None)
    assert sample_classes(["NORMAL", "PNEUMONIA"], "both") == ["NORMAL", "PNEUMONIA"]
    assert sample_classes(["PNEUMONIA"], None) == ["PNEUMONIA"]
    with pytest.raises(ValueError):
        sample_classes(["NORMAL"], "both")
    with pytest.raises(ValueError):
        sample_classes(["NORMAL"], "PNEUMONIA")


def test_external_validation_is_never_gan_data(tmp_path):
    (tmp_path / "external_val" / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="never"):
        refuse_external_val(tmp_path / "external_val", "GAN training data")
    refuse_external_val(tmp_path / "chest_xray", "GAN training data")


tf = pytest.importorskip("tensorflow")

from pneumo.cli import main  # noqa: E402
from pneumo.train.gan import GanConfig, build_discriminator, build_generator, train_gan  # noqa: E402


@pytest.mark.parametrize("size", [32, 64, 96])
def test_dcgan_outputs_the_requested_size(size):
    g = build_generator("dcgan", size, 100, 1)
    d = build_discriminator("dcgan", size, 1)
    img = np.asarray(g([np.zeros((2, 100), np.float32)], training=False))
    assert img.shape == (2, size, size, 1)
    assert np.all(np.abs(img) <= 1.0)
    assert np.asarray(d([img], training=False)).shape == (2, 1)


def test_64px_architecture_is_unchanged():
    """Old 64 px runs (4 x 4 start, 3 transposed convolutions + output) still load."""
    assert build_generator("dcgan", 64, 100, 1).count_params() == 3576577
    assert build_discriminator("dcgan", 64, 1).count_params() == 2766273


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_kaggle(tmp_path_factory.mktemp("data"), per_class=10)


def test_sampling_writes_images_at_the_gan_size(tiny_data, tmp_path):
    assert main(["gan", "train", "--data", str(tiny_data), "--out", str(tmp_path / "g"),
                 "--size", "32", "--classes", "PNEUMONIA", "--steps", "2", "--batch-size", "4",
                 "--sample-every", "2", "--log-every", "1"]) == 0
    assert main(["gan", "sample", "--checkpoint", str(tmp_path / "g"), "--n", "3",
                 "--out", str(tmp_path / "syn")]) == 0
    files = sorted((tmp_path / "syn" / "PNEUMONIA").glob("*.png"))
    assert len(files) == 3 and not (tmp_path / "syn" / "NORMAL").exists()
    assert all(Image.open(f).size == (32, 32) for f in files)
    rows = list(csv.DictReader((tmp_path / "syn" / "manifest.csv").open()))
    assert {r["size"] for r in rows} == {"32"}
    assert Image.open(tmp_path / "g" / "samples" / "step000002.png").size == (128, 128)


def test_conditional_gan_samples_both_classes(tiny_data, tmp_path):
    train_gan(GanConfig(data=str(tiny_data), out=str(tmp_path / "g"), kind="sngan",
                        classes=("NORMAL", "PNEUMONIA"), img_size=32, steps=1, batch_size=4))
    assert main(["gan", "sample", "--checkpoint", str(tmp_path / "g"), "--n", "2",
                 "--class", "both", "--out", str(tmp_path / "syn")]) == 0
    for cls in ("NORMAL", "PNEUMONIA"):
        files = sorted((tmp_path / "syn" / cls).glob("*.png"))
        assert len(files) == 2 and Image.open(files[0]).size == (32, 32)


def test_resume_logs_each_step_once(tiny_data, tmp_path, caplog):
    def cfg(steps):
        return GanConfig(data=str(tiny_data), out=str(tmp_path), steps=steps, batch_size=4,
                         img_size=32, sample_every=2, checkpoint_every=2, log_every=1)

    caplog.set_level("INFO", logger="pneumo.train.gan")
    train_gan(cfg(2))
    with (tmp_path / "losses.csv").open("a") as f:  # logged after the checkpoint, then killed
        f.write("3,0.5,0.5,1.0\n")
    train_gan(cfg(4), resume=True)
    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "losses.csv").open())]
    assert steps == [1, 2, 3, 4]
    assert "resumed at step 2 of 4" in caplog.text
    assert "step 4/4 loss_d" in caplog.text and "checkpoint at step 4" in caplog.text

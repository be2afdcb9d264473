"""The README's figures of the bundled model are generated from its metadata, never typed.

`pneumo.app.model_facts` writes the block between the model-facts markers; these tests fail when
the README's block (or the model card beside the model, which the block links) disagrees with
the bundled file, and when a threshold of the shipped model is typed by hand elsewhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.app import model_facts
from pneumo.app.model_facts import BEGIN, COMMAND, END, current_block, format_probability
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel, read_metadata

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def block() -> str:
    """The block the generator gives for the bundled model."""
    return model_facts.model_facts(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def thresholds() -> dict[str, float]:
    """The bundled model's operating thresholds, as the app reads them."""
    return OnnxModel(DEFAULT_MODEL).thresholds


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m pneumo.app.model_facts ARGS` from the project root."""
    return subprocess.run([sys.executable, "-m", "pneumo.app.model_facts", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_readme_block_is_the_generated_one(block):
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README.md lost its markers"
    assert current_block(text) == block, (
        f"README.md's model-facts block disagrees with {DEFAULT_MODEL.name}: run `{COMMAND}`")


def test_block_states_the_real_thresholds_and_figures(block, thresholds):
    assert set(thresholds) == {"balanced", "screening"}
    for mode, t in thresholds.items():
        assert f"| `{mode}` | {format_probability(t)} |" in block
    ext = read_metadata(DEFAULT_MODEL)[0]["external_metrics"]
    assert "External validation" in block and "test split)**" in block
    assert not re.search(r"\btest (set|metrics|figures)\b", block, re.I)
    assert f"n = {ext['n']}: {ext['n_normal']} NORMAL, {ext['n_pneumonia']} PNEUMONIA" in block
    assert f"AUC {ext['mean']['auc']:.3f}" in block
    assert f"{100 * ext['mean']['borderline_share']:.1f} % of images" in block


ADDENDUM = "<!-- addendum: beside the model file only"


def test_model_card_beside_the_model_is_the_embedded_card():
    """MODEL_CARD.md is the card inside the bundled model, then an addendum of what changed in
    the app since the release (the card inside the file changes only with a model release)."""
    card = read_metadata(DEFAULT_MODEL)[1]
    beside = (DEFAULT_MODEL.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    released, sep, addendum = beside.partition(ADDENDUM)
    assert released.rstrip("\n") == card.rstrip("\n"), (
        "pneumo/app/models/MODEL_CARD.md is not the card inside the bundled model")
    assert sep and "Safety rule" in addendum and "review" in addendum


def test_check_fails_on_a_stale_copy_and_write_fixes_it(tmp_path, block, thresholds):
    copy = tmp_path / "README.md"
    shutil.copy(README, copy)
    first = run_cli("--write", str(copy))  # the copy starts from the generated block
    assert first.returncode == 0, first.stderr
    assert run_cli("--check", str(copy)).returncode == 0
    shown = format_probability(thresholds["balanced"])
    stale = copy.read_text(encoding="utf-8").replace(shown, "0.368 (36.8 %)")
    assert stale != copy.read_text(encoding="utf-8")
    copy.write_text(stale, encoding="utf-8")
    check = run_cli("--check", str(copy))
    assert check.returncode == 1
    assert str(copy) in check.stderr and "--write" in check.stderr
    fixed = run_cli("--write", str(copy))
    assert fixed.returncode == 0, fixed.stderr
    assert current_block(copy.read_text(encoding="utf-8")) == block
    assert run_cli("--check", str(copy)).returncode == 0


def test_check_names_a_file_without_markers(tmp_path):
    bare = tmp_path / "notes.md"
    bare.write_text("# no block here\n", encoding="utf-8")
    res = run_cli("--check", str(bare))
    assert res.returncode == 1 and str(bare) in res.stderr


# "balanced 0.368", "screening: 0.228", "`balanced` = 0.58": a mode followed by a number that is
# not the first of an "acc / sens / spec" triple.
TYPED_THRESHOLD = re.compile(r"\b(balanced|screening)\b[`*]*\s*[:=]?\s*(0\.\d+)(?!\s*/)", re.I)


def test_no_hand_typed_shipped_thresholds_outside_the_block(thresholds):
    text = README.read_text(encoding="utf-8")
    outside = text[:text.index(BEGIN)] + text[text.index(END) + len(END):]
    # paragraphs and list items: where "shipped" / "threshold" and a figure share a sentence
    chunks = re.split(r"\n\s*\n|\n(?=\s*[-|] )", outside)
    shown = {mode: format_probability(t).split()[0] for mode, t in thresholds.items()}
    wrong = []
    for chunk in chunks:
        if not re.search(r"shipped|bundled|threshold|operating point", chunk, re.I):
            continue
        for m in TYPED_THRESHOLD.finditer(chunk):
            mode, value = m.group(1).lower(), m.group(2)
            if value != shown[mode][:len(value)]:
                wrong.append(f"{m.group(0)!r} (shipped {mode}: {shown[mode]})")
        for value in shown.values():  # the shipped value typed by hand: stale at the next release
            if re.search(rf"(?<![\d.]){re.escape(value)}\d*(?!\d)", chunk):
                wrong.append(f"{value} typed outside the block")
    assert not wrong, (f"README.md types thresholds of the shipped model by hand: {wrong}; "
                       f"point to the generated block instead (`{COMMAND}`)")


def test_the_generator_imports_no_flask():
    code = ("import sys, pneumo.app.model_facts; "
            "bad = [m for m in ('flask', 'flask_babel', 'waitress') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

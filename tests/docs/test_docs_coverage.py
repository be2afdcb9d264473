"""The README a newcomer reads in five minutes, and one docs page per reader, lose nothing.

Every section heading of the README before it was split into docs/ (frozen below, since the
README changes) still has a home: the same heading text in README.md or a page in docs/. Every
relative Markdown link in README.md and docs/*.md points to an existing file, and to an
existing heading when it has a #fragment (GitHub's anchors). The README stays short, keeps its
two commands (`.ci/run` and the front door rely on them) and links every page; the reader pages
keep the patient-safety wording near their top; no page types the shipped thresholds by hand
(they live in the README's generated block).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumo.docs_cli import github_slug

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

OLD_README_SECTIONS = (
    "Layout",
    "The data",
    "For ML engineers",
    "Train",
    "The shipped model and how it was chosen (issue 10)",
    "The earlier 224 px model (for comparison)",
    "Evaluate",
    "Export",
    "GANs and the ablation",
    "For clinic staff: the app",
    "Languages",
    "HTTP API (v1)",
    "Batch mode",
    "DICOM: compressed files, the receiver, results back to the PACS",
    "For the clinic lead: confirmed findings, thresholds for this clinic, and drift",
    "For IT: the single executable",
    "Benchmarks",
    "Tests",
    "Data credit",
)
"""The ## and ### headings of README.md at commit b68fb0f (1168 lines), before the split."""

README_COMMANDS = (
    "pip install . && pneumo serve --open-browser        # install and start the clinic app "
    "(bundled model)",
    "pip install -e '.[train,dev]' && python -m pytest   # install the test extras and run the "
    "tests",
)
"""The README's first code block: the front door and the test command (.ci/run runs both)."""

READER_PAGES = ("clinic-staff.md", "clinic-lead.md", "it.md", "api.md", "training.md",
                "export.md", "benchmarks.md", "testing.md", "recipe-history.md", "cli.md")
"""One page per reader (issue 30), each linked from the README."""

SAFETY_PAGES = ("clinic-staff.md", "clinic-lead.md", "it.md", "api.md")
"""The pages whose readers meet patients' answers: the safety wording near the top."""

MAX_README_LINES = 150

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def pages() -> list[Path]:
    """README.md and every page in docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def headings(path: Path) -> list[str]:
    """The text of every heading (any level), in order."""
    return [m.group(2) for line in prose_lines(path) if (m := HEADING.match(line))]


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the file's headings (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for text in headings(path):
        slug = github_slug(CODE_SPAN.sub(lambda m: m.group(0).strip("`"), text))
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return out


def link_targets(path: Path) -> list[str]:
    """The targets of the file's inline links and images (not inside code)."""
    text = "\n".join(prose_lines(path))
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)  # a paragraph on one line
    text = re.sub(r"`[^`\n]*`", lambda m: " " if "](" in m.group(0) else m.group(0), text)
    return LINK.findall(text)


def test_every_old_readme_section_has_a_home():
    homes = {text for page in pages() for text in headings(page)}
    missing = [s for s in OLD_README_SECTIONS if s not in homes]
    assert not missing, f"sections of the old README with no heading in README.md or docs/: " \
                        f"{missing}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in link_targets(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_anchor_rule_is_githubs():
    assert github_slug("For IT: the single executable") == "for-it-the-single-executable"
    assert github_slug("The shipped model and how it was chosen (issue 10)") == (
        "the-shipped-model-and-how-it-was-chosen-issue-10")
    assert github_slug("Orthanc / PACS setup (example)") == "orthanc--pacs-setup-example"
    assert github_slug("`pneumo history check`") == "pneumo-history-check"
    assert github_slug('"Is this a chest X-ray?"') == "is-this-a-chest-x-ray"


def test_readme_is_short_keeps_its_commands_and_links_every_page():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert tuple(first_block) == README_COMMANDS, "the README's two commands changed"
    assert text.index("```bash") < text.index("\n## "), "the commands are not at the top"
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in link_targets(README)}
    for name in READER_PAGES:
        page = DOCS / name
        assert page.is_file(), f"docs/{name} is missing"
        assert page.resolve() in linked, f"README.md does not link docs/{name}"
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("name", READER_PAGES)
def test_each_reader_page_has_real_content(name):
    lines = (DOCS / name).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), f"docs/{name} has no title"
    prose = [line for line in prose_lines(DOCS / name) if line.strip()]
    assert len(prose) >= 20, f"docs/{name} has only {len(prose)} lines of text"


def test_safety_wording_stays_prominent():
    top = "\n".join(README.read_text(encoding="utf-8").splitlines()[:25])
    assert "Decision support, not a diagnosis" in top
    assert "clinician" in top and "review" in top
    for name in SAFETY_PAGES:
        head = " ".join((DOCS / name).read_text(encoding="utf-8").splitlines()[:20]).lower()
        head = re.sub(r"[>*\s]+", " ", head)
        assert "decision support, not a diagnosis" in head, f"docs/{name}"
        assert "clinician" in head, f"docs/{name}"


def test_no_page_types_the_shipped_thresholds():
    """The shipped thresholds change with a release: only the README's generated block (see
    tests/app/test_model_facts.py) may state them."""
    from pneumo.app.model_facts import format_probability
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel

    shown = [format_probability(t).split()[0] for t in OnnxModel(DEFAULT_MODEL).thresholds.values()]
    typed = [f"docs/{p.name}: {value}" for p in sorted(DOCS.glob("*.md"))
             for value in shown
             if re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", p.read_text(encoding="utf-8"))]
    assert not typed, f"shipped thresholds typed by hand: {typed}; link the README's block"

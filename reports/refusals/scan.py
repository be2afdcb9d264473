"""Which real chest X-rays does the app refuse? Scan the training and external-validation sets.

    python reports/refusals/scan.py --out reports/refusals

Every image goes through exactly the app's pipeline: ``Predictor(OnnxModel()).predict(bytes)``
(decode, DICOM header rules, cheap image checks, model, OOD distance). A refusal is a raised
``NotAChestXray`` (its reason codes) or another ``ImageError`` (its code). Writes

- ``refused.csv``: set, class, file, reasons (``;``-separated codes) of every refused image;
- the generated part of ``README.md`` (between the ``scan:begin`` / ``scan:end`` markers;
  the rest of the README is kept): counts per set and per reason, the warnings given to the
  accepted images, the command and the date.

``--rotations`` also sends every image turned by 90 degrees each way (these must all be
refused: the orientation rule) and reports how many were.

``--features PATH`` also writes every image's check features and OOD distance (for choosing
thresholds; the model is run once more on refused images to get their distance).
The bundled model takes about 20-40 ms per image: the full scan (5,528 images) takes minutes;
run it in the background, e.g. ``nice -n 10 python reports/refusals/scan.py ... > scan.log``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import logging
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from pneumo.app.pipeline.checks import NotAChestXray, measure  # noqa: E402
from pneumo.app.pipeline.decode import decode_image  # noqa: E402
from pneumo.app.pipeline.decoded import ImageError  # noqa: E402
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel  # noqa: E402
from pneumo.app.pipeline.predictor import Predictor  # noqa: E402

log = logging.getLogger("refusals")

DATA = REPO.parent / "shared" / "data"
SETS = {"external_val": DATA / "external_val", "train": DATA / "chest_xray" / "train"}
"""The real X-ray sets scanned, by name (each with NORMAL/ and PNEUMONIA/)."""
TITLES = {"external_val": "external validation (half of the official test split)",
          "train": "training (shared/data/chest_xray/train)"}
CLASSES = ("NORMAL", "PNEUMONIA")
FIELDS = ("set", "class", "file", "reasons")
BEGIN, END = "<!-- scan:begin -->", "<!-- scan:end -->"


def images(name: str, sample: int | None = None, seed: int = 0) -> list[tuple[str, Path]]:
    """(class, path) of every image of a set, sorted; or a seeded sample of ``sample`` images."""
    root = SETS[name]
    paths = [(c, p) for c in CLASSES for p in sorted((root / c).glob("*.jpeg"))]
    if sample is not None and sample < len(paths):
        rng = random.Random(seed)
        paths = sorted(rng.sample(paths, sample), key=lambda cp: (cp[0], cp[1].name))
    return paths


def judge(predictor: Predictor, data: bytes) -> tuple[list[str], list[str], float | None]:
    """(refusal codes, warning codes, OOD distance) of one image through the app's pipeline."""
    try:
        pred = predictor.predict(data)
    except NotAChestXray as exc:
        return [r.code for r in exc.reasons] or [exc.code], [], None
    except ImageError as exc:
        return [exc.code], [], None
    return [], [w.code for w in pred.quality], pred.ood_distance


def turned(data: bytes) -> list[bytes]:
    """The image turned by 90 degrees each way, as PNG (what the orientation rule must refuse)."""
    gray = decode_image(data).gray
    out = []
    for how in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270):
        buf = io.BytesIO()
        gray.transpose(how).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def scan(set_names: list[str], *, model: OnnxModel | None = None, sample: int | None = None,
         seed: int = 0, every: int = 250, features: Path | None = None,
         rotations: bool = False) -> dict:
    """Scan the sets; returns {set: {"n", "refused": [rows], "warnings": Counter, "seconds"}}.

    With ``rotations``, each image is also sent turned by 90 degrees each way: "turned" counts
    those sent and "turned_accepted" lists the ones the app did not refuse, "turned_reasons"
    counts the first refusal reason.
    """
    model = model or OnnxModel(DEFAULT_MODEL)
    predictor = Predictor(model)
    results: dict = {}
    feat_rows: list[dict] = []
    for name in set_names:
        todo = images(name, sample, seed)
        refused: list[dict] = []
        warnings: Counter = Counter()
        turned_reasons: Counter = Counter()
        turned_accepted: list[str] = []
        t0 = time.perf_counter()
        for i, (cls, path) in enumerate(todo, 1):
            data = path.read_bytes()
            reasons, warns, distance = judge(predictor, data)
            warnings.update(warns)
            if reasons:
                refused.append({"set": name, "class": cls, "file": path.name,
                                "reasons": ";".join(reasons)})
                log.info("%s %s/%s refused: %s", name, cls, path.name, ";".join(reasons))
            if rotations:
                for how, sideways in zip(("rot90", "rot270"), turned(data), strict=True):
                    why = judge(predictor, sideways)[0]
                    turned_reasons[why[0] if why else "accepted"] += 1
                    if not why:
                        turned_accepted.append(f"{cls}/{path.name} {how}")
                        log.info("%s %s/%s %s accepted", name, cls, path.name, how)
            if features is not None:
                decoded = decode_image(data)
                if distance is None and model.ood:
                    out = model.run(model.model_input(decoded.gray)[None])
                    distance = float(model.ood_distance(out.embedding)[0])
                row = {"set": name, "class": cls, "file": path.name,
                       "reasons": ";".join(reasons), "warnings": ";".join(warns),
                       "ood_distance": distance}
                row.update({k: round(v, 5) for k, v in measure(decoded).items()})
                feat_rows.append(row)
            if i % every == 0 or i == len(todo):
                rate = i / max(1e-9, time.perf_counter() - t0)
                log.info("%s: %d/%d images, %d refused (%.0f images/s)", name, i, len(todo),
                         len(refused), rate)
        results[name] = {"n": len(todo), "refused": refused, "warnings": warnings,
                         "seconds": time.perf_counter() - t0}
        if rotations:
            results[name].update(turned=2 * len(todo), turned_reasons=turned_reasons,
                                 turned_accepted=turned_accepted)
    if features is not None and feat_rows:
        with features.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(feat_rows[0]))
            w.writeheader()
            w.writerows(feat_rows)
    return results


def write_csv(results: dict, path: Path) -> None:
    """Write refused.csv (one row per refused image)."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for res in results.values():
            w.writerows(res["refused"])


def read_csv(path: Path) -> list[dict]:
    """The rows of a refused.csv."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def summary_markdown(results: dict, command: str, model: OnnxModel) -> str:
    """The generated README section: counts per set and reason, warnings, command, date."""
    lines = [BEGIN, "", f"Scanned {dt.date.today().isoformat()} with model `{model.name}` "
             f"`{model.version}`:", "", "```", command, "```", "",
             "| set | images | refused | refused % | scan time |", "|---|---:|---:|---:|---:|"]
    for name, res in results.items():
        n, k = res["n"], len(res["refused"])
        lines.append(f"| {TITLES.get(name, name)} | {n} | {k} | {100 * k / max(1, n):.2f} % "
                     f"| {res['seconds']:.0f} s |")
    lines += ["", "Refusals per reason (an image can have several reasons):", "",
              "| set | reason | images |", "|---|---|---:|"]
    for name, res in results.items():
        reasons = Counter(c for r in res["refused"] for c in r["reasons"].split(";"))
        for code, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {name} | `{code}` | {k} |")
        if not reasons:
            lines.append(f"| {name} | (none) | 0 |")
    lines += ["", "Warnings on the accepted images (shown with the result, not refusals):", "",
              "| set | warning | images |", "|---|---|---:|"]
    for name, res in results.items():
        for code, k in sorted(res["warnings"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {name} | `{code}` | {k} |")
    if any("turned" in res for res in results.values()):
        lines += ["", "The same images turned by 90 degrees each way (must all be refused):", "",
                  "| set | turned images | refused | first reason of the refusals |",
                  "|---|---:|---:|---|"]
        for name, res in results.items():
            if "turned" in res:
                k = res["turned"] - len(res["turned_accepted"])
                why = ", ".join(f"`{c}` {v}" for c, v in sorted(res["turned_reasons"].items(),
                                                                 key=lambda kv: -kv[1])
                                if c != "accepted")
                lines.append(f"| {name} | {res['turned']} | {k} | {why} |")
        accepted = [t for res in results.values() for t in res.get("turned_accepted", [])]
        lines += [""] + [f"- accepted although turned: {t}" for t in accepted] if accepted else []
    lines += ["", "Refused images (also in `refused.csv`):", ""]
    rows = [r for res in results.values() for r in res["refused"]]
    lines += [f"- {r['set']} `{r['class']}/{r['file']}`: {r['reasons']}" for r in rows] or [
        "- none"]
    lines += ["", END]
    return "\n".join(lines)


def write_readme(path: Path, section: str) -> None:
    """Put the generated section into README.md, keeping the hand-written text around it."""
    text = path.read_text() if path.is_file() else "# Refusals of real chest X-rays\n\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: section, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: scan, write refused.csv and the README section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--sets", default="external_val,train",
                    help="comma-separated: external_val, train")
    ap.add_argument("--sample", type=int, default=None, help="seeded sample of N images per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=250, help="log progress every N images")
    ap.add_argument("--features", type=Path, default=None,
                    help="also write every image's features and OOD distance to this CSV")
    ap.add_argument("--rotations", action="store_true",
                    help="also send every image turned by 90 degrees each way (must be refused)")
    ap.add_argument("--no-readme", action="store_true", help="write refused.csv only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        ap.error(f"unknown set(s): {', '.join(unknown)}")
    model = OnnxModel(DEFAULT_MODEL)
    results = scan(names, model=model, sample=args.sample, seed=args.seed, every=args.every,
                   features=args.features, rotations=args.rotations)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(results, args.out / "refused.csv")
    if not args.no_readme:
        cmd = "python reports/refusals/scan.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
        write_readme(args.out / "README.md", summary_markdown(results, cmd.strip(), model))
    for name, res in results.items():
        log.info("%s: %d of %d refused", name, len(res["refused"]), res["n"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

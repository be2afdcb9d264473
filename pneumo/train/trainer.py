"""`pneumo train`: seeded, resumable training with best-AUC checkpointing.

A run folder holds everything needed to resume or audit it:
  config.json      the arguments of the run
  split.json       the patient-grouped pneumo/train/validation file lists
  checkpoint.keras the latest epoch (weights + optimizer), for --resume
  state.json       epoch reached, best validation AUC, per-epoch history
  model.keras      the best epoch by validation AUC (the run's result)
  model.json       its metadata: input size, thresholds chosen on validation, metrics, recipe
  history.csv      per-epoch loss/AUC, also plotted by `pneumo evaluate --report`
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.train.config import BACKENDS, TrainConfig
from pneumo.train.data import (
    CLASS_NAMES,
    EXTERNAL_LABEL,
    Split,
    cached_arrays,
    class_weights,
    list_class_folder,
    make_split,
    manifest_sha256,
    refuse_external_val,
)
from pneumo.train.metrics import (
    choose_thresholds,
    metrics_at,
    specificity_at_sensitivity,
    threshold_details,
)
from pneumo.train.multiworker import predict, sync_statistics, whole_batches, worker_folder

MODEL_FILE = "model.keras"
META_FILE = "model.json"
EXTERNAL_PREDICTIONS_FILE = "external_predictions.csv"

log = logging.getLogger(__name__)


def write_predictions(path: Path, samples: list, probabilities: np.ndarray) -> None:
    """One row per image: file name, true label, the model's probability of PNEUMONIA."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "probability"])
        for s, p in zip(samples, probabilities, strict=True):
            w.writerow([s.name, s.label, f"{float(p):.6f}"])


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def make_strategy(name: str):
    """A tf.distribute strategy: auto (mirrored over all GPUs, else default), mirrored, multiworker."""
    import tensorflow as tf

    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        # all GPUs; without any, all logical CPU devices (tests split the CPU into two)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":  # workers and rank come from the standard TF_CONFIG variable
        if "TF_CONFIG" not in os.environ:
            raise SystemExit("--strategy multiworker needs the TF_CONFIG environment variable")
        from pneumo.train.multiworker import strategy

        return strategy()
    raise ValueError(f"unknown strategy {name!r}")


def _synthetic_samples(folder: str | None):
    if not folder:
        return []
    samples = list_class_folder(Path(folder))
    if not samples:
        raise FileNotFoundError(f"no synthetic images under {folder}/NORMAL or /PNEUMONIA")
    return samples


def load_external(folder: str, size: int, intensity: str, cache: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An external labelled folder (NORMAL/, PNEUMONIA/) as normalised uint8 arrays."""
    from pneumo.app.pipeline.preprocess import normalize_intensity

    samples = list_class_folder(Path(folder))
    if not samples or len({s.label for s in samples}) < 2:
        raise FileNotFoundError(f"{folder} needs images in both NORMAL/ and PNEUMONIA/")
    x, y = cached_arrays(samples, size, cache)
    return normalize_intensity(x, intensity), y


def external_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Per-epoch figures on external data: AUC and specificity at sensitivity 0.95 / 0.98."""
    from sklearn.metrics import roc_auc_score

    return {"ext_auc": float(roc_auc_score(y, p)),
            "ext_spec_at_sens95": specificity_at_sensitivity(y, p, 0.95),
            "ext_spec_at_sens98": specificity_at_sensitivity(y, p, 0.98)}


def _compile(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    from pneumo.train.distill import DistillLoss, HardLabelAUC

    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate * 0.1, decay_steps=cfg.epochs * steps_per_epoch,
        warmup_target=cfg.learning_rate, warmup_steps=steps_per_epoch,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
        loss=(DistillLoss(cfg.temperature, cfg.distill_alpha) if cfg.teacher else
              keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)),
        metrics=[HardLabelAUC(name="auc") if cfg.teacher else keras.metrics.AUC(name="auc")],
    )


def _load_run(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, bool]:
    """The config to use: a resumed run keeps its saved one (epochs may be extended)."""
    out = Path(cfg.out)
    resuming = resume and (out / "state.json").exists() and (out / "checkpoint.keras").exists()
    if resuming:
        saved = json.loads((out / "config.json").read_text())
        saved.update(epochs=cfg.epochs, out=cfg.out)
        cfg = TrainConfig(**{**asdict(TrainConfig(data=cfg.data, out=cfg.out)), **saved})
    return cfg, resuming


@dataclass
class RunData:
    """The arrays of one run: training (and its burned-in-text copy), validation, external."""

    split: Split
    synthetic: list
    train_samples: list
    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    weights: dict
    x_ov: np.ndarray | None = None
    x_ext: np.ndarray | None = None
    y_ext: np.ndarray | None = None
    teacher: Any = None  # pneumo.train.distill.TeacherViews with --teacher


def _run_split(cfg: TrainConfig, out: Path, resuming: bool) -> Split:
    """The run's patient-grouped split: the saved one when resuming, else made and saved."""
    if resuming:
        return Split.from_json(json.loads((out / "split.json").read_text()))
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    split = make_split(cfg.data, cfg.val_fraction, split_seed)
    _write_json(out / "split.json", split.to_json())
    return split


def load_run_data(cfg: TrainConfig, out: Path, resuming: bool) -> RunData:
    """Step 1: split, decode (cached) and normalise every image set the run uses."""
    from pneumo.app.pipeline.preprocess import normalize_intensity

    split = _run_split(cfg, out, resuming)
    synthetic = _synthetic_samples(cfg.synthetic)
    train_samples = split.train + synthetic
    log.info(f"data: {len(split.train)} train + {len(synthetic)} synthetic, {len(split.val)} val images; "
             f"img_size={cfg.img_size} arch={cfg.arch} augment={cfg.augment} "
             f"intensity={cfg.intensity}")
    cache = cfg.cache_dir or str(out / "cache")
    x_tr, y_tr = cached_arrays(train_samples, cfg.img_size, cache)
    x_va, y_va = cached_arrays(split.val, cfg.img_size, cache)
    x_ov = None
    if cfg.overlays > 0:
        from pneumo.train.overlays import burn_in_text

        x_ov = normalize_intensity(burn_in_text(x_tr, cfg.seed), cfg.intensity)
        log.info(f"burned-in text on a copy of every training image, used with p={cfg.overlays}")
    weights = class_weights(y_tr) if cfg.balance == "weights" else {0: 1.0, 1: 1.0}
    log.info(f"class balance: {cfg.balance}, weights {weights}")
    data = RunData(split, synthetic, train_samples, normalize_intensity(x_tr, cfg.intensity),
                   y_tr, normalize_intensity(x_va, cfg.intensity), y_va, weights, x_ov)
    if cfg.external_val:
        data.x_ext, data.y_ext = load_external(cfg.external_val, cfg.img_size, cfg.intensity,
                                               cache)
        log.info(f"{EXTERNAL_LABEL}: {len(data.y_ext)} images from {cfg.external_val} "
                 "(judged after every epoch, never trained on, never used to pick the epoch)")
    return data


def build_or_resume(cfg: TrainConfig, out: Path, resuming: bool, steps_per_epoch: int,
                    strategy: Any = None) -> tuple[Any, dict]:
    """Step 2: (Keras model, state): the checkpoint when resuming, else a fresh model (in
    ``strategy``'s scope: made by `train` before any TensorFlow op, as MultiWorkerMirrored
    needs)."""
    import keras

    from pneumo.train.model import build_model

    if cfg.backend == "tensorflow":
        strategy = strategy or make_strategy(cfg.strategy)
        scope, where = strategy.scope(), (f"strategy {type(strategy).__name__} with "
                                          f"{strategy.num_replicas_in_sync} replica(s)")
    else:
        import jax  # the only other backend trained with (see check_backend)

        scope, where = nullcontext(), f"{cfg.backend} on {jax.devices()[0].device_kind}"
        if cfg.strategy == "mirrored":  # every batch split over all of JAX's devices
            if cfg.batch_size % len(jax.devices()):
                raise SystemExit(f"--strategy mirrored on {len(jax.devices())} JAX devices "
                                 "needs a --batch-size that they divide")
            keras.distribution.set_distribution(keras.distribution.DataParallel(
                devices=jax.devices()))
            where += f", keras.distribution.DataParallel over {len(jax.devices())} devices"
    if cfg.teacher:
        import pneumo.train.distill  # noqa: F401 - registers the loss a checkpoint names
    with scope:
        if resuming:
            model = keras.models.load_model(out / "checkpoint.keras")
            state = json.loads((out / "state.json").read_text())
            log.info(f"resuming after epoch {state['epoch']} (best val AUC {state['best_auc']:.4f})")
        else:
            model = build_model(cfg.arch, cfg.img_size, width=cfg.width)
            if cfg.init_from:
                init_weights(model, cfg.init_from)
            _compile(model, cfg, steps_per_epoch)
            state = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "history": []}
    log.info(f"model {model.name}: {model.count_params():,} parameters; {where}")
    return model, state


def init_model_path(source: str | Path) -> Path:
    """The model.keras a run starts from: SOURCE itself, or SOURCE/model.keras for a run folder."""
    path = Path(source)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: no model at {path}")
    return path


def init_weights(model: Any, source: str | Path) -> None:
    """Start `model` from the weights of another run (same architecture; any input size).

    The project CNN is fully convolutional up to global pooling, so weights trained at one
    input size load at another: fine-tuning a 224 px run at 160 px adapts its filters and
    batch-norm statistics to the smaller input (pneumo/train/test resolution, Touvron et al. 2019).
    """
    import keras

    path = init_model_path(source)
    src = keras.models.load_model(path, compile=False)
    shapes = [tuple(w.shape) for w in src.get_weights()]
    if shapes != [tuple(w.shape) for w in model.get_weights()]:
        raise SystemExit(f"--init-from {path}: its layers do not match this run's "
                         f"architecture (--arch/--width); the seed CNN cannot change input size")
    model.set_weights(src.get_weights())
    log.info(f"weights initialised from {path} (input {src.input_shape[1]} px -> "
             f"{model.input_shape[1]} px)")


def input_functions(backend: str) -> tuple[Any, Any]:
    """(one epoch's training input, evaluation input) for the Keras backend in use."""
    if backend == "tensorflow":
        from pneumo.train.tf_data import eval_dataset, train_dataset

        return train_dataset, eval_dataset
    from pneumo.train.keras_data import EpochBatches, to_float

    return EpochBatches, to_float


def train_epoch(model: Any, cfg: TrainConfig, data: RunData, augment: Any, epoch: int,
                val_ds: Any, ext_ds: Any | None) -> dict:
    """Step 3, once per epoch: fit one epoch, judge it; its history row."""
    import keras
    from sklearn.metrics import roc_auc_score

    epoch_input, _ = input_functions(cfg.backend)
    t0 = time.time()
    if data.teacher is not None:  # the cached views are the augmentation
        from pneumo.train.distill import DistillBatches

        ds = DistillBatches(data.teacher, data.y_tr, data.weights, batch_size=cfg.batch_size,
                            epoch=epoch, seed=cfg.seed,
                            balanced_sampling=cfg.balance == "sampling")
    else:
        ds = epoch_input(data.x_tr, data.y_tr, data.weights, batch_size=cfg.batch_size,
                         epoch=epoch, seed=cfg.seed, augment=augment, mixup=cfg.mixup,
                         balanced_sampling=cfg.balance == "sampling", x_alt=data.x_ov,
                         alt_prob=cfg.overlays)
    hist = model.fit(whole_batches(ds), epochs=1, verbose=0, shuffle=False)
    if cfg.backend == "tensorflow":
        sync_statistics(model)  # multiworker: every worker the same batch-norm statistics
    p_val = predict(model, val_ds)
    val_auc = float(roc_auc_score(data.y_va, p_val))
    val_loss = float(keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(
        data.y_va.astype("float32"), p_val.astype("float32"))))
    row = {"epoch": epoch, "loss": float(hist.history["loss"][-1]),
           "auc": float(hist.history["auc"][-1]), "val_loss": val_loss, "val_auc": val_auc}
    if ext_ds is not None:
        row.update(external_scores(data.y_ext, predict(model, ext_ds)))
    row["seconds"] = round(time.time() - t0, 1)
    return row


def _log_epoch(cfg: TrainConfig, row: dict, improved: bool) -> None:
    ext = (f" | external AUC {row['ext_auc']:.4f} spec@sens0.95 "
           f"{row['ext_spec_at_sens95']:.3f}" if "ext_auc" in row else "")
    log.info(f"epoch {row['epoch']}/{cfg.epochs} loss {row['loss']:.4f} auc {row['auc']:.4f} "
             f"val_loss {row['val_loss']:.4f} val_auc {row['val_auc']:.4f} "
             f"{'*' if improved else ' '}{ext} ({row['seconds']}s)")


def finish_run(cfg: TrainConfig, out: Path, state: dict, data: RunData, augment: Any,
               val_ds: Any, ext_ds: Any | None) -> dict:
    """Step 4: the best (or last) epoch's model judged again; model.json written."""
    import keras

    best = keras.models.load_model(out / MODEL_FILE, compile=False)
    p_val = predict(best, val_ds)
    meta = _run_metadata(cfg, state, data.split, data.train_samples, data.synthetic,
                         data.weights, augment, data.y_va, p_val, best.count_params(),
                         teacher=data.teacher)
    if ext_ds is not None:
        p_ext = predict(best, ext_ds)
        write_predictions(out / EXTERNAL_PREDICTIONS_FILE,
                          list_class_folder(Path(cfg.external_val)), p_ext)
        meta["external_val"] = {
            "label": EXTERNAL_LABEL, "folder": str(cfg.external_val), "n": int(len(data.y_ext)),
            **external_scores(data.y_ext, p_ext),
            "at_internal_thresholds": {m: metrics_at(data.y_ext, p_ext, t)
                                       for m, t in meta["thresholds"].items()},
        }
    _write_json(out / META_FILE, meta)
    log.info(f"done: best epoch {state['best_epoch']} val AUC {state['best_auc']:.4f}; "
             f"thresholds {meta['thresholds']}"
             + (f"; {EXTERNAL_LABEL} AUC {meta['external_val']['ext_auc']:.4f}, spec@sens0.95 "
                f"{meta['external_val']['ext_spec_at_sens95']:.3f}" if ext_ds is not None else ""))
    return meta


def check_distillation(cfg: TrainConfig) -> None:
    """Refuse --teacher settings that cannot work, before any data is loaded."""
    if not cfg.teacher:
        return
    if not Path(cfg.teacher).is_file():
        raise SystemExit(f"--teacher {cfg.teacher}: no such model file")
    if not 0.0 <= cfg.distill_alpha <= 1.0 or cfg.temperature <= 0 or cfg.teacher_views < 1:
        raise SystemExit("--teacher needs 0 <= --distill-alpha <= 1, --temperature > 0 and "
                         "--teacher-views >= 1")
    if cfg.mixup or cfg.overlays or cfg.label_smoothing:
        raise SystemExit("--teacher: the teacher's soft targets replace --mixup, --overlays "
                         "and --label-smoothing; leave them at 0")


def teacher_views(cfg: TrainConfig, data: RunData, augment: Any, out: Path) -> Any:
    """The teacher's cached views and logits of the training images (made now, or resumed)."""
    from pneumo.train.distill import Teacher, build_cache

    teacher = Teacher(cfg.teacher)
    folder = Path(cfg.cache_dir or out / "cache") / (
        f"teacher-{teacher.sha256[:12]}-{cfg.img_size}px-k{cfg.teacher_views}-s{cfg.seed}")
    log.info(f"teacher {teacher.path.name} ({teacher.metadata.get('version')}): logits of "
             f"{cfg.teacher_views} view(s) of {len(data.y_tr)} training images in {folder}")
    return build_cache(teacher, data.x_tr, augment, folder, views=cfg.teacher_views,
                       seed=cfg.seed)


def check_backend(requested: str) -> None:
    """Refuse a run whose Keras backend is not the one Keras was imported with."""
    import keras

    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose from {BACKENDS}")
    if keras.backend.backend() != requested:
        raise SystemExit(f"this run needs the Keras backend {requested!r} but Keras was "
                         f"imported with {keras.backend.backend()!r}: set KERAS_BACKEND="
                         f"{requested} before Keras is imported (pneumo train --backend does)")


def train(cfg: TrainConfig, *, resume: bool = True) -> dict:
    """Train (or resume) a run; returns the final metadata written to model.json."""
    refuse_external_val(cfg.data, "training data", external=cfg.external_val)
    refuse_external_val(cfg.synthetic, "synthetic training images", external=cfg.external_val)
    check_distillation(cfg)
    import keras

    from pneumo.train.augment import AugmentConfig

    scratch = None  # multiworker: a worker that is not the chief writes a scratch copy
    if cfg.strategy == "multiworker" and "TF_CONFIG" in os.environ:
        where, scratch = worker_folder(Path(cfg.out))
        cfg = replace(cfg, out=str(where))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, resuming = _load_run(cfg, resume)
    check_backend(cfg.backend)
    if cfg.init_from and not resuming:
        init_model_path(cfg.init_from)  # a wrong path fails now, not after loading the data
    strategy = None
    if cfg.backend == "tensorflow":
        import tensorflow as tf

        strategy = make_strategy(cfg.strategy)  # first: collectives need an unstarted runtime
        tf.config.experimental.enable_op_determinism()
    elif cfg.strategy not in ("auto", "mirrored"):
        raise SystemExit("--strategy multiworker is tf.distribute's: it needs --backend "
                         "tensorflow (--backend jax: auto, or mirrored for data parallel)")
    _, eval_dataset = input_functions(cfg.backend)
    _write_json(out / "config.json", asdict(cfg))
    keras.utils.set_random_seed(cfg.seed)
    augment = (AugmentConfig.from_name(cfg.augment).with_overrides(cfg.augment_off)
               .with_values(cfg.augment_set))

    data = load_run_data(cfg, out, resuming)
    if cfg.teacher:
        data.teacher = teacher_views(cfg, data, augment, out)
    val_ds = eval_dataset(data.x_va)
    ext_ds = eval_dataset(data.x_ext) if data.x_ext is not None else None
    steps_per_epoch = int(np.ceil(len(data.y_tr) / cfg.batch_size))
    model, state = build_or_resume(cfg, out, resuming, steps_per_epoch, strategy)

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        row = train_epoch(model, cfg, data, augment, epoch, val_ds, ext_ds)
        state["history"].append(row)
        improved = row["val_auc"] > state["best_auc"] if cfg.select == "val_auc" else True
        if improved:
            state["best_auc"] = max(row["val_auc"], state["best_auc"])
            state["best_epoch"] = epoch
            model.save(out / MODEL_FILE)
        model.save(out / "checkpoint.keras")
        state["epoch"] = epoch
        _write_json(out / "state.json", state)
        _log_epoch(cfg, row, improved)
        if cfg.select == "val_auc" and epoch - state["best_epoch"] >= cfg.patience:
            log.info(f"early stop: no val AUC gain for {cfg.patience} epochs")
            break
    _write_history_csv(out / "history.csv", state["history"])
    meta = finish_run(cfg, out, state, data, augment, val_ds, ext_ds)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


def _run_metadata(cfg: TrainConfig, state: dict, split: Split, train_samples: list,
                  synthetic: list, weights: dict, augment, y_va: np.ndarray,
                  p_val: np.ndarray, parameters: int, teacher: Any = None) -> dict:
    """model.json: what the run made, from what, and how it did on internal validation."""
    thresholds = choose_thresholds(y_va, p_val)
    return {
        "name": f"pneumo-{cfg.arch}",
        "version": time.strftime("%Y.%m.%d") + f"-{cfg.arch}{cfg.img_size}-s{cfg.seed}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arch": cfg.arch,
        "input_size": cfg.img_size,
        "intensity": cfg.intensity,
        "parameters": int(parameters),
        "class_names": list(CLASS_NAMES),
        "thresholds": thresholds,
        "val_metrics": {mode: metrics_at(y_va, p_val, t) for mode, t in thresholds.items()},
        "val_n": int(len(y_va)),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "train_seconds": round(sum(r["seconds"] for r in state["history"]), 1),
        "threshold_details": threshold_details(y_va, p_val),
        "train_manifest_sha256": manifest_sha256(train_samples),
        "recipe": {
            "augmentation": cfg.augment,
            "augmentation_off": cfg.augment_off,
            "augmentation_set": cfg.augment_set,
            "augment_params": asdict(augment),
            "synthetic_data": bool(synthetic),
            "synthetic_n": len(synthetic),
            "class_balance": cfg.balance,
            "class_weights": {CLASS_NAMES[k]: v for k, v in weights.items()},
            "intensity": cfg.intensity,
            "label_smoothing": cfg.label_smoothing,
            "mixup": cfg.mixup,
            "width": cfg.width,
            "select": cfg.select,
            "overlays": cfg.overlays,
            "backend": cfg.backend,
            "init_from": _init_source(cfg.init_from),
            "distillation": _distillation(cfg, teacher),
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "weight_decay": cfg.weight_decay,
            "seed": cfg.seed,
            "val_fraction": cfg.val_fraction,
            "split_seed": split.seed,
        },
        "data": str(cfg.data),
    }


def _distillation(cfg: TrainConfig, teacher: Any) -> dict | None:
    """The teacher and the distillation recipe of a --teacher run (None otherwise)."""
    if teacher is None:
        return None
    return {"teacher": teacher.teacher, "views": cfg.teacher_views,
            "temperature": cfg.temperature, "alpha": cfg.distill_alpha}


def _init_source(source: str | None) -> dict | None:
    """Which model a fine-tuned run started from: its path, version and file digest."""
    if not source:
        return None
    path = init_model_path(source)
    meta_path = path.with_name(META_FILE)
    version = json.loads(meta_path.read_text()).get("version") if meta_path.exists() else None
    return {"path": str(path), "version": version,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _write_history_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)

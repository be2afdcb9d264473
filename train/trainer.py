"""`pneumo train`: seeded, resumable training with best-AUC checkpointing.

A run folder holds everything needed to resume or audit it:
  config.json      the arguments of the run
  split.json       the patient-grouped train/validation file lists
  checkpoint.keras the latest epoch (weights + optimizer), for --resume
  state.json       epoch reached, best validation AUC, per-epoch history
  model.keras      the best epoch by validation AUC (the run's result)
  model.json       its metadata: input size, thresholds chosen on validation, metrics, recipe
  history.csv      per-epoch loss/AUC, also plotted by `pneumo evaluate --report`
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from train.data import (
    CLASS_NAMES,
    Split,
    cached_arrays,
    class_weights,
    list_class_folder,
    make_split,
    manifest_sha256,
)
from train.metrics import choose_thresholds, metrics_at, threshold_details

MODEL_FILE = "model.keras"
META_FILE = "model.json"


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    data: str
    out: str
    epochs: int = 25
    img_size: int = 224
    arch: str = "cnn"
    seed: int = 42
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    split_seed: int | None = None  # seed of the patient-grouped split; None: the run's seed
    augment: str = "full"
    augment_off: list[str] = field(default_factory=list)
    synthetic: str | None = None
    patience: int = 8
    strategy: str = "auto"
    cache_dir: str | None = None


def log(msg: str) -> None:
    """Progress to stderr, flushed (long runs are followed through a log file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


def _synthetic_samples(folder: str | None):
    if not folder:
        return []
    samples = list_class_folder(Path(folder))
    if not samples:
        raise FileNotFoundError(f"no synthetic images under {folder}/NORMAL or /PNEUMONIA")
    return samples


def train(cfg: TrainConfig, *, resume: bool = True) -> dict:
    """Train (or resume) a run; returns the final metadata written to model.json."""
    import keras
    import tensorflow as tf

    from train.augment import AugmentConfig
    from train.model import build_model
    from train.pipeline import eval_dataset, train_dataset

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, ckpt_path = out / "state.json", out / "checkpoint.keras"
    resuming = resume and state_path.exists() and ckpt_path.exists()
    if resuming:
        saved = json.loads((out / "config.json").read_text())
        saved.update(epochs=cfg.epochs, out=cfg.out)  # a resumed run may be extended
        cfg = TrainConfig(**saved)
    _write_json(out / "config.json", asdict(cfg))

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    augment = AugmentConfig.from_name(cfg.augment).with_overrides(cfg.augment_off)

    if resuming:
        split = Split.from_json(json.loads((out / "split.json").read_text()))
    else:
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        split = make_split(cfg.data, cfg.val_fraction, split_seed)
        _write_json(out / "split.json", split.to_json())
    synthetic = _synthetic_samples(cfg.synthetic)
    train_samples = split.train + synthetic
    log(f"data: {len(split.train)} train + {len(synthetic)} synthetic, {len(split.val)} val images; "
        f"img_size={cfg.img_size} arch={cfg.arch} augment={cfg.augment}")

    cache = cfg.cache_dir or str(out / "cache")
    x_tr, y_tr = cached_arrays(train_samples, cfg.img_size, cache)
    x_va, y_va = cached_arrays(split.val, cfg.img_size, cache)
    weights = class_weights(y_tr)
    log(f"class weights {weights}")
    val_ds = eval_dataset(x_va)

    strategy = make_strategy(cfg.strategy)
    steps_per_epoch = int(np.ceil(len(y_tr) / cfg.batch_size))
    with strategy.scope():
        if resuming:
            model = keras.models.load_model(ckpt_path)
            state = json.loads(state_path.read_text())
            log(f"resuming after epoch {state['epoch']} (best val AUC {state['best_auc']:.4f})")
        else:
            model = build_model(cfg.arch, cfg.img_size)
            schedule = keras.optimizers.schedules.CosineDecay(
                cfg.learning_rate * 0.1, decay_steps=cfg.epochs * steps_per_epoch,
                warmup_target=cfg.learning_rate, warmup_steps=steps_per_epoch,
            )
            model.compile(
                optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
                loss="binary_crossentropy",
                metrics=[keras.metrics.AUC(name="auc")],
            )
            state = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "history": []}
    log(f"model {model.name}: {model.count_params():,} parameters; "
        f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.time()
        ds = train_dataset(x_tr, y_tr, weights, batch_size=cfg.batch_size, epoch=epoch,
                           seed=cfg.seed, augment=augment)
        hist = model.fit(ds, epochs=1, verbose=0, shuffle=False)
        p_val = model.predict(val_ds, verbose=0).ravel()
        from sklearn.metrics import roc_auc_score

        val_auc = float(roc_auc_score(y_va, p_val))
        val_loss = float(keras.losses.binary_crossentropy(y_va.astype("float32"),
                                                           p_val.astype("float32")).numpy())
        row = {"epoch": epoch, "loss": float(hist.history["loss"][-1]),
               "auc": float(hist.history["auc"][-1]), "val_loss": val_loss, "val_auc": val_auc,
               "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        improved = val_auc > state["best_auc"]
        if improved:
            state["best_auc"], state["best_epoch"] = val_auc, epoch
            model.save(out / MODEL_FILE)
        model.save(ckpt_path)
        state["epoch"] = epoch
        _write_json(state_path, state)
        log(f"epoch {epoch}/{cfg.epochs} loss {row['loss']:.4f} auc {row['auc']:.4f} "
            f"val_loss {val_loss:.4f} val_auc {val_auc:.4f} {'*' if improved else ' '} "
            f"({row['seconds']}s)")
        if epoch - state["best_epoch"] >= cfg.patience:
            log(f"early stop: no val AUC gain for {cfg.patience} epochs")
            break
    _write_history_csv(out / "history.csv", state["history"])

    best = keras.models.load_model(out / MODEL_FILE)
    p_val = best.predict(val_ds, verbose=0).ravel()
    thresholds = choose_thresholds(y_va, p_val)
    meta = {
        "name": f"pneumo-{cfg.arch}",
        "version": time.strftime("%Y.%m.%d") + f"-{cfg.arch}{cfg.img_size}-s{cfg.seed}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arch": cfg.arch,
        "input_size": cfg.img_size,
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
            "augment_params": asdict(augment),
            "synthetic_data": bool(synthetic),
            "synthetic_n": len(synthetic),
            "class_weights": {CLASS_NAMES[k]: v for k, v in weights.items()},
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "val_fraction": cfg.val_fraction,
            "split_seed": split.seed,
        },
        "data": str(cfg.data),
    }
    _write_json(out / META_FILE, meta)
    log(f"done: best epoch {state['best_epoch']} val AUC {state['best_auc']:.4f}; "
        f"thresholds {thresholds}")
    return meta


def _write_history_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)

"""`pneumo ablation`: baseline / augmentation / GAN / combined (TensorFlow imported on use)."""

from __future__ import annotations

import argparse

from pneumo import extras


def _ablation(args: argparse.Namespace) -> int:
    from pneumo.train.ablation import run_ablation

    recipe = {"arch": args.arch, "batch_size": args.batch_size, "learning_rate": args.lr,
              "weight_decay": args.weight_decay, "intensity": args.intensity,
              "label_smoothing": args.label_smoothing, "mixup": args.mixup,
              "balance": args.balance, "width": args.width, "select": args.select,
              "augment_set": args.aug_set or [], "augment_off": args.no_aug or []}
    run_ablation(args.data, args.synthetic, args.out, seeds=args.seeds, epochs=args.epochs,
                 img_size=args.img_size, variants=args.variants, eval_data=args.eval_data,
                 split_seed=args.split_seed, eval_name=args.eval_label, augment=args.augment,
                 recipe=recipe, n_boot=args.n_boot)
    return 0


def add_subcommand(sub) -> None:
    """Register `pneumo ablation`."""
    a = sub.add_parser("ablation", help="baseline / augmentation / GAN / combined, N seeds each")
    a.add_argument("--data", required=True, help="chest_xray folder (Kaggle layout) to train on")
    a.add_argument("--synthetic", help="synthetic images (Kaggle layout) for gan/combined")
    a.add_argument("--out", required=True,
                   help="output folder: one run per variant and seed, ablation.md/.json, plots; "
                        "finished runs are reused")
    a.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="runs per variant, seeds 0 to N-1 (default: %(default)s)")
    a.add_argument("--variants", nargs="+",
                   choices=["baseline", "augmentation", "gan", "combined"],
                   help="the variants to run (default: all four; gan and combined need "
                        "--synthetic)")
    a.add_argument("--eval-data", metavar="DIR",
                   help="labelled folder (NORMAL/, PNEUMONIA/), e.g. ../shared/data/external_val: "
                        "judged after every epoch and at the end, and the set of the paired "
                        "comparisons (each variant - baseline, combined - augmentation); never trained on")
    a.add_argument("--eval-label", metavar="TEXT",
                   help="name of the --eval-data set in the report (default: 'external "
                        "validation (half of the official test split)' for an external_val "
                        "folder, else the folder)")
    a.add_argument("--n-boot", type=int, default=1000,
                   help="paired bootstrap draws for the CIs of the differences "
                        "(default: %(default)s)")
    a.add_argument("--split-seed", type=int, default=42,
                   help="the validation split shared by all runs; must be the GAN's (--seed of "
                        "`gan train`) (default: %(default)s)")
    r = a.add_argument_group("recipe", "shared by every run (as `pneumo train`)")
    r.add_argument("--epochs", type=int, default=8,
                   help="epochs of every run, no early stopping (default: %(default)s)")
    r.add_argument("--img-size", type=int, default=128,
                   help="input side in pixels (default: %(default)s)")
    r.add_argument("--arch", choices=["cnn", "seed"], default="cnn",
                   help="cnn: the project's CNN; seed: the seed paper's baseline "
                        "(default: %(default)s)")
    r.add_argument("--batch-size", type=int, default=32,
                   help="images per training step (default: %(default)s)")
    r.add_argument("--lr", type=float, default=1e-3,
                   help="peak AdamW learning rate (warm-up, then cosine decay) "
                        "(default: %(default)s)")
    r.add_argument("--weight-decay", type=float, default=1e-4,
                   help="AdamW weight decay (default: %(default)s)")
    r.add_argument("--intensity", choices=["none", "equalize", "stretch"], default="none",
                   help="per-image intensity normalisation (default: %(default)s)")
    r.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the loss; 0 = off (default: %(default)s)")
    r.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup within each batch, Beta(ALPHA, ALPHA); 0 = off "
                        "(default: %(default)s)")
    r.add_argument("--balance", choices=["weights", "sampling"], default="weights",
                   help="class imbalance: loss weights or balanced sampling "
                        "(default: %(default)s)")
    r.add_argument("--width", type=float, default=1.0,
                   help="CNN channel width multiplier (default: %(default)s)")
    r.add_argument("--select", choices=["val_auc", "last"], default="val_auc",
                   help="the run's model: best internal validation AUC, or the last epoch "
                        "(default: %(default)s)")
    r.add_argument("--augment", choices=["seed", "full"], default="seed",
                   help="augmentation of the augmentation/combined variants (baseline and gan: "
                        "none) (default: %(default)s)")
    r.add_argument("--aug-set", action="append", metavar="NAME=VALUE",
                   help="augmentation strength for the augmented variants; repeatable")
    r.add_argument("--no-aug", action="append", metavar="NAME",
                   help="switch one augmentation off in the augmented variants (e.g. flip: a "
                        "chest is not symmetric); repeatable")
    a.set_defaults(func=_ablation)
    extras.needs_train_extra(a)

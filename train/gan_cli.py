"""`pneumo gan train|sample|evaluate` and `pneumo ablation` (TensorFlow imported on use)."""

from __future__ import annotations

import argparse


def _gan_train(args: argparse.Namespace) -> int:
    from train.gan import GanConfig, train_gan

    classes = tuple(args.classes) if args.kind == "sngan" and args.classes else (args.cls,)
    if args.kind == "sngan" and not args.classes:
        classes = ("NORMAL", "PNEUMONIA")
    cfg = GanConfig(data=args.data, out=args.out, kind=args.kind, classes=classes,
                    img_size=args.img_size, steps=args.steps, batch_size=args.batch_size,
                    seed=args.seed, sample_every=args.sample_every,
                    checkpoint_every=args.sample_every)
    train_gan(cfg, resume=args.resume)
    return 0


def _gan_sample(args: argparse.Namespace) -> int:
    from train.gan import sample_gan

    sample_gan(args.checkpoint, args.n, args.out, seed=args.seed, class_name=args.cls)
    return 0


def _gan_evaluate(args: argparse.Namespace) -> int:
    import json

    from edge_app.model import DEFAULT_MODEL
    from train.gan_eval import evaluate_gan

    report = evaluate_gan(args.real, args.synthetic, args.model or DEFAULT_MODEL, args.out,
                          class_name=args.cls)
    print(json.dumps(report, indent=2))
    return 0


def _ablation(args: argparse.Namespace) -> int:
    from train.ablation import run_ablation

    run_ablation(args.data, args.synthetic, args.out, seeds=args.seeds, epochs=args.epochs,
                 img_size=args.img_size, variants=args.variants, eval_data=args.eval_data,
                 split_seed=args.split_seed)
    return 0


def add_subcommands(sub) -> None:
    """Register `pneumo gan ...` and `pneumo ablation`."""
    gan = sub.add_parser("gan", help="synthesise X-rays with a GAN (train, sample, evaluate)")
    gsub = gan.add_subparsers(dest="gan_command", metavar="ACTION", required=True)

    t = gsub.add_parser("train", help="train a GAN on the training split of one or both classes")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--kind", choices=["dcgan", "sngan"], default="dcgan",
                   help="dcgan: the seed paper's; sngan: conditional, spectral norm, hinge, "
                        "DiffAugment")
    t.add_argument("--class", dest="cls", default="NORMAL", choices=["NORMAL", "PNEUMONIA"])
    t.add_argument("--classes", nargs="+", choices=["NORMAL", "PNEUMONIA"],
                   help="sngan: classes to condition on (default both)")
    t.add_argument("--img-size", type=int, default=64, choices=[32, 64, 128])
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--sample-every", type=int, default=250,
                   help="write a sample grid and a checkpoint every N steps")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.set_defaults(func=_gan_train)

    s = gsub.add_parser("sample", help="write synthetic PNGs in the Kaggle layout")
    s.add_argument("--checkpoint", required=True, help="a `gan train` output folder")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--class", dest="cls", default=None, choices=["NORMAL", "PNEUMONIA"])
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_gan_sample)

    e = gsub.add_parser("evaluate", help="domain FID, precision/recall, memorisation check")
    e.add_argument("--real", required=True, help="Kaggle folder of the real data")
    e.add_argument("--synthetic", required=True, help="folder written by `gan sample`")
    e.add_argument("--model", help="ONNX feature model (default: the bundled model)")
    e.add_argument("--class", dest="cls", default="NORMAL", choices=["NORMAL", "PNEUMONIA"])
    e.add_argument("--out", required=True)
    e.set_defaults(func=_gan_evaluate)

    a = sub.add_parser("ablation", help="baseline / augmentation / GAN / combined, N seeds each")
    a.add_argument("--data", required=True)
    a.add_argument("--synthetic", help="synthetic images (Kaggle layout) for gan/combined")
    a.add_argument("--out", required=True)
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--epochs", type=int, default=8)
    a.add_argument("--img-size", type=int, default=128)
    a.add_argument("--variants", nargs="+",
                   choices=["baseline", "augmentation", "gan", "combined"])
    a.add_argument("--eval-data", help="an extra folder to score every run on (e.g. a test set)")
    a.add_argument("--split-seed", type=int, default=42,
                   help="the validation split shared by all runs; must be the GAN's (--seed of "
                        "`gan train`, default 42)")
    a.set_defaults(func=_ablation)

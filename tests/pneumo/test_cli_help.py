"""Every option of every `pneumo` subcommand says what it does, and shows its real default."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from pneumo.cli import build_parser, main


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
               ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command words, parser) of the parser and of every subcommand, nested ones included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subparsers(child, (*path, name))


def has_meaningful_default(action: argparse.Action) -> bool:
    """False for the defaults --help need not show: None, False, SUPPRESS and an on/off switch's
    own state (a --no-... flag that turns a True setting off); 0 is shown."""
    if isinstance(action, argparse._StoreFalseAction):
        return False
    return not any(action.default is v for v in (None, False, argparse.SUPPRESS))


def _squash(text: str) -> str:
    """Text without any whitespace: --help wraps lines (and long words) anywhere."""
    return re.sub(r"\s+", "", text)


def help_problems(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
    """'pneumo SUB: OPTION: what is wrong' for each option of this parser whose help falls short."""
    where = " ".join(("pneumo", *path))
    printed = _squash(parser.format_help())
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help is argparse.SUPPRESS or not action.help.strip():
            out.append(f"{where}: {name}: no help text")
            continue
        text = parser._get_formatter()._expand_help(action)  # as --help prints it
        if _squash(text) not in printed:
            out.append(f"{where}: {name}: help not in the --help output")
        if has_meaningful_default(action) and not (
                "default" in text.lower() and _squash(str(action.default)) in _squash(text)):
            out.append(f"{where}: {name}: help does not show the default {action.default!r}")
    return out


COMMANDS = list(subparsers(build_parser()))
IDS = [" ".join(p) or "pneumo" for p, _ in COMMANDS]


def test_the_walk_finds_every_subcommand():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"train", "evaluate", "recipes", "gan train", "gan sample", "gan evaluate",
            "ablation", "export", "drift-reference", "serve", "predict", "history check",
            "keys generate", "model install", "calibrate", "bench"} <= paths


def test_the_check_names_the_subcommand_and_the_option():
    parser = argparse.ArgumentParser(prog="pneumo")
    sub = parser.add_subparsers().add_parser("demo")
    sub.add_argument("--silent", type=int, default=3)
    sub.add_argument("--hidden", type=float, default=0.0, help="a number")
    sub.add_argument("--said", type=float, default=0.5, help="a number (default: %(default)s)")
    sub.add_argument("--off", action="store_true", help="a switch")
    sub.add_argument("--maybe", default=None, help="a path")
    problems = [p for path, p_ in subparsers(parser) for p in help_problems(p_, path)]
    assert problems == ["pneumo demo: --silent: no help text",
                        "pneumo demo: --hidden: help does not show the default 0.0"]


@pytest.mark.parametrize("path,parser", COMMANDS, ids=IDS)
def test_every_option_has_help_showing_its_default(path, parser):
    problems = help_problems(parser, path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_help_of_every_subcommand_exits_0(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pneumo" + "".join(f" {w}" for w in path))


def test_train_options_come_from_the_training_config():
    """One source for each default: every `pneumo train` option is a TrainConfig field with the
    same default, and the parsed options make the TrainConfig of the same run."""
    import dataclasses

    from pneumo.train.config import TrainConfig, from_args

    args = main_parser_args(["train", "--data", "D", "--out", "O"])
    cfg = from_args(args)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "img_size"):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert getattr(cfg, f.name) == default, f.name
    assert (cfg.data, cfg.out, cfg.img_size) == ("D", "O", 224)
    seed = from_args(main_parser_args(["train", "--data", "D", "--out", "O", "--arch", "seed",
                                       "--lr", "0.01", "--no-aug", "flip", "--no-aug", "zoom"]))
    assert (seed.img_size, seed.learning_rate, seed.augment_off) == (148, 0.01, ["flip", "zoom"])


def main_parser_args(argv: list[str]):
    """`pneumo ARGV` parsed by the real parser."""
    from pneumo.cli import build_parser

    return build_parser().parse_args(argv)

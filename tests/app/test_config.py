"""Settings and the per-user data folder."""

from pathlib import Path

import pytest

from pneumo.app import config
from pneumo.app.config import default_data_dir, resolve


def test_env_overrides_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMO_DATA_DIR", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x"
    assert resolve({})["data_dir"] == tmp_path / "x"
    assert resolve({"data_dir": tmp_path / "y"})["data_dir"] == tmp_path / "y"


@pytest.mark.parametrize("platform,env,expected", [
    ("linux", {}, Path.home() / ".local" / "share" / "pneumo"),
    ("linux", {"XDG_DATA_HOME": "/data/xdg"}, Path("/data/xdg/pneumo")),
    ("win32", {"LOCALAPPDATA": "C:/Users/a/AppData/Local"},
     Path("C:/Users/a/AppData/Local") / "pneumo"),
    ("darwin", {}, Path.home() / "Library" / "Application Support" / "pneumo"),
])
def test_platform_defaults(monkeypatch, platform, env, expected):
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(config.sys, "platform", platform)
    assert default_data_dir() == expected


def test_resolve_validates():
    with pytest.raises(ValueError):
        resolve({"no_such_setting": 1})
    with pytest.raises(ValueError):
        resolve({"token": "short"})
    with pytest.raises(ValueError):
        resolve({"threads": 0})
    cfg = resolve({"threads": "8", "data_dir": "/tmp/x"})
    assert cfg["threads"] == 8 and cfg["host"] == "127.0.0.1" and cfg["token"] is None


def test_one_settings_table_makes_the_defaults_the_serve_flags_and_the_docs_table():
    import argparse

    from pneumo.app.config import DEFAULTS, SETTINGS, settings_markdown
    from pneumo.app.runtime.cli import add_serve_arguments, serve_config

    assert DEFAULTS == {s.name: s.default for s in SETTINGS}
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    for executable in (False, True):
        p = argparse.ArgumentParser()
        add_serve_arguments(p, executable=executable)
        flags = {a.option_strings[0]: a for a in p._actions if a.option_strings[0] != "-h"}
        table_flags = {s.flag: s for s in SETTINGS if s.flag}
        assert set(flags) == set(table_flags) | {"--model"}
        for flag, s in table_flags.items():
            assert flags[flag].dest == s.name and flags[flag].help == s.help
        config = serve_config(p.parse_args([]))
        for s in table_flags.values():  # absent flags give the table's defaults
            assert config[s.name] == s.cli_default
    table = settings_markdown()
    for s in SETTINGS:
        assert f"| `{s.name}` |" in table
        assert "%(default)s" not in s.help_text()
    assert "| `threads` | `--threads` | `4` | worker threads (default: 4) |" in table

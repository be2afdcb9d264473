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

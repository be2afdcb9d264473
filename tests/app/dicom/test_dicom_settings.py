"""The DICOM receiver's settings: one declaration of the flags, defaults from config.DEFAULTS."""

import argparse

import pytest

from pneumo.app.config import DEFAULTS, ae_title, ae_titles, dicom_destination, resolve
from pneumo.app.runtime.cli import add_serve_arguments, build_parser, serve_config


def test_flags_map_to_settings_with_defaults_from_one_place():
    args = build_parser().parse_args(["serve"])
    cfg = serve_config(args)
    for key in ("dicom_port", "dicom_host", "dicom_ae_title", "dicom_allowed_aets",
                "dicom_send", "max_large_decodes"):
        assert cfg[key] == DEFAULTS[key], key
    assert DEFAULTS["dicom_port"] is None  # off by default
    args = build_parser().parse_args([
        "serve", "--dicom-port", "11112", "--ae-title", "CLINIC", "--allowed-aets",
        "XRAY1, PACS", "--dicom-send", "ORTHANC@10.0.0.5:4242", "--dicom-host", "0.0.0.0",
        "--max-large-decodes", "3"])
    cfg = resolve({k: v for k, v in serve_config(args).items() if k in DEFAULTS})
    assert cfg["dicom_port"] == 11112 and cfg["dicom_ae_title"] == "CLINIC"
    assert cfg["dicom_allowed_aets"] == ["XRAY1", "PACS"]
    assert cfg["dicom_send"] == "ORTHANC@10.0.0.5:4242" and cfg["dicom_host"] == "0.0.0.0"
    assert cfg["max_large_decodes"] == 3


def test_the_executable_gets_the_same_dicom_flags():
    from installer.entry import build_parser as launcher

    args = launcher().parse_args(["--dicom-port", "104", "--allowed-aets", "A"])
    assert args.dicom_port == 104 and args.dicom_allowed_aets == "A"
    p = argparse.ArgumentParser()
    add_serve_arguments(p, executable=True)
    flags = {s for a in p._actions for s in a.option_strings}
    assert {"--dicom-port", "--ae-title", "--allowed-aets", "--dicom-send", "--dicom-host",
            "--max-large-decodes"} <= flags


def test_ae_titles_and_destinations_are_checked():
    assert ae_title(" PNEUMO ") == "PNEUMO"
    for bad in ("", "    ", "A" * 17, "BACK\\SLASH", "TAB\tX", "CAFÉ"):
        with pytest.raises(ValueError):
            ae_title(bad)
    assert ae_titles("A, B,,") == ["A", "B"] and ae_titles("") is None and ae_titles(None) is None
    assert dicom_destination("ORTHANC@127.0.0.1:4242") == ("ORTHANC", "127.0.0.1", 4242)
    assert dicom_destination("PACS@[::1]:104") == ("PACS", "::1", 104)
    for bad in ("ORTHANC", "ORTHANC@host", "@host:104", "A@host:0", "A@host:x", "A@:104"):
        with pytest.raises(ValueError):
            dicom_destination(bad)
    with pytest.raises(ValueError):
        resolve({"dicom_send": "nowhere"})
    with pytest.raises(ValueError):
        resolve({"dicom_port": 70000})
    with pytest.raises(ValueError):
        resolve({"dicom_ae_title": "WAY-TOO-LONG-AE-TITLE"})
    with pytest.raises(ValueError):
        resolve({"max_large_decodes": 0})


def test_bad_dicom_flag_is_a_plain_error(test_model_path, tmp_path, capsys):
    from pneumo.app.runtime.cli import main

    code = main(["serve", "--model", str(test_model_path), "--data-dir", str(tmp_path),
                 "--dicom-port", "0", "--dicom-send", "nowhere"])
    assert code == 2
    assert "invalid DICOM destination 'nowhere'" in capsys.readouterr().err

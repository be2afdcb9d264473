"""The clinic's language: complete catalogues, the language choice, translated page and API."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apptools import REPO, XRAY_NORMAL, XRAY_PNEUMONIA, document_png
from babel.messages.pofile import read_po

from edge_app import i18n

LANGS = ("fr", "es", "pt", "sw", "ar")
TRANSLATIONS = REPO / "edge_app" / "translations"
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[sd%]")


def _catalog(lang: str):
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=lang)


def _pot_ids() -> set[str]:
    with (TRANSLATIONS / "messages.pot").open("rb") as f:
        return {m.id for m in read_po(f) if m.id}


def test_template_is_current(tmp_path):
    """messages.pot holds exactly the ids marked in the code (run pybabel extract when not)."""
    out = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F",
                    str(TRANSLATIONS / "babel.cfg"), "-k", "N_", "-k", "of:2", "--no-location",
                    "--omit-header", "-o", str(out), "."], cwd=REPO, check=True,
                   capture_output=True)
    with out.open("rb") as f:
        fresh = {m.id for m in read_po(f) if m.id}
    assert fresh == _pot_ids(), f"stale messages.pot: {sorted(fresh ^ _pot_ids())[:5]}"


@pytest.mark.parametrize("lang", LANGS)
def test_catalogue_complete(lang):
    """Every message id translated, none fuzzy, the same placeholders as the English text."""
    cat = _catalog(lang)
    ids = {m.id for m in cat if m.id}
    assert ids == _pot_ids(), f"{lang}: ids differ from messages.pot: {sorted(ids ^ _pot_ids())[:5]}"
    problems = []
    for m in cat:
        if not m.id:
            continue
        if not m.string:
            problems.append(("missing", m.id))
        elif m.fuzzy:
            problems.append(("fuzzy", m.id))
        elif sorted(PLACEHOLDER.findall(m.id)) != sorted(PLACEHOLDER.findall(m.string)):
            problems.append(("placeholders", m.id))
    assert not problems, f"{lang}: {problems[:5]}"


def test_languages_found_and_compiled(tmp_path):
    """Each .po is a language; compiling writes a .mo that gettext reads."""
    assert set(i18n.languages()) == {"en", *LANGS}
    out = i18n.compile_catalogues(TRANSLATIONS, tmp_path)
    from babel.support import Translations

    t = Translations.load(str(out), ["fr"])
    assert t.gettext("Next patient") == "Patient suivant"


def test_default_is_english(client):
    html = client.get("/").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in html and "Next patient" in html


@pytest.mark.parametrize("lang,word", [("fr", "Patient suivant"), ("es", "Siguiente paciente"),
                                       ("pt", "Próximo doente"), ("sw", "Mgonjwa anayefuata"),
                                       ("ar", "المريض التالي")])
def test_accept_language_changes_the_page(client, lang, word):
    html = client.get("/", headers={"Accept-Language": f"{lang},en;q=0.5"}).get_data(as_text=True)
    assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in html
    html = re.sub(r'<pre class="model-card">.*?</pre>', "", html, flags=re.S)  # a technical doc
    assert word in html and "Next patient" not in html and "Intended use:" not in html


def test_picker_query_sets_cookie_and_wins(client):
    r = client.get("/?lang=ar", headers={"Accept-Language": "fr"})
    assert 'lang="ar" dir="rtl"' in r.get_data(as_text=True)
    assert "lang=ar" in r.headers.get("Set-Cookie", "")
    html = client.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert 'lang="ar"' in html  # remembered by the cookie
    assert 'lang="en"' in client.get("/?lang=xx", headers={"Cookie": "lang=en"}).get_data(
        as_text=True)


def test_server_language_setting(app_config):
    from edge_app.app import create_app
    from edge_app.state import get_state

    app = create_app({**app_config, "lang": "sw"})
    try:
        html = app.test_client().get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
        assert 'lang="sw"' in html and "Mgonjwa anayefuata" in html
    finally:
        get_state(app).history.close()


def test_api_message_follows_accept_language(client):
    en = client.post("/api/v1/predict", data={
        "image": (io.BytesIO(XRAY_PNEUMONIA.read_bytes()), "x.jpeg")}).get_json()
    fr = client.post("/api/v1/predict", headers={"Accept-Language": "fr"}, data={
        "image": (io.BytesIO(XRAY_PNEUMONIA.read_bytes()), "x.jpeg")}).get_json()
    assert fr["label"] == en["label"] and fr["mode"] == en["mode"]  # codes stay stable
    assert set(fr) == set(en)
    assert fr["message"] != en["message"]
    assert any(w in fr["message"] for w in ("pneumonie", "Aucun signe"))
    assert "clinicien" in fr["message"] or "n’exclut pas" in fr["message"]
    assert fr["intended_use"].startswith("Aide à la décision")
    # the history keeps the English text whatever the request's language
    rec = client.get(f"/api/v1/history/{fr['id']}").get_json()
    assert rec["message"] == en["message"]


def test_refusal_reasons_translated(client):
    r = client.post("/api/v1/predict", headers={"Accept-Language": "fr"}, data={
        "image": (io.BytesIO(document_png()), "doc.png")})
    body = r.get_json()["error"]
    assert r.status_code == 422 and body["code"] == "not_a_chest_xray"
    assert body["message"].startswith("Cela ne ressemble pas à une radiographie thoracique")
    assert all(reason["code"] and reason["message"] for reason in body["reasons"])
    assert not any(reason["message"].startswith("it ") for reason in body["reasons"])


def test_report_translated_with_local_formats(client):
    rid = client.post("/api/v1/predict", data={
        "image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg")}).get_json()["id"]
    html = client.get(f"/report/{rid}", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert '<html lang="fr" dir="ltr">' in html
    for words in ("Résultat du dépistage", "Signature", "Imprimer", "Que faire ensuite"):
        assert words in html
    assert re.search(r"seuil 0,\d{3}", html)  # French decimal comma
    ar = client.get(f"/report/{rid}?lang=ar").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in ar and "التوقيع" in ar


def test_english_outside_requests():
    from edge_app.predictor import headline

    assert headline("PNEUMONIA", "PNEUMONIA", "borderline") == "Signs of pneumonia likely (borderline)"
    with i18n.english():
        assert i18n.current() == "en"


def test_glossary_present():
    text = (TRANSLATIONS / "GLOSSARY.md").read_text(encoding="utf-8")
    for lang in LANGS:
        assert f"| {lang} " in text or f"{lang}:" in text, lang


def test_pyinstaller_bundles_catalogues():
    spec = (REPO / "installer" / "pneumo-edge.spec").read_text(encoding="utf-8")
    assert "translations" in spec


def test_mo_files_are_not_committed():
    tracked = subprocess.run(["git", "ls-files", "edge_app/translations"], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith(".mo")]
    assert all(Path(REPO / p).exists() for p in tracked)


def test_lang_flag_of_serve_and_the_executable():
    """`--lang` is declared once (add_serve_arguments): pneumo serve and pneumo-edge get it."""
    import argparse

    from edge_app.cli import add_serve_arguments, serve_config

    for executable in (False, True):
        p = argparse.ArgumentParser()
        add_serve_arguments(p, executable=executable)
        assert serve_config(p.parse_args(["--lang", "ar"]))["lang"] == "ar"
        assert serve_config(p.parse_args([]))["lang"] is None

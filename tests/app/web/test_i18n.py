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

from pneumo.app import i18n

LANGS = ("fr", "es", "pt", "sw", "ar")
TRANSLATIONS = REPO / "pneumo" / "app" / "translations"
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
    from pneumo.app.web.app import create_app
    from pneumo.app.web.state import get_state

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
    from pneumo.app.pipeline.wording import answer

    words = answer({"outcome": "review", "probability": 0.5, "calibrated": True})
    assert words["headline"] == "Unclear: a clinician should review this X-ray"
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
    tracked = subprocess.run(["git", "ls-files", "pneumo/app/translations"], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith(".mo")]
    assert all(Path(REPO / p).exists() for p in tracked)


def test_lang_flag_of_serve_and_the_executable():
    """`--lang` is declared once (add_serve_arguments): pneumo serve and pneumo-edge get it."""
    import argparse

    from pneumo.app.runtime.cli import add_serve_arguments, serve_config

    for executable in (False, True):
        p = argparse.ArgumentParser()
        add_serve_arguments(p, executable=executable)
        assert serve_config(p.parse_args(["--lang", "ar"]))["lang"] == "ar"
        assert serve_config(p.parse_args([]))["lang"] is None


# --- console lines (issue 11): the server's language outside requests -----------------------

def test_console_language_outside_requests(monkeypatch):
    monkeypatch.delenv(i18n.LANG_ENV, raising=False)
    assert i18n._("stopping") == "stopping"  # no console: English
    with i18n.console("fr") as code:
        assert code == "fr" and i18n.current() == "fr"
        assert i18n._("stopping") == "arrêt en cours"
        assert i18n._("open: %(url)s", url="http://x/") == "ouvrir : http://x/"
        with i18n.english():  # stored texts and logs stay English
            assert i18n._("stopping") == "stopping" and i18n.current() == "en"
    assert i18n._("stopping") == "stopping"
    with i18n.console("pt_BR"):
        assert i18n._("stopping") == "a parar"
    with i18n.console("xx"):  # unknown: English
        assert i18n._("stopping") == "stopping"
    monkeypatch.setenv(i18n.LANG_ENV, "sw")
    with i18n.console(None):  # no --lang / lang setting: PNEUMO_LANG
        assert i18n._("stopping") == "inazima"


def test_console_language_never_leaks_into_requests(client):
    with i18n.console("ar"):
        r = client.get("/api/v1/history?page=x")  # no Accept-Language: English
    assert r.get_json()["error"]["message"] == "'page' must be a whole number."


@pytest.mark.parametrize("lang", LANGS)
def test_the_first_line_ends_with_the_url_in_every_language(lang):
    """Scripts and tests read the page's URL at the end of the first line, in any language."""
    from apptools import LISTENING_URL

    cat = _catalog(lang)
    line = cat.get("pneumo clinic app listening on %(url)s").string
    assert line.endswith("%(url)s"), line
    url = "http://127.0.0.1:8765/"
    assert LISTENING_URL.search(line % {"url": url}).group(1) == url
    for key in ("press %(keys)s to stop",
                "press %(keys)s to stop, or use \u201cStop the app\u201d on the page"):
        assert "Ctrl+C" in cat.get(key).string % {"keys": "Ctrl+C"}


def test_start_up_lines_in_the_server_language(model, tmp_path):
    from pneumo.app.runtime.server import _banner, model_line

    cfg = {"clinic_name": "Centre A", "data_dir": tmp_path, "keep_images": True,
           "dicom_allowed_aets": None, "dicom_send": None, "retain_days": 30, "token": "t" * 12,
           "allow_shutdown": True}

    class State:
        config = {"model_source": {"source": "bundled", "text": "bundled with the app"}}

    State.model = model
    with i18n.console("fr"):
        lines = _banner(cfg, url="http://127.0.0.1:8765/", open_url="http://127.0.0.1:8765/?t",
                        state=State, receiver=None, generated="t" * 12, pin=True)
        assert "fourni avec l’application" in model_line(model, State.config["model_source"])
    assert lines[0] == "application de clinique pneumo à l’écoute sur http://127.0.0.1:8765/"
    assert lines[1].startswith("modèle : ") and "fourni avec l’application" in lines[1]
    assert "centre : Centre A" in lines
    assert any(line.startswith("historique : ") and "images envoyées conservées" in line
               for line in lines)
    assert any("30 jours" in line for line in lines)
    assert "ouvrir : http://127.0.0.1:8765/?t" in lines
    assert lines[-1].startswith("appuyez sur Ctrl+C pour arrêter")
    english = _banner(cfg, url="http://127.0.0.1:8765/", open_url="http://127.0.0.1:8765/?t",
                      state=State, receiver=None, generated=None, pin=False)
    assert english[0] == "pneumo clinic app listening on http://127.0.0.1:8765/"
    assert english[-1] == ("press Ctrl+C to stop, or use \u201cStop the app\u201d on the page")


def test_second_launch_speaks_the_running_app_language(tmp_path):
    import json as _json

    from pneumo.app.runtime.instance import INSTANCE_NAME, InstanceLock, report_running

    (tmp_path / INSTANCE_NAME).write_text(_json.dumps(
        {"pid": 1, "url": "http://127.0.0.1:8765/", "port": 8765, "token": False,
         "running": True, "lang": "fr"}))
    out = io.StringIO()
    assert report_running(InstanceLock(tmp_path), open_browser=False, out=out) == 0
    assert f"pneumo fonctionne déjà pour le dossier de données {tmp_path}" in out.getvalue()
    assert "ouvrez http://127.0.0.1:8765/ dans votre navigateur" in out.getvalue()
    out = io.StringIO()
    report_running(InstanceLock(tmp_path), open_browser=False, out=out, lang="es")
    assert "abra http://127.0.0.1:8765/ en su navegador" in out.getvalue()


# --- API messages (issue 11): every `message` follows Accept-Language, codes stay English ----

FR = {"Accept-Language": "fr"}


def _err(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()["error"]


def test_bad_query_parameters_in_french(client):
    for path in ("/api/v1/history?from=31/01/2025", "/api/v1/history.csv?to=demain"):
        en, fr = _err(client.get(path), 400), _err(client.get(path, headers=FR), 400)
        assert en["code"] == fr["code"] == "bad_date"
        assert fr["message"] == ("Les dates doivent s’écrire comme 2025-01-31 ou "
                                 "2025-01-31T14:00:00Z.")
    fr = _err(client.get("/api/v1/history?page=deux", headers=FR), 400)
    assert fr == {"code": "bad_parameter", "message": "« page » doit être un nombre entier."}
    fr = _err(client.get("/api/v1/history?per_page=9999", headers=FR), 400)
    assert fr["code"] == "bad_parameter" and fr["message"].startswith("« per_page » doit être")


def test_form_limits_in_french(app_config):
    from pneumo.app.web.app import create_app
    from pneumo.app.web.state import get_state

    app = create_app({**app_config, "max_upload_bytes": 2**20})
    try:
        client = app.test_client()
        big = {"image": (io.BytesIO(b"\xff\xd8\xff" + b"\0" * (2 * 2**20)), "x.jpeg")}
        fr = _err(client.post("/api/v1/predict", data=big, headers=FR), 413)
        assert fr == {"code": "file_too_large", "message": "Le fichier envoyé est trop "
                      "volumineux. Envoyez un fichier de moins de 1 Mo."}
        parts = {f"f{i}": "v" for i in range(1100)}
        fr = _err(client.post("/api/v1/predict", data=parts, headers=FR,
                              content_type="multipart/form-data"), 413)
        assert fr["code"] == "too_many_form_parts"
        assert fr["message"].startswith("Le formulaire a trop de parties (1000 au plus).")
    finally:
        get_state(app).history.close()


def test_finding_and_other_errors_in_french(client):
    rid = client.post("/api/v1/predict", data={
        "image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg")}).get_json()["id"]
    url = f"/api/v1/history/{rid}/confirmation"
    en = _err(client.put(url, json={"finding": "maybe"}), 400)
    fr = _err(client.put(url, json={"finding": "maybe"}, headers=FR), 400)
    assert en == {"code": "bad_finding",
                  "message": "The finding must be one of: normal, pneumonia, other, unknown."}
    assert fr == {"code": "bad_finding", "message": "La conclusion doit être l’une des valeurs "
                  "suivantes : normal, pneumonia, other, unknown."}
    fr = _err(client.put(url, json={"finding": "normal", "by": "x" * 100}, headers=FR), 400)
    assert fr == {"code": "bad_by", "message": "« by » dépasse 64 caractères."}
    assert _err(client.put(url, data="nope", headers=FR), 400)["message"].startswith(
        "Envoyez un objet JSON")
    fr = _err(client.get("/api/v1/history/" + "0" * 32, headers=FR), 404)
    assert fr == {"code": "not_found",
                  "message": "Cet enregistrement n’existe pas dans l’historique."}
    assert _err(client.get("/nowhere", headers=FR), 404) == {
        "code": "not_found", "message": "Il n’y a rien à cette adresse."}
    assert _err(client.delete("/api/v1/predict", headers=FR), 405)["code"] == "method_not_allowed"
    fr = _err(client.post("/api/v1/predict", headers=FR, data={
        "image": (io.BytesIO(b"not an image"), "x.txt")}), 415)
    assert fr["code"] == "unsupported_image"
    assert fr["message"].startswith("Ce type de fichier n’est pas pris en charge.")
    fr = _err(client.post("/api/v1/predict", headers=FR, data={
        "mode": "fast", "image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg")}), 400)
    assert fr["code"] == "bad_mode" and fr["message"].startswith("Réglage inconnu « fast »")
    fr = _err(client.post("/api/v1/predict", headers={**FR, "Origin": "http://evil.example"}),
              403)
    assert fr == {"code": "cross_site_request",
                  "message": "Les requêtes venant d’autres sites sont refusées."}


def test_codes_stay_english_and_stored_texts_too(client):
    cases = [("GET", "/api/v1/history?from=x", False), ("GET", "/api/v1/history?page=0", False),
             ("GET", "/nowhere", False), ("POST", "/api/v1/predict", True)]

    def ask(method, path, upload, headers=None):
        data = {"image": (io.BytesIO(b""), "empty.png")} if upload else None
        return client.open(path, method=method, data=data, headers=headers).get_json()["error"]

    for lang in LANGS:
        for method, path, upload in cases:
            en = ask(method, path, upload)
            other = ask(method, path, upload, {"Accept-Language": lang})
            assert other["code"] == en["code"], (lang, path)
            assert other["message"] != en["message"], (lang, path)
    from pneumo.app.pipeline.decode import decode_image
    from pneumo.app.pipeline.decoded import UnsupportedImage

    with pytest.raises(UnsupportedImage) as exc:
        decode_image(b"")
    assert exc.value.message == "The file is empty." and exc.value.code == "empty_file"


def test_waitress_errors_choose_the_language_like_the_app():
    from pneumo.app.runtime.server import _cookie_lang

    assert i18n.best_language("fr-CA,fr;q=0.9,en;q=0.5") == "fr"
    assert i18n.best_language("de") == "en"
    assert i18n.best_language("fr", "ar", "es") == "ar"  # the cookie wins, then the setting
    assert i18n.best_language("fr", None, "es") == "es"
    assert _cookie_lang("pneumo_session=abc; lang=sw") == "sw"
    assert _cookie_lang('bad"cookie') is None
    assert i18n.in_language("fr", "The request could not be read: %(detail)s.",
                            detail="x") == "La requête n’a pas pu être lue : x."

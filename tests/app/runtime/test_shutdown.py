"""Issue 15: "Stop the app" on the page (POST /api/v1/shutdown) for a computer without a console.

The route is guarded like every state-changing route (same-origin, CSRF token with cookies),
only answers this computer unless a token or PIN protects the app, can be turned off
(--no-stop-button), and stops the server through the same clean-up as Ctrl+C.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import pytest
from apptools import http, start_server

from pneumo.app.runtime.instance import INSTANCE_NAME, InstanceLock
from pneumo.app.web.app import create_app
from pneumo.app.web.state import SHUTDOWN_HOOK, get_state

SHUTDOWN = "/api/v1/shutdown"


class Hook:
    """A stand-in for the server's stop request: counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def make_app(app_config):
    made = []

    def make(**overrides):
        app = create_app({**app_config, **overrides})
        made.append(app)
        hook = Hook()
        app.extensions[SHUTDOWN_HOOK] = hook
        return app, hook

    yield make
    for app in made:
        get_state(app).history.close()


def _csrf(client) -> str:
    html = client.get("/").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def test_page_stop_asks_202_and_stops_after_the_answer(make_app):
    app, hook = make_app()
    client = app.test_client()
    token = _csrf(client)  # the page's session cookie is set: the CSRF token is needed
    assert client.post(SHUTDOWN, headers={"Origin": "http://localhost"}).status_code == 403
    r = client.post(SHUTDOWN, headers={"Origin": "http://localhost", "X-CSRF-Token": token})
    assert r.status_code == 202 and r.get_json() == {"status": "stopping"}
    r.close()  # the WSGI server closes the answer once written: then the stop is asked
    assert hook.calls == 1


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"},
                                     {"Origin": "https://localhost"},  # another scheme
                                     {"Referer": "http://evil.example/page"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_cross_site_stop_is_refused(make_app, headers):
    app, hook = make_app()
    r = app.test_client().post(SHUTDOWN, headers=headers)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "cross_site_request"
    r.close()
    assert hook.calls == 0


def test_only_this_computer_may_stop_an_unprotected_app(make_app):
    app, hook = make_app(trusted_hosts=["clinic-pc"])
    remote = app.test_client().post(SHUTDOWN, base_url="http://clinic-pc/",
                                    environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert remote.status_code == 403
    assert remote.get_json()["error"]["code"] == "shutdown_not_local"
    remote.close()
    assert hook.calls == 0
    tokened, hook2 = make_app(token="correct-horse-battery-staple")
    r = tokened.test_client().post(SHUTDOWN, environ_base={"REMOTE_ADDR": "192.168.1.20"},
                                   headers={"Authorization": "Bearer correct-horse-battery-staple"})
    assert r.status_code == 202  # the token protects it: a remote holder may stop it
    r.close()
    assert hook2.calls == 1


def test_turned_off_no_button_and_403(make_app):
    app, hook = make_app(allow_shutdown=False)
    client = app.test_client()
    assert 'id="stop-ask"' not in client.get("/").get_data(as_text=True)
    r = app.test_client().post(SHUTDOWN)  # a script (no cookies)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "shutdown_disabled"
    r.close()
    assert hook.calls == 0


def test_button_on_the_main_page_only_and_translated(make_app):
    app, _ = make_app()
    client = app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'id="stop-ask"' in html and "Stop the app" in html
    assert 'id="stop-confirm"' in html and "hidden" in html.split('id="stop-confirm"')[1][:40]
    assert "The app has stopped. You can close this tab." in html
    fr = client.get("/", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert "Arrêter l’application" in fr and "Vous pouvez fermer cet onglet" in fr


def test_no_server_to_stop_is_a_409(client):
    r = client.post(SHUTDOWN)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "shutdown_unavailable"


def test_no_stop_button_flag():
    import argparse

    from pneumo.app.runtime.cli import add_serve_arguments, serve_config

    for executable in (False, True):
        p = argparse.ArgumentParser()
        add_serve_arguments(p, executable=executable)
        assert serve_config(p.parse_args([]))["allow_shutdown"] is True
        assert serve_config(p.parse_args(["--no-stop-button"]))["allow_shutdown"] is False


def _waitress_400(url: str) -> str:
    """The message of the 400 Waitress itself answers to a request it cannot read."""
    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: abc\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    return error["message"]


@pytest.mark.slow
def test_real_server_stops_cleanly_and_frees_the_data_folder(test_model_path, tmp_path):
    """`pneumo serve --lang fr`: French start-up lines (URL still parsed), a cross-site stop
    refused, a same-origin one stops the process (exit 0) and releases the lock."""
    data = tmp_path / "data"
    srv = start_server(test_model_path, data, "--lang", "fr")
    try:
        banner = "".join(srv.lines)
        first = next(line for line in srv.lines if "http://" in line)
        assert first.startswith("application de clinique pneumo à l’écoute sur http://")
        assert "appuyez sur Ctrl+C pour arrêter" in banner and "historique : " in banner
        evil = http("POST", srv.url + SHUTDOWN[1:], body=b"{}",
                    headers={"Origin": "http://evil.example", "Content-Type": "application/json",
                             "Accept-Language": "fr"})
        assert evil.status == 403
        assert evil.json()["error"] == {"code": "cross_site_request",
                                        "message": "Les requêtes venant d’autres sites sont "
                                                   "refusées."}
        assert http("GET", srv.url + "healthz").status == 200  # still serving
        assert "n’a pas pu être lue" in _waitress_400(srv.url)  # Waitress's own answer too
        ok = http("POST", srv.url + SHUTDOWN[1:], body=b"{}",
                  headers={"Origin": srv.url.rstrip("/"), "Content-Type": "application/json"})
        assert ok.status == 202 and ok.json() == {"status": "stopping"}
        try:
            code = srv.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop:\n" + "".join(srv.lines))
        assert code == 0, "".join(srv.lines)
        deadline = time.monotonic() + 10  # the output's last lines may still be on their way
        while "is free" not in "".join(srv.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.stop()
    out = "".join(srv.lines)
    assert "arrêt en cours" in out and "stop asked from the page" in out
    assert "is free" in out  # logged after the lock was released
    assert json.loads((data / INSTANCE_NAME).read_text())["running"] is False
    lock = InstanceLock(data)
    assert lock.acquire()  # released
    lock.release()
    again = start_server(test_model_path, data)  # a new serve on the same data folder starts
    try:
        assert http("GET", again.url + "healthz").status == 200
        first = next(line for line in again.lines if "http://" in line)
        assert first == f"pneumo clinic app listening on {again.url}\n"  # English by default
    finally:
        again.stop()

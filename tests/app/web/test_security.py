"""Security: headers, token, CSRF / origin, Host checks, no file-system paths."""

import io
import re

import pytest
from apptools import XRAY_NORMAL

from pneumo.app.config import is_loopback
from pneumo.app.runtime.server import prepare_config
from pneumo.app.web.app import create_app
from pneumo.app.web.security import CSRF_HEADER, SESSION_COOKIE, TOKEN_COOKIE

TOKEN = "correct-horse-battery-staple"


def _form():
    return {"image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg")}


def _csrf_from_page(client) -> str:
    html = client.get("/").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.mark.parametrize("path", ["/", "/healthz", "/api/v1/model", "/api/v1/history",
                                  "/static/app.js", "/no/such/page"])
def test_security_headers(client, path):
    r = client.get(path)
    h = r.headers
    csp = h["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    if not path.startswith("/static/"):
        assert h["Cache-Control"] == "no-store"


def test_page_has_no_inline_script_or_style(client):
    html = client.get("/").get_data(as_text=True)
    for tag in re.findall(r"<script[^>]*>.*?</script>", html, flags=re.S):
        if tag.startswith('<script type="application/json" id="i18n">'):
            continue  # the page's texts for app.js: data, never executed
        assert 'src="' in tag and tag.endswith("></script>"), tag
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert " style=" not in html and "<style" not in html
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html


def test_no_debug(app):
    assert app.debug is False and app.testing is False


def test_static_never_leaves_package(client):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                 "/static//etc/passwd", "/static/%2fetc%2fpasswd"):
        r = client.get(path, follow_redirects=True)
        assert r.status_code == 404, path
        assert b"create_app" not in r.data and b"root:" not in r.data


# --- token ---------------------------------------------------------------------------------

@pytest.fixture
def token_client(model, tmp_path):
    return create_app({"model": model, "data_dir": tmp_path, "token": TOKEN}).test_client()


@pytest.mark.parametrize("path", ["/", "/healthz", "/api/v1/history", "/static/app.css"])
def test_token_required_everywhere(token_client, path):
    r = token_client.get(path)
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "token_required"


def test_token_by_header(token_client):
    assert token_client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert token_client.get("/healthz", headers={"X-Access-Token": TOKEN}).status_code == 200
    r = token_client.get("/healthz", headers={"Authorization": "Bearer wrong-token-123"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "bad_token"


def test_token_by_link_sets_cookie(token_client):
    assert token_client.get("/?token=wrong-token-123").status_code == 401
    r = token_client.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["Location"].endswith("/")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(TOKEN_COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert token_client.get("/").status_code == 200
    assert token_client.get("/static/app.js").status_code == 200


def test_token_api_client_posts_without_csrf(token_client):
    r = token_client.post("/api/v1/predict", data=_form(),
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.get_data(as_text=True)


def test_token_page_session_needs_csrf(token_client):
    token_client.get(f"/?token={TOKEN}")
    csrf = _csrf_from_page(token_client)
    assert token_client.post("/api/v1/predict", data=_form()).status_code == 403
    r = token_client.post("/api/v1/predict", data=_form(), headers={CSRF_HEADER: csrf})
    assert r.status_code == 200


def test_non_loopback_gets_a_token(tmp_path):
    cfg = prepare_config({"host": "0.0.0.0", "data_dir": tmp_path})
    assert cfg["token"] and len(cfg["token"]) >= 24
    assert prepare_config({"host": "0.0.0.0", "token": TOKEN, "data_dir": tmp_path})["token"] == TOKEN
    assert prepare_config({"host": "127.0.0.1", "data_dir": tmp_path})["token"] is None


def test_loopback_names():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    assert not is_loopback("example.org")


# --- CSRF and origin ----------------------------------------------------------------------

def test_cookieless_api_client_needs_no_csrf(client):
    assert client.post("/api/v1/predict", data=_form()).status_code == 200


def test_page_session_requires_csrf_header(client):
    csrf = _csrf_from_page(client)
    assert client.get_cookie(SESSION_COOKIE) is not None
    r = client.post("/api/v1/predict", data=_form())
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "csrf_failed"
    r = client.post("/api/v1/predict", data=_form(), headers={CSRF_HEADER: "forged"})
    assert r.status_code == 403
    r = client.post("/api/v1/predict", data=_form(), headers={CSRF_HEADER: csrf})
    assert r.status_code == 200


def test_session_cookie_flags(client):
    cookie = client.get("/").headers["Set-Cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_cross_site_posts_refused(client, headers):
    r = client.post("/api/v1/predict", data=_form(), headers=headers)
    assert r.status_code == 403
    assert r.get_json()["error"]["code"] == "cross_site_request"


def test_same_origin_post_allowed(client):
    r = client.post("/api/v1/predict", data=_form(),
                    headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200


@pytest.mark.parametrize("host,ok", [("localhost", True), ("127.0.0.1:8765", True),
                                     ("[::1]:8765", True), ("evil.example", False),
                                     ("evil.example:8765", False), ("127.0.0.1.evil.example", False)])
def test_host_header_checked_on_loopback(client, host, ok):
    r = client.get("/healthz", headers={"Host": host})
    assert (r.status_code == 200) is ok
    if not ok:
        assert r.get_json()["error"]["code"] == "bad_host"

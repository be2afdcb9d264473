"""The closed-loop load generator against a stdlib HTTP server (no app needed)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pneumo.bench.http_load import closed_loop, multipart_body


def _server(status: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize("clients", [1, 4])
def test_closed_loop_bounded_by_request_count(clients):
    srv = _server(200)
    try:
        body, ctype = multipart_body(b"\xff\xd8\xff" + b"x" * 1000)
        res = closed_loop(srv.server_address[1], body, ctype, clients, duration_s=30,
                          max_requests=20)
    finally:
        srv.shutdown()
    assert res["requests"] == 20 and res["ok"] == 20 and res["errors"] == 0
    assert res["latency"]["n"] == 20 and res["throughput_rps"] > 0
    assert res["duration_s"] < 30


def test_closed_loop_counts_errors_and_stops_on_time():
    srv = _server(500)
    try:
        body, ctype = multipart_body(b"data")
        res = closed_loop(srv.server_address[1], body, ctype, 2, duration_s=0.3,
                          max_requests=10**6)
    finally:
        srv.shutdown()
    assert res["ok"] == 0 and res["errors"] == res["requests"] > 0
    assert res["statuses"] == {"500": res["requests"]}
    assert res["latency"] is None


def test_multipart_body_has_the_image_field():
    body, ctype = multipart_body(b"PIXELS", fields={"mode": "balanced"})
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(f"--{boundary}".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="image"; filename="xray.jpeg"' in body and b"PIXELS" in body
    assert b'name="mode"' in body

"""Health, routing (404/405/415), saved-image access and the start-up log."""
import re
import socket

import requests

from conftest import assert_error, encode, gradient_scene, post_composite, sample_product


def test_health(server):
    srv = server()
    r = requests.get(srv.url("/health"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "ok"
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"])
    assert isinstance(body["policy_version"], int) and body["policy_version"] >= 1
    assert isinstance(body["uptime_seconds"], (int, float)) and body["uptime_seconds"] >= 0
    assert "listening on http://127.0.0.1:%d" % srv.port in srv.wait_log("listening on")


def test_unknown_path_is_404(server):
    srv = server()
    for path in ("/", "/nope", "/api", "/api/composite/extra", "/api/admin/nope"):
        assert_error(requests.get(srv.url(path), timeout=10), 404, "not_found")


def test_wrong_method_is_405_with_allow(server):
    srv = server()
    cases = [("GET", "/api/composite", "POST"), ("PUT", "/api/composite", "POST"),
             ("POST", "/health", "GET"), ("DELETE", "/api/scenes", "POST"),
             ("POST", "/api/admin/metrics/composite", "GET"), ("GET", "/api/admin/reload", "POST")]
    for method, path, allow in cases:
        r = requests.request(method, srv.url(path), timeout=10)
        assert_error(r, 405, "method_not_allowed")
        assert allow in r.headers["Allow"], (path, r.headers)


def test_non_multipart_is_415(server):
    srv = server()
    for ctype, body in (("application/json", b'{"scene": 1}'),
                        ("application/x-www-form-urlencoded", b"scene=1&product=2"),
                        ("text/plain", b"hello")):
        r = requests.post(srv.url("/api/composite"), data=body,
                          headers={"Content-Type": ctype}, timeout=10)
        assert_error(r, 415, "unsupported_media_type")
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200


def raw_get(port, path):
    """GET with the path sent byte for byte (clients normalise '..')."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_saved_image_ids_are_checked(server):
    srv = server()
    bad = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
           "0123456789abcdef0123456789abcdef.gif", "0123456789ABCDEF0123456789ABCDEF.png",
           "0123456789abcdef0123456789abcde.png", "0123456789abcdef0123456789abcdef0.png",
           "0123456789abcdef0123456789abcdef", ".png", "", "x/../0123456789abcdef0123456789abcdef.png"]
    for name in bad:
        status, body = raw_get(srv.port, "/api/composites/" + name)
        assert status == 404, (name, status, body)
        assert b'"not_found"' in body
    # Well-formed but unknown.
    assert_error(requests.get(srv.url("/api/composites/%s.png" % ("ab" * 16)), timeout=10), 404, "not_found")
    assert_error(requests.get(srv.url("/api/composites/%s.jpg" % ("cd" * 16)), timeout=10), 404, "not_found")
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200


def test_saved_image_served_with_same_bytes(server):
    srv = server()
    scene, product = encode(gradient_scene()), encode(sample_product())
    for fmt, ext, ctype in (("png", "png", "image/png"), ("jpeg", "jpg", "image/jpeg")):
        r = post_composite(srv.base, scene, product, headers={"Accept": ctype}, format=fmt)
        assert r.status_code == 200, r.text
        cid = r.headers["X-Composite-Id"]
        g = requests.get(srv.url("/api/composites/%s.%s" % (cid, ext)), timeout=10)
        assert g.status_code == 200
        assert g.headers["Content-Type"] == ctype
        assert g.content == r.content
        # The other extension does not exist for this id.
        other = "jpg" if ext == "png" else "png"
        assert requests.get(srv.url("/api/composites/%s.%s" % (cid, other)), timeout=10).status_code == 404


def test_keep_alive(server):
    """Body-less requests keep the connection open (no 'Connection: close')."""
    srv = server()
    # The file from makefile() holds the socket open until it is closed too:
    # left open, the server's shutdown waits on this idle connection (~5 s).
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s, \
            s.makefile("rb") as f:
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = None
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "connection":
                    assert value.strip().lower() != "close"
                if name.lower() == "content-length":
                    length = int(value)
            assert b'"status": "ok"' in f.read(length)

"""Bad input on POST /api/composite: every case answers the right status and
JSON error, and the server stays healthy afterwards."""
import socket
import time

import pytest
import requests

from conftest import (assert_error, encode, gradient_scene, png_header_only, post_composite,
                      sample_product)

SCENE = encode(gradient_scene(64, 48))
PRODUCT = encode(sample_product(16, 8))


def healthy(srv):
    return requests.get(srv.url("/health"), timeout=10).status_code == 200


@pytest.fixture
def srv(server):
    return server({"MAX_UPLOAD_BYTES": "200000"})


def test_missing_fields(srv):
    assert_error(post_composite(srv.base, None, PRODUCT), 400, "bad_request")
    assert_error(post_composite(srv.base, SCENE, None), 400, "bad_request")
    assert_error(post_composite(srv.base, None, None, x="0.5"), 400, "bad_request")
    body = post_composite(srv.base, None, PRODUCT).json()
    assert "scene" in body["error"]["message"]
    assert healthy(srv)


def test_invalid_images(srv):
    for scene, product, culprit in ((b"not an image", PRODUCT, "scene"),
                                    (SCENE, b"GIF89a....", "product"),
                                    (SCENE[:40], PRODUCT, "scene"),       # truncated PNG
                                    (b"", PRODUCT, "scene")):
        body = assert_error(post_composite(srv.base, scene, product), 400, "invalid_image")
        assert culprit in body["error"]["message"]
    assert healthy(srv)


@pytest.mark.parametrize("field,value", [
    ("x", "abc"), ("x", "1.5"), ("x", "-0.1"), ("y", "2"), ("y", ""), ("x", "nan"),
    ("x", "inf"), ("x", "0x1p-1"), ("x", " 0.5"), ("x", "0.5abc"), ("scale", "0"),
    ("scale", "-1"), ("scale", "4.01"), ("scale", "big"), ("format", "gif"), ("format", "PNG "),
])
def test_invalid_parameters(srv, field, value):
    body = assert_error(post_composite(srv.base, SCENE, PRODUCT, **{field: value}), 400, "invalid_parameter")
    assert field in body["error"]["message"]
    assert healthy(srv)


def test_edge_parameters_are_accepted(srv):
    for fields in ({"x": "0", "y": "1"}, {"x": "1", "y": "0"}, {"scale": "4"}, {"scale": "0.001"},
                   {"x": "5e-1"}, {"format": "jpeg"}):
        r = post_composite(srv.base, SCENE, PRODUCT, **fields)
        assert r.status_code == 200, (fields, r.text)


def test_image_too_large_from_header(srv):
    huge = png_header_only(100000, 100000)
    body = assert_error(post_composite(srv.base, huge, PRODUCT), 413, "image_too_large")
    assert "scene" in body["error"]["message"]
    body = assert_error(post_composite(srv.base, SCENE, huge), 413, "image_too_large")
    assert "product" in body["error"]["message"]
    assert healthy(srv)


def test_image_over_max_image_pixels(server):
    srv = server({"MAX_IMAGE_PIXELS": "1000"})  # the 64x48 scene has 3072 pixels
    assert_error(post_composite(srv.base, SCENE, PRODUCT), 413, "image_too_large")
    assert healthy(srv)


def read_response(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def test_oversize_body_refused_before_it_is_sent(srv):
    """Content-Length over MAX_UPLOAD_BYTES: the 413 arrives although only a
    small part of the announced 50 MB was sent."""
    announced = 50 * 1000 * 1000
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(("POST /api/composite HTTP/1.1\r\nHost: t\r\n"
                   "Content-Type: multipart/form-data; boundary=xyz\r\n"
                   "Content-Length: %d\r\n\r\n" % announced).encode())
        try:
            s.sendall(b"--xyz\r\n" + b"a" * 16384)
        except OSError:
            pass
        data = read_response(s, 20)
        # The server does not wait for (or drain) the rest of the body: having
        # answered, it closes the connection although 49.98 MB are still due.
        s.settimeout(20)
        try:
            rest = s.recv(65536)
            while rest:
                data += rest
                rest = s.recv(65536)
            closed = True
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
    assert closed, "connection still open, waiting for the announced body"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:200]
    assert b'"payload_too_large"' in body
    assert healthy(srv)


def test_oversize_with_expect_continue_gets_413_not_100(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /api/composite HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 300000\r\n\r\n")
        data = read_response(s, 20)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert healthy(srv)


def test_oversize_chunked_body_counted_as_it_arrives(srv):
    """No Content-Length: bytes are counted as they arrive; a body somewhat over
    the limit is answered 413 (not buffered), and the server keeps serving."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /api/composite HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        payload = b"--xyz\r\nContent-Disposition: form-data; name=\"scene\"; filename=\"s.png\"\r\n\r\n"
        payload += b"\x00" * 300000
        for i in range(0, len(payload), 32768):
            part = payload[i:i + 32768]
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        s.sendall(b"0\r\n\r\n")
        data = read_response(s, 20)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b'"payload_too_large"' in data
    assert healthy(srv)


def test_endless_chunked_upload_is_cut(srv):
    """A client that keeps streaming far past the limit loses its connection
    instead of making the server read (or buffer) everything."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /api/composite HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        block = b"%x\r\n%s\r\n" % (65536, b"\x00" * 65536)
        cut = False
        deadline = time.time() + 60
        sent = 0
        while time.time() < deadline and sent < 64 * 1024 * 1024:
            try:
                s.sendall(block)
                sent += 65536
            except OSError:
                cut = True
                break
        assert cut, "server read %d bytes without cutting the connection" % sent
    assert sent < 16 * 1024 * 1024
    assert healthy(srv)


def test_malformed_multipart(srv):
    r = requests.post(srv.url("/api/composite"), data=b"garbage without boundaries",
                      headers={"Content-Type": "multipart/form-data; boundary=abc"}, timeout=10)
    assert_error(r, 400, "bad_request")
    r = requests.post(srv.url("/api/composite"), data=b"x",
                      headers={"Content-Type": "multipart/form-data"}, timeout=10)
    assert_error(r, 400, "bad_request")
    assert healthy(srv)


def test_errors_leave_no_files(srv):
    post_composite(srv.base, b"junk", PRODUCT)
    post_composite(srv.base, SCENE, PRODUCT, x="9")
    import os
    assert not os.path.exists(srv.output_dir) or os.listdir(srv.output_dir) == []

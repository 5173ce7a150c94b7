"""The HTTP edge (API.md "Hardening rules"): aborted uploads free their share
of MAX_BUFFERED_UPLOAD_BYTES at once, ambiguous framing is refused with one
answer and a closed connection, per-IP connection limit, header deadline,
dual-stack HOST=::, and the open-admin warning. Raw sockets, so that what the
server writes is seen byte for byte."""
import json
import re
import socket
import subprocess
import time

import pytest
import requests

from conftest import BIN, base_env, encode, gradient_scene, sample_product

SCENE = encode(gradient_scene(64, 48))
PRODUCT = encode(sample_product(16, 8))
BOUNDARY = b"edgeXboundary"


def read_all(sock, timeout=10.0):
    """Reads until the peer closes (returns (bytes, True)) or timeout passes
    without a byte (returns (bytes, False))."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True
        if not d:
            return out, True
        out += d


def parse_responses(data):
    """Splits a byte stream into HTTP responses framed by Content-Length.
    Returns (list of (status, headers dict lowercased, body), leftover bytes)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out, data


def raw_exchange(port, payload, timeout=10.0, family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.connect((host, port))
    try:
        s.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered (and closed) before the whole body was sent: read the answer
    data, closed = read_all(s, timeout)
    s.close()
    return data, closed


def multipart_head(content_length):
    return (b"POST /api/composite HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % content_length)


def multipart_body(filler):
    """A valid composite form plus an ignored field of filler bytes."""
    parts = []
    for name, data in ((b"scene", SCENE), (b"product", PRODUCT), (b"padding", b"z" * filler)):
        parts.append(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + name
                     + b"\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                     + data + b"\r\n")
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


# ==== Upload budget ====

BUDGET = 12 * 1000 * 1000


def test_aborted_uploads_give_their_budget_back_at_once(server):
    srv = server({"MAX_BUFFERED_UPLOAD_BYTES": str(BUDGET)})
    # 22 uploads announce 500 kB each and send part of it: 11 MB of the budget.
    held = []
    part = multipart_body(500000)
    for _ in range(22):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(multipart_head(500000) + part[:100000])
        held.append(s)
    time.sleep(0.5)

    # Another 2 MB does not fit: 503 server_busy with Retry-After, one answer.
    body = multipart_body(2000000)
    data, closed = raw_exchange(srv.port, multipart_head(len(body)))
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and rest == b"", data[:500]
    status, headers, payload = resps[0]
    assert status == 503, data[:500]
    assert json.loads(payload)["error"]["code"] == "server_busy"
    assert int(headers["retry-after"]) >= 1
    assert closed

    # The clients give up mid-body with a FIN (their sockets stay open, half
    # closed). Their share must come back at once, not after the 60 s idle
    # timeout: an upload needing nearly the whole budget is then accepted.
    # More body, then the FIN right behind it: libmicrohttpd 0.9.75 misses
    # some FINs that arrive while it is still reading a body.
    for s in held:
        s.sendall(part[100000:400000])
        s.shutdown(socket.SHUT_WR)
    big = multipart_body(BUDGET - 200000)
    deadline = time.time() + 15
    while True:
        data, _ = raw_exchange(srv.port, multipart_head(len(big)) + big, timeout=30)
        resps, _ = parse_responses(data)
        assert resps, data[:300]
        if resps[0][0] != 503 or time.time() > deadline:
            break
        time.sleep(0.25)
    assert resps[0][0] == 200, data[:500]  # still 503: the aborted uploads hold the budget
    assert json.loads(resps[0][2])["method"] == "pil"
    for s in held:
        s.close()


def test_chunked_upload_over_the_budget_is_503(server):
    srv = server({"MAX_BUFFERED_UPLOAD_BYTES": "2000000", "MAX_UPLOAD_BYTES": "20000000"})
    body = multipart_body(3000000)
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    head = (b"POST /api/composite HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    data, _ = raw_exchange(srv.port, head + chunked, timeout=30)
    resps, _ = parse_responses(data)
    assert len(resps) == 1, data[:500]
    assert resps[0][0] == 503 and json.loads(resps[0][2])["error"]["code"] == "server_busy"
    assert "retry-after" in resps[0][1]
    # The budget came back: a small upload passes.
    small = multipart_body(10)
    data, _ = raw_exchange(srv.port, multipart_head(len(small)) + small + b"", timeout=30)
    assert parse_responses(data)[0][0][0] == 200, data[:500]


@pytest.mark.parametrize("name, value", [
    ("MAX_BUFFERED_UPLOAD_BYTES", "lots"), ("MAX_BUFFERED_UPLOAD_BYTES", "0"),
    ("HEADER_TIMEOUT_SECONDS", "-1"), ("HEADER_TIMEOUT_SECONDS", "5s"),
    ("MAX_CONNECTIONS_PER_IP", "2x"), ("MAX_CONNECTIONS_PER_IP", "-3"),
])
def test_malformed_edge_variable_stops_serve(tmp_path, name, value):
    env = base_env({"PORT": "0", "LOGS_DIR": str(tmp_path / "logs"),
                    "OUTPUT_DIR": str(tmp_path / "out"), name: value})
    r = subprocess.run([BIN, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert name in r.stderr + r.stdout


# ==== Errors libmicrohttpd used to answer itself ====

STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/\d\.\d \d{3} ")


def one_json_response(data):
    """Exactly one well-formed response: one status line, Content-Length equal
    to the body, a JSON error body, nothing after it. Returns (status, headers, code)."""
    assert len(STATUS_LINE.findall(data)) == 1, data
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and rest == b"", data
    status, headers, body = resps[0]
    head, _, raw_body = data.partition(b"\r\n\r\n")
    assert int(headers["content-length"]) == len(raw_body) == len(body), data
    assert headers["content-type"] == "application/json", data
    err = json.loads(body)["error"]
    assert set(err) == {"code", "message"} and err["message"], body
    return status, headers, err["code"]


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"POST /api/scenes HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    (b"POST /api/scenes HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     413, "payload_too_large"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400, "bad_request"),
    (b"GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 505, "http_version_not_supported"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n", 431,
     "headers_too_large"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 16400 + b"\r\n\r\n", 431,
     "headers_too_large"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100))
     + b"\r\n", 431, "headers_too_large"),
], ids=["cl-negative", "cl-huge", "cl-junk", "http2", "huge-head", "head-over-16k",
        "101-header-lines"])
def test_malformed_heads_get_one_json_answer(server, request_bytes, status, code):
    srv = server()
    data, closed = raw_exchange(srv.port, request_bytes)
    got_status, headers, got_code = one_json_response(data)
    assert (got_status, got_code) == (status, code)
    assert headers.get("connection") == "close" and closed
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200


def head_at_the_limits(request_line, extra=b""):
    """A request head just inside the door's limits (16 KiB, 100 header lines):
    what the door passes, libmicrohttpd's 32 KiB connection memory must hold."""
    fixed = request_line + b"Host: t\r\n" + extra
    lines = 100 - 1 - extra.count(b"\r\n")
    room = 16 * 1024 - 200 - len(fixed)  # under the limit, whatever the body's framing
    per = room // lines - len(b"X-H00: \r\n")
    return fixed + b"".join(b"X-H%02d: %s\r\n" % (i, b"v" * per) for i in range(lines)) + b"\r\n"


def test_a_head_at_the_limits_is_served(server):
    srv = server()
    head = head_at_the_limits(b"GET /health HTTP/1.1\r\n", b"Connection: close\r\n")
    assert 15 * 1024 < len(head) < 16 * 1024 and head.count(b"\r\n") == 102, len(head)
    data, _ = raw_exchange(srv.port, head)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    # and an upload behind such a head: the body streams through the same memory
    body = multipart_body(100_000)
    head = head_at_the_limits(b"POST /api/composite HTTP/1.1\r\n",
                              b"Connection: close\r\nContent-Type: multipart/form-data; boundary="
                              + BOUNDARY + b"\r\nContent-Length: %d\r\n" % len(body))
    data, _ = raw_exchange(srv.port, head + body, timeout=30)
    resps, _ = parse_responses(data)
    assert len(resps) == 1, data[:300]
    status, _, answer = resps[0]
    assert status == 200 and json.loads(answer)["method"] == "pil", data[:300]


# ==== Request smuggling ====

SMUGGLED = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("framing, body", [
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    (b"Content-Length: 2\r\nContent-Length: 40\r\n", b"{}"),
    (b"Content-Length: 0\r\nContent-Length: 2\r\n", b"{}"),
    (b"Content-Length: 2\r\nContent-Length: 2x\r\n", b"{}"),
    (b"Transfer-Encoding: identity\r\n", b"{}"),
])
def test_ambiguous_framing_is_refused_and_closed(server, framing, body):
    srv = server()
    req = b"POST /api/scenes HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n" + body + SMUGGLED
    data, closed = raw_exchange(srv.port, req)
    assert closed, "connection left open: %r" % data[:300]
    resps, rest = parse_responses(data)
    assert len(STATUS_LINE.findall(data)) == 1, data  # the smuggled request got no answer
    assert len(resps) == 1 and rest == b"", data
    status, headers, payload = resps[0]
    assert status == 400
    assert headers.get("connection", "").lower() == "close"
    assert json.loads(payload)["error"]["code"] == "bad_request"


@pytest.mark.parametrize("framing, body", [
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    (b"Content-Length: 0\r\nContent-Length: 2\r\n", b"{}"),
    (b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
], ids=["cl-te", "two-cl", "te-list"])
def test_ambiguous_framing_on_a_keep_alive_request(server, framing, body):
    # The second request of a connection is read by libmicrohttpd directly;
    # the access handler refuses it.
    srv = server()
    req = (SMUGGLED + b"POST /api/scenes HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n" + body
           + SMUGGLED)
    data, closed = raw_exchange(srv.port, req)
    assert closed, data
    resps, rest = parse_responses(data)
    assert [r[0] for r in resps] == [200, 400] and rest == b"", data
    assert resps[1][1].get("connection", "").lower() == "close"
    assert json.loads(resps[1][2])["error"]["code"] == "bad_request"


def test_identical_content_length_twice_is_accepted(server):
    srv = server()
    req = (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")
    data, _ = raw_exchange(srv.port, req, timeout=2)
    resps, _ = parse_responses(data)
    assert resps and resps[0][0] == 200, data


# ==== Connections ====

def test_per_ip_connection_limit(server):
    srv = server({"MAX_CONNECTIONS_PER_IP": "2"})
    # conftest's readiness probe leaves no connection behind once closed; wait for it.
    time.sleep(0.5)
    a = socket.create_connection(("127.0.0.1", srv.port))
    b = socket.create_connection(("127.0.0.1", srv.port))
    time.sleep(0.3)
    c = socket.create_connection(("127.0.0.1", srv.port))
    c.sendall(SMUGGLED)
    data, closed = read_all(c, timeout=10)
    assert closed and data == b"", "third connection from one IP was served: %r" % data[:200]
    c.close()
    a.close()
    # Once one is closed, a new connection is served again.
    deadline = time.time() + 10
    while True:
        data, _ = raw_exchange(srv.port, SMUGGLED, timeout=3)
        if data.startswith(b"HTTP/1.1 200") or time.time() > deadline:
            break
        time.sleep(0.2)
    assert data.startswith(b"HTTP/1.1 200"), data
    b.close()


def test_header_deadline_closes_a_trickling_client(server):
    srv = server({"HEADER_TIMEOUT_SECONDS": "1"})
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    start = time.time()
    closed = False
    # One header line every 0.3 s: never idle long enough for the 60 s idle timeout.
    while time.time() - start < 20:
        try:
            s.sendall(b"X-Slow: %d\r\n" % int(time.time() * 1000))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        s.settimeout(0.3)
        try:
            if s.recv(4096) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
            break
    s.close()
    assert closed, "a client trickling headers for 20 s was not cut"
    assert "did not send its request headers" in srv.wait_log("HEADER_TIMEOUT_SECONDS")


def test_header_deadline_on_a_keep_alive_request(server):
    srv = server({"HEADER_TIMEOUT_SECONDS": "1"})
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(SMUGGLED)
    s.settimeout(10)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    start, closed = time.time(), False
    while time.time() - start < 20 and not closed:
        try:
            s.sendall(b"X-Slow: 1\r\n")
            s.settimeout(0.3)
            closed = s.recv(4096) == b""
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    s.close()
    assert closed, "a keep-alive client trickling its second request's headers was not cut"


def test_header_deadline_spares_idle_keep_alive(server):
    srv = server({"HEADER_TIMEOUT_SECONDS": "1"})
    s = socket.create_connection(("127.0.0.1", srv.port))
    for _ in range(2):
        s.sendall(SMUGGLED)
        s.settimeout(10)
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data
        time.sleep(2.5)  # idle between requests longer than the header deadline
    s.close()


# ==== HOST=:: and the admin warning ====

def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_host_any_ipv6_is_dual_stack_and_warns_about_open_admin(server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        srv = server({"HOST": "::"})  # the fixture probes /health on 127.0.0.1
    except RuntimeError as e:
        if "Address family not supported" in str(e):
            pytest.skip("IPv6 disabled in the kernel")
        raise
    assert requests.get("http://127.0.0.1:%d/health" % srv.port, timeout=10).status_code == 200
    if has_ipv6_loopback():
        data, _ = raw_exchange(srv.port, SMUGGLED, timeout=2, family=socket.AF_INET6, host="::1")
        assert data.startswith(b"HTTP/1.1 200"), data
    log = srv.wait_log("ADMIN_TOKEN is not set and HOST=:: is not a loopback address")
    assert "reverse proxy" in log


def test_no_open_admin_warning_with_a_token_or_on_loopback(server):
    srv = server({"ADMIN_TOKEN": "s3cret"})
    assert "ADMIN_TOKEN is not set" not in srv.log_text()
    srv = server()
    log = srv.wait_log("ADMIN_TOKEN is not set: the admin routes answer every loopback peer")
    assert "is not a loopback address" not in log

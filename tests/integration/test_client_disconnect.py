"""A client that disconnects loses its request and nothing else (API.md, Hardening
rules): its limiter slot comes back, its prediction is cancelled upstream, and the
server stays healthy. Issue 8: a client that closed while its Kontext prediction
ran leaked its slot for good (MHD never calls the handler again for a connection
whose peer is gone, and the slot was given back there).

Each path is driven with raw sockets, closed by FIN (close) or by RST
(SO_LINGER 0), against the fake Replicate."""
import socket
import struct
import threading
import time

import pytest
import requests

from conftest import encode, gradient_scene, sample_product

TOKEN = "r8_disconnect_5c1e"
DEADLINE = 30.0  # generous: "eventually", never a speed assertion


def kontext_env(fake, timeout=30, **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": str(timeout), "SC_REPLICATE_POLL_MS": "100",
        "MAX_CONCURRENT_KONTEXT": "20", "LOG_LEVEL": "debug",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def composite_request(srv):
    """The raw bytes of a Kontext composite POST (multipart, Content-Length)."""
    files = [("scene", ("scene.png", encode(gradient_scene(120, 80)), "image/png")),
             ("product", ("product.png", encode(sample_product(30, 20)), "image/png"))]
    req = requests.Request("POST", srv.url("/api/composite"), files=files).prepare()
    head = "POST /api/composite HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % srv.port
    head += "".join("%s: %s\r\n" % (k, v) for k, v in req.headers.items())
    return head.encode() + b"\r\n", req.body


def connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return s


def hang_up(sock, how):
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def metrics(srv):
    return requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()


def wait_for(pred, what, timeout=DEADLINE):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("%s: not reached within %.0fs (last: %r)" % (what, timeout, last))


def wait_creates(fake, n):
    return wait_for(lambda: fake.stats()["creates"] >= n, "fake saw %d create(s)" % n)


def cancelled_ids(fake):
    """Ids the fake got POST /predictions/{id}/cancel for."""
    out = set()
    for r in fake.stats()["requests"]:
        p = r["path"]
        if r["method"] == "POST" and p.endswith("/cancel"):
            out.add(p.rsplit("/", 2)[-2])
    return out


def assert_released(srv, fake):
    """Every slot back, every prediction over upstream with a cancel for the ones we
    stopped, and the server still answering."""
    wait_for(lambda: metrics(srv)["rate_limiter"]["in_flight"] == 0, "in_flight back to 0")
    wait_for(lambda: fake.stats()["inflight"] == 0, "no prediction running upstream")
    st = fake.stats()
    not_succeeded = {pid for pid, s in st["predictions"].items() if s != "succeeded"}
    assert not_succeeded <= cancelled_ids(fake), st["predictions"]
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200
    # nobody is waiting any more, so nobody got an answer or a fallback
    log = srv.log_text()
    assert "falling back to PIL" not in log
    return st


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("sync_create", [True, False], ids=["prefer-wait", "async"])
def test_disconnect_while_prediction_runs(server, fake, how, sync_create):
    """The issue's repro: slow predictions, clients gone after 0.5 s. With
    `Prefer: wait` the id is known only when the create answers (wait = timeout - 1
    = 4 s here), so the cancel comes then; in async mode at once."""
    fake.configure(mode="slow", honor_prefer=sync_create)
    srv = server(kontext_env(fake, timeout=5 if sync_create else 30))
    head, body = composite_request(srv)
    for rnd in range(2):
        socks = []
        for _ in range(5):
            s = connect(srv)
            s.sendall(head + body)
            socks.append(s)
        wait_creates(fake, 5 * (rnd + 1))
        time.sleep(0.5)
        for s in socks:
            hang_up(s, how)
        st = assert_released(srv, fake)
        assert st["creates"] == 5 * (rnd + 1)
        if not sync_create:
            # the cancels came from the disconnect, not from our 30 s deadline
            assert "deadline passed" not in srv.log_text()
    assert srv.log_text().count("client went away after") == 10
    assert "Kontext timeout" not in srv.log_text()
    # the slots really are free: a normal request goes through Kontext
    fake.configure(mode="ok")
    r = requests.post(srv.url("/api/composite"), data=body,
                      headers={"Content-Type": head.split(b"Content-Type: ")[1]
                               .split(b"\r\n")[0].decode()}, timeout=60)
    assert r.status_code == 200 and r.json()["method"] == "kontext", r.text


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_disconnect_during_upload(server, fake, how):
    """Before admission: half the body, then gone. Nothing is created, nothing held."""
    srv = server(kontext_env(fake))
    head, body = composite_request(srv)
    s = connect(srv)
    s.sendall(head + body[: len(body) // 2])
    time.sleep(0.3)
    hang_up(s, how)
    time.sleep(0.5)
    assert_released(srv, fake)
    assert fake.stats()["creates"] == 0
    assert metrics(srv)["total_requests"] == 0


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_disconnect_right_after_upload(server, fake, how):
    """Gone as soon as the body is sent: wherever the request is by then (decode,
    policy, limiter, create), it ends without a slot held or a prediction left."""
    fake.configure(mode="slow")
    srv = server(kontext_env(fake))
    head, body = composite_request(srv)
    for _ in range(4):
        s = connect(srv)
        s.sendall(head + body)
        hang_up(s, how)
    time.sleep(1.0)
    assert_released(srv, fake)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_disconnect_around_completion(server, fake, how):
    """Gone while the prediction finishes, its output downloads or the answer is
    being made: closes spread around the completion time. Whichever side of it
    each falls, no slot stays held and no prediction keeps running."""
    fake.configure(mode="ok", delay_ms=600)
    srv = server(kontext_env(fake))
    head, body = composite_request(srv)
    socks = []
    for i in range(8):
        s = connect(srv)
        s.sendall(head + body)
        socks.append((time.time() + 0.3 + 0.1 * i, s))
    for at, s in socks:
        time.sleep(max(0.0, at - time.time()))
        hang_up(s, how)
    assert_released(srv, fake)
    # and nothing more: a client that stays gets its Kontext answer
    s = connect(srv)
    s.sendall(head + body)
    s.settimeout(60)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got.startswith(b"HTTP/1.1 200"), got[:200]


def test_concurrent_disconnects_and_answers(server, fake):
    """Clients that leave mixed with clients that stay: the ones that stay get their
    Kontext answers, the slots of the ones that left come back."""
    fake.configure(mode="ok", delay_ms=1500)
    srv = server(kontext_env(fake))
    head, body = composite_request(srv)
    ctype = head.split(b"Content-Type: ")[1].split(b"\r\n")[0].decode()
    results = []

    def stay():
        r = requests.post(srv.url("/api/composite"), data=body,
                          headers={"Content-Type": ctype}, timeout=60)
        results.append((r.status_code, r.json().get("method")))

    threads = [threading.Thread(target=stay) for _ in range(3)]
    for t in threads:
        t.start()
    leavers = []
    for _ in range(3):
        s = connect(srv)
        s.sendall(head + body)
        leavers.append(s)
    time.sleep(0.5)
    for s in leavers:
        hang_up(s, "rst")
    for t in threads:
        t.join(60)
    assert results == [(200, "kontext")] * 3
    assert_released(srv, fake)

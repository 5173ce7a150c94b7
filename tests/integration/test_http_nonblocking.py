"""No server thread waits for Replicate: with MAX_CONCURRENT_KONTEXT predictions
hanging at the fake, /health, admin calls and PIL composites still answer at
once, and a graceful stop ends the hanging jobs and answers their requests with
the PIL fallback."""
import os
import sys
import threading
import time

import pytest
import requests

from conftest import encode, gradient_scene, post_composite, sample_product

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from tests.fake.harness import FakeReplicate  # noqa: E402

TOKEN = "r8_nonblocking_test"
# Generous: the machine is shared and the ASan build is slow; a blocked worker
# would instead wait for the 60 s Kontext deadline.
FAST = 10.0


@pytest.fixture
def fake():
    with FakeReplicate(token=TOKEN, mode="slow") as f:
        yield f


def test_hanging_predictions_block_nothing(server, fake):
    max_k = 5
    srv = server({
        "USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "60", "MAX_CONCURRENT_KONTEXT": str(max_k),
        "HTTP_THREADS": "2",  # fewer workers than hanging predictions
    })
    scene, product = encode(gradient_scene(64, 48)), encode(sample_product(16, 8))
    results = []

    def hang(i):
        r = post_composite(srv.base, scene, product, user_id="k%d" % i, timeout=120)
        results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=hang, args=(i,)) for i in range(max_k)]
    for t in threads:
        t.start()
    # All max_k requests admitted and suspended (the limiter holds their slots).
    deadline = time.time() + 30
    in_flight = 0
    while time.time() < deadline and in_flight < max_k:
        m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=FAST).json()
        in_flight = m["rate_limiter"]["in_flight"]
        time.sleep(0.05)
    assert in_flight == max_k
    assert fake.stats()["creates"] >= 1

    for _ in range(3):
        t0 = time.time()
        assert requests.get(srv.url("/health"), timeout=FAST).status_code == 200
        assert requests.get(srv.url("/api/admin/metrics/composite"), timeout=FAST).status_code == 200
        r = post_composite(srv.base, scene, product, timeout=FAST)
        assert r.status_code == 200
        body = r.json()
        # The limiter is full, so this one is served by PIL right away.
        assert body["method"] == "pil" and body["fallback_reason"] == "concurrency_limit"
        assert time.time() - t0 < FAST
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=FAST).json()
    assert m["rate_limiter"]["in_flight"] == max_k

    # Graceful stop: after the grace period the hanging jobs are ended by the
    # client (cancelled upstream when a prediction exists) and their requests
    # still get an answer (PIL fallback), then the process exits 0.
    assert srv.stop() == 0
    for t in threads:
        t.join(60)
    assert len(results) == max_k
    for status, body in results:
        assert status == 200, body
        assert body["method"] == "pil" and body["fallback"] is True


def test_client_gone_while_suspended(server, fake):
    """A client that disconnects while its Kontext job runs: the job's callback
    still finds a live context (refcount), the request ends cleanly, nothing
    leaks (the sanitizer build checks at exit). Since issue 8 the request is
    dropped at once (API.md, Hardening rules): no timeout, no fallback, slot back
    (tests/integration/test_client_disconnect.py covers every path)."""
    import socket
    import uuid
    srv = server({
        "USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "2",
    })
    scene, product = encode(gradient_scene(64, 48)), encode(sample_product(16, 8))
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in (("scene", scene), ("product", product)):
        body += (b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s.png\"\r\n"
                 b"Content-Type: image/png\r\n\r\n" % (boundary.encode(), name.encode(), name.encode()))
        body += data + b"\r\n"
    body += b"--%s--\r\n" % boundary.encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /api/composite HTTP/1.1\r\nHost: t\r\n"
                      b"Content-Type: multipart/form-data; boundary=%s\r\n"
                      b"Content-Length: %d\r\n\r\n" % (boundary.encode(), len(body)) + body)
            time.sleep(0.3)  # admitted and suspended; then the client goes away
    srv.wait_log("client went away after", timeout=60, count=3)
    deadline = time.time() + 60
    m = None
    while time.time() < deadline:
        m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=FAST).json()
        if m["rate_limiter"]["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert m["rate_limiter"]["in_flight"] == 0
    assert requests.get(srv.url("/health"), timeout=FAST).status_code == 200
    assert m["stats"]["kontext"]["timeouts"] == 0
    assert "falling back to PIL" not in srv.log_text()

"""Caps on POST /api/scenes (paid predictions with no local fallback):
SCENE_MAX_CONCURRENT, SCENE_MAX_PER_HOUR and SCENE_DAILY_LIMIT, end to end
against the fake Replicate. Over a cap the answer is 429 rate_limited with
Retry-After and nothing reaches Replicate; the slot comes back on every path
(success, failure, client gone); the hour and day counts survive a restart."""
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import BIN, assert_error, base_env, free_port

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from tests.fake.harness import FakeReplicate  # noqa: E402

TOKEN = "r8_sceneLimits_5b1e"


@pytest.fixture
def fake():
    with FakeReplicate(token=TOKEN, mode="ok", delay_ms=200) as f:
        yield f


def env(fake, **extra):
    e = {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
         "SCENE_TIMEOUT_SECONDS": "30", "SC_REPLICATE_POLL_MS": "100"}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def scene(srv, timeout=60):
    return requests.post(srv.url("/api/scenes"), json={"prompt": "a quiet beach"}, timeout=timeout)


def scene_metrics(srv):
    return requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()["scenes"]


def wait_idle(srv, timeout=30.0):
    """Waits until no scene slot is held (generous: predictions end on their own)."""
    deadline = time.time() + timeout
    m = scene_metrics(srv)
    while m["in_flight"] != 0 and time.time() < deadline:
        time.sleep(0.1)
        m = scene_metrics(srv)
    assert m["in_flight"] == 0, m
    return m


def assert_rate_limited(r):
    body = assert_error(r, 429, "rate_limited")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    return int(r.headers["Retry-After"]), body


def restart(server, srv, e):
    assert srv.stop() == 0
    return server(dict(e, LOGS_DIR=srv.env["LOGS_DIR"], OUTPUT_DIR=srv.env["OUTPUT_DIR"]))


def test_concurrent_scenes_are_capped(server, fake):
    # Each prediction takes 5 s, so the 20 requests released together all
    # arrive while the first admitted ones still run.
    fake.configure(delay_ms=5000)
    srv = server(env(fake, SCENE_MAX_CONCURRENT=3))
    barrier = threading.Barrier(20)
    results = [None] * 20

    def one(i):
        barrier.wait()
        try:
            results[i] = scene(srv)
        except requests.RequestException as e:  # recorded, asserted below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, requests.Response) for r in results), results
    ok = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code == 429]
    assert len(ok) + len(refused) == 20, [(r.status_code, r.text) for r in results]
    assert len(ok) >= 3 and len(refused) >= 1, (len(ok), len(refused))
    for r in refused:
        retry, body = assert_rate_limited(r)
        assert retry == 1, r.headers
        assert "at most 3 at once" in body["error"]["message"]
    stats = fake.stats()
    assert stats["max_inflight"] <= 3, stats["max_inflight"]
    assert stats["creates"] == len(ok)
    srv.wait_log("[Rate Limiter] Scene refused: concurrency_limit")
    m = wait_idle(srv)
    assert m["successes"] == len(ok) and m["max_concurrent"] == 3
    # every slot came back: a new scene is admitted
    fake.configure(delay_ms=200)
    assert scene(srv).status_code == 200


def test_slot_released_on_failure_and_when_the_client_is_gone(server, fake):
    srv = server(env(fake, SCENE_MAX_CONCURRENT=1))
    fake.configure(mode="failed")
    for _ in range(3):  # a failed prediction gives its slot back each time
        assert_error(scene(srv), 502, "upstream_error")
    wait_idle(srv)

    # the client goes away while its prediction runs, by FIN and by RST
    fake.configure(mode="ok", delay_ms=2000)
    body = b'{"prompt": "a quiet beach"}'
    req = (b"POST /api/scenes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for rst in (False, True):
        creates = fake.stats()["creates"]
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(req)
        deadline = time.time() + 20
        while fake.stats()["creates"] == creates and time.time() < deadline:
            time.sleep(0.05)
        assert fake.stats()["creates"] == creates + 1
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
        wait_idle(srv)
    fake.configure(delay_ms=200)
    assert scene(srv).status_code == 200
    assert fake.stats()["max_inflight"] <= 1


def test_hourly_cap_with_retry_after_and_restart(server, fake):
    e = env(fake, SCENE_MAX_PER_HOUR=2)
    srv = server(e)
    assert [scene(srv).status_code for _ in range(2)] == [200, 200]
    t0 = time.time()
    retry, body = assert_rate_limited(scene(srv))
    # the oldest start leaves the sliding hour about 3600 s after it was made
    assert 3500 <= retry <= 3602, retry
    assert "hourly" in body["error"]["message"]
    assert fake.stats()["creates"] == 2
    srv.wait_log("[Rate Limiter] Scene refused: hourly_limit (2/2 in the last hour)")
    assert scene_metrics(srv)["last_hour"] == 2

    again = restart(server, srv, e)
    retry2, _ = assert_rate_limited(scene(again))
    assert retry2 <= retry + 1 and retry2 >= retry - (time.time() - t0) - 2
    assert fake.stats()["creates"] == 2
    assert scene_metrics(again)["last_hour"] == 2


def test_daily_cap_with_retry_after_and_restart(server, fake):
    e = env(fake, SCENE_DAILY_LIMIT=2)
    srv = server(e)
    assert [scene(srv).status_code for _ in range(2)] == [200, 200]
    now = time.time()
    retry, body = assert_rate_limited(scene(srv))
    midnight = (int(now) // 86400 + 1) * 86400
    assert abs(retry - (midnight - now)) <= 3, (retry, midnight - now)
    assert "daily" in body["error"]["message"]
    srv.wait_log("[Rate Limiter] Scene refused: daily_limit (2/2 today, UTC)")
    assert scene_metrics(srv)["today"] == 2

    again = restart(server, srv, e)
    assert_rate_limited(scene(again))
    assert fake.stats()["creates"] == 2
    # the Kontext budget is separate: scenes never count against it
    m = requests.get(again.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["today_generations"] == 0 and m["scenes"]["today"] == 2
    prom = requests.get(again.url("/metrics"), timeout=10).text
    # every sample carries the instance label (docs/fleet.md)
    assert re.search(r'^scenecomp_scene_today\{instance="[^"]+"\} 2$', prom, re.M), prom


def test_refused_before_any_slot_is_taken(server, fake):
    # bad input never holds a slot, even with a cap of one
    srv = server(env(fake, SCENE_MAX_CONCURRENT=1, SCENE_DAILY_LIMIT=1))
    for _ in range(3):
        assert_error(requests.post(srv.url("/api/scenes"), json={"prompt": ""}, timeout=10),
                     400, "bad_request")
    assert scene(srv).status_code == 200
    assert_rate_limited(scene(srv))


@pytest.mark.parametrize("var,value", [("SCENE_MAX_CONCURRENT", "abc"),
                                       ("SCENE_MAX_PER_HOUR", "-1"),
                                       ("SCENE_DAILY_LIMIT", "1.5")])
def test_bad_scene_caps_stop_the_start(tmp_path, var, value):
    e = base_env({"HOST": "127.0.0.1", "PORT": free_port(), "LOGS_DIR": str(tmp_path / "logs"),
                  "OUTPUT_DIR": str(tmp_path / "out"), var: value})
    try:
        p = subprocess.run([BIN, "serve"], cwd=str(tmp_path), env=e, capture_output=True,
                           timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("serve started with %s=%s" % (var, value))
    assert p.returncode != 0
    assert var.encode() in p.stdout + p.stderr


def test_default_caps_are_shown(server, fake):
    srv = server(env(fake))
    m = scene_metrics(srv)
    assert (m["max_concurrent"], m["max_per_hour"], m["daily_limit"]) == (5, 100, 1000)


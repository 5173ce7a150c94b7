"""POST /api/scenes follows the hardening rules of Kontext composites (API.md):

- a client that disconnects (FIN or RST) while its scene prediction runs loses its
  request and nothing else: the scene slot comes back and the prediction is
  cancelled upstream at once (it used to run to its end, holding the slot);
- a client already gone before admission takes no slot and sends no create;
- a scene start is counted on disk before its create leaves (write-ahead), so a
  kill -9 crash loop never spends past SCENE_DAILY_LIMIT; when the count cannot be
  made durable, no create is sent and the answer is 503 service_unavailable.

Driven against the fake Replicate with raw sockets, like test_client_disconnect.py."""
import socket
import threading
import time

import pytest
import requests

from conftest import assert_error
from test_client_disconnect import cancelled_ids, hang_up, wait_for
from test_crash_recovery import _open_ids, _read, kill9

TOKEN = "r8_sceneDisconnect_7a3c"
BODY = b'{"prompt": "a quiet beach"}'


def scene_env(fake, timeout=120, **extra):
    env = {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
           "SCENE_TIMEOUT_SECONDS": str(timeout), "SC_REPLICATE_POLL_MS": "100",
           "LOG_LEVEL": "debug"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def scene_request(srv):
    return (b"POST /api/scenes HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (srv.port, len(BODY), BODY))


def scenes(srv):
    return requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()["scenes"]


def assert_scene_released(srv, fake):
    """No scene slot held, nothing running upstream, a cancel for every prediction
    that did not succeed, the server answering."""
    wait_for(lambda: scenes(srv)["in_flight"] == 0, "scene in_flight back to 0")
    wait_for(lambda: fake.stats()["inflight"] == 0, "no prediction running upstream")
    st = fake.stats()
    not_succeeded = {pid for pid, s in st["predictions"].items() if s != "succeeded"}
    assert not_succeeded <= cancelled_ids(fake), st["predictions"]
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200
    return st


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("sync_create", [True, False], ids=["prefer-wait", "async"])
def test_scene_disconnect_while_prediction_runs(server, fake, how, sync_create):
    """Slow scene predictions, clients gone 0.5 s after their creates reached the
    fake. With `Prefer: wait` (wait = timeout - 1 = 9 s) the id comes with the
    create's answer and the cancel right after it, before the 10 s deadline; in
    async mode at once. Either way it is the disconnect that cancels, not the
    deadline."""
    fake.configure(mode="slow", honor_prefer=sync_create)
    srv = server(scene_env(fake, timeout=10 if sync_create else 120, SCENE_MAX_CONCURRENT=3))
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(scene_request(srv))
        socks.append(s)
    wait_for(lambda: fake.stats()["creates"] >= 3, "fake saw 3 creates")
    assert scenes(srv)["in_flight"] == 3
    time.sleep(0.5)
    for s in socks:
        hang_up(s, how)
    st = assert_scene_released(srv, fake)
    assert st["creates"] == 3 and len(cancelled_ids(fake)) == 3, st
    wait_for(lambda: srv.log_text().count("[Scene] client went away after") == 3,
             "3 scenes logged as dropped")
    assert "deadline passed" not in srv.log_text()
    m = wait_for(lambda: (lambda m: m if m["failures"] == 3 else None)(scenes(srv)),
                 "3 scenes counted as failed")
    assert m["today"] == 3 and m["successes"] == 0, m
    # every slot really is free: three scenes at once are admitted and answered
    fake.configure(mode="ok", delay_ms=200)
    out = []
    threads = [threading.Thread(target=lambda: out.append(
        requests.post(srv.url("/api/scenes"), data=BODY, timeout=60).status_code))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [200, 200, 200]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_scene_client_gone_right_after_the_request(server, fake, how):
    """Gone as soon as the body is sent: wherever the scene is by then (admission,
    create), it ends with no slot held and no prediction left running; a client seen
    gone at admission takes no slot (the day count only holds creates made)."""
    fake.configure(mode="slow", honor_prefer=False)
    srv = server(scene_env(fake, SCENE_MAX_CONCURRENT=20))
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(scene_request(srv))
        hang_up(s, how)
    time.sleep(1.0)
    st = assert_scene_released(srv, fake)
    log = srv.log_text()
    gone_before = log.count("[Scene] client went away before the scene started")
    gone_after = log.count("[Scene] client went away after")
    # the day count holds the admitted ones; those seen gone before admission took
    # nothing (a client the server never saw at all is in neither count)
    assert scenes(srv)["today"] == gone_after, (scenes(srv), gone_before, gone_after)
    assert st["creates"] <= gone_after
    fake.configure(mode="ok", delay_ms=200)
    assert requests.post(srv.url("/api/scenes"), data=BODY, timeout=60).status_code == 200


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_scene_idempotency_key_client_gone(server, fake, how):
    """A keyed scene whose client went away while its prediction ran ends its record
    failed (client_gone): a repeat with the key gets that record, not 202 "processing"
    until the key expires, and no second create is sent."""
    fake.configure(mode="slow", honor_prefer=False)
    srv = server(scene_env(fake))
    key = b"Idempotency-Key: gone-%s\r\n" % how.encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(scene_request(srv).replace(b"\r\n\r\n", b"\r\n" + key + b"\r\n", 1))
    wait_for(lambda: fake.stats()["creates"] >= 1, "fake saw the create")
    time.sleep(0.3)
    hang_up(s, how)
    assert_scene_released(srv, fake)

    def repeat():
        r = requests.post(srv.url("/api/scenes"), data=BODY, timeout=60,
                          headers={"Content-Type": "application/json",
                                   "Idempotency-Key": "gone-" + how})
        return r if r.status_code != 202 else None

    r = wait_for(repeat, "the keyed scene's record is final")
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true", r.text
    rec = r.json()
    assert rec["status"] == "failed" and rec["error"]["code"] == "client_gone", rec
    assert fake.stats()["creates"] == 1


def test_scene_starts_survive_kill9(server, fake, tmp_path):
    """A crash loop with SCENE_DAILY_LIMIT=2, each process killed (-9) the moment
    its create reached the fake: milliseconds after the start was counted, well
    inside the metrics writer's 0.5 s debounce. The fake never sees a third create,
    and each start cancels what the previous process left running."""
    limit = 2
    fake.configure(mode="slow", honor_prefer=False)
    env = scene_env(fake, SCENE_DAILY_LIMIT=limit, LOGS_DIR=str(tmp_path / "logs"),
                    OUTPUT_DIR=str(tmp_path / "output"))
    journal = tmp_path / "logs" / "replicate_predictions.journal"
    for rnd in range(2 * limit):
        before = set(fake.stats()["predictions"])
        srv = server(env, check_exit=False)
        wait_for(lambda: before <= cancelled_ids(fake),
                 "round %d: cancels for the %d earlier prediction(s)" % (rnd, len(before)))
        answers = []

        def one():
            try:
                answers.append(requests.post(srv.url("/api/scenes"), data=BODY,
                                             timeout=120).status_code)
            except requests.RequestException:
                answers.append(None)  # the server died under it

        t = threading.Thread(target=one, daemon=True)
        t.start()
        end = time.time() + 30
        while len(fake.stats()["predictions"]) == len(before) and not answers:
            assert time.time() < end, "round %d: neither a create nor an answer" % rnd
            time.sleep(0.01)
        new = set(fake.stats()["predictions"]) - before
        # kill once the server knows the new id, so the next start can cancel it
        end = time.time() + 10
        while not new <= _open_ids(_read(journal)):
            assert time.time() < end, "round %d: id not journalled" % rnd
            time.sleep(0.005)
        kill9(srv)
        t.join(30)
        assert fake.stats()["creates"] <= limit, "round %d" % rnd
        if rnd >= limit:
            assert answers == [429], (rnd, answers)  # refused from the count on disk
    assert fake.stats()["creates"] == limit
    srv = server(env)
    wait_for(lambda: set(fake.stats()["predictions"]) <= cancelled_ids(fake),
             "the last orphan cancelled")
    assert scenes(srv)["today"] == limit
    assert_error(requests.post(srv.url("/api/scenes"), data=BODY, timeout=60), 429,
                 "rate_limited")
    wait_for(lambda: _open_ids(_read(journal)) == set(), "journal has no open id")


def test_scene_start_that_cannot_be_made_durable_is_not_sent(server, fake, tmp_path):
    """Write-ahead fails closed: no create, 503 service_unavailable, no slot held."""
    logs = tmp_path / "logs"
    # a directory where the metrics file goes: every save fails (root ignores modes)
    (logs / "composite_metrics.json").mkdir(parents=True)
    (logs / "composite_metrics.json" / "keep").write_text("x")
    srv = server(scene_env(fake, LOGS_DIR=str(logs), OUTPUT_DIR=str(tmp_path / "output"),
                           SCENE_MAX_CONCURRENT=1))
    # the slot came back: the second is refused the same way, not 429; a keyed one
    # gives its Idempotency-Key back too (its repeat is not 409 idempotency_in_progress)
    key = {"Idempotency-Key": "durable-7"}
    for headers in ({}, {}, key, key):
        body = assert_error(requests.post(srv.url("/api/scenes"), data=BODY, headers=headers,
                                          timeout=60),
                            503, "service_unavailable")
        assert "cannot persist" in body["error"]["message"], body
    assert fake.stats()["creates"] == 0
    assert scenes(srv)["in_flight"] == 0
    assert "[Scene] cannot persist the start count" in (logs / "backend.log").read_text()

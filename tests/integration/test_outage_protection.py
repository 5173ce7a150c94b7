"""Outage protection (API.md "Outage protection", issue 11) end to end against the
local fake Replicate: the circuit breaker's transitions through the fake's fault
modes (also with concurrent requests while half-open), the fallback reasons
circuit_open and budget_pacing counted, an outage drill, and large inputs through
the Files API with its cache."""
import datetime
import io
import math
import os
import random
import re
import subprocess
import sys
import threading
import time

import requests
from PIL import Image

from conftest import encode, gradient_scene, post_composite, sample_product

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import outage_drill  # noqa: E402  (bench/outage_drill.py: the drill bench.sh runs at full length)

TOKEN = "r8_outageSecret_77f0a1"
SANITIZED = os.environ.get("SC_SANITIZED") == "1"


def env_for(fake, **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true",
        "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "10",
        "SC_REPLICATE_POLL_MS": "50",
        "MAX_CONCURRENT_KONTEXT": "50",
        "MAX_KONTEXT_PER_HOUR": "100000",
        "KONTEXT_DAILY_GENERATION_LIMIT": "100000",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def policy(**breaker):
    if not breaker:
        return "return { use_kontext = true, method = 'kontext' }\n"
    keys = ", ".join("%s = %s" % kv for kv in sorted(breaker.items()))
    return "return { use_kontext = true, method = 'kontext', breaker = { %s } }\n" % keys


SCENE = encode(gradient_scene(64, 48))
PRODUCT = encode(sample_product(16, 8))


def compose(srv, scene=SCENE, product=PRODUCT, timeout=60):
    r = post_composite(srv.base, scene, product, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def metrics(srv):
    r = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def prom_value(srv, name):
    text = requests.get(srv.url("/metrics"), timeout=10).text
    # every sample carries instance="<INSTANCE_ID>" (docs/fleet.md)
    m = re.search(r'^%s\{instance="[^"]+"\} (\S+)$' % re.escape(name), text, re.M)
    assert m, text
    return float(m.group(1))


def creates(fake):
    return fake.stats()["creates"]


def wait_for(cond, timeout=20.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in %.0fs" % timeout)


def open_breaker(srv, fake, n):
    """n Kontext requests that fail upstream (prediction status failed)."""
    fake.configure(mode="failed", delay_ms=50)
    for _ in range(n):
        body = compose(srv)
        assert body["fallback_reason"] == "api_error", body


def test_breaker_opens_falls_back_without_prediction_then_closes(server, fake):
    srv = server(env_for(fake), files={"lua/policy.lua": policy(
        failure_rate=0.5, min_calls=3, window_seconds=30, open_seconds=1.5, half_open_calls=1)})
    m = metrics(srv)
    assert m["breaker"]["state"] == "closed" and m["breaker"]["calls"] == 0
    assert m["breaker"]["failure_rate"] is None
    assert prom_value(srv, "scenecomp_breaker_state") == 0

    open_breaker(srv, fake, 3)
    srv.wait_log("[Breaker] open")
    m = metrics(srv)
    assert m["breaker"]["state"] == "open", m["breaker"]
    assert m["breaker"]["calls"] == 3 and m["breaker"]["failure_rate"] == 1.0
    assert prom_value(srv, "scenecomp_breaker_state") == 1

    # open: at once to PIL, no prediction created
    before = creates(fake)
    t0 = time.time()
    body = compose(srv)
    assert body["method"] == "pil" and body["fallback_reason"] == "circuit_open", body
    assert time.time() - t0 < 5
    assert creates(fake) == before
    assert "Kontext failed: circuit_open" in srv.log_text()

    # the upstream recovers; after open_seconds a trial runs and closes it
    fake.configure(mode="ok", delay_ms=50)
    time.sleep(1.6)
    assert metrics(srv)["breaker"]["state"] == "half_open"
    assert prom_value(srv, "scenecomp_breaker_state") == 2
    body = compose(srv)
    assert body["method"] == "kontext", body
    srv.wait_log("[Breaker] half-open")
    srv.wait_log("[Breaker] closed")
    m = metrics(srv)
    assert m["breaker"]["state"] == "closed" and m["breaker"]["calls"] == 0
    assert m["fallback_reasons"]["circuit_open"] == 1
    assert m["fallback_reasons"]["api_error"] == 3
    assert compose(srv)["method"] == "kontext"


def test_half_open_failure_reopens(server, fake):
    srv = server(env_for(fake), files={"lua/policy.lua": policy(
        failure_rate=0.5, min_calls=2, window_seconds=30, open_seconds=1, half_open_calls=1)})
    open_breaker(srv, fake, 2)
    srv.wait_log("[Breaker] open", count=1)
    time.sleep(1.1)
    fake.configure(mode="http500", http500_target="create")  # still down
    body = compose(srv)
    assert body["fallback_reason"] == "api_error", body  # the trial
    srv.wait_log("[Breaker] open", count=2)
    assert metrics(srv)["breaker"]["state"] == "open"
    before = creates(fake) + fake.stats()["http500_sent"]
    assert compose(srv)["fallback_reason"] == "circuit_open"
    assert creates(fake) + fake.stats()["http500_sent"] == before


def test_half_open_trials_exact_under_concurrent_requests(server, fake):
    """12 requests at once while half-open with half_open_calls = 2: exactly two
    predictions are created, the other ten fall back with circuit_open."""
    srv = server(env_for(fake, HTTP_THREADS=16), files={"lua/policy.lua": policy(
        failure_rate=0.5, min_calls=2, window_seconds=30, open_seconds=1, half_open_calls=2)})
    open_breaker(srv, fake, 2)
    srv.wait_log("[Breaker] open")
    # slow successes: the trials are still running while the others arrive
    fake.configure(mode="ok", delay_ms=1500)
    time.sleep(1.1)
    before = creates(fake)
    results = []
    lock = threading.Lock()
    go = threading.Event()

    def one():
        go.wait()
        body = compose(srv)
        with lock:
            results.append(body)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    assert len(results) == 12
    methods = sorted((b["method"], b["fallback_reason"]) for b in results)
    kontext = [b for b in results if b["method"] == "kontext"]
    shed = [b for b in results if b["fallback_reason"] == "circuit_open"]
    # every request not admitted as a trial was shed; at most two trials
    assert len(kontext) + len(shed) == 12, methods
    assert creates(fake) - before == len(kontext)
    assert 1 <= len(kontext) <= 2, methods
    srv.wait_log("[Breaker] closed")
    assert metrics(srv)["breaker"]["state"] == "closed"


def test_breaker_disabled_by_env_and_policy_false(server, fake):
    srv = server(env_for(fake, BREAKER_ENABLED="false"), files={"lua/policy.lua": policy()})
    open_breaker(srv, fake, 6)
    m = metrics(srv)
    assert m["breaker"]["state"] == "closed" and m["fallback_reasons"]["circuit_open"] == 0
    st = requests.get(srv.url("/api/admin/policy"), timeout=10).json()
    assert st["effective"]["breaker"] is False, st
    # the policy turns it back on (and `breaker = false` in a phase turns it off)
    srv2 = server(env_for(fake, BREAKER_ENABLED="false"), files={"lua/policy.lua": (
        "return { use_kontext = true, method = 'kontext', phase = 'p',\n"
        "  breaker = { min_calls = 2, open_seconds = 60 },\n"
        "  phases = { p = { breaker = false } } }\n")})
    open_breaker(srv2, fake, 4)
    assert metrics(srv2)["fallback_reasons"]["circuit_open"] == 0


def test_policy_rejects_bad_breaker_and_pacing(server, fake, tmp_path):
    from conftest import BIN, base_env
    bad = [
        ("breaker = { failure_rate = 1.5 }", "breaker.failure_rate"),
        ("breaker = { min_calls = 0 }", "breaker.min_calls"),
        ("breaker = { window = 3 }", "unknown key 'window'"),
        ("breaker = 'off'", "key 'breaker' must be false or a table"),
        ("pacing = 'yes'", "key 'pacing' must be a boolean"),
        ("phase = 'a', phases = { a = { breaker = { open_seconds = -1 } } }",
         "phases.a: breaker.open_seconds"),
    ]
    for i, (text, msg) in enumerate(bad):
        path = tmp_path / ("bad%d.lua" % i)
        path.write_text("return { %s }\n" % text)
        r = subprocess.run([BIN, "check-policy", str(path)], cwd=tmp_path, env=base_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (text, r.stdout, r.stderr)
        assert msg in r.stderr, (text, r.stderr)
    good = tmp_path / "good.lua"
    good.write_text("return { breaker = { failure_rate = 1, min_calls = 1, window_seconds = 5, "
                    "open_seconds = 0.5, half_open_calls = 3 }, pacing = true }\n")
    r = subprocess.run([BIN, "check-policy", str(good)], cwd=tmp_path, env=base_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    srv = server(env_for(fake), files={"lua/policy.lua": policy(min_calls=2)})
    st = requests.get(srv.url("/api/admin/policy"), timeout=10).json()
    assert st["effective"]["breaker"] == {"failure_rate": 0.5, "min_calls": 2,
                                          "window_seconds": 60, "open_seconds": 30,
                                          "half_open_calls": 1}
    assert st["effective"]["pacing"] is False


# ==== budget pacing ====

def pacing_allowance(limit, t):
    sod = t % 86400
    return limit * sod / 86400.0 + max(1, math.ceil(limit / 20.0))


def test_pacing_holds_back_starts_over_the_pace(server, fake):
    limit = 20
    fake.configure(mode="ok", delay_ms=30)
    srv = server(env_for(fake, KONTEXT_BUDGET_PACING="true",
                         KONTEXT_DAILY_GENERATION_LIMIT=limit),
                 files={"lua/policy.lua": policy()})
    t0 = time.time()
    lo = math.ceil(pacing_allowance(limit, t0))  # starts k = 0.. with k < allowance
    n = lo + 2
    bodies = [compose(srv) for _ in range(n)]
    hi = math.ceil(pacing_allowance(limit, time.time()))
    started = sum(1 for b in bodies if b["method"] == "kontext")
    paced = [b for b in bodies if b["fallback_reason"] == "budget_pacing"]
    assert lo <= started <= hi, (started, lo, hi)
    assert started + len(paced) == n
    assert bodies[-1]["fallback_reason"] == "budget_pacing"
    m = metrics(srv)
    assert m["fallback_reasons"]["budget_pacing"] == len(paced)
    assert m["today_generations"] == started == creates(fake)
    st = requests.get(srv.url("/api/admin/policy"), timeout=10).json()
    assert st["effective"]["pacing"] is True


def test_pacing_off_by_policy(server, fake):
    fake.configure(mode="ok", delay_ms=30)
    srv = server(env_for(fake, KONTEXT_BUDGET_PACING="true", KONTEXT_DAILY_GENERATION_LIMIT=20),
                 files={"lua/policy.lua": "return { use_kontext = true, method = 'kontext', "
                                           "pacing = false }\n"})
    n = math.ceil(pacing_allowance(20, time.time())) + 2
    bodies = [compose(srv) for _ in range(n)]
    assert all(b["method"] == "kontext" for b in bodies), bodies


# ==== outage drill ====

def test_outage_drill(server, fake):
    """The fake fails 100 % (HTTP 500 everywhere) for OUTAGE_S, then recovers.
    No request fails; once the breaker opened, client latency stays small; after
    recovery the breaker closes and requests use Kontext again. The drill itself is
    bench/outage_drill.py (scripts/bench.sh runs it at full length);
    SC_DRILL_OUTAGE_S lengthens it here (default 15 s)."""
    outage_s = float(os.environ.get("SC_DRILL_OUTAGE_S", "15"))
    clients = 4
    ok = {"mode": "ok", "delay_ms": 100}
    fake.configure(**ok)
    srv = server(env_for(fake, KONTEXT_TIMEOUT_SECONDS=3, HTTP_THREADS=8),
                 files={"lua/policy.lua": policy(
                     failure_rate=0.5, min_calls=5, window_seconds=10, open_seconds=2,
                     half_open_calls=1)})
    assert compose(srv)["method"] == "kontext"
    d = outage_drill.run(srv.base, fake.root_url, SCENE, PRODUCT, outage_s=outage_s,
                         after_s=10.0, clients=clients, ok_config=ok)
    # Open means no upstream wait: well under KONTEXT_TIMEOUT_SECONDS (3). The
    # 1 s bound holds on an idle machine; sanitized builds and the parallel
    # suite (pytest -n, CPU shared with other workers) get the 3 s bound.
    loaded = SANITIZED or os.environ.get("PYTEST_XDIST_WORKER")
    open_p99_s = 3.0 if loaded else 1.0
    print("\n" + d.line(open_p99_s))
    assert not d.failed, d.failed[:5]
    assert d.t_open is not None, "the breaker never opened"
    assert d.during, "no request while the breaker was open"
    assert d.shed >= len(d.during) * 0.8, (d.shed, len(d.during))
    lat_during = [r[1] for r in d.during]
    assert outage_drill.p99(lat_during) < open_p99_s, sorted(lat_during)[-5:]
    # recovered: the breaker closed and the last requests went to Kontext
    assert d.final_state == "closed", d.states[-5:]
    assert d.tail_kontext(), d.after[-clients * 2:]
    assert d.met(open_p99_s)
    assert "[Breaker] closed" in srv.log_text()
    m = metrics(srv)
    assert m["breaker"]["state"] == "closed"
    assert m["fallback_reasons"]["circuit_open"] == sum(
        1 for r in d.records if r[4] == "circuit_open")


# ==== Files API ====

def noisy_product(w=400, h=400, seed=7):
    """An RGBA PNG that does not compress: its data URI is well over 256 KB."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGBA", (w, h), bytes(rnd.getrandbits(8) for _ in range(w * h * 4)))
    return encode(img)


def file_requests(fake, method="POST"):
    return [r for r in fake.stats()["requests"] if r["path"] == "/v1/files"
            and r["method"] == method]


def create_requests(fake):
    return [r for r in fake.stats()["requests"] if r["path"].endswith("/predictions")
            and r["method"] == "POST"]


def test_large_input_uploaded_once_and_passed_by_url(server, fake):
    fake.configure(mode="ok", delay_ms=50, check_inputs_decode=True)
    srv = server(env_for(fake), files={"lua/policy.lua": policy()})
    product = noisy_product()
    assert len(product) * 4 / 3 > 256 * 1024
    for i in range(3):
        scene = encode(gradient_scene(64 + i, 48))
        body = compose(srv, scene=scene, product=product)
        assert body["method"] == "kontext", body
    st = fake.stats()
    assert len(file_requests(fake)) == 1 and st["file_uploads"] == 1
    assert st["file_fetches"] == 3  # every prediction fetched the uploaded product
    (f,) = st["files"].values()
    assert f["name"].endswith(".png") and f["size"] > 192 * 1024
    # the creates carry a URL, not the bytes; the small scene stays inline
    for r in create_requests(fake):
        assert r["body_size"] < 64 * 1024, r
    assert "uploaded an input" in srv.log_text()


def test_large_input_uploaded_again_after_expiry(server, fake):
    """Reused while it lives, uploaded again once it expired. Each half is
    deterministic on a loaded host: the reuse runs with a lifetime no test
    outlasts, the expiry with a product uploaded under a 1 s lifetime and a
    sleep past it (the server stops reusing a tenth of the lifetime early)."""
    fake.configure(mode="ok", delay_ms=50, file_lifetime_s=3600)
    srv = server(env_for(fake), files={"lua/policy.lua": policy()})
    product = noisy_product(seed=11)
    assert compose(srv, product=product)["method"] == "kontext"
    assert compose(srv, product=product)["method"] == "kontext"
    assert fake.stats()["file_uploads"] == 1
    fake.configure(mode="ok", delay_ms=50, file_lifetime_s=1)
    short = noisy_product(seed=12)
    assert compose(srv, product=short)["method"] == "kontext"
    assert fake.stats()["file_uploads"] == 2
    time.sleep(1.1)  # past expires_at: the cached URL would fail the prediction
    assert compose(srv, product=short)["method"] == "kontext"
    assert fake.stats()["file_uploads"] == 3
    assert compose(srv, product=product)["method"] == "kontext"  # the long-lived one still reused
    assert fake.stats()["file_uploads"] == 3


def test_upload_failure_is_api_error_without_prediction(server, fake):
    fake.configure(mode="ok", delay_ms=50, files_mode="http500")
    srv = server(env_for(fake), files={"lua/policy.lua": policy(min_calls=100)})
    body = compose(srv, product=noisy_product(seed=3))
    assert body["method"] == "pil" and body["fallback_reason"] == "api_error", body
    assert creates(fake) == 0
    assert len(file_requests(fake)) >= 1
    assert metrics(srv)["breaker"]["calls"] == 1  # counted as a failure by the breaker


def test_uploads_in_flight_hold_no_compute_thread(server, fake):
    """Files API uploads run on the client's I/O thread: while more of them hang
    than there are compute threads, a request that needs no upload still gets its
    prediction created and answered; the hanging ones fall back with api_error
    once their timeout passes, and no prediction was created for them."""
    fake.configure(mode="ok", delay_ms=50, files_mode="hang")
    srv = server(env_for(fake, KONTEXT_TIMEOUT_SECONDS="6"),
                 files={"lua/policy.lua": policy(min_calls=100)})
    n = 2 * (os.cpu_count() or 2) + 2  # more than the compute threads (one per core)
    results = [None] * n

    def big(i):
        results[i] = compose(srv, product=noisy_product(seed=40 + i))

    threads = [threading.Thread(target=big, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: len(file_requests(fake)) >= n)  # every upload is in flight
    t0 = time.monotonic()
    body = compose(srv)  # small inputs: data URIs, no upload
    took = time.monotonic() - t0
    assert body["method"] == "kontext", body
    assert took < 5.0, took  # well before the hanging uploads time out (6 s)
    assert creates(fake) == 1
    for t in threads:
        t.join(60)
    for r in results:
        assert r and r["method"] == "pil" and r["fallback_reason"] == "api_error", r
    assert creates(fake) == 1


def test_trial_of_a_client_that_went_away_frees_its_slot(server, fake):
    """A half-open trial whose client disconnects is no outcome: the request ends
    as client gone, its ticket goes back at once (the trial slot is free) and the
    breaker stays half-open, neither re-opened (a failure) nor closed (a
    success); the next request gets the trial and closes it."""
    srv = server(env_for(fake), files={"lua/policy.lua": policy(
        failure_rate=0.5, min_calls=2, window_seconds=30, open_seconds=2, half_open_calls=1)})
    open_breaker(srv, fake, 2)
    srv.wait_log("[Breaker] open")
    fake.configure(mode="ok", delay_ms=5000)
    time.sleep(2.1)
    before = creates(fake)
    try:
        post_composite(srv.base, SCENE, PRODUCT, timeout=1.0)
        raise AssertionError("the request should have timed out on the client side")
    except requests.exceptions.Timeout:
        pass
    wait_for(lambda: creates(fake) == before + 1, timeout=10)  # admitted as the trial
    # the breaker's decision is made before this line is logged
    log = srv.wait_log("[Kontext Composite] client went away")
    assert log.count("[Breaker] half-open") == 1, log
    assert log.count("[Breaker] open") == 1, log  # not re-opened: no failure counted
    assert "[Breaker] closed" not in log, log  # no success counted either
    assert metrics(srv)["breaker"]["state"] == "half_open"
    # the slot is free: the next request is the trial, at once, and closes it
    fake.configure(delay_ms=50)
    body = compose(srv)
    assert body["method"] == "kontext", body
    srv.wait_log("[Breaker] closed")

"""A fleet of real scenecomp instances sharing one real redis-server
(LIMITS_STORE=redis) in front of the fake Replicate: caps hold fleet-wide
under a storm (max in flight, the hour and the day exact at the fake), the
fleet views (today_generations, rate_limiter, daily-generations, /api/admin/fleet,
instance label on /metrics), the slots of a kill -9'd instance come back
within 30 s, and a Redis outage mid-load fails no request, starts nothing
over a cap, shows degraded health and recovers without a restart."""
import os
import signal
import threading
import time

import pytest
import requests

from conftest import assert_error, encode, gradient_scene, post_composite, sample_product

TOKEN = "r8_fleetSecret_9a1d"
SANITIZED = os.environ.get("SC_SANITIZED") == "1"


def fleet_env(fake, redis, prefix="t:", **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true",
        "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "30",
        "SC_REPLICATE_POLL_MS": "100",
        "LIMITS_STORE": "redis",
        "REDIS_URL": redis.url,
        "REDIS_KEY_PREFIX": prefix,
        # A loaded test machine can miss the production 50 ms bound; only the
        # outage test runs with it (an unexpected limiter_unavailable would make
        # the exact-cap storms flaky, not wrong).
        "SC_REDIS_BUDGET_MS": "1000",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def images():
    return encode(gradient_scene(64, 48)), encode(sample_product(16, 8))


def start_fleet(server, fake, redis, n=3, **extra):
    return [server(fleet_env(fake, redis, INSTANCE_ID="inst-%d" % i, **extra)) for i in range(n)]


def storm(fleet, total, threads=12):
    """total composites spread over the fleet from `threads` clients; returns
    the list of (status, body or text)."""
    scene, product = images()
    out, lock = [], threading.Lock()
    counter = iter(range(total))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            srv = fleet[i % len(fleet)]
            try:
                r = post_composite(srv.base, scene, product, timeout=120, user_id="u%d" % i)
                res = (r.status_code, r.json() if r.status_code == 200 else r.text)
            except requests.RequestException as e:
                res = (0, repr(e))
            with lock:
                out.append(res)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def admin(srv, path):
    r = requests.get(srv.url(path), timeout=10)
    assert r.status_code == 200, r.text
    return r


def eventually(fn, timeout=15.0, step=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def test_storm_hour_cap_exact(server, fake, redis_server):
    """3 instances, 3 slots and 10 starts an hour for the whole fleet: the fake
    sees exactly 10 predictions, never more than 3 at once; every client gets a
    200; each instance reports the fleet's numbers."""
    fake.configure(mode="ok", delay_ms=400)
    fleet = start_fleet(server, fake, redis_server, MAX_CONCURRENT_KONTEXT=3,
                        MAX_KONTEXT_PER_HOUR=10, KONTEXT_DAILY_GENERATION_LIMIT=1000)
    results = []
    for _ in range(6):  # waves until the hour is used up (concurrency refuses many)
        results += storm(fleet, 24)
        if fake.stats()["creates"] >= 10:
            break
    assert all(st == 200 for st, _ in results), [r for r in results if r[0] != 200][:3]
    st = fake.stats()
    assert st["creates"] == 10, st["creates"]
    assert st["max_inflight"] <= 3, st["max_inflight"]
    reasons = {b["fallback_reason"] for _, b in results if b["fallback"]}
    assert "hourly_limit" in reasons, reasons
    assert reasons <= {"hourly_limit", "concurrency_limit"}, reasons
    kontext = sum(1 for _, b in results if b["method"] == "kontext")
    assert kontext == 10
    for srv in fleet:  # fleet-wide numbers on every instance (views refresh every second)
        def fleet_numbers():
            m = admin(srv, "/api/admin/metrics/composite").json()
            return m["today_generations"] == 10 and m["rate_limiter"]["last_hour"] == 10 \
                and m["rate_limiter"]["in_flight"] == 0 and m
        m = eventually(fleet_numbers)
        assert m, admin(srv, "/api/admin/metrics/composite").json()
        assert m["rate_limiter"]["max_per_hour"] == 10
        d = admin(srv, "/api/admin/metrics/daily-generations?days=2").json()
        assert d["today_generations"] == 10 and d["daily"][-1]["kontext"] == 10, d
        # stats stay per instance: their sum is the fleet's
    assert sum(admin(s, "/api/admin/metrics/composite").json()["stats"]["kontext"]["attempts"]
               for s in fleet) == 10


def test_storm_day_cap_exact_and_fleet_views(server, fake, redis_server):
    fake.configure(mode="ok", delay_ms=300)
    fleet = start_fleet(server, fake, redis_server, MAX_CONCURRENT_KONTEXT=4,
                        MAX_KONTEXT_PER_HOUR=1000, KONTEXT_DAILY_GENERATION_LIMIT=7)
    results = []
    for _ in range(6):
        results += storm(fleet, 24)
        if fake.stats()["creates"] >= 7:
            break
    assert all(st == 200 for st, _ in results)
    st = fake.stats()
    assert st["creates"] == 7 and st["max_inflight"] <= 4, (st["creates"], st["max_inflight"])
    assert any(b["fallback_reason"] == "daily_limit" for _, b in results)

    # GET /api/admin/fleet: every instance, from its heartbeat
    def all_three():  # (a heartbeat sent while the policy loaded shows version 0,
        # one sent while the storm's last request was in flight shows it: under
        # load the next heartbeat may lag the answers)
        body = admin(fleet[0], "/api/admin/fleet").json()
        return (len(body["instances"]) == 3
                and all(i["policy_version"] >= 1 and i["in_flight"] == 0
                        for i in body["instances"]) and body)
    body = eventually(all_three)
    assert body, admin(fleet[0], "/api/admin/fleet").json()
    assert sorted(i["id"] for i in body["instances"]) == ["inst-0", "inst-1", "inst-2"]
    for inst in body["instances"]:
        assert set(inst) >= {"id", "started_at", "last_seen", "policy_version", "in_flight",
                             "version"}
        assert inst["in_flight"] == 0 and inst["policy_version"] >= 1
    # /metrics: every sample names its instance
    text = admin(fleet[1], "/metrics").text
    samples = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert samples and all('instance="inst-1"' in l for l in samples), samples[:3]
    # a stopped instance leaves the fleet view
    fleet[2].stop()
    assert eventually(lambda: len(admin(fleet[0], "/api/admin/fleet").json()["instances"]) == 2)


@pytest.mark.skipif(SANITIZED, reason="timing of lease expiry under ASan")
def test_kill9_frees_slots_within_30s(server, fake, redis_server):
    """An instance killed while holding every slot: the others fall back with
    concurrency_limit at first, and get Kontext again within 30 s."""
    fake.configure(mode="slow")
    a = server(fleet_env(fake, redis_server, INSTANCE_ID="doomed", MAX_CONCURRENT_KONTEXT=2,
                         KONTEXT_TIMEOUT_SECONDS=300), check_exit=False)
    b = server(fleet_env(fake, redis_server, INSTANCE_ID="survivor", MAX_CONCURRENT_KONTEXT=2,
                         KONTEXT_TIMEOUT_SECONDS=300))
    scene, product = images()

    def hold():
        try:
            post_composite(a.base, scene, product, timeout=300)
        except requests.RequestException:
            pass  # the instance dies under it

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(2)]
    for t in holders:
        t.start()
    assert eventually(lambda: fake.stats()["creates"] >= 2, timeout=20)
    r = post_composite(b.base, scene, product)
    assert r.status_code == 200 and r.json()["fallback_reason"] == "concurrency_limit", r.text
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed = time.time()
    fake.configure(mode="ok", delay_ms=100)
    got = None
    while time.time() - killed < 40:
        r = post_composite(b.base, scene, product)
        assert r.status_code == 200, r.text
        if r.json()["method"] == "kontext":
            got = time.time() - killed
            break
        assert r.json()["fallback_reason"] == "concurrency_limit"
        time.sleep(0.5)
    assert got is not None and got < 30, got


def test_redis_outage_mid_load(server, fake, redis_server):
    """Redis stopped and started again while 3 instances are under load: no
    client error, no start over a cap, limiter_unavailable fallbacks, health
    degraded, the two log phrases, and Kontext again after recovery."""
    fake.configure(mode="ok", delay_ms=200)
    fleet = start_fleet(server, fake, redis_server, MAX_CONCURRENT_KONTEXT=2,
                        MAX_KONTEXT_PER_HOUR=1000, KONTEXT_DAILY_GENERATION_LIMIT=40,
                        SC_REDIS_BUDGET_MS="")  # the production bound
    scene, product = images()
    stop = threading.Event()
    results, lock = [], threading.Lock()

    def worker(i):
        n = 0
        while not stop.is_set():
            srv = fleet[(i + n) % 3]
            n += 1
            t0 = time.time()
            try:
                r = post_composite(srv.base, scene, product, timeout=60)
                res = (r.status_code, r.json() if r.status_code == 200 else r.text, time.time(), t0)
            except requests.RequestException as e:
                res = (0, repr(e), time.time(), t0)
            with lock:
                results.append(res)
            time.sleep(0.05)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    try:
        time.sleep(2)
        redis_server.stop()
        down_at = time.time()
        # health: degraded on every instance while Redis is away
        for srv in fleet:
            h = eventually(lambda: (admin(srv, "/api/admin/metrics/health").json()
                                    if admin(srv, "/api/admin/metrics/health").json()["status"]
                                    == "degraded" else None), timeout=10)
            assert h and h["limits_store"] == "unavailable", h
        time.sleep(2)
        redis_server.start()
        up_at = time.time()
        # recovery without restart: Kontext answers again
        def kontext_again():
            with lock:
                return any(b["method"] == "kontext" for st, b, t, _ in results
                           if st == 200 and t > up_at + 0.5)
        assert eventually(kontext_again, timeout=30)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert all(st == 200 for st, _, _, _ in results), [r for r in results if r[0] != 200][:3]
    # started while Redis was stopped, finished before it was back: never Kontext
    during = [b for st, b, t, t0 in results if t0 > down_at and t < up_at]
    assert during
    assert all(b["method"] == "pil" for b in during), during[:3]
    assert any(b["fallback_reason"] == "limiter_unavailable" for b in during), during[:3]
    st = fake.stats()
    assert st["max_inflight"] <= 2, st["max_inflight"]
    assert st["creates"] <= 40
    for srv in fleet:
        log = srv.wait_log("[Limits] store available again", timeout=15)
        # Once per outage, not per request: a loaded machine can add a second
        # short outage after the restart (a reply over the 50 ms bound is one).
        down, back = (log.count("[Limits] store unavailable"),
                      log.count("[Limits] store available again"))
        assert 1 <= down <= 3 and back == down, \
            "\n".join(l for l in log.splitlines() if "[Limits]" in l)
        assert log.count("limiter_unavailable") > down
        assert eventually(lambda: admin(srv, "/api/admin/metrics/health").json()["status"]
                          == "healthy", timeout=10)
    m = admin(fleet[0], "/api/admin/metrics/composite").json()
    assert m["fallback_reasons"]["limiter_unavailable"] >= 1


def test_scene_caps_fleet_wide(server, fake, redis_server):
    """The scene limiter's store is Redis too: SCENE_DAILY_LIMIT=3 over two
    instances lets three scenes through in all, then both answer 429 with
    Retry-After; with Redis down a scene (no local fallback) is 503
    service_unavailable and reaches no model."""
    fleet = start_fleet(server, fake, redis_server, n=2, SCENE_DAILY_LIMIT=3)
    body = {"prompt": "a quiet beach"}
    for i in range(3):
        r = requests.post(fleet[i % 2].url("/api/scenes"), json=body, timeout=60)
        assert r.status_code == 200, (i, r.text)
    for srv in fleet:
        r = requests.post(srv.url("/api/scenes"), json=body, timeout=60)
        assert_error(r, 429, "rate_limited")
        assert r.headers.get("Retry-After", "").isdigit(), r.headers
    creates = len(fake.stats()["predictions"])
    redis_server.stop()
    r = requests.post(fleet[0].url("/api/scenes"), json=body, timeout=60)
    assert_error(r, 503, "service_unavailable")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    assert len(fake.stats()["predictions"]) == creates


def test_memory_store_fleet_is_this_instance(server):
    srv = server({"INSTANCE_ID": "solo-1"})
    body = admin(srv, "/api/admin/fleet").json()
    assert [i["id"] for i in body["instances"]] == ["solo-1"]
    inst = body["instances"][0]
    assert inst["in_flight"] == 0 and isinstance(inst["version"], str)
    h = admin(srv, "/api/admin/metrics/health").json()
    assert h == {"status": "healthy", "alerts": []}
    text = admin(srv, "/metrics").text
    assert 'scenecomp_composite_requests_total{instance="solo-1"} 0' in text


def test_redis_unreachable_at_start(server, tmp_path):
    """Redis down from the start: serve starts, Kontext requests fall back with
    limiter_unavailable (never a 5xx), health is degraded."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = server({"LIMITS_STORE": "redis", "REDIS_URL": "redis://127.0.0.1:%d/0" % port,
                  "USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
                  "REPLICATE_API_TOKEN": TOKEN})
    scene, product = images()
    r = post_composite(srv.base, scene, product)
    assert r.status_code == 200, r.text
    assert r.json()["fallback_reason"] == "limiter_unavailable"
    assert admin(srv, "/api/admin/metrics/health").json()["status"] == "degraded"
    assert srv.log_text().count("[Limits] store unavailable") == 1


def test_bad_fleet_config_refused(server, tmp_path):
    from conftest import BIN, base_env
    import subprocess
    for env, word in [({"LIMITS_STORE": "etcd"}, "LIMITS_STORE"),
                      ({"LIMITS_STORE": "redis", "REDIS_URL": "redis://h:notaport/0"}, "port"),
                      ({"REDIS_URL": "http://x"}, "REDIS_URL"),
                      ({"POLICY_SOURCE": "consul"}, "POLICY_SOURCE")]:
        e = base_env(dict(env, PORT="0", LOGS_DIR=str(tmp_path / "l"),
                          OUTPUT_DIR=str(tmp_path / "o")))
        p = subprocess.run([BIN, "serve"], env=e, cwd=str(tmp_path), capture_output=True,
                           timeout=20)
        assert p.returncode != 0
        assert word in (p.stderr + p.stdout).decode(), (env, p.stderr)


def test_fleet_script_smoke(tmp_path):
    """scripts/fleet.sh --smoke: redis-server, 3 instances and nginx come up,
    /api/admin/fleet through nginx lists all three, and everything stops."""
    import subprocess
    from conftest import BIN, ROOT, base_env
    env = base_env({"SCENECOMP_BIN": BIN, "FLEET_CLEAN": "1"})
    p = subprocess.run([os.path.join(ROOT, "scripts", "fleet.sh"), "--smoke"], env=env,
                       cwd=ROOT, capture_output=True, timeout=120)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out
    assert "smoke: /api/admin/fleet lists 3 of 3 instances" in out, out
    assert "fleet stopped" in out

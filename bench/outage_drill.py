#!/usr/bin/python3
"""The outage drill (issue 11), shared by scripts/bench.sh (full length) and
tests/integration/test_outage_protection.py::test_outage_drill (short).

Against a running `scenecomp serve` routed to Kontext and the local fake Replicate
(tests/fake/fake_replicate.py): steady load from CLIENTS closed-loop clients
(POST /api/composite, JSON answer) throughout; the fake fails 100 % of Kontext
work (default: HTTP 500 on every create, get and download) for OUTAGE_S seconds,
then recovers (back to the OK config) for AFTER_S seconds. A sampler polls
/api/admin/metrics/composite every 0.25 s for the breaker state.

    outage_drill.py --port P --fake-port F --scene S --product P
                    [--outage-s 60] [--after-s 45] [--lead-s 5] [--clients 4]
                    [--delay-ms 1000]

prints one line (seconds are from the start of the outage, latencies are client
side, in ms):

  drill outage_s=… requests=… failed=… opened_s=… breaker_open_s=…
    before_open=… before_open_p99_ms=… open=… open_p99_ms=… open_max_ms=…
    circuit_open=… after=… after_p99_ms=… after_kontext=… closed=yes|no
    closed_after_recovery_s=… target_open_p99_ms=<1000 met=yes|no

opened_s = the first circuit_open answer; breaker_open_s = the sampler first saw
state open. open = requests started between opened_s and the recovery. closed =
the breaker was closed at the end and the last 2 x CLIENTS requests used Kontext.
met = no failed request, opened, open p99 < 1 s, closed. Exit status 0 when met.
"""

import argparse
import json
import math
import threading
import time
import urllib.request

import requests

FAULT = {"mode": "http500", "http500_target": "all", "http500_count": -1}


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(math.ceil(0.99 * len(v))) - 1)] if v else float("nan")


def fake_config(fake_root, cfg):
    req = urllib.request.Request(fake_root + "/_control/config", data=json.dumps(cfg).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def breaker_state(base):
    try:
        r = requests.get(base + "/api/admin/metrics/composite", timeout=10)
        return r.json()["breaker"]["state"] if r.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def post(base, scene, product, timeout=60):
    files = [("scene", ("scene.jpg", scene, "application/octet-stream")),
             ("product", ("product.png", product, "application/octet-stream"))]
    return requests.post(base + "/api/composite", files=files, timeout=timeout)


class Drill:
    """The outcome: records (t_start, latency_s, status, method, fallback_reason),
    breaker samples (t, state) and the phase times."""

    def __init__(self, records, states, t_outage, t_recover, t_end, clients):
        self.records = sorted(records)
        self.states = states
        self.t_outage, self.t_recover, self.t_end = t_outage, t_recover, t_end
        self.clients = clients
        self.failed = [r for r in self.records if r[2] != 200]
        opened = [r[0] + r[1] for r in self.records if r[4] == "circuit_open"]
        self.t_open = min(opened) if opened else None  # the first circuit_open answer
        seen = [t for t, s in states if s == "open" and t >= t_outage]
        self.t_breaker_open = min(seen) if seen else None
        self.before_open = [r for r in self.records
                            if t_outage <= r[0] < (self.t_open or t_recover)]
        self.during = ([r for r in self.records if self.t_open <= r[0] < t_recover]
                       if self.t_open else [])
        self.after = [r for r in self.records if r[0] >= t_recover]
        self.shed = sum(1 for r in self.during if r[4] == "circuit_open")
        closed = [t for t, s in states if s == "closed" and t >= t_recover
                  and self.t_breaker_open is not None]
        self.t_closed = min(closed) if closed else None
        self.final_state = states[-1][1] if states else None

    def tail_kontext(self):
        tail = self.after[-self.clients * 2:]
        return bool(tail) and all(r[3] == "kontext" for r in tail)

    def closed(self):
        return self.final_state == "closed" and self.tail_kontext()

    def met(self, open_p99_s=1.0):
        lat = [r[1] for r in self.during]
        return (not self.failed and self.t_open is not None and bool(lat)
                and p99(lat) < open_p99_s and self.closed())

    def line(self, open_p99_s=1.0):
        def ms(v):
            return "nan" if v != v else "%.1f" % (v * 1000)

        def rel(t, t0):
            return "%.2f" % (t - t0) if t is not None else "never"

        lat_during = [r[1] for r in self.during]
        return ("drill outage_s=%.0f requests=%d failed=%d opened_s=%s breaker_open_s=%s "
                "before_open=%d before_open_p99_ms=%s open=%d open_p99_ms=%s open_max_ms=%s "
                "circuit_open=%d after=%d after_p99_ms=%s after_kontext=%d closed=%s "
                "closed_after_recovery_s=%s target_open_p99_ms=<%.0f met=%s"
                % (self.t_recover - self.t_outage, len(self.records), len(self.failed),
                   rel(self.t_open, self.t_outage), rel(self.t_breaker_open, self.t_outage),
                   len(self.before_open), ms(p99([r[1] for r in self.before_open])),
                   len(self.during), ms(p99(lat_during)),
                   ms(max(lat_during)) if lat_during else "nan", self.shed, len(self.after),
                   ms(p99([r[1] for r in self.after])),
                   sum(1 for r in self.after if r[3] == "kontext"),
                   "yes" if self.closed() else "no", rel(self.t_closed, self.t_recover),
                   open_p99_s * 1000, "yes" if self.met(open_p99_s) else "no"))


def run(base, fake_root, scene, product, outage_s, after_s, clients=4, lead_s=0.0,
        ok_config=None, fault=None, settle_s=10.0):
    """Runs the drill; scene and product are bytes. ok_config is the fake's config
    before and after the outage. After AFTER_S the clients stop; the sampler then
    waits up to settle_s for the breaker to close. Returns a Drill."""
    ok_config = dict(ok_config or {"mode": "ok"})
    records, states = [], []
    lock = threading.Lock()
    stop, stop_sampler = threading.Event(), threading.Event()

    def client():
        while not stop.is_set():
            t = time.time()
            try:
                r = post(base, scene, product)
                code = r.status_code
                body = r.json() if code == 200 else {}
            except (requests.RequestException, ValueError) as e:
                code, body = "io:%s" % type(e).__name__, {}
            lat = time.time() - t
            with lock:
                records.append((t, lat, code, body.get("method"), body.get("fallback_reason")))

    def sampler():
        while not stop_sampler.is_set():
            s = breaker_state(base)
            with lock:
                states.append((time.time(), s))
            stop_sampler.wait(0.25)

    fake_config(fake_root, ok_config)
    samp = threading.Thread(target=sampler)
    samp.start()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    time.sleep(lead_s)
    t_outage = time.time()
    fake_config(fake_root, dict(fault or FAULT))
    time.sleep(outage_s)
    t_recover = time.time()
    fake_config(fake_root, ok_config)
    time.sleep(after_s)
    stop.set()
    for th in threads:
        th.join(120)
    t_end = time.time()
    deadline = t_end + settle_s
    while time.time() < deadline:
        with lock:
            last = states[-1][1] if states else None
        if last == "closed":
            break
        time.sleep(0.1)
    time.sleep(0.3)  # one more sample after the clients stopped
    stop_sampler.set()
    samp.join(30)
    return Drill(records, states, t_outage, t_recover, t_end, clients)


def main():
    ap = argparse.ArgumentParser(description="the outage drill against a running server + fake")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fake-port", type=int, required=True)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--product", required=True)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--after-s", type=float, default=45.0)
    ap.add_argument("--lead-s", type=float, default=5.0, help="steady load before the outage")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--delay-ms", type=int, default=1000, help="the fake's model time when up")
    a = ap.parse_args()
    with open(a.scene, "rb") as f:
        scene = f.read()
    with open(a.product, "rb") as f:
        product = f.read()
    d = run("http://127.0.0.1:%d" % a.port, "http://127.0.0.1:%d" % a.fake_port, scene, product,
            a.outage_s, a.after_s, a.clients, a.lead_s,
            ok_config={"mode": "ok", "delay_ms": a.delay_ms})
    print(d.line(), flush=True)
    kinds = {}
    for r in d.failed:
        kinds[str(r[2])] = kinds.get(str(r[2]), 0) + 1
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
        print("#   failed: %d x %s" % (v, k), flush=True)
    return 0 if d.met() else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Asynchronous composites, records, the decision log, webhooks, idempotency
keys and the policy preview (API.md "Asynchronous composites, records,
webhooks" and "Decision log and policy preview"), against the real server and
the local fake Replicate."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import threading
import time

import pytest
import requests

from conftest import assert_error, encode, gradient_scene, post_composite, sample_product

TOKEN = "r8_asyncRecords_7c1e"
SECRET = "test-webhook-secret-1"
RECORD_KEYS = {"id", "status", "created_at", "completed_at", "method", "requested_method",
               "fallback", "fallback_reason", "keying", "decision", "prediction_id", "durations",
               "estimated_cost_usd", "width", "height", "format", "image_url", "error"}


def kontext_env(fake, **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true",
        "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "30",
        "SC_REPLICATE_POLL_MS": "100",
        "KONTEXT_PRICE_USD": "0.08",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def images(w=200, h=100):
    return encode(gradient_scene(w, h)), encode(sample_product(40, 20))


def wait_record(srv, rid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = requests.get(srv.url("/api/composites/" + rid), timeout=10)
        assert r.status_code == 200, r.text
        rec = r.json()
        if rec["status"] != "processing":
            return rec
        time.sleep(0.1)
    raise AssertionError("record %s still processing" % rid)


def decisions_file(srv):
    with open(os.path.join(srv.logs_dir, "decisions.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sync_composite_has_a_record_and_one_decision_line(server):
    srv = server()
    scene, product = images()
    r = post_composite(srv.base, scene, product, user_id="alice")
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    rec = requests.get(srv.url("/api/composites/" + rid), timeout=10).json()
    assert set(rec) == RECORD_KEYS
    assert rec["id"] == rid and rec["status"] == "succeeded"
    assert rec["method"] == "pil" and rec["requested_method"] == "pil"
    assert rec["decision"]["rule"] == "disabled"  # USE_KONTEXT_COMPOSITE is false
    assert rec["decision"]["policy_version"] == 1
    assert 0 <= rec["decision"]["bucket"] <= 99
    assert rec["image_url"] == "/api/composites/%s.png" % rid
    assert rec["estimated_cost_usd"] == 0
    assert rec["prediction_id"] is None and rec["error"] is None
    d = rec["durations"]
    for k in ("total", "queue", "decode", "composite", "save"):
        assert isinstance(d[k], (int, float)) and d[k] >= 0, (k, d)
    assert d["kontext"] is None
    assert d["total"] >= d["decode"] + d["composite"]
    # Saved beside the image, whole.
    with open(os.path.join(srv.output_dir, rid + ".json")) as f:
        assert json.load(f)["status"] == "succeeded"
    lines = decisions_file(srv)
    assert [l["id"] for l in lines] == [rid]
    assert lines[0]["user_id"] == "alice" and lines[0]["method"] == "pil"
    assert lines[0]["scene"] == {"width": 200, "height": 100, "has_alpha": False}
    # The image itself is unchanged, and unknown ids are 404.
    assert requests.get(srv.url(rec["image_url"]), timeout=10).status_code == 200
    assert requests.get(srv.url("/api/composites/" + "0" * 32), timeout=10).status_code == 404
    assert requests.get(srv.url("/api/composites/../etc"), timeout=10).status_code == 404


def test_decision_rules(server, tmp_path):
    """Each rule of the default routing, and the route function's."""
    policy = """return {
  use_kontext = true, method = "kontext", phase = "beta",
  phases = { beta = { users = {"vip"}, percent = 0 } },
}"""
    srv = server({"REPLICATE_API_TOKEN": ""}, files={"lua/policy.lua": policy})
    scene, product = images()
    rules = {}
    for user in ("vip", "nobody"):
        r = post_composite(srv.base, scene, product, user_id=user)
        assert r.status_code == 200, r.text
        rules[user] = requests.get(srv.url("/api/composites/" + r.json()["id"]), timeout=10).json()
    assert rules["vip"]["decision"]["rule"] == "user_list"
    assert rules["vip"]["requested_method"] == "kontext"
    assert rules["vip"]["fallback_reason"] == "no_token"
    assert rules["vip"]["decision"]["phase"] == "beta"
    assert rules["vip"]["decision"]["percent"] == 0
    assert rules["nobody"]["decision"]["rule"] == "outside_rollout"
    assert rules["nobody"]["requested_method"] == "pil"


def test_async_kontext_answers_202_at_once_and_completes(server, fake):
    fake.configure(mode="ok", delay_ms=3000)
    srv = server(kontext_env(fake))
    scene, product = images()
    t0 = time.time()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"})
    latency = time.time() - t0
    assert r.status_code == 202, r.text
    rec = r.json()
    assert set(rec) == RECORD_KEYS
    assert rec["status"] == "processing"
    assert r.headers["Location"] == "/api/composites/" + rec["id"]
    assert rec["estimated_cost_usd"] is None and rec["completed_at"] is None
    # The prediction takes 3 s at the fake: the 202 cannot have waited for it.
    assert latency < 2.5, latency
    print("202 latency %.3f s" % latency)
    done = wait_record(srv, rec["id"])
    assert done["status"] == "succeeded" and done["method"] == "kontext", done
    assert done["prediction_id"] and done["estimated_cost_usd"] == 0.08
    assert done["durations"]["kontext"] >= 2.5
    assert done["decision"]["rule"] == "no_phase"
    assert requests.get(srv.url(done["image_url"]), timeout=10).status_code == 200
    assert fake.stats()["creates"] == 1
    assert [l["id"] for l in decisions_file(srv)] == [rec["id"]]


def test_async_pil_and_failure_records(server):
    srv = server()
    scene, product = images()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    done = wait_record(srv, r.json()["id"])
    assert done["status"] == "succeeded" and done["method"] == "pil"
    # A bad request is answered at once, async or not, and makes no record.
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"}, x="7")
    assert_error(r, 400, "invalid_parameter")
    assert len(decisions_file(srv)) == 1


# ==== webhooks ====

class Receiver:
    """A local webhook receiver: answers `fail_first` requests with 500, then 204."""

    def __init__(self, fail_first=0):
        self.got = []
        self.fail_first = fail_first
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                outer.got.append((dict(self.headers), body))
                code = 500 if len(outer.got) <= outer.fail_first else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def verify(secret, headers, body):
    h = {k.lower(): v for k, v in headers.items()}
    msg = "%s.%s.%s" % (h["webhook-id"], h["webhook-timestamp"], body.decode())
    want = base64.b64encode(hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest())
    return any(hmac.compare_digest(s.split(",", 1)[1], want.decode())
               for s in h["webhook-signature"].split() if s.startswith("v1,"))


def test_webhook_signed_delivery_with_retries(server, fake):
    fake.configure(mode="ok", delay_ms=500)
    rcv = Receiver(fail_first=2)
    try:
        srv = server(kontext_env(fake, WEBHOOK_SECRET=SECRET, WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
                                 SC_WEBHOOK_SCHEDULE="0.2,0.2,0.2"))
        scene, product = images()
        r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"},
                           webhook=rcv.url)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        deadline = time.time() + 30
        while len(rcv.got) < 3 and time.time() < deadline:
            time.sleep(0.1)
        assert len(rcv.got) == 3, rcv.got
        for headers, body in rcv.got:
            assert verify(SECRET, headers, body)
            assert not verify("another-secret", headers, body)
            assert {k.lower(): v for k, v in headers.items()}["webhook-id"] == rid
        rec = json.loads(rcv.got[-1][1])
        assert rec["id"] == rid and rec["status"] == "succeeded" and rec["method"] == "kontext"
        assert "webhook_url" not in rec and set(rec) == RECORD_KEYS
        assert "[Webhook]" in srv.log_text()
    finally:
        rcv.close()


def test_webhook_needs_a_secret_and_a_public_address(server):
    scene, product = images()
    srv = server()
    r = post_composite(srv.base, scene, product, webhook="https://example.com/hook")
    assert_error(r, 400, "invalid_parameter")
    assert "WEBHOOK_SECRET" in r.json()["error"]["message"]
    srv2 = server({"WEBHOOK_SECRET": SECRET})
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/x", "ftp://example.com/",
                "http://169.254.169.254/latest/meta-data"):
        r = post_composite(srv2.base, scene, product, webhook=url)
        assert_error(r, 400, "invalid_parameter")
    assert not os.path.exists(os.path.join(srv2.logs_dir, "decisions.jsonl")) or \
        decisions_file(srv2) == []


# ==== idempotency ====

def test_idempotency_key_concurrent_repeats_pay_once(server, fake):
    fake.configure(mode="ok", delay_ms=2000)
    srv = server(kontext_env(fake))
    scene, product = images()
    key = {"Idempotency-Key": "order-42/frame-7", "Prefer": "respond-async"}
    results = [None] * 6

    def go(i):
        results[i] = post_composite(srv.base, scene, product, headers=key, prompt="p")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1, [r.text for r in results]
    assert all(r.status_code == 202 for r in results), [r.status_code for r in results]
    replayed = [r for r in results if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 5
    rid = ids.pop()
    wait_record(srv, rid)
    # Later repeat: the finished record, still 202 like the first answer.
    r = post_composite(srv.base, scene, product, headers=key, prompt="p")
    assert r.status_code == 202 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == rid and r.json()["status"] == "succeeded"
    assert fake.stats()["creates"] == 1
    assert len(decisions_file(srv)) == 1
    # The same key with another request: 422, nothing started.
    r = post_composite(srv.base, scene, product, headers=key, prompt="other")
    assert_error(r, 422, "idempotency_conflict")
    assert fake.stats()["creates"] == 1


def test_idempotency_key_sync_and_invalid(server):
    srv = server()
    scene, product = images()
    r1 = post_composite(srv.base, scene, product, headers={"Idempotency-Key": "k1"})
    assert r1.status_code == 200 and "Idempotent-Replayed" not in r1.headers
    r2 = post_composite(srv.base, scene, product, headers={"Idempotency-Key": "k1"})
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"
    assert r2.json()["id"] == r1.json()["id"] and r2.json()["status"] == "succeeded"
    for bad in ("", "x" * 256, "caf\u00e9", "tab\there"):
        r = post_composite(srv.base, scene, product, headers={"Idempotency-Key": bad})
        assert_error(r, 400, "invalid_parameter")
    assert len(decisions_file(srv)) == 1


# ==== admin: decisions and preview ====

def test_admin_decisions_newest_first(server):
    srv = server()
    scene, product = images()
    ids = []
    for i in range(5):
        r = post_composite(srv.base, scene, product, user_id="u%d" % i)
        ids.append(r.json()["id"])
    r = requests.get(srv.url("/api/admin/decisions?limit=3"), timeout=10)
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["decisions"]] == ids[::-1][:3]
    r = requests.get(srv.url("/api/admin/decisions"), timeout=10)
    assert [d["id"] for d in r.json()["decisions"]] == ids[::-1]
    for bad in ("0", "1001", "x", "", "5x", "-1"):
        r = requests.get(srv.url("/api/admin/decisions?limit=" + bad), timeout=10)
        assert_error(r, 400, "invalid_parameter")
    r = requests.get(srv.url("/api/admin/decisions"), timeout=10,
                     headers={"Authorization": "Bearer x"})
    assert r.status_code == 200  # no ADMIN_TOKEN: loopback is enough
    srv2 = server({"ADMIN_TOKEN": "sekret"})
    assert requests.get(srv2.url("/api/admin/decisions"), timeout=10).status_code == 401
    r = requests.post(srv2.url("/api/admin/policy/preview"), data=b"return {}", timeout=10)
    assert r.status_code == 401


def test_policy_preview_counts_and_applies_nothing(server):
    """6 logged requests routed by the env (everything pil): a preview that sends
    users in a list to kontext changes exactly those, counted by hand."""
    srv = server()
    scene, product = images()
    users = ["a", "b", "c", "d", "e", None]
    for u in users:
        fields = {"user_id": u} if u else {}
        assert post_composite(srv.base, scene, product, **fields).status_code == 200
    policy = """return {
  use_kontext = true, method = "kontext", phase = "p",
  phases = { p = { users = {"b", "d", "zz"} } },
}"""
    r = requests.post(srv.url("/api/admin/policy/preview"), data=policy.encode(), timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["valid"] is True
    assert (out["replayed"], out["changed"], out["pil_to_kontext"], out["kontext_to_pil"]) == \
        (6, 2, 2, 0)
    assert sorted(e["user_id"] for e in out["examples"]) == ["b", "d"]
    # Nothing applied: same version, still pil.
    assert requests.get(srv.url("/api/admin/policy"), timeout=10).json()["version"] == 1
    r = post_composite(srv.base, scene, product, user_id="b")
    assert r.json()["requested_method"] == "pil"
    # A route function, and an invalid file.
    route = 'return { use_kontext = true, method = "kontext", route = function(req, ctx) ' \
            'if req.user_id == "a" then return "kontext" end return "pil" end }'
    r = requests.post(srv.url("/api/admin/policy/preview"), data=route.encode(), timeout=30)
    assert r.status_code == 200 and r.json()["pil_to_kontext"] == 1, r.text
    # The CLI replays the same file through the same routing: the same counts.
    import subprocess
    from conftest import BIN
    pf = os.path.join(srv.workdir, "new.lua")
    with open(pf, "w") as f:
        f.write(route)
    cli = subprocess.run([BIN, "check-policy", pf, "--replay",
                          os.path.join(srv.logs_dir, "decisions.jsonl")],
                         capture_output=True, text=True, timeout=60, cwd=srv.workdir)
    assert cli.returncode == 0, cli.stderr
    o = r.json()
    assert "replayed %d, changed %d (kontext->pil %d, pil->kontext %d)" % (
        o["replayed"], o["changed"], o["kontext_to_pil"], o["pil_to_kontext"]) in cli.stdout
    # A route that raises for one user: that request is a route error in the
    # preview (-> pil), and the live service counts and logs none of it.
    boom = 'return { use_kontext = true, method = "kontext", route = function(req, ctx) ' \
           'if req.user_id == "c" then error("boom") end return "kontext" end }'
    r = requests.post(srv.url("/api/admin/policy/preview"), data=boom.encode(), timeout=30)
    assert r.status_code == 200, r.text
    # 7 logged pil requests: all but user c's (a route error -> pil) change
    assert (r.json()["replayed"], r.json()["pil_to_kontext"]) == (7, 6), r.text
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["route_errors"] == 0
    assert "boom" not in srv.log_text()
    r = requests.post(srv.url("/api/admin/policy/preview"), data=b"return {", timeout=30)
    assert_error(r, 422, "invalid_policy")
    r = requests.post(srv.url("/api/admin/policy/preview"), data=b"", timeout=30)
    assert_error(r, 422, "invalid_policy")
    assert requests.get(srv.url("/api/admin/policy/preview"), timeout=10).status_code == 405


# ==== a restart never pays twice ====

def kill9(srv):
    srv.proc.kill()
    srv.proc.wait(timeout=30)


def test_kill9_during_async_kontext_resumes_by_polling(server, fake):
    # honor_prefer False: the create answers at once, so the id is known (and
    # made durable in the record) while the prediction runs.
    fake.configure(mode="ok", delay_ms=6000, honor_prefer=False)
    srv = server(kontext_env(fake), check_exit=False)
    scene, product = images()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    deadline = time.time() + 20
    while time.time() < deadline:
        rec = requests.get(srv.url("/api/composites/" + rid), timeout=10).json()
        if rec["prediction_id"]:
            break
        time.sleep(0.05)
    assert rec["prediction_id"] and rec["status"] == "processing", rec
    assert os.path.isdir(os.path.join(srv.output_dir, rid + ".inputs"))
    kill9(srv)
    srv2 = server(kontext_env(fake, LOGS_DIR=srv.logs_dir, OUTPUT_DIR=srv.output_dir))
    done = wait_record(srv2, rid)
    assert done["status"] == "succeeded" and done["method"] == "kontext", done
    assert done["prediction_id"] == rec["prediction_id"]
    s = fake.stats()
    assert s["creates"] == 1 and s["cancels"] == 0, s
    assert "polling prediction " + rec["prediction_id"] in srv.log_text()  # shared LOGS_DIR
    assert not os.path.exists(os.path.join(srv.output_dir, rid + ".inputs"))
    assert [l["id"] for l in decisions_file(srv)] == [rid]  # shared LOGS_DIR


def test_kill9_before_the_prediction_id_completes_by_pil_interrupted(server, fake):
    # The create is held (Prefer: wait) for the whole prediction: the dead
    # process never learnt the id, so the restart composites by PIL.
    fake.configure(mode="ok", delay_ms=8000, honor_prefer=True)
    srv = server(kontext_env(fake), check_exit=False)
    scene, product = images()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"},
                       user_id="u1")
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    deadline = time.time() + 20
    while fake.stats()["creates"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    kill9(srv)
    srv2 = server(kontext_env(fake, LOGS_DIR=srv.logs_dir, OUTPUT_DIR=srv.output_dir))
    done = wait_record(srv2, rid)
    assert done["status"] == "succeeded", done
    assert done["method"] == "pil" and done["fallback"] is True
    assert done["fallback_reason"] == "interrupted" and done["requested_method"] == "kontext"
    assert done["prediction_id"] is None
    assert requests.get(srv2.url(done["image_url"]), timeout=10).status_code == 200
    assert fake.stats()["creates"] == 1


def test_kill9_during_sync_kontext_cancels_and_fails_the_record(server, fake):
    """A sync client is gone with the process: its prediction is cancelled by the
    journal (not adopted) and its record ends failed `interrupted`."""
    fake.configure(mode="ok", delay_ms=8000, honor_prefer=False)
    srv = server(kontext_env(fake), check_exit=False)
    scene, product = images()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", _try_post(srv, scene, product)))
    t.start()
    deadline = time.time() + 20
    rec = None
    while time.time() < deadline and not (rec and rec["prediction_id"]):
        names = [n for n in os.listdir(srv.output_dir) if re.fullmatch(r"[0-9a-f]{32}\.json", n)]
        if names:
            with open(os.path.join(srv.output_dir, names[0])) as f:
                try:
                    rec = json.load(f)
                except ValueError:
                    rec = None
        time.sleep(0.05)
    assert rec and rec["prediction_id"], rec
    kill9(srv)
    t.join(30)
    srv2 = server(kontext_env(fake, LOGS_DIR=srv.logs_dir, OUTPUT_DIR=srv.output_dir))
    done = wait_record(srv2, rec["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "interrupted", done
    deadline = time.time() + 20
    while fake.stats()["cancels"] < 1 and time.time() < deadline:
        time.sleep(0.1)
    s = fake.stats()
    assert s["creates"] == 1 and s["cancels"] == 1, s


def _try_post(srv, scene, product):
    try:
        return post_composite(srv.base, scene, product, timeout=30)
    except requests.RequestException as e:
        return e


def test_sigterm_lets_async_work_finish(server, fake):
    """A graceful stop waits for async composites like for suspended requests."""
    fake.configure(mode="ok", delay_ms=2000, honor_prefer=False)
    srv = server(kontext_env(fake))
    scene, product = images()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert srv.stop() == 0
    with open(os.path.join(srv.output_dir, rid + ".json")) as f:
        rec = json.load(f)
    assert rec["status"] == "succeeded" and rec["method"] == "kontext", rec
    assert fake.stats()["cancels"] == 0


# ==== Idempotency-Key on POST /api/scenes ====

def test_scene_idempotency_key(server, fake):
    fake.configure(mode="ok", delay_ms=1500)
    srv = server({"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
                  "SCENE_TIMEOUT_SECONDS": "20"})
    key = {"Idempotency-Key": "scene-order-9"}
    body = {"prompt": "a sunny kitchen", "seed": 3}
    out = [None] * 4

    def go(i):
        # the same members in another order: the same request
        b = body if i % 2 == 0 else {"seed": 3, "prompt": "a sunny kitchen"}
        out[i] = requests.post(srv.url("/api/scenes"), json=b, headers=key, timeout=60)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    first = [r for r in out if "Idempotent-Replayed" not in r.headers]
    assert len(first) == 1 and first[0].status_code == 200, [(r.status_code, r.text) for r in out]
    rid = first[0].json()["id"]
    for r in out:
        assert r.json()["id"] == rid, r.text
        if r is not first[0]:
            assert r.headers["Idempotent-Replayed"] == "true"
            assert r.status_code in (200, 202)
    r = requests.post(srv.url("/api/scenes"), json=body, headers=key, timeout=60)
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["status"] == "succeeded" and r.json()["image_url"] == first[0].json()["image_url"]
    creates = [q for q in fake.stats()["requests"]
               if q["method"] == "POST" and q["path"].endswith("/predictions")]
    assert len(creates) == 1
    r = requests.post(srv.url("/api/scenes"), json={"prompt": "another"}, headers=key, timeout=60)
    assert_error(r, 422, "idempotency_conflict")
    r = requests.post(srv.url("/api/scenes"), json=body, headers={"Idempotency-Key": "x" * 300},
                      timeout=60)
    assert_error(r, 400, "invalid_parameter")


@pytest.mark.parametrize("policy,expect", [
    ('return { use_kontext = true, method = "kontext", phase = "all",'
     ' phases = { all = { percent = 100 } } }', "percent_full"),
    ('return { use_kontext = true, method = "kontext", phase = "half",'
     ' phases = { half = { percent = 50 } } }', "bucket"),
    ('return { use_kontext = true, method = "kontext", phase = "empty", phases = { empty = {} } }',
     "no_phase"),
    ('return { use_kontext = true, method = "pil" }', "disabled"),
    ('return { use_kontext = true, method = "kontext",'
     ' route = function(req, ctx) return "pil" end }', "route_function"),
    ('return { use_kontext = true, method = "kontext", route = function(req, ctx)'
     ' if req.user_id == "boom" then error("no") end return "pil" end }', "route_error"),
])
def test_decision_rule_table(server, policy, expect):
    srv = server({"REPLICATE_API_TOKEN": ""}, files={"lua/policy.lua": policy})
    scene, product = images()
    seen = []
    users = ["boom"] if expect == "route_error" else ["u%d" % i for i in range(12)]
    for u in users:
        r = post_composite(srv.base, scene, product, user_id=u)
        assert r.status_code == 200, r.text
        rec = requests.get(srv.url("/api/composites/" + r.json()["id"]), timeout=10).json()
        d = rec["decision"]
        if expect == "bucket":
            assert d["percent"] == 50
            want = "percent_bucket" if d["bucket"] < 50 else "outside_rollout"
            assert d["rule"] == want, d
            assert rec["requested_method"] == ("kontext" if want == "percent_bucket" else "pil")
        else:
            assert d["rule"] == expect, d
        seen.append(d["rule"])
    if expect == "bucket":  # 12 users: both sides of 50 (bucket is a hash of the id)
        assert set(seen) == {"percent_bucket", "outside_rollout"}, seen


def test_example_client_end_to_end(server, tmp_path):
    """examples/clients/scenecomp_client.py against the real service: async submit
    with an Idempotency-Key, polling, download, and its receiver verifying the
    signed webhook (Standard Webhooks `whsec_` secret)."""
    import subprocess
    import sys
    from conftest import ROOT, free_port
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    srv = server({"WEBHOOK_SECRET": secret, "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"})
    client = os.path.join(ROOT, "examples", "clients", "scenecomp_client.py")
    port = free_port()
    env = dict(os.environ, WEBHOOK_SECRET=secret)
    rcv = subprocess.Popen([sys.executable, "-u", client, "receive", "--port", str(port)],
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        scene_p, product_p = tmp_path / "s.png", tmp_path / "p.png"
        scene, product = images()
        scene_p.write_bytes(scene)
        product_p.write_bytes(product)
        time.sleep(0.5)  # the receiver binds
        out = subprocess.run([sys.executable, client, "submit", "--base", srv.base,
                              "--scene", str(scene_p), "--product", str(product_p),
                              "--user-id", "ops-1",
                              "--webhook", "http://127.0.0.1:%d/hook" % port],
                             capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        m = re.search(r"accepted ([0-9a-f]{32})", out.stdout)
        assert m and "saved" in out.stdout, out.stdout
        rid = m.group(1)
        assert (tmp_path / (rid + ".png")).stat().st_size > 0
        import select
        ready, _, _ = select.select([rcv.stdout], [], [], 60)
        assert ready, "no verified webhook delivery within 60 s"
        line = rcv.stdout.readline()
        assert line.startswith("composite %s succeeded (pil)" % rid), line
    finally:
        rcv.kill()
        rcv.wait()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_during_sync_kontext_ends_its_record(server, fake, how):
    """A sync client that hangs up while its prediction runs loses its request
    (cancelled upstream); its record does not stay "processing": it fails with
    client_gone, and the decision log has its line."""
    import socket
    fake.configure(mode="slow", honor_prefer=False)
    srv = server(kontext_env(fake))
    scene, product = images()
    req = requests.Request("POST", srv.url("/api/composite"),
                           files=[("scene", ("s.png", scene)), ("product", ("p.png", product))]
                           ).prepare()
    head = "POST /api/composite HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d" \
           "\r\n\r\n" % (req.headers["Content-Type"], len(req.body))
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(head.encode() + req.body)
    deadline = time.time() + 20
    while fake.stats()["creates"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    if how == "rst":
        import struct
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    deadline = time.time() + 30
    done = None
    while time.time() < deadline:
        names = [n for n in os.listdir(srv.output_dir) if n.endswith(".json")]
        if names:
            with open(os.path.join(srv.output_dir, names[0])) as f:
                done = json.load(f)
            if done["status"] != "processing":
                break
        time.sleep(0.1)
    assert done and done["status"] == "failed", done
    assert done["error"]["code"] == "client_gone" and done["prediction_id"], done
    lines = decisions_file(srv)
    assert [l["id"] for l in lines] == [done["id"]]


def redis_env(fake, redis, **extra):
    return kontext_env(fake, LIMITS_STORE="redis", REDIS_URL=redis.url,
                       REDIS_KEY_PREFIX="idem:", SC_REDIS_BUDGET_MS="1000", **extra)


def test_idempotency_key_across_instances_sharing_redis(server, fake, redis_server, tmp_path):
    """Keys live in the limits store: two instances sharing one Redis (and OUTPUT_DIR,
    where the records are) race on one key: one prediction, one id. The key
    outlives a restart of both."""
    fake.configure(mode="ok", delay_ms=2000, honor_prefer=False)
    out = str(tmp_path / "shared-output")
    a = server(redis_env(fake, redis_server, OUTPUT_DIR=out))
    b = server(redis_env(fake, redis_server, OUTPUT_DIR=out))
    scene, product = images()
    key = {"Idempotency-Key": "fleet-1", "Prefer": "respond-async"}
    res = [None] * 6

    def go(i):
        res[i] = post_composite((a if i % 2 else b).base, scene, product, headers=key)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 202 for r in res), [(r.status_code, r.text) for r in res]
    ids = {r.json()["id"] for r in res}
    assert len(ids) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in res) == 5
    rid = ids.pop()
    done = wait_record(a, rid)
    assert done["status"] == "succeeded" and done["method"] == "kontext"
    assert wait_record(b, rid) == done  # either instance serves the record
    assert fake.stats()["creates"] == 1
    # a restart of both forgets nothing: the key is in Redis
    assert a.stop() == 0 and b.stop() == 0
    c = server(redis_env(fake, redis_server, OUTPUT_DIR=out))
    r = post_composite(c.base, scene, product, headers=key)
    assert r.status_code == 202 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == rid
    # a scene key is fleet-wide too
    body = {"prompt": "a sunny kitchen"}
    skey = {"Idempotency-Key": "fleet-scene-1"}
    r1 = requests.post(c.url("/api/scenes"), json=body, headers=skey, timeout=60)
    assert r1.status_code == 200, r1.text
    d = server(redis_env(fake, redis_server, OUTPUT_DIR=out))
    r2 = requests.post(d.url("/api/scenes"), json=body, headers=skey, timeout=60)
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true", r2.text
    assert r2.json()["id"] == r1.json()["id"]
    assert fake.stats()["creates"] == 2  # the composite and the scene, once each


def test_idempotency_key_store_unavailable_runs_nothing(server, fake, redis_server):
    """Redis down: a keyed request cannot hold its key, so nothing runs (503
    server_busy with Retry-After); once Redis is back the same key runs once."""
    fake.configure(mode="ok", delay_ms=100, honor_prefer=False)
    srv = server(redis_env(fake, redis_server))
    scene, product = images()
    key = {"Idempotency-Key": "outage-1"}
    redis_server.stop()
    r = post_composite(srv.base, scene, product, headers=key)
    assert_error(r, 503, "server_busy")
    assert r.headers["Retry-After"] == "1"
    r = requests.post(srv.url("/api/scenes"), json={"prompt": "x"}, headers=key, timeout=60)
    assert_error(r, 503, "server_busy")
    assert fake.stats()["creates"] == 0
    redis_server.start()
    deadline = time.time() + 30
    while True:
        r = post_composite(srv.base, scene, product, headers=key)
        if r.status_code != 503 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers, r.text
    r2 = post_composite(srv.base, scene, product, headers=key)
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"
    assert r2.json()["id"] == r.json()["id"]
    assert fake.stats()["creates"] == 1


def test_idempotency_key_memory_store_is_per_process(server, fake, tmp_path):
    """With the default memory store a key lives in its process only: a restart
    forgets it (documented: LIMITS_STORE=redis for keys that survive restarts)."""
    fake.configure(mode="ok", delay_ms=100, honor_prefer=False)
    out = str(tmp_path / "output")
    a = server(kontext_env(fake, OUTPUT_DIR=out))
    scene, product = images()
    key = {"Idempotency-Key": "local-1"}
    r1 = post_composite(a.base, scene, product, headers=key)
    assert r1.status_code == 200, r1.text
    r = post_composite(a.base, scene, product, headers=key)
    assert r.headers.get("Idempotent-Replayed") == "true" and r.json()["id"] == r1.json()["id"]
    assert a.stop() == 0
    b = server(kontext_env(fake, OUTPUT_DIR=out))
    r2 = post_composite(b.base, scene, product, headers=key)
    assert r2.status_code == 200 and "Idempotent-Replayed" not in r2.headers
    assert r2.json()["id"] != r1.json()["id"]
    assert fake.stats()["creates"] == 2


def test_sigterm_past_the_grace_finishes_async_work_by_pil(server, fake):
    """Past the 10 s grace the prediction is cancelled and the record still ends
    (PIL fallback `timeout`), never left processing by a graceful stop."""
    fake.configure(mode="slow", honor_prefer=False)
    srv = server(kontext_env(fake))
    scene, product = images()
    r = post_composite(srv.base, scene, product, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    deadline = time.time() + 20
    while fake.stats()["creates"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert srv.stop() == 0
    with open(os.path.join(srv.output_dir, rid + ".json")) as f:
        rec = json.load(f)
    assert rec["status"] == "succeeded" and rec["method"] == "pil", rec
    assert rec["fallback_reason"] == "timeout" and rec["prediction_id"], rec
    assert fake.stats()["cancels"] == 1

"""docs/composite_testing.md Tests 5, 6 and 8 (the deployment guide's feature flag,
automatic fallback and metrics checks), automated against the local fake
Replicate server, step by step as the document describes them."""
import os
import socket
import time

import pytest
import requests

from conftest import encode, gradient_scene, post_composite, sample_product


TOKEN = "r8_fake_token"  # the token the guide exports; the fake's default
KONTEXT_PATH = "/v1/models/flux-kontext-apps/multi-image-kontext-pro/predictions"




def env(fake, **kw):
    e = {"REPLICATE_API_BASE": fake.base_url, "REPLICATE_API_TOKEN": TOKEN,
         "SC_REPLICATE_POLL_MS": "100"}
    e.update({k: str(v) for k, v in kw.items()})
    return e


def composite(srv, **fields):
    r = post_composite(srv.base, encode(gradient_scene(160, 90)), encode(sample_product(40, 20)),
                       **fields)
    assert r.status_code == 200, r.text
    return r.json()


def brief(body, *keys):
    return {k: body[k] for k in keys}


# ==== Test 5: feature flag ON / OFF ====

def test_5_flag_off(server, fake):
    srv = server(env(fake, USE_KONTEXT_COMPOSITE="false", COMPOSITE_METHOD="pil"))
    body = composite(srv)
    assert brief(body, "method", "requested_method", "fallback") == \
        {"method": "pil", "requested_method": "pil", "fallback": False}
    srv.wait_log("Using PIL composite method id=" + body["id"])
    assert fake.stats()["requests"] == []  # nothing reached Replicate


def test_5_flag_on_then_off_live(server, fake):
    srv = server(env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext",
                     POLICY_FILE="lua/policy.lua"),
                 files={"lua/policy.lua": "return {}\n"})
    body = composite(srv, prompt="place the bottle on the table")
    assert brief(body, "method", "requested_method", "fallback", "width", "height") == \
        {"method": "kontext", "requested_method": "kontext", "fallback": False,
         "width": 160, "height": 90}
    srv.wait_log("[Kontext Composite] Composite saved")
    paths = [q["path"] for q in fake.stats()["requests"]]
    assert KONTEXT_PATH in paths

    # flag back OFF without a restart: the live policy
    with open(os.path.join(srv.workdir, "lua", "policy.lua"), "w") as f:
        f.write("return { use_kontext = false }\n")
    # picked up by the watcher within 2 s (the guide's "wait 2 s")
    deadline = time.time() + 10
    while time.time() < deadline:
        body = composite(srv)
        if body["method"] == "pil":
            break
        time.sleep(0.3)
    assert body["method"] == "pil" and body["requested_method"] == "pil"
    srv.wait_log("[Policy]")


# ==== Test 6: automatic fallback ====

def dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fallback(srv, body, reason):
    assert brief(body, "method", "requested_method", "fallback", "fallback_reason") == \
        {"method": "pil", "requested_method": "kontext", "fallback": True,
         "fallback_reason": reason}
    log = srv.wait_log("Using PIL composite method id=" + body["id"])
    assert "[Kontext Composite] Kontext failed: " + reason in log
    assert "falling back to PIL" in log
    return log


def test_6a_invalid_model_id(server, fake):
    srv = server(env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext",
                     KONTEXT_MODEL_ID="nobody/no-such-model"))
    check_fallback(srv, composite(srv), "api_error")


def test_6b_replicate_unreachable(server, fake):
    e = env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext")
    e["REPLICATE_API_BASE"] = "http://127.0.0.1:%d/v1" % dead_port()
    srv = server(e)
    check_fallback(srv, composite(srv), "api_error")


def test_6c_no_token(server, fake):
    e = env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext")
    del e["REPLICATE_API_TOKEN"]
    srv = server(e)
    check_fallback(srv, composite(srv), "no_token")


def test_6d_deadline_cancels_upstream(server, fake):
    fake.configure(mode="slow")
    srv = server(env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext",
                     KONTEXT_TIMEOUT_SECONDS=1))
    log = check_fallback(srv, composite(srv), "timeout")
    assert "Kontext timeout" in log
    s = fake.stats()
    cancels = [q for q in s["requests"] if q["path"].endswith("/cancel")]
    assert len(cancels) == 1 and cancels[0]["method"] == "POST"
    assert s["inflight"] == 0


def test_6_policy_fail_is_502(server, fake):
    fake.configure(mode="failed")
    srv = server(env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext",
                     POLICY_FILE="lua/policy.lua"),
                 files={"lua/policy.lua":
                        'return { on_kontext_error = function(err, req, ctx) return "fail" end }\n'})
    r = post_composite(srv.base, encode(gradient_scene(160, 90)), encode(sample_product(40, 20)))
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_error"
    assert "E005" in r.json()["error"]["message"]


# ==== Test 8: metrics tracking ====

def metrics(srv):
    r = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_8_metrics_tracking(server, fake):
    e = env(fake, USE_KONTEXT_COMPOSITE="true", COMPOSITE_METHOD="kontext",
            KONTEXT_TIMEOUT_SECONDS=2, MAX_KONTEXT_PER_HOUR=3)
    srv = server(e)
    fake.configure(mode="ok", delay_ms=100)
    assert composite(srv)["method"] == "kontext"                      # success
    fake.configure(mode="failed")
    assert composite(srv)["fallback_reason"] == "api_error"           # failed prediction
    fake.configure(mode="slow")
    assert composite(srv)["fallback_reason"] == "timeout"             # deadline
    assert composite(srv)["fallback_reason"] == "hourly_limit"        # 4th: limiter

    m = metrics(srv)
    k, p = m["stats"]["kontext"], m["stats"]["pil"]
    assert m["total_requests"] == 4
    assert k["attempts"] == 3 and k["successes"] == 1
    assert k["failures"] == 2 and k["timeouts"] == 1  # failures include timeouts
    assert p["attempts"] == 3  # every PIL composite, fallbacks included
    assert m["fallbacks"] == 3
    assert {k: v for k, v in m["fallback_reasons"].items() if v} == \
        {"api_error": 1, "timeout": 1, "hourly_limit": 1}
    assert m["fallback_rate"] == pytest.approx(3 / 4)
    assert m["kontext_success_rate"] == pytest.approx(1 / 3)
    assert m["today_generations"] == 3
    assert m["rate_limiter"]["max_per_hour"] == 3 and m["rate_limiter"]["in_flight"] == 0
    assert fake.stats()["creates"] == 3  # the fake agrees: three predictions started

    d = requests.get(srv.url("/api/admin/metrics/daily-generations?days=7"), timeout=10).json()
    assert d["days"] == 7 and len(d["daily"]) == 7
    assert d["daily"][-1]["total"] == 4 and d["daily"][-1]["fallbacks"] == 3
    for bad in ("0", "abc"):
        r = requests.get(srv.url("/api/admin/metrics/daily-generations?days=" + bad), timeout=10)
        assert r.status_code == 400

    # a restart brings the same numbers back
    assert srv.stop() == 0
    again = server(dict(e, LOGS_DIR=srv.logs_dir, OUTPUT_DIR=srv.output_dir))
    m2 = metrics(again)
    assert m2["stats"] == m["stats"] and m2["fallback_reasons"] == m["fallback_reasons"]
    assert m2["today_generations"] == 3

    r = requests.post(again.url("/api/admin/metrics/reset"), timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "reset"}
    m3 = metrics(again)
    assert m3["total_requests"] == 0 and m3["stats"]["kontext"]["attempts"] == 0
    assert m3["fallback_rate"] is None and m3["today_generations"] == 0

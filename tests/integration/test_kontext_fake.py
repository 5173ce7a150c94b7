"""The whole Kontext path of the real server against the local fake Replicate
(tests/fake): success, every fault ending in the right fallback_reason and the log
phrases ops grep, the cancel sent on timeout, the retry after 429, a concurrency
storm that never exceeds MAX_CONCURRENT_KONTEXT at the fake, and the token never
reaching backend.log or any place other than the Authorization header."""
import os
import threading

import pytest
import requests

from conftest import decode, encode, gradient_scene, post_composite, sample_product


TOKEN = "r8_integrationSecret_5be1c0"
SANITIZED = os.environ.get("SC_SANITIZED") == "1"




def kontext_env(fake, **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true",
        "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "20",
        "LOG_LEVEL": "debug",
        "SC_REPLICATE_POLL_MS": "100",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def images(w=200, h=100):
    return encode(gradient_scene(w, h)), encode(sample_product(40, 20))


def assert_token_private(srv, fake):
    """The token is in no log line and went to the fake only in Authorization."""
    log = srv.log_text() + srv.stderr_text()
    assert TOKEN not in log
    assert "Bearer" not in log
    for req in fake.stats()["requests"]:
        assert not req["token_elsewhere"], req
        if req["path"].startswith("/v1/"):
            assert req["auth"] == "bearer", req


def test_kontext_success(server, fake):
    fake.configure(mode="ok", delay_ms=300)
    srv = server(kontext_env(fake))
    scene, product = images()
    r = post_composite(srv.base, scene, product, prompt="put the box on the floor")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "kontext" and body["requested_method"] == "kontext"
    assert body["fallback"] is False and body["fallback_reason"] is None
    assert (body["width"], body["height"]) == (200, 100)
    img = decode(requests.get(srv.url(body["image_url"]), timeout=10).content).convert("RGB")
    assert img.size == (200, 100)
    # The fake's output has blue == 0 everywhere; the gradient scene (and so any
    # PIL composite) has blue = (x + 2y) % 256: this is the Kontext image.
    px = img.load()
    assert all(px[x, y][2] == 0 for x in range(0, 200, 7) for y in range(0, 100, 7))
    srv.wait_log("[Kontext Composite] Composite saved")
    s = fake.stats()
    assert s["creates"] == 1 and s["cancels"] == 0 and s["downloads"] == 1
    create = [q for q in s["requests"] if q["path"].endswith("/predictions")][0]
    assert create["headers"].get("Prefer", "").startswith("wait=")
    assert int(create["headers"]["Cancel-After"].rstrip("s")) >= 5
    assert_token_private(srv, fake)


FAULTS = [
    # (fake config, env extra, expected reason, extra log phrase)
    ({"mode": "failed"}, {}, "api_error", None),
    ({"mode": "http500"}, {}, "api_error", None),
    ({"mode": "http500", "http500_html": True}, {}, "api_error", None),
    ({"mode": "malformed_json"}, {}, "api_error", None),
    ({"mode": "unknown_model"}, {}, "api_error", None),
    ({"mode": "non_image_output"}, {}, "invalid_output", None),
    ({"mode": "slow"}, {"KONTEXT_TIMEOUT_SECONDS": "2"}, "timeout", "Kontext timeout"),
    ({"mode": "hang"}, {"KONTEXT_TIMEOUT_SECONDS": "2"}, "timeout", "Kontext timeout"),
]


@pytest.mark.parametrize("cfg,env,reason,phrase", FAULTS,
                         ids=[c["mode"] + ("_html" if c.get("http500_html") else "")
                              for c, _, _, _ in FAULTS])
def test_kontext_fault_falls_back(server, fake, cfg, env, reason, phrase):
    fake.configure(**cfg)
    srv = server(kontext_env(fake, **env))
    scene, product = images()
    r = post_composite(srv.base, scene, product)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "pil" and body["requested_method"] == "kontext"
    assert body["fallback"] is True and body["fallback_reason"] == reason
    log = srv.wait_log("[Kontext Composite] Kontext failed: " + reason)
    assert "falling back to PIL" in log
    if phrase:
        assert phrase in log
    img = decode(requests.get(srv.url(body["image_url"]), timeout=10).content)
    assert img.size == (200, 100)
    if cfg["mode"] == "slow":
        s = fake.stats()
        assert s["cancels"] == 1  # the prediction was cancelled upstream
        assert s["inflight"] == 0
    assert_token_private(srv, fake)


def test_kontext_no_token(server, fake):
    env = kontext_env(fake)
    del env["REPLICATE_API_TOKEN"]
    srv = server(env)
    scene, product = images()
    body = post_composite(srv.base, scene, product).json()
    assert body["fallback"] is True and body["fallback_reason"] == "no_token"
    srv.wait_log("[Kontext Composite] Kontext failed: no_token")
    assert fake.stats()["create_requests"] == 0


def test_kontext_retry_after_429(server, fake):
    fake.configure(mode="rate429", rate429_count=1, retry_after=1)
    srv = server(kontext_env(fake))
    scene, product = images()
    body = post_composite(srv.base, scene, product).json()
    assert body["method"] == "kontext" and body["fallback"] is False, body
    assert body["duration_seconds"] >= 0.9  # Retry-After: 1 was honoured
    s = fake.stats()
    assert s["create_requests"] == 2 and s["rate429_sent"] == 1 and s["creates"] == 1
    srv.wait_log("[Kontext Composite] Composite saved")


def test_kontext_policy_fail_answers_502(server, fake):
    fake.configure(mode="failed")
    policy = 'return { on_kontext_error = function(err, req, ctx) return "fail" end }\n'
    srv = server(kontext_env(fake, POLICY_FILE="lua/policy.lua"),
                 files={"lua/policy.lua": policy})
    scene, product = images()
    r = post_composite(srv.base, scene, product)
    assert r.status_code == 502, r.text
    assert "E005" in r.json()["error"]["message"]


def test_kontext_concurrency_storm(server, fake):
    """30 simultaneous requests, MAX_CONCURRENT_KONTEXT=3: the fake never sees more
    than 3 predictions in flight, every request is answered, the rest fall back."""
    fake.configure(mode="ok", delay_ms=1500)
    srv = server(kontext_env(fake, MAX_CONCURRENT_KONTEXT=3, MAX_KONTEXT_PER_HOUR=1000,
                             KONTEXT_DAILY_GENERATION_LIMIT=1000))
    scene, product = images(64, 48)
    results = [None] * 30

    def one(i):
        try:
            r = post_composite(srv.base, scene, product, user_id="u%d" % i, timeout=120)
            results[i] = (r.status_code, r.json())
        except Exception as e:  # recorded, asserted below
            results[i] = (0, str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert all(r and r[0] == 200 for r in results), results
    methods = [r[1]["method"] for r in results]
    reasons = [r[1]["fallback_reason"] for r in results if r[1]["fallback"]]
    assert methods.count("kontext") >= 3
    assert set(reasons) <= {"concurrency_limit"}
    assert methods.count("kontext") + len(reasons) == 30
    s = fake.stats()
    assert 1 <= s["max_inflight"] <= 3, s["max_inflight"]
    assert s["creates"] == methods.count("kontext")
    assert_token_private(srv, fake)

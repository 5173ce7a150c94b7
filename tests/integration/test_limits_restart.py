"""Limits and metrics across restarts, end to end with the real server and the
fake Replicate: the sliding-hour window and the UTC-day counter are persisted in
LOGS_DIR/composite_metrics.json, so a restart never hands out a fresh budget; a
corrupt metrics file is moved aside and the service starts."""
import glob
import json
import os

import pytest
import requests

from conftest import encode, gradient_scene, post_composite, sample_product


TOKEN = "r8_limitsRestart_7f3a"




def kontext_env(fake, **extra):
    env = {
        "USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
        "KONTEXT_TIMEOUT_SECONDS": "20", "SC_REPLICATE_POLL_MS": "100",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def composite(srv):
    r = post_composite(srv.base, encode(gradient_scene(120, 80)), encode(sample_product(30, 20)))
    assert r.status_code == 200, r.text
    return r.json()


def restart(server, srv, env):
    assert srv.stop() == 0
    # srv.env holds the LOGS_DIR it really used (a restarted server inherits it)
    return server(dict(env, LOGS_DIR=srv.env["LOGS_DIR"], OUTPUT_DIR=srv.env["OUTPUT_DIR"]))


@pytest.mark.parametrize("limit_var,reason", [
    ("MAX_KONTEXT_PER_HOUR", "hourly_limit"),
    ("KONTEXT_DAILY_GENERATION_LIMIT", "daily_limit"),
])
def test_limit_holds_across_restart(server, fake, limit_var, reason):
    env = kontext_env(fake, **{limit_var: 2})
    srv = server(env)
    assert [composite(srv)["method"] for _ in range(2)] == ["kontext", "kontext"]
    assert composite(srv)["fallback_reason"] == reason
    assert fake.stats()["creates"] == 2

    again = restart(server, srv, env)
    body = composite(again)
    assert body["method"] == "pil" and body["fallback"] is True
    assert body["fallback_reason"] == reason
    # the restarted server logs into the first one's LOGS_DIR
    with open(os.path.join(srv.logs_dir, "backend.log"), encoding="utf-8") as f:
        assert f.read().count("[Rate Limiter]") >= 2
    assert fake.stats()["creates"] == 2  # nothing reached Replicate after the restart

    # raising the limit (a new budget) admits again: the count was kept, not lost
    third = restart(server, again, dict(env, **{limit_var: 3}))
    assert composite(third)["method"] == "kontext"
    assert composite(third)["fallback_reason"] == reason
    m = requests.get(third.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["today_generations"] == 3


@pytest.mark.parametrize("garbage", [b"{not json", b"", b'{"version": 1, "counters": "x"}',
                                     b"\x00\x01\x02"])
def test_corrupt_metrics_file_is_moved_aside(server, tmp_path, garbage):
    logs = tmp_path / "pre-logs"
    logs.mkdir()
    (logs / "composite_metrics.json").write_bytes(garbage)
    srv = server({"LOGS_DIR": str(logs)})
    moved = glob.glob(str(logs / "composite_metrics.json.corrupt-*"))
    assert len(moved) == 1 and open(moved[0], "rb").read() == garbage
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["total_requests"] == 0
    composite(srv)
    assert srv.stop() == 0
    # the new file is complete JSON with the request counted
    data = json.loads((logs / "composite_metrics.json").read_text())
    assert isinstance(data, dict)
    again = server({"LOGS_DIR": str(logs)})
    m = requests.get(again.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["total_requests"] == 1 and m["stats"]["pil"]["successes"] == 1

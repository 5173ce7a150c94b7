"""The HTTP/CLI side of the live policy: start-up refuses a broken policy with
file and line, POST /api/admin/reload answers 200 or 422 (old policy kept),
/health shows the policy version, check-policy exits 0 / 1."""
import subprocess
import time

import requests

from conftest import BIN, assert_error, base_env, encode, gradient_scene, post_composite, sample_product

GOOD = "return { use_kontext = false, method = \"pil\" }\n"
GOOD2 = "return { use_kontext = false, method = \"pil\", max_concurrent = 3 }\n"
BROKEN = "return {\n  use_kontext = true,\n  method = = \"kontext\",\n}\n"


def test_broken_policy_stops_start_up(tmp_path):
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "policy.lua").write_text(BROKEN)
    env = base_env({"PORT": "0", "LOGS_DIR": str(tmp_path / "logs"), "OUTPUT_DIR": str(tmp_path / "out")})
    r = subprocess.run([BIN, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "policy.lua:3" in r.stderr, r.stderr


def test_check_policy(tmp_path):
    (tmp_path / "good.lua").write_text(GOOD)
    (tmp_path / "bad.lua").write_text(BROKEN)
    env = base_env()
    r = subprocess.run([BIN, "check-policy", "good.lua"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([BIN, "check-policy", "bad.lua"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "bad.lua:3" in r.stderr, r.stderr


def test_admin_reload_200_and_422(server):
    srv = server(files={"lua/policy.lua": GOOD})
    v1 = requests.get(srv.url("/health"), timeout=10).json()["policy_version"]
    policy_path = srv.workdir + "/lua/policy.lua"

    with open(policy_path, "w") as f:
        f.write(BROKEN)
    r = requests.post(srv.url("/api/admin/reload"), timeout=10)
    body = assert_error(r, 422, "reload_failed")
    assert "policy.lua:3" in body["error"]["message"]
    status = requests.get(srv.url("/api/admin/policy"), timeout=10).json()
    assert status["last_error"] and "policy.lua:3" in status["last_error"]
    # The old policy stays in force and requests keep working.
    assert requests.get(srv.url("/health"), timeout=10).json()["policy_version"] == v1
    r = post_composite(srv.base, encode(gradient_scene()), encode(sample_product()))
    assert r.status_code == 200 and r.json()["method"] == "pil"

    with open(policy_path, "w") as f:
        f.write(GOOD2)
    r = requests.post(srv.url("/api/admin/reload"), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "reloaded" and body["version"] > v1
    assert requests.get(srv.url("/health"), timeout=10).json()["policy_version"] == body["version"]
    status = requests.get(srv.url("/api/admin/policy"), timeout=10).json()
    assert status["last_error"] is None
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["rate_limiter"]["max_concurrent"] == 3  # the effective cap of the new policy


def test_sighup_reloads(server):
    import signal
    srv = server(files={"lua/policy.lua": GOOD})
    v1 = requests.get(srv.url("/health"), timeout=10).json()["policy_version"]
    with open(srv.workdir + "/lua/policy.lua", "w") as f:
        f.write(GOOD2)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline:
        if requests.get(srv.url("/health"), timeout=10).json()["policy_version"] > v1:
            break
        time.sleep(0.1)
    assert requests.get(srv.url("/health"), timeout=10).json()["policy_version"] > v1

"""`scenecomp check-policy NEW.lua --replay decisions.jsonl`: the logged
requests replayed through NEW.lua's routing (the default routing or its
`route`), counted against hand-computed expectations."""
import json
import re
import subprocess

from conftest import BIN, base_env

TIMEOUT = 60


def run(args, cwd):
    return subprocess.run([BIN] + args, cwd=cwd, env=base_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def line(i, user, requested, method=None, scene=(1920, 1080), prompt=None, fallback=None):
    return json.dumps({
        "ts": "2026-12-01T10:00:%02d.000Z" % i, "id": "%032x" % i, "user_id": user,
        "prompt": prompt,
        "scene": {"width": scene[0], "height": scene[1], "has_alpha": False},
        "product": {"width": 512, "height": 512, "has_alpha": True},
        "requested_method": requested, "method": method or requested,
        "fallback_reason": fallback,
        "decision": {"policy_version": 1, "phase": None, "rule": "no_phase", "bucket": None,
                     "percent": None}})


INTERNAL_ONLY = """
return {
  use_kontext = true, method = "kontext", phase = "internal",
  phases = { internal = { users = { "ops-1", "qa-1" } } },
}
"""


def test_default_routing_replay_counts(tmp_path):
    log = [
        line(1, "ops-1", "kontext"),            # kontext -> kontext
        line(2, "alice", "kontext"),            # kontext -> pil
        line(3, "bob", "pil"),                  # pil -> pil
        line(4, "qa-1", "pil"),                 # pil -> kontext
        line(5, None, "kontext"),               # kontext -> pil (no user id: no list)
        "not json at all",                      # skipped
        json.dumps({"id": "x", "user_id": "u"}),  # skipped: no requested_method
        "",                                     # blank: ignored
        line(9, "carol", "kontext", method="pil", fallback="timeout"),  # before = requested
    ]
    (tmp_path / "decisions.jsonl").write_text("\n".join(log) + "\n")
    (tmp_path / "new.lua").write_text(INTERNAL_ONLY)
    r = run(["check-policy", "new.lua", "--replay", "decisions.jsonl"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "new.lua: ok"
    assert out[1] == "replayed 6, changed 4 (kontext->pil 3, pil->kontext 1)"
    assert "skipped 2 lines" in r.stdout
    examples = [l for l in out if re.match(r"^  \S+ \S+ user=", l)]
    assert examples == [
        "  2026-12-01T10:00:02.000Z %032x user=alice: kontext -> pil" % 2,
        "  2026-12-01T10:00:04.000Z %032x user=qa-1: pil -> kontext" % 4,
        "  2026-12-01T10:00:05.000Z %032x user=-: kontext -> pil" % 5,
        "  2026-12-01T10:00:09.000Z %032x user=carol: kontext -> pil" % 9,
    ]


ROUTE_FUNCTION = """
return {
  use_kontext = true, method = "kontext",
  route = function(req, ctx)
    local m = ctx.metrics  -- the CLI has a (zero) metrics snapshot too
    if req.prompt and req.prompt:find("studio", 1, true) then return "kontext" end
    if req.scene.width >= 1000 and req.product.has_alpha then return "kontext" end
    return "pil"
  end,
}
"""


def test_route_function_replay_and_example_cap(tmp_path):
    log = []
    # 3 wide scenes logged as pil -> kontext now; 2 small scenes logged as pil stay pil.
    for i in range(3):
        log.append(line(i, "u%d" % i, "pil", scene=(1920, 1080)))
    for i in range(3, 5):
        log.append(line(i, "u%d" % i, "pil", scene=(640, 480)))
    # a small scene with "studio" in the prompt: logged kontext, stays kontext
    log.append(line(5, "u5", "kontext", scene=(640, 480), prompt="a studio shot"))
    # 20 small scenes logged as kontext -> pil now
    for i in range(6, 26):
        log.append(line(i, "v%d" % i, "kontext", scene=(800, 600), prompt="kitchen"))
    (tmp_path / "decisions.jsonl").write_text("\n".join(log) + "\n")
    (tmp_path / "route.lua").write_text(ROUTE_FUNCTION)
    r = run(["check-policy", "route.lua", "--replay", "decisions.jsonl"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "replayed 26, changed 23 (kontext->pil 20, pil->kontext 3)" in r.stdout
    examples = [l for l in r.stdout.splitlines() if l.startswith("  ")]
    assert len(examples) == 10  # at most 10, the first changed ones
    assert examples[0].endswith("user=u0: pil -> kontext")
    assert examples[3].endswith("user=v6: kontext -> pil")
    assert "skipped" not in r.stdout


def test_invalid_policy_or_missing_log(tmp_path):
    (tmp_path / "decisions.jsonl").write_text(line(1, "a", "pil") + "\n")
    (tmp_path / "bad.lua").write_text("return { method = 'both' }")
    r = run(["check-policy", "bad.lua", "--replay", "decisions.jsonl"], tmp_path)
    assert r.returncode == 1
    assert "method" in r.stderr and "test failed" in r.stderr
    assert "replayed" not in r.stdout
    (tmp_path / "new.lua").write_text(INTERNAL_ONLY)
    r = run(["check-policy", "new.lua", "--replay", "missing.jsonl"], tmp_path)
    assert r.returncode == 1 and "missing.jsonl" in r.stderr
    r = run(["check-policy", "new.lua", "--replay"], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
    # An empty log replays nothing, and is not an error.
    (tmp_path / "empty.jsonl").write_text("")
    r = run(["check-policy", "new.lua", "--replay", "empty.jsonl"], tmp_path)
    assert r.returncode == 0
    assert "replayed 0, changed 0 (kontext->pil 0, pil->kontext 0)" in r.stdout


def test_replay_of_an_erroring_route_counts_pil(tmp_path):
    # route raises for one user: serve routes that request to pil (and logs
    # [Policy]); the replay must do exactly the same.
    (tmp_path / "err.lua").write_text("""
return {
  use_kontext = true, method = "kontext",
  route = function(req, ctx)
    if req.user_id == "boom" then error("no such thing") end
    return "kontext"
  end,
}
""")
    (tmp_path / "decisions.jsonl").write_text(
        line(1, "boom", "kontext") + "\n" + line(2, "fine", "pil") + "\n")
    r = run(["check-policy", "err.lua", "--replay", "decisions.jsonl"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "replayed 2, changed 2 (kontext->pil 1, pil->kontext 1)" in r.stdout
    assert "[Policy]" in r.stderr

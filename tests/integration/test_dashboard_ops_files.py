"""docs/prometheus/alerts.yml and docs/grafana/scenecomp.json stay valid and in
step with the service: promtool checks and unit-tests the rules, and every
metric the board and the rules query is one that a running server's /metrics
exposes."""
import json
import os
import re
import shutil
import subprocess

import requests

from conftest import ROOT, post_composite, encode, gradient_scene, sample_product

RULES = os.path.join(ROOT, "docs", "prometheus", "alerts.yml")
RULES_TEST = os.path.join(ROOT, "tests", "prometheus", "alerts_test.yml")
BOARD = os.path.join(ROOT, "docs", "grafana", "scenecomp.json")
ALERTS_LUA = os.path.join(ROOT, "lua", "alerts.lua")

# Series of the contract that the backend does not expose yet (none: the
# breaker's scenecomp_breaker_state landed with issue 11). A name here is not
# checked against /metrics until the backend has it.
PENDING = set()

PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "rate", "increase", "and", "on", "or",
                "unless", "without", "label_values", "instance", "job", "ignoring"}


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool missing: ./scripts/install-deps.sh installs Debian's prometheus"
    return path


def metric_names(expr):
    """Metric names in a PromQL expression (identifiers outside braces and strings)."""
    expr = re.sub(r'\{[^}]*\}', "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
            if w.startswith("scenecomp_") and w not in PROMQL_WORDS}


def exposed_names(text):
    """Series names in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def test_alert_rules_pass_promtool_check_and_unit_tests():
    r = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout, r.stdout
    r = subprocess.run([promtool(), "test", "rules", RULES_TEST], capture_output=True, text=True,
                       cwd=os.path.dirname(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_mirror_the_shipped_lua_alerts():
    lua = open(ALERTS_LUA, encoding="utf-8").read()
    shipped = dict(re.findall(r'name = "([a-z_]+)",\s*severity = "(warning|critical)"', lua))
    assert len(shipped) == 5, shipped
    rules = open(RULES, encoding="utf-8").read()
    found = dict(re.findall(r"- alert: ([a-z_]+)\n(?:.*\n)*?\s+severity: (warning|critical)", rules))
    assert found == shipped


def test_board_and_rules_query_only_exposed_metrics(server):
    board = json.load(open(BOARD, encoding="utf-8"))
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used = set()
    for p in panels:
        assert p["type"] in {"row", "stat", "timeseries", "gauge", "table", "bargauge"}, p
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names, (p["title"], t["expr"])
            used |= names
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            used |= metric_names(v["definition"])
    rules = open(RULES, encoding="utf-8").read()
    used_by_rules = metric_names(" ".join(re.findall(r"expr: \|\n((?:\s{10}.*\n)+)", rules)))
    assert used_by_rules, "no expressions parsed from the rules"

    srv = server()
    # One composite so every series family has been touched at least once.
    post_composite(srv.base, encode(gradient_scene()), encode(sample_product()), scale="0.2")
    r = requests.get(srv.url("/metrics"), timeout=10)
    assert r.status_code == 200
    exposed = exposed_names(r.text)
    # a summary's name covers its _sum and _count too
    exposed |= {n[: -len(s)] for n in exposed for s in ("_sum", "_count") if n.endswith(s)}
    missing = (used | used_by_rules) - exposed - PENDING
    assert not missing, "queried but not exposed by /metrics: %s" % sorted(missing)

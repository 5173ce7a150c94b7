"""Alert rules against the real server: /api/admin/alerts and
/api/admin/metrics/health through a fallback storm (Kontext routed without a
token: every request falls back with no_token), reset, refused and live
reloads, and the Alertmanager webhook to a local receiver."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests

from conftest import encode, gradient_scene, post_composite, sample_product

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Test rules over the fields a storm changes; no hold, so no sleeping.
STORM_RULES = """
return {
  { name = "storm_warning", severity = "warning", for_seconds = 0,
    when = function(m)
      return m.fallback_rate ~= nil and (m.routed_kontext or 0) >= 3 and m.fallback_rate > 0.5
    end,
    summary = function(m)
      return string.format("fallback rate %.0f%% over %d requests", m.fallback_rate * 100,
        m.routed_kontext)
    end,
    value = function(m) return m.fallback_rate end },
  { name = "storm_critical", severity = "critical", for_seconds = 0,
    when = function(m) return (m.fallback_reasons.no_token or 0) >= 6 end,
    summary = function(m) return m.fallback_reasons.no_token .. " requests without a token" end },
}
"""

STORM_ENV = {
    "USE_KONTEXT_COMPOSITE": "true",
    "COMPOSITE_METHOD": "kontext",
    "ALERT_EVAL_INTERVAL_SECONDS": "0.1",
}


def get(srv, path):
    r = requests.get(srv.url(path), timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def wait_status(srv, want, timeout=15.0):
    deadline = time.time() + timeout
    body = None
    while time.time() < deadline:
        body = get(srv, "/api/admin/metrics/health")
        if body["status"] == want:
            return body
        time.sleep(0.05)
    raise AssertionError("health never became %r: %r\nlog:\n%s" % (want, body, srv.log_text()))


def storm(srv, n):
    scene, product = encode(gradient_scene()), encode(sample_product())
    for _ in range(n):
        r = post_composite(srv.base, scene, product)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] is True and body["fallback_reason"] == "no_token", body


def test_default_rules_quiet_service_is_healthy(server):
    srv = server()  # no lua/alerts.lua in its directory: the built-in five
    assert get(srv, "/api/admin/alerts") == {"alerts": []}
    assert get(srv, "/api/admin/metrics/health") == {"status": "healthy", "alerts": []}
    assert "using the embedded default rules (5)" in srv.log_text()


def test_shipped_rules_fire_on_a_storm(server):
    # The shipped file with its holds and volume guard turned down for the test.
    env = dict(STORM_ENV, ALERT_FOR_SECONDS_OVERRIDE="0", ALERT_MIN_VOLUME="3")
    srv = server(env)
    storm(srv, 2)  # under the volume guard
    time.sleep(0.5)
    assert get(srv, "/api/admin/metrics/health")["status"] == "healthy"
    storm(srv, 1)
    body = wait_status(srv, "degraded")
    assert [a["name"] for a in body["alerts"]] == ["high_fallback_rate"]
    # The rule may fire while the third request is routed but not yet fallen
    # back (67% over 3, already above 10%): it fires once, and its value
    # reaches 100% over 3 once that request has been answered.
    srv.wait_log("[Alert] high_fallback_rate firing (warning): fallback rate ")
    assert "over 3 Kontext-routed requests" in srv.log_text().split("high_fallback_rate firing")[1]
    deadline = time.time() + 15
    while not body["alerts"][0]["summary"].startswith("fallback rate 100% over 3"):
        assert time.time() < deadline, body
        time.sleep(0.05)
        body = get(srv, "/api/admin/metrics/health")
        assert [a["name"] for a in body["alerts"]] == ["high_fallback_rate"], body
    assert srv.log_text().count("high_fallback_rate firing") == 1


def test_storm_degraded_then_unhealthy_then_reset(server):
    srv = server(STORM_ENV, files={"lua/alerts.lua": STORM_RULES})
    assert get(srv, "/api/admin/metrics/health")["status"] == "healthy"

    storm(srv, 3)
    body = wait_status(srv, "degraded")
    assert len(body["alerts"]) == 1
    a = body["alerts"][0]
    assert set(a) == {"name", "severity", "state", "since", "summary", "value"}
    assert a["name"] == "storm_warning" and a["severity"] == "warning"
    assert a["state"] == "firing" and RFC3339.match(a["since"]), a
    # It may fire while the third request is routed but not yet fallen back
    # (67% over 3): its summary and value reach 100% once that one is answered.
    deadline = time.time() + 15
    while a["summary"] != "fallback rate 100% over 3 requests":
        assert a["summary"] == "fallback rate 67% over 3 requests", a
        assert time.time() < deadline, a
        time.sleep(0.05)
        a = wait_status(srv, "degraded")["alerts"][0]
    assert a["value"] == 1
    listed = get(srv, "/api/admin/alerts")["alerts"]
    assert [x["name"] for x in listed] == ["storm_warning"]
    srv.wait_log("[Alert] storm_warning firing (warning): fallback rate ")
    assert srv.log_text().count("storm_warning firing") == 1

    storm(srv, 3)
    body = wait_status(srv, "unhealthy")
    assert sorted(x["name"] for x in body["alerts"]) == ["storm_critical", "storm_warning"]
    crit = [x for x in body["alerts"] if x["name"] == "storm_critical"][0]
    assert crit["summary"] == "6 requests without a token" and crit["value"] is None
    srv.wait_log("[Alert] storm_critical firing (critical): 6 requests without a token")

    # a reset evaluates at once: everything resolves
    r = requests.post(srv.url("/api/admin/metrics/reset"), timeout=10)
    assert r.status_code == 200
    assert get(srv, "/api/admin/metrics/health") == {"status": "healthy", "alerts": []}
    assert get(srv, "/api/admin/alerts") == {"alerts": []}
    srv.wait_log("[Alert] storm_critical resolved (critical)")
    srv.wait_log("[Alert] storm_warning resolved (warning)")


def test_bad_rules_refused_then_live_reload(server):
    srv = server(STORM_ENV, files={"lua/alerts.lua": STORM_RULES})
    path = srv.workdir + "/lua/alerts.lua"
    storm(srv, 3)
    wait_status(srv, "degraded")

    # a broken file: refused with file:line, the running rules keep working
    with open(path, "w") as f:
        f.write("return {\n  { name = 'x', severity = 'loud', for_seconds = 0,\n"
                "    when = function(m) return true end },\n}\n")
    r = requests.post(srv.url("/api/admin/reload"), timeout=10)
    assert r.status_code == 422, r.text
    msg = r.json()["error"]["message"]
    assert "alerts:" in msg and "lua/alerts.lua:3:" in msg and "severity" in msg, msg
    srv.wait_log("[Alert] reload (")
    assert "refused, keeping the current 2 rule(s)" in srv.log_text()
    storm(srv, 3)
    wait_status(srv, "unhealthy")  # the old critical rule still evaluates

    # a good file is picked up by the watcher within 2 s (no request needed)
    with open(path, "w") as f:
        f.write("return {{ name = 'storm_warning', severity = 'warning', for_seconds = 0,\n"
                "  when = function(m) return (m.fallbacks or 0) > 0 end }}\n")
    body = wait_status(srv, "degraded", timeout=10)
    assert [x["name"] for x in body["alerts"]] == ["storm_warning"]
    srv.wait_log("[Alert] storm_critical resolved (critical)")


class _Receiver(BaseHTTPRequestHandler):
    bodies = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append((self.headers.get("Content-Type"), self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_alertmanager_payloads(server):
    _Receiver.bodies = []
    httpd = HTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        env = dict(STORM_ENV, ALERT_WEBHOOK_URL="http://127.0.0.1:%d/hook" % httpd.server_port)
        srv = server(env, files={"lua/alerts.lua": STORM_RULES})
        storm(srv, 3)
        wait_status(srv, "degraded")
        requests.post(srv.url("/api/admin/metrics/reset"), timeout=10)
        deadline = time.time() + 15
        while len(_Receiver.bodies) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(_Receiver.bodies) == 2, _Receiver.bodies
        docs = []
        for ctype, raw in _Receiver.bodies:
            assert ctype == "application/json"
            docs.append(json.loads(raw))
        firing, resolved = docs
        for doc, status in ((firing, "firing"), (resolved, "resolved")):
            assert doc["version"] == "4" and doc["status"] == status
            assert doc["receiver"] == "scenecomp" and doc["truncatedAlerts"] == 0
            assert doc["groupKey"] == '{}:{alertname="storm_warning"}'
            assert doc["commonLabels"] == {"alertname": "storm_warning", "severity": "warning",
                                           "service": "scenecomp"}
            (a,) = doc["alerts"]
            assert a["status"] == status and a["labels"] == doc["commonLabels"]
            # 67% when it fired while the storm's third request was still in flight
            assert a["annotations"]["summary"] in ("fallback rate 100% over 3 requests",
                                                   "fallback rate 67% over 3 requests"), a
            assert RFC3339.match(a["startsAt"]) and a["generatorURL"] == ""
        assert firing["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert resolved["alerts"][0]["startsAt"] == firing["alerts"][0]["startsAt"]
        assert RFC3339.match(resolved["alerts"][0]["endsAt"])
        assert resolved["alerts"][0]["endsAt"] >= resolved["alerts"][0]["startsAt"]
    finally:
        httpd.shutdown()
        httpd.server_close()

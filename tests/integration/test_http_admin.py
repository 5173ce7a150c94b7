"""Admin endpoints: the access rule (ADMIN_TOKEN set: bearer token required;
unset: loopback only), answer shapes owned by the HTTP layer, days validation,
reset and reload status codes."""
import requests

from conftest import assert_error, encode, gradient_scene, post_composite, sample_product

ADMIN_GETS = ["/api/admin/metrics/composite", "/api/admin/metrics/health",
              "/api/admin/metrics/daily-generations", "/api/admin/alerts", "/api/admin/policy",
              "/metrics", "/api/admin/fleet"]
ADMIN_POSTS = ["/api/admin/metrics/reset", "/api/admin/reload"]


def test_token_required_when_set(server):
    srv = server({"ADMIN_TOKEN": "s3cret-admin"})
    for path in ADMIN_GETS:
        assert_error(requests.get(srv.url(path), timeout=10), 401, "unauthorized")
        for bad in ("Bearer wrong", "Bearer s3cret-admin-x", "Bearer s3cret-admi", "Basic s3cret-admin",
                    "s3cret-admin", "Bearer "):
            r = requests.get(srv.url(path), headers={"Authorization": bad}, timeout=10)
            assert_error(r, 401, "unauthorized")
        r = requests.get(srv.url(path), headers={"Authorization": "Bearer s3cret-admin"}, timeout=10)
        assert r.status_code == 200, (path, r.text)
    for path in ADMIN_POSTS:
        assert_error(requests.post(srv.url(path), timeout=10), 401, "unauthorized")
    r = requests.post(srv.url("/api/admin/metrics/reset"),
                      headers={"Authorization": "Bearer s3cret-admin"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "reset"}
    # Public endpoints do not need it.
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200
    assert "s3cret-admin" not in srv.log_text()


def test_loopback_allowed_without_token(server):
    srv = server()
    for path in ADMIN_GETS:
        r = requests.get(srv.url(path), timeout=10)
        assert r.status_code == 200, (path, r.text)
        if path == "/metrics":
            assert r.headers["Content-Type"].startswith("text/plain")
        else:
            assert isinstance(r.json(), dict)


def test_daily_generations_days(server):
    srv = server()
    for days in ("1", "7", "365"):
        r = requests.get(srv.url("/api/admin/metrics/daily-generations?days=" + days), timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["days"] == int(days)
    for bad in ("0", "366", "-1", "abc", "7.5", "", "1e2", " 7"):
        r = requests.get(srv.url("/api/admin/metrics/daily-generations"), params={"days": bad}, timeout=10)
        assert_error(r, 400, "invalid_parameter")


def test_reset_and_reload(server):
    srv = server()
    post_composite(srv.base, encode(gradient_scene()), encode(sample_product()))
    r = requests.post(srv.url("/api/admin/metrics/reset"), timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "reset"}
    r = requests.post(srv.url("/api/admin/reload"), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "reloaded" and isinstance(body["version"], int)
    # A POST with a (ignored) body works too.
    r = requests.post(srv.url("/api/admin/metrics/reset"), json={"really": True}, timeout=10)
    assert r.status_code == 200

"""The admin route table: each path reaches its own handler with its one method
(GET routes answer HEAD too), a known path with another method is a 405 with
Allow, anything else under /api/admin/ is a 404."""
import requests

from conftest import assert_error

# path -> (method, a check that only that endpoint's answer passes)
ROUTES = {
    "/api/admin/metrics/composite": ("GET", lambda r: "stats" in r.json() and "scenes" in r.json()),
    "/api/admin/metrics/health": ("GET", lambda r: r.json()["status"] in ("healthy", "degraded", "unhealthy")),
    "/api/admin/metrics/daily-generations": ("GET", lambda r: r.json()["days"] == 7),
    "/api/admin/alerts": ("GET", lambda r: isinstance(r.json()["alerts"], list)),
    "/api/admin/policy": ("GET", lambda r: "effective" in r.json()),
    "/metrics": ("GET", lambda r: "# TYPE scenecomp_composite_requests_total counter" in r.text),
    "/api/admin/fleet": ("GET", lambda r: isinstance(r.json()["instances"], list)),
    "/api/admin/metrics/reset": ("POST", lambda r: r.json() == {"status": "reset"}),
    "/api/admin/reload": ("POST", lambda r: r.json()["status"] == "reloaded"),
}


def test_each_route_reaches_its_handler(server):
    srv = server()
    for path, (method, check) in ROUTES.items():
        r = requests.request(method, srv.url(path), timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert check(r), (path, r.text)
        if method == "GET":
            h = requests.head(srv.url(path), timeout=10)
            assert h.status_code == 200, (path, h.status_code)


def test_wrong_method_is_405_with_allow(server):
    srv = server()
    for path, (method, _) in ROUTES.items():
        others = ["POST", "PUT", "DELETE", "PATCH"] if method == "GET" else ["GET", "PUT", "DELETE"]
        for other in others:
            r = requests.request(other, srv.url(path), timeout=10)
            assert r.status_code == 405, (path, other, r.status_code, r.text)
            assert r.headers["Allow"] == ("GET, HEAD" if method == "GET" else "POST"), r.headers


def test_unknown_admin_paths_are_404(server):
    srv = server()
    for path in ("/api/admin/", "/api/admin/metrics", "/api/admin/metrics/composite/",
                 "/api/admin/Metrics/composite", "/api/admin/reloadx", "/api/admin/nope"):
        for method in ("GET", "POST"):
            assert_error(requests.request(method, srv.url(path), timeout=10), 404, "not_found")

"""GET /dashboard in a real headless browser (Debian's chromium + chromium-driver,
driven by python3-selenium), against the real server and the local fake Replicate:

- every figure on the page equals the admin API's (element ids named after the fields);
- the page updates by itself after new requests;
- with ADMIN_TOKEN the page asks for the token, keeps it in sessionStorage and sends
  it as the Bearer header only, never in a URL;
- no request leaves 127.0.0.1 and the page logs no console error.

The browser is started by the test on loopback with a fresh profile. The test
writes its screenshot to docs/img/dashboard.png when that file is missing or
SC_UPDATE_SCREENSHOT=1 (so a normal run leaves the checkout clean).
"""
import json
import math
import os
import shutil
import struct
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import ROOT, SANITIZED, encode, gradient_scene, post_composite, sample_product

TOKEN = "r8_dashboard_test_token"
ADMIN = "dash-admin-token-7f3a"
TOKEN_KEY = "scenecomp_admin_token"
SCREENSHOT = os.path.join(ROOT, "docs", "img", "dashboard.png")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Generous: a shared 2-core machine, and the server may run under ASan.
WAIT = 90 if SANITIZED else 45
# Endpoints the page calls that a backend may not have yet; a 404 there is handled.
OPTIONAL = ("/api/admin/decisions", "/api/admin/fleet")
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}

POLICY = """
return {
  use_kontext = true, method = "kontext",
  phase = "internal",
  phases = { internal = { users = { "ops-1" } } },
}
"""


# ==== browser ====

def make_browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--user-data-dir=%s" % profile,
                "--window-size=1280,1000",
                # A dead proxy for everything but loopback: should anything still try to
                # leave the machine it fails, and the performance log below names it.
                "--proxy-server=http://127.0.0.1:9"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=os.path.join(tmp_path, "chromedriver.log")) \
        if "log_output" in Service.__init__.__code__.co_varnames \
        else Service(CHROMEDRIVER, log_path=os.path.join(tmp_path, "chromedriver.log"))
    drv = webdriver.Chrome(service=service, options=opts)
    drv.set_page_load_timeout(WAIT)
    return drv


@pytest.fixture
def browser(tmp_path):
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "chromium / chromium-driver missing: ./scripts/install-deps.sh installs them"
    drv = make_browser(tmp_path)
    drv.perf = []  # every performance-log entry, collected as the test goes
    drv.console = []
    yield drv
    drv.quit()


def drain_logs(drv):
    for e in drv.get_log("performance"):
        drv.perf.append(json.loads(e["message"])["message"])
    drv.console.extend(drv.get_log("browser"))


def sent_requests(drv):
    """(url, headers) of every request the page's renderer sent so far."""
    drain_logs(drv)
    out = []
    for m in drv.perf:
        if m["method"] == "Network.requestWillBeSent":
            req = m["params"]["request"]
            out.append((req["url"], req.get("headers", {})))
    return out


def text(drv, el_id):
    return drv.find_element("id", el_id).text


def eventually(what, check, timeout=WAIT, interval=0.25):
    """Polls check() until it returns a truthy value; fails with what and the last result."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last is True or (last and not isinstance(last, (list, dict, str))):
            return last
        time.sleep(interval)
    pytest.fail("%s: still %r after %ss" % (what, last, timeout))


def refreshes(drv):
    return int(drv.execute_script("return window.scDashboard ? window.scDashboard.refreshes : 0"))


def wait_refresh(drv, after=None):
    n = refreshes(drv) if after is None else after
    eventually("a dashboard refresh after #%d" % n, lambda: refreshes(drv) > n)


# ==== the API side ====

def api(srv, path, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    r = requests.get(srv.url(path), headers=h, timeout=10)
    return r


def api_json(srv, path, token=None):
    r = api(srv, path, token)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def fmt(v):
    """The page's own formatting (web/app.js fmt): null -> n/a, rounding to 4 decimals."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return None  # compared through data-value
    return str(v)


def expected_figures(srv, token=None):
    """{element id: API value} for every figure the page shows."""
    m = api_json(srv, "/api/admin/metrics/composite", token)
    health = api_json(srv, "/api/admin/metrics/health", token)
    alerts = api_json(srv, "/api/admin/alerts", token)
    pol = api_json(srv, "/api/admin/policy", token)
    daily = api_json(srv, "/api/admin/metrics/daily-generations?days=30", token)
    k, p, rl = m["stats"]["kontext"], m["stats"]["pil"], m["rate_limiter"]
    fig = {
        "health_status": health["status"],
        "alerts_firing": sum(1 for a in alerts["alerts"] if a["state"] == "firing"),
        "alerts_pending": sum(1 for a in alerts["alerts"] if a["state"] != "firing"),
        "policy_version": pol["version"], "policy_phase": pol["phase"],
        "policy_source": pol["source"], "policy_loaded_at": pol["loaded_at"],
        "breaker_state": (m.get("breaker") or {}).get("state"),
        "total_requests": m["total_requests"], "routed_kontext": m.get("routed_kontext"),
        "fallbacks": m["fallbacks"], "fallback_rate": m["fallback_rate"],
        "kontext_success_rate": m["kontext_success_rate"],
        "kontext_attempts": k["attempts"], "kontext_successes": k["successes"],
        "kontext_failures": k["failures"], "kontext_timeouts": k["timeouts"],
        "pil_attempts": p["attempts"], "pil_successes": p["successes"],
        "kontext_p95_time_seconds": k["p95_time_seconds"],
        "kontext_avg_time_seconds": k["avg_time_seconds"],
        "kontext_p50_time_seconds": k.get("p50_time_seconds"),
        "pil_avg_time_seconds": p["avg_time_seconds"],
        "in_flight": rl["in_flight"], "max_concurrent": rl["max_concurrent"],
        "last_hour": rl["last_hour"], "max_per_hour": rl["max_per_hour"],
        "estimated_cost_usd_today": m["estimated_cost_usd"]["today"],
        "estimated_cost_usd_total": m["estimated_cost_usd"]["total"],
        "since": m["since"],
        "today_generations": daily["today_generations"], "daily_limit": daily["limit"],
        "daily_days": daily["days"],
    }
    assert m["today_generations"] == daily["today_generations"]
    for reason, n in m["fallback_reasons"].items():
        fig["fallback_reason_" + reason] = n
    for key, v in pol["effective"].items():
        fig["effective_" + key] = v
    return fig, {"composite": m, "daily": daily, "alerts": alerts, "policy": pol}


def page_mismatches(drv, fig):
    """Figures whose element text (and data-value) differ from the API's values."""
    # One script reads them all at once: the page re-renders its tables on
    # every refresh, so element handles held across calls would go stale.
    got = drv.execute_script(
        "var out = {}; arguments[0].forEach(function (id) {"
        "  var el = document.getElementById(id);"
        "  out[id] = el ? [el.textContent, el.getAttribute('data-value')] : null; });"
        "return out;", list(fig))
    bad = {}
    for el_id, want in fig.items():
        if got[el_id] is None:
            bad[el_id] = ("missing element", want)
            continue
        got_text, raw = got[el_id]
        got_value = json.loads(raw or "null")
        if isinstance(want, float) and not isinstance(want, bool):
            ok = (isinstance(got_value, (int, float)) and math.isclose(got_value, want, rel_tol=1e-9)
                  and math.isclose(float(got_text), want, abs_tol=5e-5))
        elif isinstance(want, (dict, list)):
            ok = got_value == want
        else:
            ok = got_value == want and got_text == fmt(want)
        if not ok:
            bad[el_id] = (got_text, got_value, want)
    return bad


def page_matches_api(drv, srv, token=None):
    """Eventually (a refresh or two), every figure equals the API's. Returns the API data."""
    state = {}

    def check():
        n = refreshes(drv)
        fig, data = expected_figures(srv, token)
        eventually("a refresh after reading the API", lambda: refreshes(drv) > n)
        bad = page_mismatches(drv, fig)
        state["data"] = data
        return True if not bad else bad

    eventually("page figures equal to the admin API", check)
    return state["data"]


def check_charts(drv, data):
    d = data["daily"]
    daily = drv.execute_script(
        "var c = window.scDashboard.charts.daily_chart;"
        "return {labels: c.data.labels, kontext: c.data.datasets[0].data,"
        " pil: c.data.datasets[1].data, limit: c.data.datasets[2].data};")
    assert daily["labels"] == [r["date"] for r in d["daily"]] and len(daily["labels"]) == 30
    assert daily["kontext"] == [r["kontext"] for r in d["daily"]]
    assert daily["pil"] == [r["pil"] for r in d["daily"]]
    assert daily["limit"] == [d["limit"]] * 30
    m = data["composite"]
    methods = drv.execute_script("return window.scDashboard.charts.methods_chart.data.datasets[0].data")
    assert methods == [m["stats"]["kontext"]["successes"], m["stats"]["pil"]["attempts"]]
    fb = drv.execute_script(
        "var c = window.scDashboard.charts.fallbacks_chart; return [c.data.labels, c.data.datasets[0].data]")
    assert dict(zip(fb[0], fb[1])) == m["fallback_reasons"]


def check_optional_sections(drv, srv, token=None):
    dec = api(srv, "/api/admin/decisions?limit=20", token)
    if dec.status_code == 404:
        assert "no decisions endpoint" in text(drv, "decisions_status")
    else:
        assert dec.status_code == 200, dec.text
        body = dec.json()
        rows = body if isinstance(body, list) else body.get("decisions", [])
        eventually("decision rows", lambda: len(drv.find_elements("css selector", "#decisions tr")) == len(rows))
    fleet = api(srv, "/api/admin/fleet", token)
    card = drv.find_element("id", "fleet_card")
    if fleet.status_code == 404:
        assert not card.is_displayed()
    else:
        assert card.is_displayed()
        assert text(drv, "fleet_instances") == str(len(fleet.json()["instances"]))


def check_network_and_console(drv, srv, allowed_statuses):
    """No request leaves 127.0.0.1; no console error but the expected refusals
    (allowed_statuses: {(path prefix, status)})."""
    reqs = sent_requests(drv)
    assert any(u.startswith(srv.url("/api/admin/")) for u, _ in reqs), "no API call seen"
    for url, _ in reqs:
        parts = urlsplit(url)
        if parts.scheme in NETWORK_SCHEMES:
            assert parts.hostname == "127.0.0.1", "request left loopback: " + url
        else:  # browser-internal pages (about:, data:, chrome:) never touch the network
            assert parts.scheme in {"about", "data", "chrome", "blob"}, url
    for e in drv.console:
        if e["level"] not in ("SEVERE", "ERROR"):
            continue
        msg = e["message"]
        ok = e.get("source") == "network" and any(
            msg.startswith(srv.url(prefix)) and "status of %d" % status in msg
            for prefix, status in allowed_statuses)
        assert ok, "console error: %r" % e


def optional_404s(srv, token=None):
    return {(p, 404) for p in OPTIONAL if api(srv, p, token).status_code == 404}


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def save_screenshot(drv, tmp_path):
    for _ in range(3):  # the window's chrome takes some height: settle on the page's
        height = drv.execute_script("return document.documentElement.scrollHeight")
        inner = drv.execute_script("return window.innerHeight")
        if inner >= height:
            break
        size = drv.get_window_size()
        drv.set_window_size(1280, min(size["height"] + height - inner + 4, 2400))
    shot = os.path.join(tmp_path, "dashboard.png")
    drv.execute_script("window.scrollTo(0, 0)")
    assert drv.save_screenshot(shot)
    w, h = png_size(shot)
    assert w >= 1000 and h >= 800, (w, h)
    assert os.path.getsize(shot) > 20000  # a rendered page, not a blank one
    if not os.path.exists(SCREENSHOT) or os.environ.get("SC_UPDATE_SCREENSHOT") == "1":
        from PIL import Image  # a 128-colour palette keeps the committed file small
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        Image.open(shot).convert("RGB").quantize(colors=128).save(SCREENSHOT, optimize=True)


# ==== tests ====

def kontext_env(fake, extra=None):
    env = {"REPLICATE_API_BASE": fake.base_url, "REPLICATE_API_TOKEN": TOKEN,
           "ALERT_FOR_SECONDS_OVERRIDE": "0", "ALERT_MIN_VOLUME": "1",
           "ALERT_EVAL_INTERVAL_SECONDS": "0.5", "KONTEXT_PRICE_USD": "0.04"}
    env.update(extra or {})
    return env


def compose(srv, n, user_id=None):
    scene, product = encode(gradient_scene(160, 90)), encode(sample_product())
    for _ in range(n):
        fields = {"scale": "0.25"}
        if user_id:
            fields["user_id"] = user_id
        r = post_composite(srv.base, scene, product, **fields)
        assert r.status_code == 200, r.text


def test_dashboard_shows_the_admin_api_and_updates(server, fake, browser, tmp_path):
    srv = server(kontext_env(fake, {"KONTEXT_DAILY_GENERATION_LIMIT": "12"}),
                 files={"lua/policy.lua": POLICY})
    # A rollout in its internal phase: ops-1 goes to Kontext (2 successes, then
    # a failed prediction that falls back), everyone else to PIL.
    compose(srv, 2, user_id="ops-1")
    fake.configure(mode="failed")
    compose(srv, 1, user_id="ops-1")
    compose(srv, 2)
    srv.wait_log("[Alert]", timeout=WAIT)

    browser.get(srv.url("/dashboard"))
    assert browser.title == "scenecomp dashboard"
    assert not browser.find_element("id", "token_panel").is_displayed()
    data = page_matches_api(browser, srv)
    m = data["composite"]
    assert m["fallback_reasons"]["api_error"] == 1 and m["stats"]["kontext"]["successes"] == 2
    assert text(browser, "policy_phase") == "internal"
    assert text(browser, "policy_last_error") == "none"
    # p50 is not in the API: the page says so instead of inventing one
    assert text(browser, "kontext_p50_time_seconds") == "n/a"
    assert "p50 is not reported" in text(browser, "latency_note")
    firing = [a for a in data["alerts"]["alerts"] if a["state"] == "firing"]
    assert firing, "the setup should make an alert fire"
    for a in firing:
        assert text(browser, "alert_state_" + a["name"]) == "firing"
    check_charts(browser, data)
    check_optional_sections(browser, srv)

    # New requests show up without a reload.
    before = int(text(browser, "total_requests"))
    compose(srv, 3)
    eventually("total_requests updated", lambda: text(browser, "total_requests") == str(before + 3))
    data = page_matches_api(browser, srv)
    check_charts(browser, data)

    check_network_and_console(browser, srv, optional_404s(srv))
    save_screenshot(browser, tmp_path)


def test_dashboard_token_flow(server, browser):
    srv = server({"ADMIN_TOKEN": ADMIN})
    compose(srv, 2)
    # The page is public HTML that carries no data; the API refuses without the token.
    page = requests.get(srv.url("/dashboard"), timeout=10)
    assert page.status_code == 200 and ADMIN not in page.text
    assert api(srv, "/api/admin/policy").status_code == 401

    browser.get(srv.url("/dashboard"))
    eventually("token form shown", lambda: browser.find_element("id", "token_panel").is_displayed())
    assert not browser.find_element("id", "main").is_displayed()

    # A wrong token is refused, and not kept.
    browser.find_element("id", "token_input").send_keys("wrong-token")
    browser.find_element("id", "token_submit").click()
    eventually("wrong token refused", lambda: text(browser, "token_error") == "that token was refused")
    assert browser.execute_script("return sessionStorage.getItem(arguments[0])", TOKEN_KEY) is None

    browser.find_element("id", "token_input").send_keys(ADMIN)
    browser.find_element("id", "token_submit").click()
    eventually("dashboard shown", lambda: browser.find_element("id", "main").is_displayed())
    page_matches_api(browser, srv, ADMIN)
    assert browser.execute_script("return sessionStorage.getItem(arguments[0])", TOKEN_KEY) == ADMIN
    # Only sessionStorage: no cookie, no localStorage.
    assert browser.execute_script("return document.cookie") == ""
    assert browser.execute_script("return localStorage.length") == 0

    # A reload in the same tab does not ask again.
    browser.refresh()
    wait_refresh(browser, after=0)
    assert browser.find_element("id", "main").is_displayed()
    assert not browser.find_element("id", "token_panel").is_displayed()

    reqs = sent_requests(browser)
    for url, headers in reqs:
        assert ADMIN not in url, "token in a URL: " + url
    admin_calls = [(u, h) for u, h in reqs if urlsplit(u).path.startswith("/api/admin/")]
    authorized = [h.get("Authorization") for _, h in admin_calls if h.get("Authorization")]
    assert len(authorized) >= 7, "each API call of a refresh carries the token"
    assert set(authorized) == {"Bearer " + ADMIN, "Bearer wrong-token"}
    # Only the very first probe went out before any token was entered.
    assert sum(1 for _, h in admin_calls if "Authorization" not in h) == 1
    # The refused probes (before a token, with the wrong one) are the only 401s.
    check_network_and_console(browser, srv,
                              optional_404s(srv, ADMIN) | {("/api/admin/metrics/health", 401)})


def test_dashboard_assets_served_from_the_binary(server):
    srv = server()
    page = requests.get(srv.url("/dashboard"), timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    for needle in ("http://", "https://", "//cdn"):
        assert needle not in page.text
    kinds = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
             "chart.min.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"}
    for name, ctype in kinds.items():
        r = requests.get(srv.url("/dashboard/assets/" + name), timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == ctype, name
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"].startswith('"')
        # revalidation: a matching If-None-Match is a bodiless 304
        again = requests.get(srv.url("/dashboard/assets/" + name),
                             headers={"If-None-Match": r.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and again.content == b""
        if name in ("app.js", "style.css"):
            with open(os.path.join(ROOT, "web", name), "rb") as f:
                assert r.content == f.read()
    chart = requests.get(srv.url("/dashboard/assets/chart.min.js"), timeout=10)
    assert b"Chart.js v3.9.1" in chart.content[:200]
    debian = "/usr/share/javascript/chart.js/chart.min.js"
    if os.path.exists(debian):
        with open(debian, "rb") as f:
            assert chart.content == f.read()
    head = requests.head(srv.url("/dashboard"), timeout=10)
    assert head.status_code == 200 and head.content == b""
    for path, status in (("/dashboard/assets/nope.js", 404), ("/dashboard/assets/index.html", 404),
                         ("/dashboard/assets/../app.js", 404), ("/dashboardx", 404)):
        r = requests.get(srv.url(path), timeout=10)
        assert r.status_code == status, path
        assert r.json()["error"]["code"] == "not_found"
    r = requests.post(srv.url("/dashboard"), timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"

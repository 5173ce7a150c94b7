/* scenecomp ops dashboard: polls the admin API every few seconds and shows it.
 *
 * Rules this file keeps:
 * - The admin token (when the server has ADMIN_TOKEN) is entered once, kept in
 *   this tab's sessionStorage and sent only as `Authorization: Bearer ...`;
 *   it never goes into a URL.
 * - Every request goes to the page's own origin (the CSP allows nothing else).
 * - Every figure is an element whose id is named after its API field, with the
 *   value as its text (numbers rounded to 4 decimals, null shown as "n/a").
 * - Text from the server is set with textContent, never as HTML.
 */
(function () {
  "use strict";

  var REFRESH_MS = 3000;
  var TOKEN_KEY = "scenecomp_admin_token";
  var DAYS = 30;

  var state = {
    refreshes: 0, // completed refresh cycles (the browser test waits on it)
    last: {}, // the last JSON of every endpoint
    charts: {},
    timer: null,
    stopped: false,
  };
  window.scDashboard = state;

  function $(id) {
    return document.getElementById(id);
  }

  function token() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    if (typeof v === "number") {
      if (!isFinite(v)) return "n/a";
      if (Number.isInteger(v)) return String(v);
      return String(Number(v.toFixed(4)));
    }
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function set(id, v) {
    var el = $(id);
    if (!el) return;
    el.textContent = fmt(v);
    el.setAttribute("data-value", v === undefined ? "null" : JSON.stringify(v));
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function cell(tr, text, id) {
    var td = document.createElement("td");
    td.textContent = text;
    if (id) td.id = id;
    tr.appendChild(td);
    return td;
  }

  /* GET path on this origin; resolves to {status, body} (body null unless JSON). */
  function api(path) {
    var headers = { Accept: "application/json" };
    var t = token();
    if (t) headers.Authorization = "Bearer " + t;
    return fetch(path, { headers: headers, cache: "no-store", credentials: "omit" }).then(
      function (r) {
        return r.text().then(function (text) {
          var body = null;
          try {
            body = text ? JSON.parse(text) : null;
          } catch (e) {
            body = null;
          }
          return { status: r.status, body: body };
        });
      }
    );
  }

  /* ==== Access ==== */

  function showToken(message) {
    $("main").hidden = true;
    $("token_panel").hidden = false;
    $("token_forget").hidden = true;
    $("token_error").textContent = message || "";
    $("token_input").focus();
    state.stopped = true;
  }

  function showForbidden(body) {
    $("main").hidden = true;
    $("forbidden_panel").hidden = false;
    $("forbidden_message").textContent =
      body && body.error ? body.error.message : "the admin API refused this client";
    state.stopped = true;
  }

  /* ==== Renderers ==== */

  function renderHealth(h) {
    var status = h && h.status ? h.status : null;
    set("health_status", status);
    set("health_status_text", status);
    $("health_status").setAttribute("data-status", status || "");
  }

  function renderAlerts(a) {
    var list = (a && a.alerts) || [];
    var tbody = $("alerts");
    clear(tbody);
    var firing = 0;
    var pending = 0;
    list.forEach(function (al) {
      if (al.state === "firing") firing++;
      else pending++;
      var tr = document.createElement("tr");
      tr.className = al.state + " " + al.severity;
      tr.setAttribute("data-name", al.name);
      cell(tr, al.name, "alert_" + al.name);
      cell(tr, fmt(al.severity));
      cell(tr, fmt(al.state), "alert_state_" + al.name);
      cell(tr, fmt(al.since));
      cell(tr, fmt(al.value));
      cell(tr, fmt(al.summary));
      tbody.appendChild(tr);
    });
    if (!list.length) {
      var tr = document.createElement("tr");
      cell(tr, "no alert pending or firing").colSpan = 6;
      tbody.appendChild(tr);
    }
    set("alerts_firing", firing);
    set("alerts_pending", pending);
  }

  function renderPolicy(p) {
    p = p || {};
    set("policy_version", p.version);
    set("policy_phase", p.phase);
    set("policy_source", p.source);
    set("policy_loaded_at", p.loaded_at);
    var le = $("policy_last_error");
    le.textContent = p.last_error === null || p.last_error === undefined ? "none" : fmt(p.last_error);
    le.setAttribute("data-value", JSON.stringify(p.last_error === undefined ? null : p.last_error));
    le.className = p.last_error ? "bad" : "ok";
    var tbody = $("effective");
    clear(tbody);
    var eff = p.effective || {};
    Object.keys(eff).forEach(function (k) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.textContent = k;
      tr.appendChild(th);
      var td = cell(tr, fmt(eff[k]), "effective_" + k);
      td.setAttribute("data-value", JSON.stringify(eff[k]));
      tbody.appendChild(tr);
    });
  }

  function pct(v) {
    return v === null || v === undefined ? "" : " (" + (v * 100).toFixed(1) + "%)";
  }

  function renderComposite(m) {
    m = m || {};
    var k = (m.stats && m.stats.kontext) || {};
    var p = (m.stats && m.stats.pil) || {};
    var rl = m.rate_limiter || {};
    var cost = m.estimated_cost_usd || {};
    set("total_requests", m.total_requests);
    set("routed_kontext", m.routed_kontext);
    set("fallbacks", m.fallbacks);
    set("fallback_rate", m.fallback_rate);
    set("kontext_success_rate", m.kontext_success_rate);
    $("fallback_rate").title = pct(m.fallback_rate);
    $("kontext_success_rate").title = pct(m.kontext_success_rate);
    set("kontext_attempts", k.attempts);
    set("kontext_successes", k.successes);
    set("kontext_failures", k.failures);
    set("kontext_timeouts", k.timeouts);
    set("pil_attempts", p.attempts);
    set("pil_successes", p.successes);
    set("in_flight", rl.in_flight);
    set("max_concurrent", rl.max_concurrent);
    set("last_hour", rl.last_hour);
    set("max_per_hour", rl.max_per_hour);
    set("estimated_cost_usd_today", cost.today);
    set("estimated_cost_usd_total", cost.total);
    set("since", m.since);

    // The breaker is reported only by backends that have one (API.md "Outage protection").
    var br = m.breaker;
    set("breaker_state", br && br.state ? br.state : null);
    $("breaker_state").className = br && br.state && br.state !== "closed" ? "bad" : "";

    // Latency: the API reports p95 and the average; p50 only if it is there.
    set("kontext_p50_time_seconds", k.p50_time_seconds);
    set("kontext_p95_time_seconds", k.p95_time_seconds);
    set("kontext_avg_time_seconds", k.avg_time_seconds);
    set("pil_avg_time_seconds", p.avg_time_seconds);
    $("latency_note").textContent =
      k.p50_time_seconds === undefined
        ? "p50 is not reported by /api/admin/metrics/composite; shown are Kontext p95 and the averages (seconds)."
        : "seconds";

    var reasons = m.fallback_reasons || {};
    var names = Object.keys(reasons);
    var tbody = $("fallback_reasons");
    clear(tbody);
    names.forEach(function (r) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.textContent = r;
      tr.appendChild(th);
      cell(tr, fmt(reasons[r]), "fallback_reason_" + r).setAttribute(
        "data-value",
        JSON.stringify(reasons[r])
      );
      tbody.appendChild(tr);
    });

    chart("methods_chart", {
      type: "doughnut",
      data: {
        labels: ["Kontext", "PIL"],
        datasets: [{ data: [k.successes || 0, p.attempts || 0], backgroundColor: ["#1f6feb", "#8b949e"] }],
      },
      options: { plugins: { title: { display: true, text: "Composites: Kontext vs PIL" } } },
    });
    chart("fallbacks_chart", {
      type: "bar",
      data: {
        labels: names,
        datasets: [{ label: "fallbacks", data: names.map(function (r) { return reasons[r]; }), backgroundColor: "#d29922" }],
      },
      options: {
        indexAxis: "y",
        plugins: { legend: { display: false }, title: { display: true, text: "Fallbacks by reason" } },
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { ticks: { autoSkip: false } } },
      },
    });
  }

  function renderDaily(d) {
    d = d || {};
    var rows = d.daily || [];
    set("daily_days", d.days);
    set("daily_limit", d.limit);
    set("today_generations", d.today_generations);
    chart("daily_chart", {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.date; }),
        datasets: [
          { type: "bar", label: "Kontext generations", data: rows.map(function (r) { return r.kontext; }), backgroundColor: "#1f6feb" },
          { type: "bar", label: "PIL composites", data: rows.map(function (r) { return r.pil; }), backgroundColor: "#8b949e" },
          { type: "line", label: "daily limit", data: rows.map(function () { return d.limit; }), borderColor: "#cf222e", pointRadius: 0, borderWidth: 2 },
        ],
      },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function renderDecisions(res) {
    var tbody = $("decisions");
    clear(tbody);
    if (res.status === 404) {
      $("decisions_status").textContent = "no decisions endpoint on this server";
      return;
    }
    if (res.status !== 200 || !res.body) {
      $("decisions_status").textContent = "decisions unavailable (HTTP " + res.status + ")";
      return;
    }
    var list = Array.isArray(res.body) ? res.body : res.body.decisions || [];
    $("decisions_status").textContent = list.length + " newest decisions";
    list.forEach(function (dc) {
      var dec = dc.decision || {};
      var tr = document.createElement("tr");
      cell(tr, fmt(dc.ts));
      cell(tr, fmt(dc.id));
      cell(tr, fmt(dc.user_id));
      cell(tr, fmt(dc.requested_method));
      cell(tr, fmt(dc.method));
      cell(tr, fmt(dc.fallback_reason));
      cell(tr, fmt(dec.rule));
      cell(tr, fmt(dec.policy_version));
      tbody.appendChild(tr);
    });
  }

  function renderFleet(res) {
    var card = $("fleet_card");
    if (res.status !== 200 || !res.body) {
      card.hidden = true; // no fleet endpoint (or no fleet): nothing to show
      return;
    }
    card.hidden = false;
    var list = res.body.instances || [];
    set("fleet_instances", list.length);
    var tbody = $("fleet");
    clear(tbody);
    list.forEach(function (i) {
      var tr = document.createElement("tr");
      cell(tr, fmt(i.id));
      cell(tr, fmt(i.version));
      cell(tr, fmt(i.policy_version));
      cell(tr, fmt(i.in_flight));
      cell(tr, fmt(i.started_at));
      cell(tr, fmt(i.last_seen));
      tbody.appendChild(tr);
    });
  }

  /* Creates the chart once, then updates its data in place (no animation). */
  function chart(id, cfg) {
    if (typeof window.Chart !== "function") return;
    var c = state.charts[id];
    if (!c) {
      cfg.options = cfg.options || {};
      cfg.options.animation = false;
      cfg.options.responsive = true;
      cfg.options.maintainAspectRatio = false;
      state.charts[id] = new window.Chart($(id), cfg);
      return;
    }
    c.data.labels = cfg.data.labels;
    cfg.data.datasets.forEach(function (ds, i) {
      if (c.data.datasets[i]) c.data.datasets[i].data = ds.data;
    });
    c.update("none");
  }

  /* ==== Refresh loop ==== */

  function schedule() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = state.stopped ? null : setTimeout(refresh, REFRESH_MS);
  }

  function refresh() {
    state.timer = null;
    // One probe first, so a missing token costs one refused request, not seven.
    api("/api/admin/metrics/health")
      .then(function (health) {
        if (health.status === 401) {
          var had = token();
          try {
            window.sessionStorage.removeItem(TOKEN_KEY);
          } catch (e) {}
          showToken(had ? "that token was refused" : "");
          return null;
        }
        if (health.status === 403) {
          showForbidden(health.body);
          return null;
        }
        return Promise.all([
          api("/api/admin/alerts"),
          api("/api/admin/policy"),
          api("/api/admin/metrics/composite"),
          api("/api/admin/metrics/daily-generations?days=" + DAYS),
          api("/api/admin/decisions?limit=20"),
          api("/api/admin/fleet"),
        ]).then(function (r) {
          state.last = {
            health: health.body, alerts: r[0].body, policy: r[1].body, composite: r[2].body,
            daily: r[3].body, decisions: r[4], fleet: r[5],
          };
          $("token_panel").hidden = true;
          $("forbidden_panel").hidden = true;
          $("main").hidden = false;
          $("token_forget").hidden = !token();
          renderHealth(health.body);
          renderAlerts(r[0].body);
          renderPolicy(r[1].body);
          renderComposite(r[2].body);
          renderDaily(r[3].body);
          renderDecisions(r[4]);
          renderFleet(r[5]);
          $("load_error").hidden = true;
          $("updated_at").textContent = new Date().toISOString().replace(/\.\d+Z$/, "Z");
          state.refreshes++;
          document.body.setAttribute("data-refreshes", String(state.refreshes));
        });
      })
      .catch(function (e) {
        $("load_error").hidden = false;
        $("load_error").textContent = "cannot reach the server: " + e.message;
      })
      .then(schedule);
  }

  function start() {
    set("refresh_seconds", REFRESH_MS / 1000);
    $("token_form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = $("token_input").value.trim();
      if (!t) return;
      try {
        window.sessionStorage.setItem(TOKEN_KEY, t);
      } catch (e) {}
      $("token_input").value = "";
      $("token_panel").hidden = true;
      state.stopped = false;
      refresh();
    });
    $("token_forget").addEventListener("click", function () {
      try {
        window.sessionStorage.removeItem(TOKEN_KEY);
      } catch (e) {}
      if (state.timer) clearTimeout(state.timer);
      showToken("");
    });
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

-- Test helpers for alert rule files: a tiny stand-in for the host's
-- `scenecomp` module (only env is used by the shipped rules), a loader that
-- runs a rules file the way the service does (text only, own environment),
-- and a builder for metrics snapshots shaped like /api/admin/metrics/composite.
local M = {}

-- A stub `scenecomp` module whose env(name) answers from the table vars.
function M.scenecomp(vars)
  vars = vars or {}
  return {
    env = function(name) return vars[name] end,
    log = function() end,
    now = function() return os.time() end,
  }
end

-- Loads a rules file with `scenecomp` = the stub (or none when vars == false)
-- and returns the list it returns. Like the service, it offers
-- shipped_alerts(): a fresh copy of lua/alerts.lua's rules.
function M.load(path, vars)
  local env = setmetatable({}, { __index = _G })
  if vars ~= false then env.scenecomp = M.scenecomp(vars) end
  env.shipped_alerts = function() return M.load("lua/alerts.lua", vars) end
  local chunk = assert(loadfile(path or "lua/alerts.lua", "t", env))
  return chunk()
end

function M.by_name(rules, name)
  for _, r in ipairs(rules) do
    if r.name == name then return r end
  end
  error("no rule named " .. name)
end

local function merge(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" then merge(dst[k], v) else dst[k] = v end
  end
  return dst
end

-- A fresh-start snapshot (no traffic: counts 0, rates nil) with `over`
-- merged in (nested tables merge).
function M.snapshot(over)
  local m = {
    stats = {
      kontext = { attempts = 0, successes = 0, failures = 0, timeouts = 0 },
      pil = { attempts = 0, successes = 0, failures = 0 },
    },
    total_requests = 0, fallbacks = 0,
    fallback_reasons = { timeout = 0, api_error = 0, invalid_output = 0,
      concurrency_limit = 0, hourly_limit = 0, daily_limit = 0, no_token = 0,
      circuit_open = 0, budget_pacing = 0, limiter_unavailable = 0, interrupted = 0 },
    today_generations = 0, daily_limit = 500,
    rate_limiter = { in_flight = 0, max_concurrent = 5, last_hour = 0, max_per_hour = 50 },
    estimated_cost_usd = { today = 0, total = 0 },
    since = 1700000000,
    breaker = { state = "closed", since = 1700000000, calls = 0 },
  }
  return merge(m, over or {})
end

-- Checks a rule list the way the service's validation does; returns true or
-- false, message.
function M.valid(rules)
  local known = { name = true, severity = true, for_seconds = true, when = true,
    summary = true, value = true }
  if type(rules) ~= "table" then return false, "not a list" end
  local seen = {}
  for i, r in ipairs(rules) do
    if type(r) ~= "table" then return false, "rule " .. i .. " not a table" end
    for k in pairs(r) do
      if not known[k] then return false, "unknown key " .. tostring(k) end
    end
    if type(r.name) ~= "string" or not r.name:match("^[%a_][%w_.:-]*$") then
      return false, "bad name in rule " .. i
    end
    if seen[r.name] then return false, "duplicate " .. r.name end
    seen[r.name] = true
    if r.severity ~= "warning" and r.severity ~= "critical" then return false, "bad severity" end
    if type(r.for_seconds) ~= "number" or r.for_seconds < 0 then return false, "bad for_seconds" end
    if type(r.when) ~= "function" then return false, "when not a function" end
    if r.summary ~= nil and type(r.summary) ~= "function" then return false, "bad summary" end
    if r.value ~= nil and type(r.value) ~= "function" then return false, "bad value" end
  end
  return true
end

return M

-- scenecomp alert rules (ALERTS_FILE). The four alerts of the deployment guide,
-- and one for an open circuit breaker (API.md "Outage protection").
--
-- The file returns a list of rules; each rule is
--   { name = "...", severity = "warning" | "critical", for_seconds = N,
--     when = function(m) return <bool> end,          -- required
--     summary = function(m) return "<text>" end,     -- optional
--     value = function(m) return <number> end }      -- optional
-- where m is the metrics snapshot (the fields of /api/admin/metrics/composite;
-- a rate whose denominator is 0 is nil). The service evaluates every rule every
-- ALERT_EVAL_INTERVAL_SECONDS; a rule whose when() stays true for for_seconds
-- fires. See docs/alerts.md.

-- Read an environment value through the host (absent when the file is loaded
-- by plain Lua, e.g. busted without the stub).
local function env(name)
  local sc = scenecomp
  if type(sc) ~= "table" then return nil end
  local e = sc.env
  if type(e) == "function" then return e(name) end
  if type(e) == "table" then return e[name] end
  return nil
end

local function env_number(name, default)
  local v = tonumber(env(name))
  if v == nil or v < 0 then return default end
  return v
end

-- Tunables. Ratios over fewer than MIN_VOLUME requests/attempts never fire:
-- 2 fallbacks out of 3 requests is noise, not an incident.
local MIN_VOLUME = env_number("ALERT_MIN_VOLUME", 20)
local FALLBACK_RATE_MAX = 0.10     -- guide: fallback_rate > 0.10
local DAILY_LIMIT_SHARE = 0.9      -- guide: today_generations > limit * 0.9
local SUCCESS_RATE_MIN = 0.90      -- guide: kontext_success_rate < 0.90
local AVG_TIME_MAX_SECONDS = 60    -- guide: avg_time_seconds > 60
local BREAKER_STATE_VALUE = { closed = 0, open = 1, half_open = 2 }  -- as scenecomp_breaker_state

-- How long a condition must hold before it fires. ALERT_FOR_SECONDS_OVERRIDE
-- (e.g. 0 in tests) replaces every value below.
local FOR_OVERRIDE = tonumber(env("ALERT_FOR_SECONDS_OVERRIDE"))
local function hold(seconds)
  if FOR_OVERRIDE ~= nil and FOR_OVERRIDE >= 0 then return FOR_OVERRIDE end
  return seconds
end

local function kontext(m)
  return (m.stats and m.stats.kontext) or {}
end

-- Requests routed to Kontext: each one was either admitted by the limiter (an
-- attempt) or refused before any prediction (a limit or a missing token).
local function routed_kontext(m)
  if m.routed_kontext ~= nil then return m.routed_kontext end
  local r = m.fallback_reasons or {}
  return (kontext(m).attempts or 0) + (r.concurrency_limit or 0) + (r.hourly_limit or 0)
    + (r.daily_limit or 0) + (r.no_token or 0)
end

local function pct(x)
  return string.format("%.0f%%", x * 100)
end

return {
  {
    name = "high_fallback_rate",
    severity = "warning",
    for_seconds = hold(120),
    when = function(m)
      return m.fallback_rate ~= nil and routed_kontext(m) >= MIN_VOLUME
        and m.fallback_rate > FALLBACK_RATE_MAX
    end,
    summary = function(m)
      return string.format("fallback rate %s over %d Kontext-routed requests (alert above %s)",
        pct(m.fallback_rate or 0), routed_kontext(m), pct(FALLBACK_RATE_MAX))
    end,
    value = function(m) return m.fallback_rate end,
  },
  {
    name = "daily_generation_limit",
    severity = "warning",
    for_seconds = hold(60),
    when = function(m)
      local limit, today = m.daily_limit, m.today_generations
      return limit ~= nil and today ~= nil and limit > 0 and today > limit * DAILY_LIMIT_SHARE
    end,
    summary = function(m)
      return string.format("%d of %d Kontext generations used today (alert above %s)",
        m.today_generations or 0, m.daily_limit or 0, pct(DAILY_LIMIT_SHARE))
    end,
    value = function(m) return m.today_generations end,
  },
  {
    name = "low_kontext_success_rate",
    severity = "critical",
    for_seconds = hold(120),
    when = function(m)
      local k = kontext(m)
      return m.kontext_success_rate ~= nil and (k.attempts or 0) >= MIN_VOLUME
        and m.kontext_success_rate < SUCCESS_RATE_MIN
    end,
    summary = function(m)
      return string.format("Kontext success rate %s over %d predictions (alert below %s)",
        pct(m.kontext_success_rate or 0), kontext(m).attempts or 0, pct(SUCCESS_RATE_MIN))
    end,
    value = function(m) return m.kontext_success_rate end,
  },
  {
    name = "high_avg_generation_time",
    severity = "warning",
    for_seconds = hold(300),
    when = function(m)
      local k = kontext(m)
      -- the average is over successful composites, so guard on those
      return k.avg_time_seconds ~= nil and (k.successes or 0) >= MIN_VOLUME
        and k.avg_time_seconds > AVG_TIME_MAX_SECONDS
    end,
    summary = function(m)
      local k = kontext(m)
      return string.format("average Kontext time %.1fs over %d successful composites (alert above %ds)",
        k.avg_time_seconds or 0, k.successes or 0, AVG_TIME_MAX_SECONDS)
    end,
    value = function(m) return kontext(m).avg_time_seconds end,
  },
  {
    -- Replicate is failing: the breaker sends Kontext-routed requests to PIL.
    -- A real outage alternates open and half-open (each failed trial re-opens
    -- it), so anything but closed for a minute counts; a blip that a trial
    -- closes within the minute does not fire.
    name = "circuit_breaker_open",
    severity = "critical",
    for_seconds = hold(60),
    when = function(m)
      local b = m.breaker
      return type(b) == "table" and (b.state == "open" or b.state == "half_open")
    end,
    summary = function(m)
      local b = m.breaker or {}
      return string.format("Kontext circuit breaker %s: requests fall back to PIL (circuit_open: %d)",
        tostring(b.state), (m.fallback_reasons or {}).circuit_open or 0)
    end,
    value = function(m) return BREAKER_STATE_VALUE[(m.breaker or {}).state] end,
  },
}

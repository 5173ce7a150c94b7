-- Example ALERTS_FILE: a custom rule set about money and quota, not the
-- shipped four. Use it as ALERTS_FILE=examples/alerts/cost_budget.lua, or copy
-- the rules you like into your own file.
--
-- Settings come from the service's environment / .env through scenecomp.env:
--   ALERT_DAILY_BUDGET_USD   daily Kontext spend that warns     (default 25)
--   ALERT_HOURLY_HEADROOM    share of MAX_KONTEXT_PER_HOUR used (default 0.8)

local function setting(name, default)
  local v = tonumber(scenecomp.env(name))
  if v == nil or v < 0 then return default end
  return v
end

local BUDGET_USD = setting("ALERT_DAILY_BUDGET_USD", 25)
local HOURLY_SHARE = setting("ALERT_HOURLY_HEADROOM", 0.8)

local function spent_today(m)
  return (m.estimated_cost_usd or {}).today
end

return {
  {
    -- estimated_cost_usd.today = Kontext predictions started today x
    -- KONTEXT_PRICE_USD + scenes x SCENE_PRICE_USD (see /api/admin/metrics/composite)
    name = "daily_cost_over_budget",
    severity = "warning",
    for_seconds = 0, -- money already spent does not "recover": tell at once
    when = function(m)
      local today = spent_today(m)
      return today ~= nil and today > BUDGET_USD
    end,
    summary = function(m)
      return string.format("estimated Kontext spend today $%.2f is over the $%.2f budget",
        spent_today(m) or 0, BUDGET_USD)
    end,
    value = function(m) return spent_today(m) end,
  },
  {
    name = "daily_cost_near_budget",
    severity = "warning",
    for_seconds = 60,
    when = function(m)
      local today = spent_today(m)
      return today ~= nil and today > 0.8 * BUDGET_USD and today <= BUDGET_USD
    end,
    summary = function(m)
      return string.format("estimated Kontext spend today $%.2f is over 80%% of the $%.2f budget",
        spent_today(m) or 0, BUDGET_USD)
    end,
    value = function(m) return spent_today(m) end,
  },
  {
    -- the sliding hour is about to refuse Kontext calls (they fall back to PIL)
    name = "hourly_quota_nearly_used",
    severity = "warning",
    for_seconds = 120,
    when = function(m)
      local rl = m.rate_limiter
      return rl ~= nil and (rl.max_per_hour or 0) > 0
        and rl.last_hour >= HOURLY_SHARE * rl.max_per_hour
    end,
    summary = function(m)
      local rl = m.rate_limiter
      return string.format("%d of %d Kontext predictions used in the last hour",
        rl.last_hour, rl.max_per_hour)
    end,
    value = function(m) return m.rate_limiter.last_hour end,
  },
}

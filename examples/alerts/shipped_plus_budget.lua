-- Example ALERTS_FILE: the five shipped alerts (lua/alerts.lua, as built into
-- the binary) adjusted, plus two rules of our own. shipped_alerts() returns a
-- fresh copy of the shipped list each time, so changing it here changes
-- nothing else.

local rules = shipped_alerts()

-- Adjust a shipped rule: page sooner on the fallback rate.
for _, r in ipairs(rules) do
  if r.name == "high_fallback_rate" then r.for_seconds = 60 end
end

local BUDGET_USD = tonumber(scenecomp.env("ALERT_DAILY_BUDGET_USD")) or 25
local MIN_VOLUME = 20

-- The deployment guide's fifth metric: error rate target < 1%, alert > 5%.
-- Here: failed or timed-out predictions over predictions started.
rules[#rules + 1] = {
  name = "high_kontext_error_rate",
  severity = "warning",
  for_seconds = 180,
  when = function(m)
    local k = (m.stats or {}).kontext or {}
    return (k.attempts or 0) >= MIN_VOLUME and (k.failures or 0) / k.attempts > 0.05
  end,
  summary = function(m)
    local k = m.stats.kontext
    return string.format("%d of %d Kontext predictions failed (%.0f%%, alert above 5%%)",
      k.failures, k.attempts, 100 * k.failures / k.attempts)
  end,
  value = function(m)
    local k = (m.stats or {}).kontext or {}
    if (k.attempts or 0) == 0 then return nil end
    return k.failures / k.attempts
  end,
}

rules[#rules + 1] = {
  name = "daily_cost_over_budget",
  severity = "warning",
  for_seconds = 0,
  when = function(m)
    local c = m.estimated_cost_usd
    return c ~= nil and c.today ~= nil and c.today > BUDGET_USD
  end,
  summary = function(m)
    return string.format("estimated spend today $%.2f is over the $%.2f budget",
      m.estimated_cost_usd.today, BUDGET_USD)
  end,
  value = function(m) return m.estimated_cost_usd.today end,
}

return rules

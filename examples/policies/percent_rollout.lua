-- Percentage rollout by phase: edit `phase` to move along
--   "internal" (listed users) -> "limited" (25%) -> "wide" (50%) -> "full" (100%).
-- A user is inside the percentage when bucket(user_id, "kontext") < percent
-- (FNV-1a, stable across instances and restarts), so raising the percentage only
-- ever adds users: nobody flips back to PIL. Requests without a user_id stay
-- on PIL below 100%.
local testers = { "ops-1", "qa-1" }

return {
  phase = "limited",
  phases = {
    internal = { users = testers, use_kontext = true, method = "kontext",
                 max_concurrent = 5, max_per_hour = 50 },
    limited  = { users = testers, percent = 25, use_kontext = true, method = "kontext",
                 max_concurrent = 10, max_per_hour = 100 },
    wide     = { users = testers, percent = 50, use_kontext = true, method = "kontext",
                 max_concurrent = 12, max_per_hour = 150 },
    full     = { percent = 100, use_kontext = true, method = "kontext",
                 max_concurrent = 15, max_per_hour = 200, daily_limit = 2000 },
  },
}

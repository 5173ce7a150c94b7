-- Kontext for a fixed list of internal users only (phase 1 of the deployment
-- guide), everyone else on PIL. Conservative limits while testing.
return {
  phase = "internal",
  phases = {
    internal = {
      users = { "ops-1", "ops-2", "qa-1" },
      use_kontext = true, method = "kontext",
      max_concurrent = 5, max_per_hour = 50,
    },
  },
}

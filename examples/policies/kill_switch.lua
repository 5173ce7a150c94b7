-- Kill switch: every request uses PIL, whatever the environment says.
-- Rollback in seconds, no restart:
--   cp examples/policies/kill_switch.lua lua/policy.lua     # in force within 2 s
-- (or set KILL_SWITCH = true in lua/policy.lua). Limits keep their env values.
return {
  use_kontext = false,
}

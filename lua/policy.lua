-- scenecomp routing policy (POLICY_FILE, default lua/policy.lua).
--
-- What it decides: which method serves each composite request ("kontext" or
-- "pil"), with which limits. As shipped it changes nothing: with no phase
-- selected every key below is left to the environment (.env), so the service
-- behaves exactly as USE_KONTEXT_COMPOSITE / COMPOSITE_METHOD / MAX_* say.
--
-- Editing it live:
--   * check first:   build/scenecomp check-policy lua/policy.lua
--   * save the file: it is in force within 2 seconds, no restart
--     (or: kill -HUP <pid>, or: curl -X POST http://127.0.0.1:8000/api/admin/reload)
--   * a file that fails to load is refused and the previous policy stays in
--     force; see `curl http://127.0.0.1:8000/api/admin/policy` (last_error)
--     and the `[Policy]` lines of logs/backend.log.
-- Reference: docs/policy.md.

-- KILL SWITCH (rollback): true sends every request to PIL, whatever the phase
-- and the environment say. Save, and within 2 seconds no new Kontext call starts.
local KILL_SWITCH = false

-- ROLLOUT PHASE: nil = the environment decides (as before this file existed);
-- "internal" -> "limited" -> "full" = the deployment guide's three phases
-- below. Moving between phases is this one word. When it is nil, the
-- environment variable ROLLOUT_PHASE (same values) is used if set.
local PHASE = nil

-- Users sent to Kontext in the internal phase (and kept in the later ones).
-- KONTEXT_INTERNAL_USERS="id1,id2" in the environment adds more.
local INTERNAL_USERS = { "ops-1", "qa-1" }

-- ---------------------------------------------------------------------------

-- scenecomp.env(name) returns only allow-listed variables (the service's
-- settings, the two above, and any SCENECOMP_POLICY_* of your own); secrets
-- and URLs read as nil. See docs/policy.md, "What scenecomp.env can read".
local function env_list(name)
  local list = {}
  for id in (scenecomp.env(name) or ""):gmatch("[^,%s]+") do
    list[#list + 1] = id
  end
  return list
end

local internal = {}
for _, id in ipairs(INTERNAL_USERS) do internal[#internal + 1] = id end
for _, id in ipairs(env_list("KONTEXT_INTERNAL_USERS")) do internal[#internal + 1] = id end

local phase = PHASE
if phase == nil then
  phase = scenecomp.env("ROLLOUT_PHASE")
  if phase == "" then phase = nil end
end

local kontext_on = not KILL_SWITCH

local policy = {
  phase = phase,
  phases = {
    -- Phase 1 (days 1-3): internal users only, conservative limits.
    internal = {
      users = internal,
      use_kontext = kontext_on, method = "kontext",
      max_concurrent = 5, max_per_hour = 50,
    },
    -- Phase 2 (days 4-7): a stable 25% of users (bucket(user_id, "kontext") < 25),
    -- plus the internal users. Raising percent only ever adds users.
    limited = {
      users = internal, percent = 25,
      use_kontext = kontext_on, method = "kontext",
      max_concurrent = 10, max_per_hour = 100,
    },
    -- Phase 3 (day 8+): everyone, Kontext as the default method.
    full = {
      percent = 100,
      use_kontext = kontext_on, method = "kontext",
      max_concurrent = 15, max_per_hour = 200, daily_limit = 2000,
    },
  },
  -- No `route` function: the host's default routing applies (docs/policy.md).
  -- No `on_kontext_error`: every Kontext failure falls back to PIL.
}

if KILL_SWITCH then
  policy.use_kontext = false
end

return policy

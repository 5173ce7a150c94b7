-- busted --lua=lua5.4 tests/lua   (from the repository root)
-- The shipped lua/policy.lua, run against the stub host module. The host's
-- routing and validation themselves are covered by tests/unit/lua_policy_test.c
-- (which also loads this file through the real host).
package.path = "tests/lua/helpers/?.lua;" .. package.path
local stub = require("scenecomp_stub")

local KNOWN = {
  use_kontext = "boolean", method = "string", model_id = "string", timeout_seconds = "number",
  max_concurrent = "number", max_per_hour = "number", daily_limit = "number",
  phase = "string", phases = "table", route = "function", on_kontext_error = "function",
}
local PHASE_KEYS = {
  users = "table", percent = "number", use_kontext = "boolean", method = "string",
  model_id = "string", timeout_seconds = "number", max_concurrent = "number",
  max_per_hour = "number", daily_limit = "number",
}

local function load_policy(env, edit)
  local src = stub.read("lua/policy.lua")
  if edit then src = edit(src) end
  return stub.load_string(src, stub.new({ env = env or {} }), "lua/policy.lua")
end

-- The same checks as the host's validation, for what the spec needs.
local function assert_valid(p)
  assert.is_table(p)
  for k, v in pairs(p) do
    assert.is_not_nil(KNOWN[k], "unknown key " .. tostring(k))
    assert.are.equal(KNOWN[k], type(v), "type of " .. k)
  end
  for name, ph in pairs(p.phases or {}) do
    for k, v in pairs(ph) do
      assert.is_not_nil(PHASE_KEYS[k], "unknown key phases." .. name .. "." .. k)
      assert.are.equal(PHASE_KEYS[k], type(v), "type of phases." .. name .. "." .. k)
    end
    if ph.percent then assert.is_true(ph.percent >= 0 and ph.percent <= 100) end
    for i, u in ipairs(ph.users or {}) do assert.is_string(u, "users[" .. i .. "]") end
  end
  if p.phase then assert.is_table(p.phases[p.phase], "phase " .. p.phase .. " not in phases") end
end

describe("lua/policy.lua", function()
  describe("as shipped", function()
    it("is a valid policy", function()
      assert_valid(load_policy())
    end)

    it("leaves every setting to the environment (no phase, no overrides, no route)", function()
      local p = load_policy()
      assert.is_nil(p.phase)
      for _, k in ipairs({ "use_kontext", "method", "model_id", "timeout_seconds",
                           "max_concurrent", "max_per_hour", "daily_limit",
                           "route", "on_kontext_error" }) do
        assert.is_nil(p[k], k)
      end
    end)

    it("declares the guide's three phases with its limits", function()
      local ph = load_policy().phases
      assert.are.same({ "ops-1", "qa-1" }, ph.internal.users)
      assert.is_nil(ph.internal.percent)
      assert.are.equal(5, ph.internal.max_concurrent)
      assert.are.equal(50, ph.internal.max_per_hour)
      assert.are.equal(25, ph.limited.percent)
      assert.are.equal(10, ph.limited.max_concurrent)
      assert.are.equal(100, ph.limited.max_per_hour)
      assert.are.equal(100, ph.full.percent)
      assert.are.equal(15, ph.full.max_concurrent)
      assert.are.equal(200, ph.full.max_per_hour)
      assert.are.equal(2000, ph.full.daily_limit)
      for name, phase in pairs(ph) do
        assert.is_true(phase.use_kontext, name)
        assert.are.equal("kontext", phase.method, name)
      end
    end)

    it("keeps the internal users in the limited phase", function()
      local ph = load_policy().phases
      assert.are.same(ph.internal.users, ph.limited.users)
    end)
  end)

  describe("phase selection", function()
    it("is one word: PHASE = nil -> PHASE = \"limited\"", function()
      local p = load_policy({}, function(src)
        local out, n = src:gsub('local PHASE = nil', 'local PHASE = "limited"')
        assert.are.equal(1, n)
        return out
      end)
      assert_valid(p)
      assert.are.equal("limited", p.phase)
    end)

    it("reads ROLLOUT_PHASE when PHASE is nil", function()
      for _, name in ipairs({ "internal", "limited", "full" }) do
        local p = load_policy({ ROLLOUT_PHASE = name })
        assert_valid(p)
        assert.are.equal(name, p.phase)
      end
    end)

    it("treats an empty ROLLOUT_PHASE as none", function()
      assert.is_nil(load_policy({ ROLLOUT_PHASE = "" }).phase)
    end)

    it("lets the file win over ROLLOUT_PHASE", function()
      local p = load_policy({ ROLLOUT_PHASE = "full" }, function(src)
        return (src:gsub('local PHASE = nil', 'local PHASE = "internal"'))
      end)
      assert.are.equal("internal", p.phase)
    end)

    it("adds KONTEXT_INTERNAL_USERS to the internal users", function()
      local p = load_policy({ KONTEXT_INTERNAL_USERS = "anna, ben,carl" })
      assert.are.same({ "ops-1", "qa-1", "anna", "ben", "carl" }, p.phases.internal.users)
    end)
  end)

  describe("kill switch", function()
    local function killed(env)
      return load_policy(env, function(src)
        local out, n = src:gsub("local KILL_SWITCH = false", "local KILL_SWITCH = true")
        assert.are.equal(1, n)
        return out
      end)
    end

    it("turns Kontext off at the top level and in every phase", function()
      local p = killed({ ROLLOUT_PHASE = "full" })
      assert_valid(p)
      assert.is_false(p.use_kontext)
      for name, phase in pairs(p.phases) do
        assert.is_false(phase.use_kontext, name)
      end
    end)

    it("is off as shipped", function()
      local p = load_policy({ ROLLOUT_PHASE = "full" })
      assert.is_nil(p.use_kontext)
      assert.is_true(p.phases.full.use_kontext)
    end)
  end)

  describe("[errors]", function()
    it("raises on a write to an undeclared global, as the host does", function()
      assert.has_error(function()
        load_policy({}, function(src) return "oops = 1\n" .. src end)
      end)
    end)
  end)
end)

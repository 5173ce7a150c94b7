-- examples/policies/*.lua against the stub host (the C test
-- tests/unit/lua_examples_test.c runs them through the real host).
package.path = "tests/lua/helpers/?.lua;" .. package.path
local stub = require("scenecomp_stub")

local function ctx(answer)
  return {
    config = {}, bucket = stub.bucket,
    default_route = function() return answer end,
  }
end

describe("examples/policies", function()
  describe("time_window.lua", function()
    local function at(hour)
      local host = stub.new({ now = 1767571200 + hour * 3600 }) -- 2026-01-05T00:00:00Z + hour
      return stub.load_file("examples/policies/time_window.lua", host)
    end

    it("uses the default routing inside the window", function()
      local p = at(9)
      assert.are.equal("kontext", p.route({ user_id = "u" }, ctx("kontext")))
      assert.are.equal("pil", p.route({ user_id = "u" }, ctx("pil")))
    end)

    it("routes to pil outside the window", function()
      for _, h in ipairs({ 0, 7, 18, 23 }) do
        assert.are.equal("pil", at(h).route({ user_id = "u" }, ctx("kontext")), "hour " .. h)
      end
    end)

    it("always falls back on a Kontext error", function()
      assert.are.equal("fallback", at(9).on_kontext_error({ reason = "timeout" }, {}, ctx("pil")))
    end)
  end)

  describe("percent_rollout.lua", function()
    it("selects the limited phase at 25% with the testers listed", function()
      local p = stub.load_file("examples/policies/percent_rollout.lua", stub.new())
      assert.are.equal("limited", p.phase)
      assert.are.equal(25, p.phases.limited.percent)
      assert.are.same({ "ops-1", "qa-1" }, p.phases.limited.users)
      -- percentages only grow along the phases
      assert.is_true(p.phases.limited.percent < p.phases.wide.percent)
      assert.is_true(p.phases.wide.percent < p.phases.full.percent)
    end)
  end)

  describe("kill_switch.lua", function()
    it("turns Kontext off and nothing else", function()
      assert.are.same({ use_kontext = false },
        stub.load_file("examples/policies/kill_switch.lua", stub.new()))
    end)
  end)
end)

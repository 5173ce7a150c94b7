-- The stub host module must agree with the C host on the bucket hash (the
-- vectors are the ones in docs/policy.md and tests/unit/lua_sandbox_test.c).
package.path = "tests/lua/helpers/?.lua;" .. package.path
local stub = require("scenecomp_stub")

describe("scenecomp_stub", function()
  describe("bucket", function()
    it("matches the documented FNV-1a vectors", function()
      local vectors = {
        { "alice", "kontext", 14 }, { "bob", "kontext", 13 }, { "user-1", "kontext", 19 },
        { "ops-1", "kontext", 24 }, { "", "kontext", 34 }, { "alice", "exp", 82 }, { "", "", 53 },
      }
      for _, v in ipairs(vectors) do
        assert.are.equal(v[3], stub.bucket(v[1], v[2]), v[1] .. "/" .. v[2])
      end
    end)

    it("spreads 10,000 ids evenly enough for a percentage rollout", function()
      local below = 0
      for i = 0, 9999 do
        if stub.bucket("user-" .. i, "kontext") < 25 then below = below + 1 end
      end
      assert.is_true(below >= 2300 and below <= 2700, "got " .. below)
    end)
  end)

  describe("module", function()
    it("hides secrets from env", function()
      local host = stub.new({ env = { REPLICATE_API_TOKEN = "r8_x", OTHER = "y" } })
      assert.is_nil(host.module.env("REPLICATE_API_TOKEN"))
      assert.are.equal("y", host.module.env("OTHER"))
    end)

    it("records logs and refuses unknown levels", function()
      local host = stub.new()
      host.module.log("warn", "careful")
      assert.are.same({ level = "warn", msg = "careful" }, host.logs[1])
      assert.has_error(function() host.module.log("loud", "x") end)
    end)
  end)
end)

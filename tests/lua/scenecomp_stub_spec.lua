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
    it("returns only allow-listed variables from env, as the host", function()
      local host = stub.new({ env = {
        REPLICATE_API_TOKEN = "r8_x", ADMIN_TOKEN = "a", ALERT_WEBHOOK_URL = "https://u:p@h/x",
        REDIS_URL = "redis://:pw@h:6379/0", WEBHOOK_SECRET = "s", OTHER = "y",
        MAX_CONCURRENT_KONTEXT = "7", ROLLOUT_PHASE = "limited", SCENECOMP_POLICY_REGION = "eu",
        SCENECOMP_POLICY_ = "empty suffix",
      } })
      for _, secret in ipairs({ "REPLICATE_API_TOKEN", "ADMIN_TOKEN", "ALERT_WEBHOOK_URL",
                                "REDIS_URL", "WEBHOOK_SECRET", "OTHER", "SCENECOMP_POLICY_" }) do
        assert.is_nil(host.module.env(secret), secret)
      end
      assert.are.equal("7", host.module.env("MAX_CONCURRENT_KONTEXT"))
      assert.are.equal("limited", host.module.env("ROLLOUT_PHASE"))
      assert.are.equal("eu", host.module.env("SCENECOMP_POLICY_REGION"))
    end)

    it("reads the allow-list from the host's one table", function()
      local list = stub.env_allow_list()
      assert.is_true(list.KONTEXT_DAILY_GENERATION_LIMIT)
      assert.is_nil(list.REPLICATE_API_TOKEN)
      assert.are.equal("SCENECOMP_POLICY_", stub.ENV_PREFIX)
    end)

    it("records logs and refuses unknown levels", function()
      local host = stub.new()
      host.module.log("warn", "careful")
      assert.are.same({ level = "warn", msg = "careful" }, host.logs[1])
      assert.has_error(function() host.module.log("loud", "x") end)
    end)
  end)
end)

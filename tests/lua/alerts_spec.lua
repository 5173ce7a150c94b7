-- busted --lua=lua5.4 tests/lua   (from the repository root)
local H = dofile("tests/lua/helpers/alerts_stub.lua")
local snap = H.snapshot

local function rule(name, vars)
  return H.by_name(H.load("lua/alerts.lua", vars), name)
end

-- A snapshot with `routed` Kontext-routed requests, all admitted (attempts),
-- `fallbacks` of which fell back after a failed prediction.
local function routed(n, fallbacks)
  return snap({
    total_requests = n, fallbacks = fallbacks,
    fallback_rate = n > 0 and fallbacks / n or nil,
    stats = { kontext = { attempts = n, successes = n - fallbacks, failures = fallbacks } },
    fallback_reasons = { api_error = fallbacks },
  })
end

describe("lua/alerts.lua", function()
  describe("the list", function()
    it("holds the four alerts of the deployment guide and the breaker's, with their severities", function()
      local rules = H.load()
      assert.are.equal(5, #rules)
      local sev = {}
      for _, r in ipairs(rules) do sev[r.name] = r.severity end
      assert.are.same({
        high_fallback_rate = "warning",
        daily_generation_limit = "warning",
        low_kontext_success_rate = "critical",
        high_avg_generation_time = "warning",
        circuit_breaker_open = "critical",
      }, sev)
    end)

    it("passes the service's validation", function()
      assert.is_true((H.valid(H.load())))
    end)

    it("holds conditions for a while before firing (60-300 s)", function()
      for _, r in ipairs(H.load()) do
        assert.is_true(r.for_seconds >= 60 and r.for_seconds <= 300, r.name)
      end
    end)

    it("ALERT_FOR_SECONDS_OVERRIDE replaces every hold", function()
      for _, r in ipairs(H.load(nil, { ALERT_FOR_SECONDS_OVERRIDE = "0" })) do
        assert.are.equal(0, r.for_seconds)
      end
      for _, r in ipairs(H.load(nil, { ALERT_FOR_SECONDS_OVERRIDE = "7.5" })) do
        assert.are.equal(7.5, r.for_seconds)
      end
    end)

    it("ignores a malformed or negative override", function()
      local base = {}
      for _, r in ipairs(H.load()) do base[r.name] = r.for_seconds end
      for _, v in ipairs({ "abc", "-5", "" }) do
        for _, r in ipairs(H.load(nil, { ALERT_FOR_SECONDS_OVERRIDE = v })) do
          assert.are.equal(base[r.name], r.for_seconds)
        end
      end
    end)

    it("loads without any scenecomp module (plain Lua)", function()
      local rules = H.load("lua/alerts.lua", false)
      assert.are.equal(5, #rules)
    end)

    it("nothing fires, raises or misbehaves on a fresh start (every rate nil)", function()
      for _, r in ipairs(H.load()) do
        assert.is_false(r.when(snap()), r.name)
        assert.is_string(r.summary(snap()))
        local v = r.value(snap())
        assert.is_true(v == nil or type(v) == "number", r.name)
      end
    end)

    it("tolerates a snapshot without stats at all", function()
      for _, r in ipairs(H.load()) do
        assert.is_false(r.when({}), r.name)
      end
    end)
  end)

  describe("high_fallback_rate", function()
    local r = rule("high_fallback_rate")

    it("fires above 10% over at least 20 Kontext-routed requests", function()
      assert.is_true(r.when(routed(20, 3)))   -- 15%
      assert.is_true(r.when(routed(100, 11))) -- 11%
    end)

    it("does not fire at exactly 10% or below", function()
      assert.is_false(r.when(routed(100, 10)))
      assert.is_false(r.when(routed(100, 0)))
    end)

    it("does not fire under the minimum volume, however bad the ratio", function()
      assert.is_false(r.when(routed(19, 19)))
      assert.is_false(r.when(routed(3, 2)))
    end)

    it("does not fire when the rate is nil", function()
      assert.is_false(r.when(snap({ fallbacks = 50 })))
    end)

    it("counts requests refused by a limit or a missing token as routed", function()
      -- 5 predictions started, 15 refused by limits or the token: 20 routed
      local m = snap({
        total_requests = 20, fallbacks = 15, fallback_rate = 15 / 20,
        stats = { kontext = { attempts = 5, successes = 5 } },
        fallback_reasons = { hourly_limit = 6, daily_limit = 4, concurrency_limit = 3,
          no_token = 2 },
      })
      assert.is_true(r.when(m))
      m.fallback_reasons.no_token = 1 -- now 19 routed
      assert.is_false(r.when(m))
    end)

    it("prefers m.routed_kontext when the host provides it", function()
      local m = routed(10, 5) -- 50% over 10: below the volume
      assert.is_false(r.when(m))
      m.routed_kontext = 40
      assert.is_true(r.when(m))
    end)

    it("summarises with the rate and the volume; value is the rate", function()
      local m = routed(50, 17)
      assert.are.equal("fallback rate 34% over 50 Kontext-routed requests (alert above 10%)",
        r.summary(m))
      assert.are.equal(17 / 50, r.value(m))
    end)

    it("ALERT_MIN_VOLUME changes the guard", function()
      local r5 = rule("high_fallback_rate", { ALERT_MIN_VOLUME = "5" })
      assert.is_true(r5.when(routed(5, 2)))
      assert.is_false(r5.when(routed(4, 2)))
    end)
  end)

  describe("daily_generation_limit", function()
    local r = rule("daily_generation_limit")

    it("fires above 90% of the daily limit", function()
      assert.is_true(r.when(snap({ today_generations = 451, daily_limit = 500 })))
      assert.is_true(r.when(snap({ today_generations = 500, daily_limit = 500 })))
      assert.is_true(r.when(snap({ today_generations = 10, daily_limit = 10 })))
    end)

    it("does not fire at exactly 90% or below", function()
      assert.is_false(r.when(snap({ today_generations = 450, daily_limit = 500 })))
      assert.is_false(r.when(snap({ today_generations = 9, daily_limit = 10 })))
      assert.is_false(r.when(snap({ today_generations = 0, daily_limit = 500 })))
    end)

    it("does not fire without a usable limit", function()
      assert.is_false(r.when(snap({ today_generations = 5, daily_limit = 0 })))
      local m = snap({ today_generations = 5 })
      m.daily_limit = nil
      assert.is_false(r.when(m))
    end)

    it("summarises usage against the limit", function()
      local m = snap({ today_generations = 460, daily_limit = 500 })
      assert.are.equal("460 of 500 Kontext generations used today (alert above 90%)", r.summary(m))
      assert.are.equal(460, r.value(m))
    end)
  end)

  describe("low_kontext_success_rate", function()
    local r = rule("low_kontext_success_rate")
    local function rate(attempts, successes)
      return snap({
        kontext_success_rate = attempts > 0 and successes / attempts or nil,
        stats = { kontext = { attempts = attempts, successes = successes,
          success_rate = attempts > 0 and successes / attempts or nil } },
      })
    end

    it("is critical", function()
      assert.are.equal("critical", r.severity)
    end)

    it("fires below 90% over at least 20 predictions", function()
      assert.is_true(r.when(rate(20, 17)))  -- 85%
      assert.is_true(r.when(rate(100, 89))) -- 89%
    end)

    it("does not fire at exactly 90% or above", function()
      assert.is_false(r.when(rate(100, 90)))
      assert.is_false(r.when(rate(20, 20)))
    end)

    it("does not fire under the minimum volume", function()
      assert.is_false(r.when(rate(19, 0)))
      assert.is_false(r.when(rate(2, 0)))
    end)

    it("does not fire when the rate is nil", function()
      assert.is_false(r.when(rate(0, 0)))
    end)

    it("summarises", function()
      assert.are.equal("Kontext success rate 50% over 40 predictions (alert below 90%)",
        r.summary(rate(40, 20)))
      assert.are.equal(0.5, r.value(rate(40, 20)))
    end)
  end)

  describe("high_avg_generation_time", function()
    local r = rule("high_avg_generation_time")
    local function avg(successes, seconds)
      return snap({ stats = { kontext = { attempts = successes, successes = successes,
        avg_time_seconds = seconds } } })
    end

    it("fires above 60 s over at least 20 successful composites", function()
      assert.is_true(r.when(avg(20, 60.5)))
      assert.is_true(r.when(avg(200, 90)))
    end)

    it("does not fire at exactly 60 s or below", function()
      assert.is_false(r.when(avg(50, 60)))
      assert.is_false(r.when(avg(50, 12)))
    end)

    it("does not fire under the minimum volume", function()
      assert.is_false(r.when(avg(19, 300)))
    end)

    it("does not fire when the average is nil", function()
      assert.is_false(r.when(avg(0, nil)))
    end)

    it("summarises", function()
      assert.are.equal(
        "average Kontext time 75.2s over 30 successful composites (alert above 60s)",
        r.summary(avg(30, 75.2)))
      assert.are.equal(75.2, r.value(avg(30, 75.2)))
    end)
  end)
end)

describe("examples/alerts", function()
  describe("cost_budget.lua", function()
    local rules = H.load("examples/alerts/cost_budget.lua", { ALERT_DAILY_BUDGET_USD = "10" })

    it("is a valid rule list", function()
      assert.is_true((H.valid(rules)))
    end)

    it("warns over the daily budget, and near it", function()
      local over = H.by_name(rules, "daily_cost_over_budget")
      local near = H.by_name(rules, "daily_cost_near_budget")
      local function spend(x) return snap({ estimated_cost_usd = { today = x } }) end
      assert.is_true(over.when(spend(10.01)))
      assert.is_false(over.when(spend(10)))
      assert.is_false(near.when(spend(8)))
      assert.is_true(near.when(spend(8.5)))
      assert.is_true(near.when(spend(10)))
      assert.is_false(near.when(spend(10.5))) -- "over" has it
      assert.are.equal("estimated Kontext spend today $12.50 is over the $10.00 budget",
        over.summary(spend(12.5)))
      assert.is_false(over.when(snap({ estimated_cost_usd = {} })))
    end)

    it("warns when the sliding hour is nearly used", function()
      local r = H.by_name(rules, "hourly_quota_nearly_used")
      assert.is_true(r.when(snap({ rate_limiter = { last_hour = 40, max_per_hour = 50 } })))
      assert.is_false(r.when(snap({ rate_limiter = { last_hour = 39, max_per_hour = 50 } })))
      assert.is_false(r.when(snap({ rate_limiter = { last_hour = 0, max_per_hour = 0 } })))
    end)
  end)

  describe("shipped_plus_budget.lua", function()
    local rules = H.load("examples/alerts/shipped_plus_budget.lua", { ALERT_DAILY_BUDGET_USD = "5" })

    it("keeps the shipped five, adjusted, and adds its own", function()
      assert.is_true((H.valid(rules)))
      assert.are.equal(7, #rules)
      assert.are.equal(60, H.by_name(rules, "high_fallback_rate").for_seconds)
      assert.are.equal("critical", H.by_name(rules, "low_kontext_success_rate").severity)
      -- the original is untouched
      assert.are.equal(120, rule("high_fallback_rate").for_seconds)
    end)

    it("fires on the error rate above 5% over enough predictions", function()
      local r = H.by_name(rules, "high_kontext_error_rate")
      local function k(attempts, failures)
        return snap({ stats = { kontext = { attempts = attempts, failures = failures } } })
      end
      assert.is_true(r.when(k(100, 6)))
      assert.is_false(r.when(k(100, 5)))
      assert.is_false(r.when(k(10, 9)))
      assert.is_false(r.when(snap()))
      assert.is_nil(r.value(snap()))
    end)

    it("fires over the budget from the environment", function()
      local r = H.by_name(rules, "daily_cost_over_budget")
      assert.is_true(r.when(snap({ estimated_cost_usd = { today = 5.5 } })))
      assert.is_false(r.when(snap({ estimated_cost_usd = { today = 4.0 } })))
    end)
  end)
end)

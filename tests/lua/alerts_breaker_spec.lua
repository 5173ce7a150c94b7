-- busted --lua=lua5.4 tests/lua   (from the repository root)
-- The shipped circuit_breaker_open rule (lua/alerts.lua) against m.breaker.
local H = dofile("tests/lua/helpers/alerts_stub.lua")
local snap = H.snapshot

local function rule(vars)
  return H.by_name(H.load("lua/alerts.lua", vars), "circuit_breaker_open")
end

describe("circuit_breaker_open", function()
  it("is critical and holds for a minute", function()
    local r = rule()
    assert.are.equal("critical", r.severity)
    assert.are.equal(60, r.for_seconds)
    assert.are.equal(0, rule({ ALERT_FOR_SECONDS_OVERRIDE = "0" }).for_seconds)
  end)

  it("fires while the breaker is open or half-open, not when closed", function()
    local r = rule()
    assert.is_true(r.when(snap({ breaker = { state = "open", calls = 12, failure_rate = 1 } })))
    assert.is_true(r.when(snap({ breaker = { state = "half_open" } })))
    assert.is_false(r.when(snap({ breaker = { state = "closed", calls = 40, failure_rate = 0.4 } })))
    assert.is_false(r.when(snap()))
  end)

  it("stays quiet without m.breaker (an older host) and never raises", function()
    local r = rule()
    local m = snap()
    m.breaker = nil
    assert.is_false(r.when(m))
    assert.is_nil(r.value(m))
    assert.is_string(r.summary(m))
  end)

  it("reports the state as scenecomp_breaker_state does and names the fallbacks", function()
    local r = rule()
    assert.are.equal(0, r.value(snap()))
    assert.are.equal(1, r.value(snap({ breaker = { state = "open" } })))
    assert.are.equal(2, r.value(snap({ breaker = { state = "half_open" } })))
    local s = r.summary(snap({ breaker = { state = "open" }, fallback_reasons = { circuit_open = 7 } }))
    assert.truthy(s:find("open", 1, true))
    assert.truthy(s:find("circuit_open: 7", 1, true))
  end)
end)

-- Kontext only during a UTC window (e.g. while the team is on call), PIL
-- outside it. Inside the window the host's default routing decides
-- (use_kontext/method/phase below), so the window only ever removes Kontext.
local WINDOW_START_HOUR = 8   -- UTC, inclusive
local WINDOW_END_HOUR = 18    -- UTC, exclusive

local function in_window(now)
  local hour = os.date("!*t", math.floor(now)).hour
  if WINDOW_START_HOUR <= WINDOW_END_HOUR then
    return hour >= WINDOW_START_HOUR and hour < WINDOW_END_HOUR
  end
  return hour >= WINDOW_START_HOUR or hour < WINDOW_END_HOUR -- window across midnight
end

return {
  use_kontext = true,
  method = "kontext",
  route = function(req, ctx)
    if not in_window(scenecomp.now()) then
      return "pil"
    end
    return ctx.default_route(req)
  end,
  -- Outside business hours nobody watches the fallbacks either: always fall back.
  on_kontext_error = function(err, req, ctx)
    return "fallback"
  end,
}

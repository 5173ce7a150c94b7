-- A pure-Lua stand-in for the host's `scenecomp` module, for busted specs of
-- policy and alert files. Same functions and the same bucket hash as the C
-- host (src/lua/bind_scenecomp.c, sc_lua_bucket): FNV-1a 32-bit over
-- salt .. ":" .. key, mod 100.
--
--   local stub = require("scenecomp_stub")
--   local host = stub.new({ env = { ROLLOUT_PHASE = "limited" }, now = 0 })
--   local policy = stub.load_file("lua/policy.lua", host)   -- sandbox-like env
--
-- host.logs records scenecomp.log/print calls as { level, msg }.
local M = {}

--- b = M.bucket(key, salt): 0..99, as scenecomp.bucket.
function M.bucket(key, salt)
  local s = tostring(salt) .. ":" .. tostring(key)
  local h = 2166136261
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = (h * 16777619) & 0xffffffff
  end
  return h % 100
end

--- allowed = M.env_allow_list(): the variables scenecomp.env may return, read
--- from the host's one table (env_allowed[] in src/lua/bind_scenecomp.c), so
--- the stub cannot drift from it; plus the prefix (M.ENV_PREFIX).
local allow_list
function M.env_allow_list()
  if allow_list then return allow_list end
  local f = assert(io.open("src/lua/bind_scenecomp.c", "rb"))
  local src = f:read("a")
  f:close()
  local body = assert(src:match("env_allowed%[%]%s*=%s*(%b{})"), "env_allowed[] not found")
  M.ENV_PREFIX = assert(src:match('#define SC_LUA_ENV_PREFIX "([%w_]+)"'))
  allow_list = {}
  for name in body:gmatch('"([%w_]+)"') do allow_list[name] = true end
  return allow_list
end

--- ok = M.env_allowed(name): as sc_lua_env_allowed in the host.
function M.env_allowed(name)
  local list = M.env_allow_list()
  return list[name] == true or (#name > #M.ENV_PREFIX and name:sub(1, #M.ENV_PREFIX) == M.ENV_PREFIX)
end

--- host = M.new(opts): opts.env (table of variables), opts.now (seconds, or a
--- function), opts.metrics (table returned by scenecomp.metrics()).
function M.new(opts)
  opts = opts or {}
  local host = { logs = {}, env = opts.env or {}, metrics = opts.metrics or {} }
  local levels = { debug = true, info = true, warn = true, warning = true, error = true }
  host.module = {
    env = function(name)
      assert(type(name) == "string", "bad argument #1 to 'env' (string expected)")
      if not M.env_allowed(name) then return nil end
      return host.env[name]
    end,
    log = function(level, msg)
      assert(levels[level], "bad argument #1 to 'log' (invalid option '" .. tostring(level) .. "')")
      assert(type(msg) == "string" or type(msg) == "number", "bad argument #2 to 'log'")
      host.logs[#host.logs + 1] = { level = level, msg = tostring(msg) }
    end,
    now = function()
      local now = opts.now
      if type(now) == "function" then return now() end
      return now or os.time()
    end,
    bucket = function(key, salt)
      assert(type(key) == "string" or type(key) == "number", "bad argument #1 to 'bucket'")
      assert(type(salt) == "string" or type(salt) == "number", "bad argument #2 to 'bucket'")
      return M.bucket(key, salt)
    end,
    metrics = function() return host.metrics end,
  }
  return host
end

--- env = M.sandbox_env(host): an env like the host's sandbox (allow-listed
--- libraries, `scenecomp`, writes to undeclared globals raise).
function M.sandbox_env(host)
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, xpcall = xpcall, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    rawset = rawset, select = select, tonumber = tonumber, tostring = tostring, type = type,
    getmetatable = getmetatable, setmetatable = setmetatable, _VERSION = _VERSION,
    string = string, table = table, math = math, utf8 = utf8, coroutine = coroutine,
    os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime },
    scenecomp = host.module,
  }
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    host.logs[#host.logs + 1] = { level = "info", msg = table.concat(parts, "\t") }
  end
  env.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error("__gc metamethods are not allowed in policy and alert code", 2)
    end
    return setmetatable(t, mt)
  end
  env.load = function(chunk, name, _, e) return load(chunk, name, "t", e or env) end
  env._G = env
  return setmetatable(env, {
    __newindex = function(_, k)
      error("assignment to undeclared global '" .. tostring(k) .. "' (use local)", 2)
    end,
    __metatable = false,
  })
end

--- policy = M.load_string(src, host [, name]): runs a policy chunk as the host does.
function M.load_string(src, host, name)
  local fn, err = load(src, "@" .. (name or "policy"), "t", M.sandbox_env(host))
  if not fn then error(err, 0) end
  return fn()
end

--- src = M.read(path)
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- policy = M.load_file(path, host)
function M.load_file(path, host)
  return M.load_string(M.read(path), host, path)
end

return M

/* Sandbox: allow-list, blocked functions, text-only chunks, global write guard,
 * deadline hook (also against pcall), memory cap, the one door, bucket hash. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua/sandbox.h"
#include "test.h"

static char err[1024];

/* Runs src in L; returns the result as a string ("nil", "true", ...) in a static buffer,
 * or "ERR:<message>". The stack is checked to be restored. */
static const char *run(lua_State *L, const char *src, double budget)
{
    static char out[1100];
    int top = lua_gettop(L);
    if (sc_lua_run_chunk(L, src, strlen(src), "=test", budget, err, sizeof err) != 0) {
        CHECK_EQ_INT(lua_gettop(L), top);
        snprintf(out, sizeof out, "ERR:%s", err);
        return out;
    }
    CHECK_EQ_INT(lua_gettop(L), top + 1);
    if (lua_isnil(L, -1))
        snprintf(out, sizeof out, "nil");
    else if (lua_isboolean(L, -1))
        snprintf(out, sizeof out, "%s", lua_toboolean(L, -1) ? "true" : "false");
    else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
        snprintf(out, sizeof out, "%s", lua_tostring(L, -1));
    else
        snprintf(out, sizeof out, "<%s>", luaL_typename(L, -1));
    lua_settop(L, top);
    return out;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* An independent FNV-1a, byte by byte over the concatenation. */
static int ref_bucket(const char *key, const char *salt)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s:%s", salt, key);
    unsigned h = 0x811c9dc5u;
    for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
        h = (h ^ *p) * 0x01000193u;
    return (int)(h % 100);
}

static void test_allow_list(lua_State *L)
{
    static const char *const blocked[] = {"io",          "debug",     "package",      "require",
                                          "dofile",      "loadfile",  "os.execute",   "os.remove",
                                          "os.rename",   "os.exit",   "os.getenv",    "os.tmpname",
                                          "string.dump", "('').dump", "os.setlocale", NULL};
    for (int i = 0; blocked[i]; i++) {
        char src[128];
        snprintf(src, sizeof src, "return %s", blocked[i]);
        const char *r = run(L, src, 1);
        if (strcmp(r, "nil") != 0)
            fprintf(stderr, "not blocked: %s -> %s\n", blocked[i], r);
        CHECK_STR(r, "nil");
    }
    CHECK_STR(run(L, "return type(string.format)", 1), "function");
    CHECK_STR(run(L, "return type(table.concat)", 1), "function");
    CHECK_STR(run(L, "return type(math.floor)", 1), "function");
    CHECK_STR(run(L, "return type(utf8.char)", 1), "function");
    CHECK_STR(run(L, "return type(os.time) .. type(os.clock) .. type(os.date)", 1),
              "functionfunctionfunction");
    CHECK_STR(run(L, "return cjson.encode({a = 1})", 1), "{\"a\":1}");
    CHECK_STR(run(L, "return cjson.decode('[1,2,3]')[3] == 3", 1), "true");
    CHECK_STR(run(L, "return cjson.decode('[null]')[1] == cjson.null", 1), "true");
    /* no configuration functions: raising the depth limits let a nested value
     * overflow the C stack (a crash), sparse arrays write outside the memory cap */
    CHECK_STR(run(L,
                  "return tostring(cjson.encode_max_depth) .. tostring(cjson.decode_max_depth) .. "
                  "tostring(cjson.encode_sparse_array) .. tostring(cjson.new) .. "
                  "tostring(cjson.encode_keep_buffer)",
                  1),
              "nilnilnilnilnil");
    CHECK(starts(run(L, "local t = {} for i = 1, 300000 do t = {t} end return cjson.encode(t)", 5),
                 "ERR:"));
    CHECK(
        starts(run(L, "return cjson.decode(string.rep('[', 200000) .. string.rep(']', 200000))", 5),
               "ERR:"));
    CHECK(starts(run(L, "return cjson.encode({[1e9] = 1})", 5), "ERR:"));
    CHECK_STR(run(L, "return collectgarbage('count') > 0", 1), "true");
    CHECK(starts(run(L, "return collectgarbage('stop')", 1), "ERR:"));
    CHECK(starts(run(L, "return collectgarbage('incremental')", 1), "ERR:"));
    CHECK_STR(run(L, "return _G == _ENV", 1), "true");
    CHECK_STR(run(L, "return getmetatable(_G)", 1), "false");
    CHECK(starts(run(L, "setmetatable(_G, nil)", 1), "ERR:"));
    /* no finalizers: they could run (and loop) inside lua_close, outside any deadline */
    CHECK(strstr(run(L, "setmetatable({}, { __gc = function() while true do end end })", 1),
                 "__gc metamethods are not allowed") != NULL);
    CHECK_STR(run(L, "return getmetatable(setmetatable({}, { __index = { a = 7 } })).__index.a", 1),
              "7");
    CHECK_STR(run(L, "return setmetatable({}, { __index = function() return 5 end }).x", 1), "5");
}

static void test_globals(lua_State *L)
{
    const char *r = run(L, "x = 1\nreturn true", 1);
    CHECK(starts(r, "ERR:test:1: assignment to undeclared global 'x'"));
    CHECK(starts(run(L, "function f() end", 1), "ERR:"));
    CHECK_STR(run(L, "local x = 1; return x + 1", 1), "2");
    CHECK_STR(run(L, "return undefined_name", 1), "nil");
    /* rawset is the documented way to declare one */
    CHECK_STR(run(L, "rawset(_G, 'declared', 5) declared = 6 return declared", 1), "6");
}

static char g_bc[4096];
static size_t g_bclen;

static int bc_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    (void)ud;
    if (g_bclen + sz > sizeof g_bc)
        return 1;
    memcpy(g_bc + g_bclen, p, sz);
    g_bclen += sz;
    return 0;
}

static void test_binary_chunks(lua_State *L)
{
    /* Real bytecode, made in an ordinary state. */
    lua_State *plain = luaL_newstate();
    CHECK(luaL_loadstring(plain, "return 42") == LUA_OK);
    CHECK(lua_dump(plain, bc_writer, NULL, 0) == 0);
    lua_close(plain);
    CHECK(g_bclen > 4 && g_bc[0] == 0x1b);

    int top = lua_gettop(L);
    CHECK(sc_lua_run_chunk(L, g_bc, g_bclen, "=bytecode", 1, err, sizeof err) == -1);
    CHECK(strstr(err, "binary") != NULL);
    CHECK_EQ_INT(lua_gettop(L), top);
}

static void test_load(lua_State *L)
{
    int top = lua_gettop(L);
    sc_lua_push_env(L);
    lua_pushliteral(L, "BC");
    lua_pushlstring(L, g_bc, g_bclen);
    lua_rawset(L, -3);
    lua_settop(L, top);
    CHECK_STR(
        run(L, "local f, e = load(BC, 'x', 'b'); return f == nil and e:find('binary') ~= nil", 1),
        "true");
    CHECK_STR(run(L, "return load('return 1 + 2')()", 1), "3");
    /* chunks loaded by load() run in the sandbox env too */
    CHECK_STR(run(L, "return load('return io')()", 1), "nil");
    CHECK(starts(run(L, "return load('y = 1')()", 1), "ERR:"));
    /* as the base function otherwise: chunk names, function readers, an explicit env */
    CHECK_STR(run(L, "local f, e = load('x x', 'name') return e", 1),
              "[string \"name\"]:1: syntax error near 'x'");
    CHECK_STR(run(L, "local f, e = load('x x') return e", 1),
              "[string \"x x\"]:1: syntax error near 'x'");
    CHECK_STR(run(L,
                  "local parts = {'return ', '4', '0 + 2'} local i = 0 "
                  "return load(function() i = i + 1 return parts[i] end)()",
                  1),
              "42");
    CHECK_STR(run(L, "return load('return v', 'n', 't', {v = 7})()", 1), "7");
    CHECK_STR(run(L,
                  "local f, e = load(function() return {} end) "
                  "return f == nil and e:find('reader function must return a string', 1, true) "
                  "~= nil",
                  1),
              "true");
    /* the parser runs in C, where the hook cannot fire: its input is bounded */
    CHECK_STR(run(L, "local f, e = load(string.rep('a = 1 ', 2e6)) return e", 5),
              "chunk too large for load (more than 1048576 bytes)");
    CHECK_STR(run(L,
                  "local big = string.rep('local a = 1 ', 2e5) local n = 0 "
                  "local f, e = load(function() n = n + 1 if n < 3 then return big end end) "
                  "return f == nil and e:find('chunk too large for load', 1, true) ~= nil",
                  5),
              "true");
    CHECK_STR(run(L, "return load(string.rep(' ', 1 << 20) .. 'return 5')", 5), "nil");
    CHECK_STR(run(L, "return load(string.rep(' ', (1 << 20) - 8) .. 'return 5')()", 5), "5");
}

static void test_deadline(lua_State *L)
{
    const char *r = run(L, "while true do end", 0.05);
    CHECK(starts(r, "ERR:test:") && strstr(r, "timeout: Lua code ran longer than 50 ms"));
    /* pcall cannot swallow it: the hook fires again at the next instruction */
    r = run(L, "local n = 0 while true do pcall(function() while true do end end) n = n + 1 end",
            0.05);
    CHECK(starts(r, "ERR:test:") && strstr(r, "timeout: Lua code ran longer than 50 ms"));
    r = run(L, "local ok, e repeat ok, e = pcall(function() while true do end end) until false",
            0.05);
    CHECK(starts(r, "ERR:test:") && strstr(r, "timeout: Lua code ran longer than 50 ms"));
    /* inside a coroutine as well */
    r = run(L, "local co = coroutine.wrap(function() while true do end end) co()", 0.05);
    CHECK(strstr(r, "timeout") != NULL);
    /* the state works normally afterwards, with a fresh budget */
    CHECK_STR(run(L, "local s = 0 for i = 1, 100000 do s = s + i end return s", 1), "5000050000");
}

static void test_memory(lua_State *L)
{
    const char *r = run(L, "return #string.rep('x', 1e9)", 5);
    CHECK(starts(r, "ERR:") && strstr(r, "memory") != NULL);
    /* 64 KiB entries reach the byte budget in a few thousand steps, so the
     * memory cap, not the time budget, stops it even on a loaded machine */
    r = run(L, "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(65536) .. i end", 5);
    if (!(starts(r, "ERR:") && strstr(r, "memory") != NULL))
        fprintf(stderr, "table bomb: %s\n", r);
    CHECK(starts(r, "ERR:") && strstr(r, "memory") != NULL);
    /* the bomb was bounded and collected: the state is usable and small again */
    lua_gc(L, LUA_GCCOLLECT);
    CHECK(sc_lua_memory_used(L) < (size_t)4 << 20);
    CHECK_STR(run(L, "return #string.rep('x', 1000)", 1), "1000");
}

static void test_call(lua_State *L)
{
    int top = lua_gettop(L);
    /* a Lua function erroring: message without traceback, stack restored */
    CHECK(luaL_loadstring(L, "local a = ... error('bad ' .. a)") == LUA_OK);
    lua_pushliteral(L, "thing");
    CHECK(sc_lua_call(L, 1, 1, 1, err, sizeof err) == -1);
    CHECK(strstr(err, "bad thing") != NULL);
    CHECK(strstr(err, "traceback") == NULL);
    CHECK_EQ_INT(lua_gettop(L), top);
    /* non-string error objects */
    CHECK(luaL_loadstring(L, "error({})") == LUA_OK);
    CHECK(sc_lua_call(L, 0, 0, 1, err, sizeof err) == -1);
    CHECK(strstr(err, "table value") != NULL);
    CHECK_EQ_INT(lua_gettop(L), top);
    /* success: results replace fn and args */
    CHECK(luaL_loadstring(L, "local a, b = ... return a + b, a * b") == LUA_OK);
    lua_pushinteger(L, 3);
    lua_pushinteger(L, 4);
    CHECK(sc_lua_call(L, 2, 2, 1, err, sizeof err) == 0);
    CHECK_EQ_INT(lua_gettop(L), top + 2);
    CHECK_EQ_INT(lua_tointeger(L, -2), 7);
    CHECK_EQ_INT(lua_tointeger(L, -1), 12);
    lua_settop(L, top);
    /* syntax errors name the chunk and line */
    CHECK(sc_lua_run_chunk(L, "local x = 1\nreturn x +", 22, "@some/file.lua", 1, err,
                           sizeof err) == -1);
    CHECK(starts(err, "some/file.lua:2:"));
    /* a chunk must return its value; runtime errors keep the line */
    CHECK(sc_lua_run_chunk(L, "\n\nerror('at three')", 19, "@f.lua", 1, err, sizeof err) == -1);
    if (!starts(err, "f.lua:3: at three"))
        fprintf(stderr, "got: %s\n", err);
    CHECK(starts(err, "f.lua:3: at three"));
    CHECK_EQ_INT(lua_gettop(L), top);
}

static void test_module(lua_State *L)
{
    /* an allow-list: the contract's settings and SCENECOMP_POLICY_*, nothing else
     * (issue 8: ALERT_WEBHOOK_URL with credentials was readable) */
    setenv("SCENECOMP_POLICY_TEST_VAR", "hello", 1);
    setenv("MAX_CONCURRENT_KONTEXT", "7", 1);
    setenv("REPLICATE_API_TOKEN", "r8_secret", 1);
    setenv("ADMIN_TOKEN", "admin-secret", 1);
    setenv("ALERT_WEBHOOK_URL", "https://user:pass@hooks.example/x", 1);
    setenv("REDIS_URL", "redis://:pw@127.0.0.1:6379/0", 1);
    setenv("WEBHOOK_SECRET", "whsec", 1);
    setenv("SC_SANDBOX_TEST_VAR", "not listed", 1);
    setenv("SCENECOMP_POLICY_", "empty suffix", 1);
    CHECK_STR(run(L, "return scenecomp.env('SCENECOMP_POLICY_TEST_VAR')", 1), "hello");
    CHECK_STR(run(L, "return scenecomp.env('MAX_CONCURRENT_KONTEXT')", 1), "7");
    CHECK_STR(run(L, "return scenecomp.env('SCENECOMP_POLICY_UNSET')", 1), "nil");
    static const char *const hidden[] = {"REPLICATE_API_TOKEN",
                                         "ADMIN_TOKEN",
                                         "ALERT_WEBHOOK_URL",
                                         "REDIS_URL",
                                         "WEBHOOK_SECRET",
                                         "SC_SANDBOX_TEST_VAR",
                                         "SCENECOMP_POLICY_",
                                         "PATH",
                                         "HOME",
                                         NULL};
    for (int i = 0; hidden[i]; i++) {
        char src[128];
        snprintf(src, sizeof src, "return scenecomp.env('%s')", hidden[i]);
        CHECK_STR(run(L, src, 1), "nil");
        CHECK(!sc_lua_env_allowed(hidden[i]));
    }
    /* an embedded NUL cannot smuggle a listed prefix past the check */
    CHECK_STR(run(L, "return scenecomp.env('MAX_CONCURRENT_KONTEXT\\0x')", 1), "nil");
    CHECK(starts(run(L, "return scenecomp.env({})", 1), "ERR:"));
    CHECK_STR(run(L, "scenecomp.log('info', 'hello from the sandbox test') return true", 1),
              "true");
    CHECK(starts(run(L, "scenecomp.log('loud', 'x')", 1), "ERR:"));
    CHECK(starts(run(L, "scenecomp.log('info')", 1), "ERR:"));
    CHECK_STR(run(L, "return math.abs(scenecomp.now() - os.time()) < 5", 1), "true");
    CHECK_STR(run(L, "return scenecomp.bucket('alice', 'kontext')", 1), "14");
    CHECK(starts(run(L, "return scenecomp.bucket('alice')", 1), "ERR:"));
    CHECK_STR(run(L,
                  "local m = scenecomp.metrics() return type(m.stats.kontext) .. "
                  "type(m.rate_limiter) .. type(m.fallback_reasons.timeout)",
                  1),
              "tabletablenumber");
    CHECK_STR(run(L, "print('print goes to the log') return 1", 1), "1");
}

/* Vectors shared with docs/policy.md; the reference FNV above checks them independently. */
static void test_bucket(void)
{
    static const struct {
        const char *key, *salt;
        int bucket;
    } v[] = {{"alice", "kontext", 14},
             {"bob", "kontext", 13},
             {"user-1", "kontext", 19},
             {"ops-1", "kontext", 24},
             {"", "kontext", 34},
             {"alice", "exp", 82},
             {"", "", 53}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        CHECK_EQ_INT(sc_lua_bucket(v[i].key, strlen(v[i].key), v[i].salt, strlen(v[i].salt)),
                     v[i].bucket);
        CHECK_EQ_INT(ref_bucket(v[i].key, v[i].salt), v[i].bucket);
    }
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "u%d", i);
        CHECK_EQ_INT(sc_lua_bucket(key, strlen(key), "s", 1), ref_bucket(key, "s"));
    }
}

int main(void)
{
    lua_State *L = sc_lua_new_state(err, sizeof err);
    CHECK(L != NULL);
    if (!L) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_allow_list(L);
    test_globals(L);
    test_binary_chunks(L);
    test_load(L);
    test_deadline(L);
    test_memory(L);
    test_call(L);
    test_module(L);
    test_bucket();
    lua_close(L);
    return test_report("lua_sandbox_test");
}

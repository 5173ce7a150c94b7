/* The sandbox's step-bounded string pattern and table functions (bounded.c):
 *   - they give exactly what stock Lua 5.4 gives (results and error messages),
 *     on a hand-picked sample and on a few thousand random patterns;
 *   - they stop at the deadline of the current call, inside a single C call,
 *     also through `s:match` (the string metatable), pcall, gmatch, gsub and
 *     coroutines, and the state works afterwards.
 * An alarm turns a hang (the defect: minutes inside one match) into a failure. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "core/clock.h"
#include "lua/sandbox.h"
#include "test.h"

static char err[1024];

/* Serialises every result, so two states can be compared as strings. */
static const char k_prelude[] =
    "local function ser(...)\n"
    "  local out = {}\n"
    "  for i = 1, select('#', ...) do\n"
    "    local v = select(i, ...)\n"
    "    if type(v) == 'string' then out[#out + 1] = string.format('%q', v)\n"
    "    elseif type(v) == 'table' then\n"
    "      local keys = {}\n"
    "      for k in pairs(v) do keys[#keys + 1] = tostring(k) end\n"
    "      table.sort(keys)\n"
    "      local parts = {}\n"
    "      for _, k in ipairs(keys) do parts[#parts + 1] = k .. '=' .. tostring(v[k] or "
    "v[tonumber(k)]) end\n"
    "      out[#out + 1] = '{' .. table.concat(parts, ',') .. '}'\n"
    "    else out[#out + 1] = tostring(v) end\n"
    "  end\n"
    "  return table.concat(out, ' | ')\n"
    "end\n";

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "lua_patterns_test: hung in a pattern function (no budget)\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

/* Runs prelude + body in the sandbox; returns the string result or "ERR:<msg>". */
static const char *run_sandbox(lua_State *L, const char *body, double budget, char *out, size_t n)
{
    char src[8192];
    snprintf(src, sizeof src, "%s%s", k_prelude, body);
    int top = lua_gettop(L);
    if (sc_lua_run_chunk(L, src, strlen(src), "=t", budget, err, sizeof err) != 0) {
        snprintf(out, n, "ERR:%s", err);
        return out;
    }
    snprintf(out, n, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    lua_settop(L, top);
    return out;
}

/* The same in a stock Lua state (the reference). */
static const char *run_stock(lua_State *S, const char *body, char *out, size_t n)
{
    char src[8192];
    snprintf(src, sizeof src, "%s%s", k_prelude, body);
    if (luaL_loadbuffer(S, src, strlen(src), "=t") != LUA_OK || lua_pcall(S, 0, 1, 0) != LUA_OK) {
        snprintf(out, n, "ERR:%s", lua_tostring(S, -1));
        lua_settop(S, 0);
        return out;
    }
    snprintf(out, n, "%s", lua_tostring(S, -1) ? lua_tostring(S, -1) : "(not a string)");
    lua_settop(S, 0);
    return out;
}

static int g_diffs;

static void same_as_stock(lua_State *L, lua_State *S, const char *body)
{
    char a[4096], b[4096];
    run_sandbox(L, body, 5, a, sizeof a);
    run_stock(S, body, b, sizeof b);
    if (strcmp(a, b) != 0 && g_diffs++ < 20)
        fprintf(stderr, "differs from stock Lua:\n  %s\n  sandbox: %s\n  stock:   %s\n", body, a,
                b);
    CHECK_STR(a, b);
}

static void test_sample(lua_State *L, lua_State *S)
{
    static const char *const cases[] = {
        /* find: plain, special, init (positive, negative, past the end), captures */
        "return ser(string.find('hello world', 'o w'))",
        "return ser(string.find('hello world', 'o', 6))",
        "return ser(string.find('hello world', 'l+', -5))",
        "return ser(string.find('hello', 'l', 10))",
        "return ser(string.find('hello', '', 6))",
        "return ser(string.find('hello', '', 7))",
        "return ser(string.find('a.b', '.', 1, true))",
        "return ser(string.find('a+b', '+', 1, true))",
        "return ser(string.find('key = value', '(%w+)%s*=%s*(%w+)'))",
        "return ser(('x'):rep(10):find('x', -3))",
        "return ser(string.find('a\\0b', '\\0'))",
        "return ser(string.find('a\\0b', '%z'))",
        /* match: anchors, position captures, classes, sets, back references */
        "return ser(string.match('  trim me  ', '^%s*(.-)%s*$'))",
        "return ser(string.match('hello', '()ll()'))",
        "return ser(string.match('2024-05-06', '^(%d+)-(%d+)-(%d+)$'))",
        "return ser(string.match('abc', '^b'))",
        "return ser(string.match('abc', 'c$'))",
        "return ser(string.match('a$b', 'a$b'))",
        "return ser(string.match('x = \"q\" y', '([\"\\'])(.-)%1'))",
        "return ser(string.match('[[nested [x] ]]', '%b[]'))",
        "return ser(string.match('f(a(b)c)d', '%b()'))",
        "return ser(string.match('THE (quick) fox', '%f[%a]%a+'))",
        "return ser(string.match('hello world', '%f[%w]%w+', 2))",
        "return ser(string.match('abc123def', '[%a]+(%d+)[^%d]+'))",
        "return ser(string.match('a-b_c', '[a-c_%-]+'))",
        "return ser(string.match('x]y', '[]]'))",
        "return ser(string.match('aaa', 'a-b'))",
        "return ser(string.match('aaab', 'a-b'))",
        "return ser(string.match('ab', 'a?b'))",
        "return ser(string.match('b', 'a?b'))",
        "return ser(string.match('hello', '.-(l+)(.*)'))",
        "return ser(string.match('UPPER lower 123 !?', '(%u+)%s(%l+)%s(%d+)%s(%p+)'))",
        "return ser(string.match('\\t\\n x', '%c+'))",
        "return ser(string.match('0x1F', '%x+', 3))",
        "return ser(string.match('hello', '(h)(e)(l)(l)(o)'))",
        "return ser(string.match('abc', '((a)(b))'))",
        /* gmatch: plain, captures, init, anchor (a literal '^' in gmatch) */
        "local t = {} for w in string.gmatch('one two  three', '%a+') do t[#t+1] = w end "
        "return ser(table.concat(t, ','))",
        "local t = {} for k, v in string.gmatch('a=1, b=2, c=3', '(%w+)=(%w+)') do t[#t+1] = k .. "
        "v "
        "end return ser(table.concat(t, ';'))",
        "local t = {} for w in string.gmatch('one two three', '%a+', 5) do t[#t+1] = w end "
        "return ser(table.concat(t, ','))",
        "local t = {} for w in string.gmatch('one two three', '%a+', -5) do t[#t+1] = w end "
        "return ser(table.concat(t, ','))",
        "local t = {} for p in string.gmatch('abc', '()') do t[#t+1] = p end "
        "return ser(table.concat(t, ','))",
        "local t = {} for w in string.gmatch('^a^b', '^.') do t[#t+1] = w end "
        "return ser(table.concat(t, ','))",
        "local n = 0 for _ in ('x'):rep(5):gmatch('x*') do n = n + 1 end return ser(n)",
        /* gsub: string, %0-%9, %%, table and function replacements, n, anchors */
        "return ser(string.gsub('hello world', 'o', '0'))",
        "return ser(string.gsub('hello world', '(%w+)', '<%1>'))",
        "return ser(string.gsub('hello world', '%w+', '%0 %0', 1))",
        "return ser(string.gsub('abc', '', '-'))",
        "return ser(string.gsub('abc', '^', '>'))",
        "return ser(string.gsub('abc', '$', '<'))",
        "return ser(string.gsub('100%', '%%', '%%%%'))",
        "return ser(string.gsub('$name is $age', '%$(%w+)', {name = 'Ann', age = 42}))",
        "return ser(string.gsub('$name is $unknown', '%$(%w+)', {name = 'Ann'}))",
        "return ser(string.gsub('1 2 3', '%d', function(d) return d * 2 end))",
        "return ser(string.gsub('a b c', '%a', function(c) if c == 'b' then return false end "
        "return c:upper() end))",
        "return ser(string.gsub('hello', '()l', '%1'))",
        "return ser(string.gsub('abc', '.', {a = 1, b = true}))",
        "return ser(string.gsub('x y', '(%w)', '%2'))",
        "return ser(string.gsub('abc', '%w', '%'))",
        "return ser(string.gsub('abc', 'b', 5))",
        "return ser(string.gsub('hello world', 'l+', 'L', 0))",
        "return ser(string.gsub('hello world', 'l+', 'L', -1))",
        "return ser(('a,b,,c'):gsub(',', ';'))",
        /* method calls through the string metatable */
        "local s = 'Key: Value' return ser(s:match('^(%w+):%s*(.+)$'))",
        "return ser(('abc'):find('b', 1, true))",
        /* errors: same messages as stock Lua */
        "return ser(pcall(string.match, 'x', '%'))",
        "return ser(pcall(string.match, 'x', '[a'))",
        "return ser(pcall(string.match, 'x', '(x'))",
        "return ser(pcall(string.match, 'x', 'x)'))",
        "return ser(pcall(string.match, 'x', '%1'))",
        "return ser(pcall(string.match, 'x', '%b'))",
        "return ser(pcall(string.match, 'x', '%fx'))",
        "return ser(pcall(string.find, 'x', ('(x)'):rep(33)))",
        "return ser(pcall(string.match, ('a'):rep(300), ('a?'):rep(300) .. ('a'):rep(300)))",
        "return ser(pcall(string.gsub, 'x', 'x', true))",
        "return ser(pcall(string.gsub, 'x', 'x', function() return {} end))",
        "return ser(pcall(string.gsub, 'x', '(x', 'y'))",
        "return ser(pcall(string.find, nil, 'x'))",
        "return ser(pcall(string.find))",
        "return ser(pcall(string.gmatch, 'x'))",
        "local ok, e = pcall(function() return ('x'):match('[') end) return ser(ok, e)",
        /* table functions */
        "local t = {1, 2, 3} table.insert(t, 4) table.insert(t, 1, 0) return ser(table.concat(t, "
        "','))",
        "local t = {1, 2, 3} local v = table.remove(t, 1) return ser(v, table.concat(t, ','))",
        "local t = {1, 2, 3} return ser(table.remove(t), #t, table.remove({}), table.remove({}, "
        "1))",
        "return ser(pcall(table.insert, {1}, 5, 2))",
        "return ser(pcall(table.insert, {1}, 1, 2, 3))",
        "return ser(pcall(table.remove, {1, 2}, 7))",
        "return ser(table.concat(table.move({1, 2, 3, 4}, 2, 4, 1), ','))",
        "return ser(table.concat(table.move({1, 2, 3}, 1, 3, 3), ','))",
        "return ser(table.concat(table.move({1, 2, 3}, 1, 3, 1, {}), ','))",
        "return ser(pcall(table.move, {}, -1, math.maxinteger, 1))",
        "return ser(pcall(table.move, {}, 1, 2, math.maxinteger))",
        "return ser(pcall(table.move, 1, 1, 2, 1))",
        "local t = {5, 2, 8, 1, 9, 3} table.sort(t) return ser(table.concat(t, ','))",
        "local t = {5, 2, 8, 1, 9, 3} table.sort(t, function(a, b) return a > b end) "
        "return ser(table.concat(t, ','))",
        "local t = {'pear', 'Apple', 'fig', 'apple'} table.sort(t) return ser(table.concat(t, "
        "','))",
        "local t = {} for i = 1, 500 do t[i] = (i * 7919) % 503 end table.sort(t) "
        "local ok = true for i = 2, #t do ok = ok and t[i - 1] <= t[i] end return ser(ok, #t)",
        "return ser(pcall(table.sort, {3, 'a', 1}))",
        "return ser(pcall(table.sort, {1, 2, 3}, 5))",
        "return ser(pcall(table.sort, {3, 2, 1, 5, 4}, function(a, b) return true end))",
        "local t = {} table.sort(t) return ser(#t)",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        same_as_stock(L, S, cases[i]);
}

/* Appends s as a Lua string literal (every byte as \ddd). */
static void lua_literal(char *out, size_t n, const char *s, size_t len)
{
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, n - o, "\"");
    for (size_t i = 0; i < len && o + 5 < n; i++)
        o += (size_t)snprintf(out + o, n - o, "\\%03u", (unsigned char)s[i]);
    snprintf(out + o, n - o, "\"");
}

/* Random patterns built from every construct, over random subjects; both
 * states must agree on every result and every error. Fixed seed: the same
 * cases every run. */
static void test_random(lua_State *L, lua_State *S)
{
    static const char *const atoms[] = {
        "a",      "b", ".", "%a", "%d", "%s", "%w", "[ab]", "[^a]", "[a-c]", "%b()",
        "%f[%a]", "(", ")", "()", "%1", "*",  "+",  "-",    "?",    "^",     "$",
        "%",      "[", "]", "%%", "x",  " ",  "%p", "%u",   "%l",   "[%d]",
    };
    static const char subj_chars[] = "aabbc x(1)2 %A[]";
    static const char *const fns[] = {"find", "match", "gsub", "gmatch"};
    uint32_t seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 8) & 0xffffff)
    for (int i = 0; i < 3000; i++) {
        char pat[64] = "", subj[32], body[1024];
        int natoms = 1 + (int)(RND() % 6);
        for (int k = 0; k < natoms; k++)
            strncat(pat, atoms[RND() % (sizeof atoms / sizeof atoms[0])],
                    sizeof pat - strlen(pat) - 1);
        size_t slen = RND() % 16;
        for (size_t k = 0; k < slen; k++)
            subj[k] = subj_chars[RND() % (sizeof subj_chars - 1)];
        subj[slen] = '\0';
        const char *fn = fns[RND() % 4];
        int init = (int)(RND() % 7) - 3;
        body[0] = '\0';
        strcat(body, "local s, p = ");
        lua_literal(body, sizeof body, subj, slen);
        strcat(body, ", ");
        lua_literal(body, sizeof body, pat, strlen(pat));
        size_t o = strlen(body);
        if (strcmp(fn, "gsub") == 0)
            snprintf(body + o, sizeof body - o,
                     "\nreturn ser(pcall(string.gsub, s, p, '<%%0>', %d))", init + 3);
        else if (strcmp(fn, "gmatch") == 0)
            snprintf(body + o, sizeof body - o,
                     "\nlocal ok, it = pcall(string.gmatch, s, p, %d)\n"
                     "if not ok then return ser(ok, it) end\n"
                     "local t = {} for _ = 1, 50 do local r = table.pack(pcall(it)) "
                     "t[#t + 1] = ser(table.unpack(r, 1, r.n)) if not r[1] or r[2] == nil "
                     "then break end end\n"
                     "return table.concat(t, ' / ')",
                     init);
        else
            snprintf(body + o, sizeof body - o, "\nreturn ser(pcall(string.%s, s, p, %d))", fn,
                     init);
        same_as_stock(L, S, body);
    }
#undef RND
}

static double elapsed_since(double t0)
{
    return sc_clock_mono() - t0;
}

/* Every way into a pattern function stops at the deadline, inside one C call. */
static void test_budget(lua_State *L)
{
    static const char *const cases[] = {
        /* the probe: 400 characters, four lazy captures, no match (43 s before) */
        "local p = ('a '):rep(200) return p:match('^(.-)%s*(.-)%s*(.-)%s*(.-)x$')",
        "return string.match(('a '):rep(200), '^(.-)%s*(.-)%s*(.-)%s*(.-)x$')",
        "return string.find(('a'):rep(5000), '.-.-.-.-b')",
        "for w in string.gmatch(('a'):rep(5000), '(.-)(.-)(.-)b') do end",
        "return string.gsub(('a'):rep(5000), '.-.-.-b', 'x')",
        /* a pcall around it does not help: the hook fires at the next instruction */
        "while true do pcall(string.match, ('a'):rep(5000), '.-.-.-.-b') end",
        /* in a coroutine */
        "return coroutine.wrap(function() return ('a'):rep(5000):find('.-.-.-.-b') end)()",
        /* a plain find that compares long needles at every position */
        "local s = ('a'):rep(1 << 22) local n = ('a'):rep(1 << 21) .. 'b' "
        "for i = 1, 10 do s:find(n, 1, true) end",
        /* table loops whose length the script picks */
        "table.move({}, 1, 1 << 50, 2)",
        "local t = setmetatable({}, {__len = function() return 1 << 50 end}) "
        "table.insert(t, 1, 'x')",
        "local t = setmetatable({}, {__len = function() return 1 << 50 end}) table.remove(t, 1)",
        /* a sort that never returns to Lua: 2^18 references to long strings
         * with a common prefix, default comparison (stock Lua: minutes) */
        "local s = {} for k = 1, 8 do s[k] = ('x'):rep(1 << 17) .. k end "
        "local t = {} for i = 1, 1 << 18 do t[i] = s[(i * 5) % 8 + 1] end table.sort(t)",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[2048];
        double t0 = sc_clock_mono();
        alarm(60);
        const char *r = run_sandbox(L, cases[i], 0.2, out, sizeof out);
        alarm(0);
        double dt = elapsed_since(t0);
        bool cut = strncmp(r, "ERR:", 4) == 0 && strstr(r, "timeout") &&
                   (strstr(r, "budget exceeded") || strstr(r, "ran longer than"));
        if (!cut || dt > 10)
            fprintf(stderr, "case %zu: %.2fs %s\n", i, dt, r);
        CHECK(cut);
        /* 0.2 s budget; 10 s leaves room for a loaded machine, the unbounded
         * versions take minutes to years */
        CHECK(dt < 10);
        /* the state works normally afterwards */
        CHECK_STR(run_sandbox(L, "return ser(('a b'):match('(%a) (%a)'))", 1, out, sizeof out),
                  "\"a\" | \"b\"");
    }
    /* the message names the pattern budget and the line */
    char out[2048];
    run_sandbox(L, "\nreturn (('a '):rep(200)):match('^(.-)%s*(.-)%s*(.-)%s*(.-)x$')", 0.1, out,
                sizeof out);
    CHECK(strstr(out, "ERR:t:") && strstr(out, "timeout: pattern budget exceeded"));
}

int main(void)
{
    signal(SIGALRM, on_alarm);
    lua_State *L = sc_lua_new_state(err, sizeof err);
    lua_State *S = luaL_newstate();
    CHECK(L != NULL && S != NULL);
    if (!L || !S) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    luaL_openlibs(S);
    test_sample(L, S);
    test_random(L, S);
    test_budget(L);
    lua_close(S);
    lua_close(L);
    return test_report("lua_patterns_test");
}

/* Sandboxed Lua states and the one door into Lua (see sandbox.h).
 *
 * Layout of a state:
 *   - the real globals (_G of the state) hold the full libraries we opened; no
 *     script ever sees them;
 *   - the sandbox env (registry[&k_env]) is the allow-listed copy that becomes
 *     the _ENV of every chunk and the default env of `load`;
 *   - an allocator with a byte budget (SC_LUA_MEMORY_LIMIT) and a count hook
 *     enforcing the deadline of the current sc_lua_call. */
#include "lua/sandbox.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "core/clock.h"
#include "core/log.h"
#include "lua/bind_scenecomp.h"
#include "lua/bounded.h"

/* Instructions between two deadline checks: a check is one clock_gettime
 * (vDSO, ~20 ns), so this costs well under 1% and stops a loop within ~10 µs. */
#define HOOK_COUNT 1000

/* Registry key (address only) of the sandbox env table. */
static const char k_env = 'E';

/* ==== Allocator ==== */

sc_lua__info_t *sc_lua__info(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* Counts bytes and refuses growth past info->limit. The state's first block
 * (its global state) is also its last to be freed, so `used` drops to 0 only
 * inside lua_close (or a failed lua_newstate): the info block is freed there,
 * which is what lets callers use plain lua_close. */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sc_lua__info_t *info = ud;
    size_t old = ptr ? osize : 0; /* for ptr == NULL, osize encodes a type */
    if (nsize == 0) {
        free(ptr);
        info->used -= old;
        if (ptr && info->used == 0) {
            if (info->freed)
                *info->freed = true;
            free(info);
        }
        return NULL;
    }
    if (nsize > old && info->used - old + nsize > info->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    info->used = info->used - old + nsize;
    return p;
}

/* ==== Deadline hook ==== */

/* Raises once the deadline of the current call has passed, and from then on at
 * every instruction (count 1), so a script that catches the error with pcall
 * is interrupted again at its next instruction and the call unwinds. */
static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sc_lua__info_t *info = sc_lua__info(L);
    if (info->deadline <= 0)
        return;
    if (!info->expired && sc_clock_mono() <= info->deadline)
        return;
    info->expired = true;
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
    /* level 0 is the interrupted Lua function: name where the time went */
    luaL_where(L, 0);
    lua_pushfstring(L, "timeout: Lua code ran longer than %d ms", (int)(info->budget * 1000 + 0.5));
    lua_concat(L, 2);
    lua_error(L);
}

void sc_lua__check_deadline(lua_State *L, const char *what)
{
    sc_lua__info_t *info = sc_lua__info(L);
    if (info->deadline <= 0)
        return;
    if (!info->expired && sc_clock_mono() <= info->deadline)
        return;
    /* as the hook: from now on raise at every instruction, so a pcall around
     * the match cannot keep the call going */
    info->expired = true;
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "timeout: %s (Lua code ran longer than %d ms)", what,
               (int)(info->budget * 1000 + 0.5));
}

/* ==== Sandboxed base functions ==== */

/* Largest chunk load() accepts: the parser runs in C, where the count hook
 * cannot fire, so the size of what it parses bounds the time (1 MiB parses in
 * tens of ms; 60 MiB would take seconds). A policy file has the same limit. */
#define SANDBOX_LOAD_MAX ((size_t)1 << 20)
#define LOAD_RESERVED_SLOT 5 /* keeps the reader's last piece alive */

/* lua_Reader for a function chunk (as lbaselib.c's generic_reader), counting
 * the bytes against SANDBOX_LOAD_MAX. Raises into lua_load, which returns the
 * error as load's message. */
static const char *sandbox_reader(lua_State *L, void *ud, size_t *size)
{
    size_t *total = ud;
    luaL_checkstack(L, 2, "too many nested functions");
    lua_pushvalue(L, 1); /* reader */
    lua_call(L, 0, 1);   /* piece */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        *size = 0;
        return NULL;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "reader function must return a string");
    lua_replace(L, LOAD_RESERVED_SLOT);
    const char *piece = lua_tolstring(L, LOAD_RESERVED_SLOT, size);
    *total += *size;
    if (*total > SANDBOX_LOAD_MAX)
        luaL_error(L, "chunk too large for load (more than %d bytes)", (int)SANDBOX_LOAD_MAX);
    return piece;
}

/* Lua: f, err = load(chunk [, chunkname [, mode [, env]]])
 * As the base function, but text chunks only (mode is forced to "t"), at most
 * SANDBOX_LOAD_MAX bytes, and env defaults to the sandbox env. Returns nil,
 * message for a syntax error, a binary or an oversized chunk; raises on
 * misuse (chunk neither a string nor a function). */
static int sandbox_load(lua_State *L)
{
    size_t len, total = 0;
    int nargs = lua_gettop(L);
    const char *s = lua_tolstring(L, 1, &len);
    const char *chunkname = luaL_optstring(L, 2, s ? s : "=(load)");
    int status;
    if (s) {
        if (len > SANDBOX_LOAD_MAX) {
            luaL_pushfail(L);
            lua_pushfstring(L, "chunk too large for load (more than %d bytes)",
                            (int)SANDBOX_LOAD_MAX);
            return 2;
        }
        status = luaL_loadbufferx(L, s, len, chunkname, "t");
    } else {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_settop(L, LOAD_RESERVED_SLOT);
        status = lua_load(L, sandbox_reader, &total, chunkname, "t");
    }
    if (status != LUA_OK) { /* ..., message */
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (nargs >= 4)
        lua_pushvalue(L, 4); /* f, caller's env */
    else
        lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env); /* f, sandbox env */
    if (!lua_setupvalue(L, -2, 1))                 /* f */
        lua_pop(L, 1);
    return 1;
}

/* Lua: n = collectgarbage([opt]) -- only "count", "collect", "step", "isrunning";
 * tuning options raise "collectgarbage option 'x' not allowed". */
static int sandbox_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = {"count", "collect", "step", "isrunning", NULL};
    const char *opt = luaL_optstring(L, 1, "collect");
    int ok = 0;
    for (int i = 0; allowed[i]; i++)
        ok |= strcmp(opt, allowed[i]) == 0;
    if (!ok)
        return luaL_error(L, "collectgarbage option '%s' not allowed", opt);
    lua_pushvalue(L, lua_upvalueindex(1)); /* original collectgarbage */
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Lua: t = setmetatable(t, mt)
 * As the base function, but raises for a metatable with a __gc field:
 * finalizers run whenever the collector decides, including inside lua_close
 * where no deadline applies, so a looping __gc could hang the thread closing
 * the state. (In 5.4 only a __gc present at setmetatable time marks t.) */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in policy and alert code");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* t, mt, original setmetatable */
    lua_insert(L, 1);                      /* setmetatable, t, mt */
    lua_call(L, lua_gettop(L) - 1, 1);     /* t */
    return 1;
}

/* Lua: print(...) -- logged at info level with the state's tag, not stdout. */
static int sandbox_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    sc_log_info("%s %s", sc_lua__info(L)->tag, lua_tostring(L, -1));
    return 0;
}

/* __newindex of the sandbox env: globals are declared with `local` (or rawset). */
static int sandbox_newindex(lua_State *L)
{
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "assignment to undeclared global '%s' (use local)", name);
}

/* ==== State setup ==== */

/* Copies fields `names` of the table at src into a new table (stack: -> +1). */
static void copy_fields(lua_State *L, int src, const char *const *names)
{
    src = lua_absindex(L, src);
    lua_newtable(L); /* copy */
    for (int i = 0; names[i]; i++) {
        lua_getfield(L, src, names[i]); /* copy, value */
        lua_setfield(L, -2, names[i]);  /* copy */
    }
}

/* Copies every field of the table at src into a new table (stack: -> +1). */
static void copy_table(lua_State *L, int src)
{
    src = lua_absindex(L, src);
    lua_newtable(L); /* copy */
    lua_pushnil(L);
    while (lua_next(L, src)) { /* copy, key, value */
        lua_pushvalue(L, -2);  /* copy, key, value, key */
        lua_insert(L, -2);     /* copy, key, key, value */
        lua_settable(L, -4);   /* copy, key */
    }
}

/* Loads lua-cjson (a C module) through `require`, which exists only here, in
 * setup. LUA_NOENV makes package ignore LUA_CPATH*, so only the compiled-in
 * system paths are searched. Leaves cjson or nil on the stack (+1). */
static void setup_cjson(lua_State *L)
{
    static atomic_int warned;
    lua_getglobal(L, "require"); /* require */
    lua_pushliteral(L, "cjson"); /* require, "cjson" */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        if (!atomic_exchange(&warned, 1)) {
            sc_log_warn("[Lua] lua-cjson not available, `cjson` is nil in policy and alert "
                        "code: %s",
                        lua_tostring(L, -1));
        }
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* Runs under lua_pcall (rule 9): opens the libraries into the real globals,
 * builds the sandbox env and stores it in the registry. */
static int sandbox_setup_l(lua_State *L)
{
    static const char *const base_names[] = {
        "assert",   "error",    "ipairs", "next",     "pairs",        "pcall",
        "xpcall",   "rawequal", "rawget", "rawlen",   "rawset",       "select",
        "tonumber", "tostring", "type",   "_VERSION", "getmetatable", NULL};
    static const char *const os_names[] = {"time", "clock", "date", "difftime", NULL};

    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1);
    lua_settop(L, 0);
    setup_cjson(L); /* cjson|nil */

    lua_pushglobaltable(L);        /* cjson, G */
    copy_fields(L, 2, base_names); /* cjson, G, env */
    int env = lua_gettop(L);

    lua_pushcfunction(L, sandbox_load); /* ..., sandbox load */
    lua_setfield(L, env, "load");
    lua_getfield(L, 2, "collectgarbage");
    lua_pushcclosure(L, sandbox_collectgarbage, 1);
    lua_setfield(L, env, "collectgarbage");
    lua_getfield(L, 2, "setmetatable");
    lua_pushcclosure(L, sandbox_setmetatable, 1);
    lua_setfield(L, env, "setmetatable");
    lua_pushcfunction(L, sandbox_print);
    lua_setfield(L, env, "print");

    /* string.dump would give bytecode; the string metatable's __index is the
     * real string table, so remove it there, not only in the copy. For the
     * same reason the step-bounded pattern functions replace the stock ones
     * in the real tables (`s:match(p)` goes through that __index). */
    lua_getfield(L, 2, LUA_STRLIBNAME); /* ..., string */
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_getfield(L, 2, LUA_TABLIBNAME);   /* ..., string, table */
    sc_lua__install_bounded(L, -2, -1);   /* ..., string, table */
    lua_pop(L, 1);                        /* ..., string */
    copy_table(L, -1);                    /* ..., string, copy */
    lua_setfield(L, env, LUA_STRLIBNAME); /* ..., string */
    lua_pop(L, 1);
    static const char *const libs[] = {LUA_TABLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME,
                                       LUA_COLIBNAME, NULL};
    for (int i = 0; libs[i]; i++) {
        lua_getfield(L, 2, libs[i]); /* ..., lib */
        copy_table(L, -1);           /* ..., lib, copy */
        lua_setfield(L, env, libs[i]);
        lua_pop(L, 1);
    }
    lua_getfield(L, 2, LUA_OSLIBNAME); /* ..., os */
    copy_fields(L, -1, os_names);      /* ..., os, copy */
    lua_setfield(L, env, LUA_OSLIBNAME);
    lua_pop(L, 1);

    /* cjson without its configuration functions: encode_max_depth(1e9) or
     * decode_max_depth(1e9) let a deeply nested value recurse in C until the
     * thread's stack overflows (a crash of the service), encode_sparse_array
     * lets {[1e9] = 1} write gigabytes outside the memory cap, and new() would
     * give a configurable instance. The defaults stay (depth 1000). */
    if (lua_istable(L, 1)) {
        static const char *const cjson_names[] = {"encode", "decode",   "null",
                                                  "_NAME",  "_VERSION", NULL};
        copy_fields(L, 1, cjson_names); /* ..., cjson copy */
    } else {
        lua_pushnil(L); /* ..., nil */
    }
    lua_setfield(L, env, "cjson");
    sc_lua__open_scenecomp(L); /* ..., scenecomp */
    lua_setfield(L, env, "scenecomp");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");

    lua_createtable(L, 0, 2); /* ..., env mt */
    lua_pushcfunction(L, sandbox_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable"); /* getmetatable(_G) -> false; no setmetatable */
    lua_setmetatable(L, env);

    lua_pushvalue(L, env);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_env);

    /* Defence in depth: nothing reaches the real globals, but drop the loader anyway. */
    lua_pushnil(L);
    lua_setfield(L, 2, "require");
    lua_pushnil(L);
    lua_setfield(L, 2, LUA_LOADLIBNAME);
    return 0;
}

static int sandbox_panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    sc_log_error("[Lua] unprotected error (panic), aborting: %s", msg);
    abort();
    return 0;
}

lua_State *sc_lua_new_state(char *err, size_t errlen)
{
    bool freed = false;
    sc_lua__info_t *info = calloc(1, sizeof *info);
    if (!info) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    info->limit = SC_LUA_MEMORY_LIMIT;
    info->freed = &freed;
    snprintf(info->tag, sizeof info->tag, "[Lua]");
    lua_State *L = lua_newstate(sandbox_alloc, info);
    if (!L) {
        if (!freed) /* the global block was never allocated */
            free(info);
        snprintf(err, errlen, "cannot create a Lua state (out of memory)");
        return NULL;
    }
    info->freed = NULL;
    lua_atpanic(L, sandbox_panic);
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, HOOK_COUNT);
    lua_pushcfunction(L, sandbox_setup_l); /* setup */
    if (sc_lua_call(L, 0, 0, 5.0, err, errlen) != 0) {
        lua_close(L);
        return NULL;
    }
    return L;
}

void sc_lua_set_log_tag(lua_State *L, const char *tag)
{
    snprintf(sc_lua__info(L)->tag, sizeof sc_lua__info(L)->tag, "%s", tag);
}

void sc_lua_set_caps(lua_State *L, const sc_limits_caps_t *caps)
{
    sc_lua__info_t *info = sc_lua__info(L);
    info->caps_set = caps != NULL;
    if (caps)
        info->caps = *caps;
}

void sc_lua_set_owner(lua_State *L, void *owner)
{
    sc_lua__info(L)->owner = owner;
}

void *sc_lua_owner(lua_State *L)
{
    return sc_lua__info(L)->owner;
}

size_t sc_lua_memory_used(lua_State *L)
{
    return sc_lua__info(L)->used;
}

void sc_lua_push_env(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env); /* env */
}

/* ==== The one door ==== */

/* Message handler: adds a traceback to string errors (lua.c's msghandler). */
static int sandbox_msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Copies the error message at the top to err, without the traceback (which is
 * logged at debug level). Does not allocate in Lua: safe outside protection. */
static void copy_error(lua_State *L, const char *tag, char *err, size_t errlen)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!msg)
        msg = "(error object is not a string)";
    const char *tb = strstr(msg, "\nstack traceback:");
    size_t n = tb ? (size_t)(tb - msg) : strlen(msg);
    if (err && errlen)
        snprintf(err, errlen, "%.*s", (int)n, msg);
    if (tb)
        sc_log_debug("%s %s", tag, msg);
}

int sc_lua_call(lua_State *L, int nargs, int nresults, double budget_seconds, char *err,
                size_t errlen)
{
    sc_lua__info_t *info = sc_lua__info(L);
    int fn = lua_gettop(L) - nargs;
    if (!lua_checkstack(L, 2)) {
        lua_settop(L, fn - 1);
        snprintf(err, errlen, "Lua stack overflow");
        return -1;
    }
    lua_pushcfunction(L, sandbox_msgh); /* fn, args..., msgh */
    lua_insert(L, fn);                  /* msgh, fn, args... */

    /* Nested calls (a binding calling back into Lua) keep the outer deadline if sooner. */
    double saved_deadline = info->deadline, saved_budget = info->budget;
    bool saved_expired = info->expired;
    double deadline = sc_clock_mono() + budget_seconds;
    if (saved_deadline <= 0 || deadline < saved_deadline) {
        info->deadline = deadline;
        info->budget = budget_seconds;
    }
    int rc = lua_pcall(L, nargs, nresults, fn); /* msgh, results... | msgh, error */
    info->deadline = saved_deadline;
    info->budget = saved_budget;
    if (info->expired && !saved_expired) {
        info->expired = false;
        lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, HOOK_COUNT);
    }
    if (rc != LUA_OK) {
        copy_error(L, info->tag, err, errlen);
        lua_settop(L, fn - 1); /* as before the call, minus fn and args */
        return -1;
    }
    lua_remove(L, fn); /* results... */
    return 0;
}

int sc_lua_run_chunk(lua_State *L, const char *source, size_t len, const char *chunkname,
                     double budget_seconds, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 3)) {
        snprintf(err, errlen, "Lua stack overflow");
        return -1;
    }
    /* Skip a leading "#!" line like lua.c does, keeping line numbers. */
    if (len >= 2 && source[0] == '#' && source[1] == '!') {
        while (len && *source != '\n') {
            source++;
            len--;
        }
    }
    if (luaL_loadbufferx(L, source, len, chunkname, "t") != LUA_OK) { /* err */
        copy_error(L, sc_lua__info(L)->tag, err, errlen);
        lua_settop(L, top);
        return -1;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_env); /* chunk, env */
    if (!lua_setupvalue(L, -2, 1))             /* chunk */
        lua_pop(L, 1);
    if (sc_lua_call(L, 0, 1, budget_seconds, err, errlen) != 0) {
        lua_settop(L, top);
        return -1;
    }
    return 0; /* result */
}

/* ==== Bucketing (plain C core, rule 3) ==== */

int sc_lua_bucket(const char *key, size_t keylen, const char *salt, size_t saltlen)
{
    uint32_t h = 2166136261u; /* FNV-1a 32-bit offset basis */
    for (size_t i = 0; i < saltlen; i++) {
        h ^= (unsigned char)salt[i];
        h *= 16777619u; /* FNV prime */
    }
    h ^= (unsigned char)':';
    h *= 16777619u;
    for (size_t i = 0; i < keylen; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return (int)(h % 100u);
}

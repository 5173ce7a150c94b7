/* Step-bounded string pattern and table functions (see bounded.h).
 *
 * The pattern matcher and table.insert/remove/move/sort below are Lua 5.4.4's
 * (lstrlib.c and ltablib.c, tag v5.4.4 of github.com/lua/lua), kept line for
 * line so that results and error messages stay those of stock Lua; Debian's
 * liblua5.4-dev ships only headers, so the code is vendored here. What was
 * added: every unit of work (a call of match(), a character scanned by a
 * repetition, %b or a back-reference, a byte compared by a plain find, an
 * element moved or compared by table.insert/remove/move/sort) is charged to a counter, and every
 * STEP_CHECK units the deadline of the current sc_lua_call is checked (sc_lua__check_deadline),
 * which raises once it has passed. Without this, a pattern such as
 * "^(.-)%s*(.-)%s*(.-)%s*(.-)x$" backtracks for minutes over a few hundred
 * characters inside one C call, where the count hook never fires.
 *
 * Lua 5.4.4 is
 *   Copyright (C) 1994-2022 Lua.org, PUC-Rio.
 *
 *   Permission is hereby granted, free of charge, to any person obtaining
 *   a copy of this software and associated documentation files (the
 *   "Software"), to deal in the Software without restriction, including
 *   without limitation the rights to use, copy, modify, merge, publish,
 *   distribute, sublicense, and/or sell copies of the Software, and to
 *   permit persons to whom the Software is furnished to do so, subject to
 *   the following conditions:
 *
 *   The above copyright notice and this permission notice shall be
 *   included in all copies or substantial portions of the Software.
 *
 *   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,
 *   EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 *   MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 *   IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 *   CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 *   TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 *   SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE. */
#include "lua/bounded.h"

#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "lua/bind_scenecomp.h"

/* Units of work between two deadline checks. A unit is a few ns, a check one
 * clock_gettime (~20 ns): the overhead stays under 1% and a runaway pattern
 * stops within well under a millisecond of its deadline. */
#define STEP_CHECK 4096

#define PATTERN_WHAT "pattern budget exceeded"
#define TABLE_WHAT "table operation budget exceeded"

#define LUA_MAXCAPTURES 32
#define MAXCCALLS 200 /* maximum recursion depth for 'match' */
#define uchar(c) ((unsigned char)(c))
#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

/* ==== Step accounting ==== */

typedef struct step_counter {
    lua_State *L;
    ptrdiff_t left; /* units until the next deadline check */
    const char *what;
} step_counter_t;

static void steps_init(step_counter_t *c, lua_State *L, const char *what)
{
    c->L = L;
    c->left = STEP_CHECK;
    c->what = what;
}

/* Charges n units; checks the deadline when the allowance is used up.
 * SC_MAY_RAISE (timeout). */
static void steps_charge(step_counter_t *c, size_t n)
{
    c->left -= (ptrdiff_t)(n < STEP_CHECK ? n : STEP_CHECK);
    if (c->left <= 0) {
        c->left = STEP_CHECK;
        sc_lua__check_deadline(c->L, c->what);
    }
}

/* ==== Pattern matching (lstrlib.c of Lua 5.4.4, plus step charges) ==== */

typedef struct MatchState {
    const char *src_init; /* init of source string */
    const char *src_end;  /* end ('\0') of source string */
    const char *p_end;    /* end ('\0') of pattern */
    lua_State *L;
    int matchdepth;      /* control for recursive depth (to avoid C stack overflow) */
    unsigned char level; /* total number of captures (finished or unfinished) */
    struct {
        const char *init;
        ptrdiff_t len;
    } capture[LUA_MAXCAPTURES];
    step_counter_t steps; /* added: the deadline check */
} MatchState;

/* recursive function */
static const char *match(MatchState *ms, const char *s, const char *p);

/* translate a relative initial string position (negative means back from
 * end): clip result to [1, inf). */
static size_t posrelatI(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    else if (pos == 0)
        return 1;
    else if (pos < -(lua_Integer)len) /* inverted comparison */
        return 1;                     /* clip to 1 */
    else
        return len + (size_t)pos + 1;
}

static int check_capture(MatchState *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

static int capture_to_close(MatchState *ms)
{
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->capture[level].len == CAP_UNFINISHED)
            return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

static const char *classend(MatchState *ms, const char *p)
{
    switch (*p++) {
    case L_ESC: {
        if (p == ms->p_end)
            luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    case '[': {
        if (*p == '^')
            p++;
        do { /* look for a ']' */
            if (p == ms->p_end)
                luaL_error(ms->L, "malformed pattern (missing ']')");
            if (*(p++) == L_ESC && p < ms->p_end)
                p++; /* skip escapes (e.g. '%]') */
        } while (*p != ']');
        return p + 1;
    }
    default: {
        return p;
    }
    }
}

static int match_class(int c, int cl)
{
    int res;
    switch (tolower(cl)) {
    case 'a':
        res = isalpha(c);
        break;
    case 'c':
        res = iscntrl(c);
        break;
    case 'd':
        res = isdigit(c);
        break;
    case 'g':
        res = isgraph(c);
        break;
    case 'l':
        res = islower(c);
        break;
    case 'p':
        res = ispunct(c);
        break;
    case 's':
        res = isspace(c);
        break;
    case 'u':
        res = isupper(c);
        break;
    case 'w':
        res = isalnum(c);
        break;
    case 'x':
        res = isxdigit(c);
        break;
    case 'z':
        res = (c == 0);
        break; /* deprecated option */
    default:
        return (cl == c);
    }
    return (islower(cl) ? res : !res);
}

static int matchbracketclass(int c, const char *p, const char *ec)
{
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++; /* skip the '^' */
    }
    while (++p < ec) {
        if (*p == L_ESC) {
            p++;
            if (match_class(c, uchar(*p)))
                return sig;
        } else if ((*(p + 1) == '-') && (p + 2 < ec)) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p))
                return sig;
        } else if (uchar(*p) == c)
            return sig;
    }
    return !sig;
}

static int singlematch(MatchState *ms, const char *s, const char *p, const char *ep)
{
    if (s >= ms->src_end)
        return 0;
    else {
        int c = uchar(*s);
        switch (*p) {
        case '.':
            return 1; /* matches any char */
        case L_ESC:
            return match_class(c, uchar(*(p + 1)));
        case '[':
            return matchbracketclass(c, p, ep - 1);
        default:
            return (uchar(*p) == c);
        }
    }
}

static const char *matchbalance(MatchState *ms, const char *s, const char *p)
{
    if (p >= ms->p_end - 1)
        luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (*s != *p)
        return NULL;
    else {
        const char *start = s;
        int b = *p;
        int e = *(p + 1);
        int cont = 1;
        while (++s < ms->src_end) {
            if (*s == e) {
                if (--cont == 0) {
                    steps_charge(&ms->steps, (size_t)(s - start));
                    return s + 1;
                }
            } else if (*s == b)
                cont++;
        }
        steps_charge(&ms->steps, (size_t)(s - start));
    }
    return NULL; /* string ends out of balance */
}

static const char *max_expand(MatchState *ms, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0; /* counts maximum expand for item */
    while (singlematch(ms, s + i, p, ep))
        i++;
    steps_charge(&ms->steps, (size_t)i);
    /* keeps trying to match with the maximum repetitions */
    while (i >= 0) {
        const char *res = match(ms, (s + i), ep + 1);
        if (res)
            return res;
        i--; /* else didn't match; reduce 1 repetition to try again */
    }
    return NULL;
}

static const char *min_expand(MatchState *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *res = match(ms, s, ep + 1);
        if (res != NULL)
            return res;
        else if (singlematch(ms, s, p, ep))
            s++; /* try with one more repetition */
        else
            return NULL;
    }
}

static const char *start_capture(MatchState *ms, const char *s, const char *p, int what)
{
    const char *res;
    int level = ms->level;
    if (level >= LUA_MAXCAPTURES)
        luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = level + 1;
    if ((res = match(ms, s, p)) == NULL) /* match failed? */
        ms->level--;                     /* undo capture */
    return res;
}

static const char *end_capture(MatchState *ms, const char *s, const char *p)
{
    int l = capture_to_close(ms);
    const char *res;
    ms->capture[l].len = s - ms->capture[l].init; /* close capture */
    if ((res = match(ms, s, p)) == NULL)          /* match failed? */
        ms->capture[l].len = CAP_UNFINISHED;      /* undo capture */
    return res;
}

static const char *match_capture(MatchState *ms, const char *s, int l)
{
    size_t len;
    l = check_capture(ms, l);
    len = ms->capture[l].len;
    steps_charge(&ms->steps, len);
    if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
        return s + len;
    else
        return NULL;
}

static const char *match(MatchState *ms, const char *s, const char *p)
{
    if (ms->matchdepth-- == 0)
        luaL_error(ms->L, "pattern too complex");
init: /* using goto's to optimize tail recursion */
    steps_charge(&ms->steps, 1);
    if (p != ms->p_end) { /* end of pattern? */
        switch (*p) {
        case '(': {              /* start capture */
            if (*(p + 1) == ')') /* position capture? */
                s = start_capture(ms, s, p + 2, CAP_POSITION);
            else
                s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
            break;
        }
        case ')': { /* end capture */
            s = end_capture(ms, s, p + 1);
            break;
        }
        case '$': {
            if ((p + 1) != ms->p_end)          /* is the '$' the last char in pattern? */
                goto dflt;                     /* no; go to default */
            s = (s == ms->src_end) ? s : NULL; /* check end of string */
            break;
        }
        case L_ESC: { /* escaped sequences not in the format class[*+?-]? */
            switch (*(p + 1)) {
            case 'b': { /* balanced string? */
                s = matchbalance(ms, s, p + 2);
                if (s != NULL) {
                    p += 4;
                    goto init; /* return match(ms, s, p + 4); */
                }              /* else fail (s == NULL) */
                break;
            }
            case 'f': { /* frontier? */
                const char *ep;
                char previous;
                p += 2;
                if (*p != '[')
                    luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                ep = classend(ms, p); /* points to what is next */
                previous = (s == ms->src_init) ? '\0' : *(s - 1);
                if (!matchbracketclass(uchar(previous), p, ep - 1) &&
                    matchbracketclass(uchar(*s), p, ep - 1)) {
                    p = ep;
                    goto init; /* return match(ms, s, ep); */
                }
                s = NULL; /* match failed */
                break;
            }
            case '0':
            case '1':
            case '2':
            case '3':
            case '4':
            case '5':
            case '6':
            case '7':
            case '8':
            case '9': { /* capture results (%0-%9)? */
                s = match_capture(ms, s, uchar(*(p + 1)));
                if (s != NULL) {
                    p += 2;
                    goto init; /* return match(ms, s, p + 2) */
                }
                break;
            }
            default:
                goto dflt;
            }
            break;
        }
        default:
        dflt : {                              /* pattern class plus optional suffix */
            const char *ep = classend(ms, p); /* points to optional suffix */
            /* does not match at least once? */
            if (!singlematch(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') { /* accept empty? */
                    p = ep + 1;
                    goto init; /* return match(ms, s, ep + 1); */
                } else         /* '+' or no suffix */
                    s = NULL;  /* fail */
            } else {           /* matched once */
                switch (*ep) { /* handle optional suffix */
                case '?': {    /* optional */
                    const char *res;
                    if ((res = match(ms, s + 1, ep + 1)) != NULL)
                        s = res;
                    else {
                        p = ep + 1;
                        goto init; /* else return match(ms, s, ep + 1); */
                    }
                    break;
                }
                case '+': /* 1 or more repetitions */
                    s++;  /* 1 match already done */
                    /* FALLTHROUGH */
                case '*': /* 0 or more repetitions */
                    s = max_expand(ms, s, p, ep);
                    break;
                case '-': /* 0 or more repetitions (minimum) */
                    s = min_expand(ms, s, p, ep);
                    break;
                default: /* no suffix */
                    s++;
                    p = ep;
                    goto init; /* return match(ms, s + 1, ep); */
                }
            }
            break;
        }
        }
    }
    ms->matchdepth++;
    return s;
}

/* Plain search; charges each candidate position its comparison (a needle of
 * length m costs up to m per candidate: "aaa...a" in "aaa...ab"). */
static const char *lmemfind(step_counter_t *steps, const char *s1, size_t l1, const char *s2,
                            size_t l2)
{
    if (l2 == 0)
        return s1; /* empty strings are everywhere */
    else if (l2 > l1)
        return NULL; /* avoids a negative 'l1' */
    else {
        const char *init; /* to search for a '*s2' inside 's1' */
        l2--;             /* 1st char will be checked by 'memchr' */
        l1 = l1 - l2;     /* 's2' cannot be found after that */
        while (l1 > 0 && (init = (const char *)memchr(s1, *s2, l1)) != NULL) {
            steps_charge(steps, (size_t)(init - s1) / 64 + l2 + 1);
            init++; /* 1st char is already checked */
            if (memcmp(init, s2 + 1, l2) == 0)
                return init - 1;
            else { /* correct 'l1' and 's1' to try again */
                l1 -= init - s1;
                s1 = init;
            }
        }
        return NULL; /* not found */
    }
}

/* get information about the i-th capture. If there are no captures and
 * 'i==0', return information about the whole match, which is the range
 * 's'..'e'. If the capture is a string, return its length and put its address
 * in '*cap'. If it is an integer (a position), push it on the stack and
 * return CAP_POSITION. */
static size_t get_onecapture(MatchState *ms, int i, const char *s, const char *e, const char **cap)
{
    if (i >= ms->level) {
        if (i != 0)
            luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    } else {
        ptrdiff_t capl = ms->capture[i].len;
        *cap = ms->capture[i].init;
        if (capl == CAP_UNFINISHED)
            luaL_error(ms->L, "unfinished capture");
        else if (capl == CAP_POSITION)
            lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
        return capl;
    }
}

/* Push the i-th capture on the stack. */
static void push_onecapture(MatchState *ms, int i, const char *s, const char *e)
{
    const char *cap;
    ptrdiff_t l = get_onecapture(ms, i, s, e, &cap);
    if (l != CAP_POSITION)
        lua_pushlstring(ms->L, cap, l);
    /* else position was already pushed */
}

static int push_captures(MatchState *ms, const char *s, const char *e)
{
    int i;
    int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, nlevels, "too many captures");
    for (i = 0; i < nlevels; i++)
        push_onecapture(ms, i, s, e);
    return nlevels; /* number of strings pushed */
}

/* check whether pattern has no special characters */
static int nospecials(const char *p, size_t l)
{
    size_t upto = 0;
    do {
        if (strpbrk(p + upto, SPECIALS))
            return 0;                 /* pattern has a special character */
        upto += strlen(p + upto) + 1; /* may have more after \0 */
    } while (upto <= l);
    return 1; /* no special chars found */
}

static void prepstate(MatchState *ms, lua_State *L, const char *s, size_t ls, const char *p,
                      size_t lp)
{
    ms->L = L;
    ms->matchdepth = MAXCCALLS;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    steps_init(&ms->steps, L, PATTERN_WHAT);
}

static void reprepstate(MatchState *ms)
{
    ms->level = 0;
}

static int str_find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelatI(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {      /* start after string's end? */
        luaL_pushfail(L); /* cannot find anything */
        return 1;
    }
    /* explicit request or no special characters? */
    if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {
        /* do a plain search */
        step_counter_t steps;
        steps_init(&steps, L, PATTERN_WHAT);
        const char *s2 = lmemfind(&steps, s + init, ls - init, p, lp);
        if (s2) {
            lua_pushinteger(L, (s2 - s) + 1);
            lua_pushinteger(L, (s2 - s) + lp);
            return 2;
        }
    } else {
        MatchState ms;
        const char *s1 = s + init;
        int anchor = (*p == '^');
        if (anchor) {
            p++;
            lp--; /* skip anchor character */
        }
        prepstate(&ms, L, s, ls, p, lp);
        do {
            const char *res;
            reprepstate(&ms);
            if ((res = match(&ms, s1, p)) != NULL) {
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1); /* start */
                    lua_pushinteger(L, res - s);      /* end */
                    return push_captures(&ms, NULL, 0) + 2;
                } else
                    return push_captures(&ms, s1, res);
            }
        } while (s1++ < ms.src_end && !anchor);
    }
    luaL_pushfail(L); /* not found */
    return 1;
}

/* Lua: i, j, ... = string.find(s, pattern [, init [, plain]]) -- as stock Lua,
 * step-bounded. Raises as stock Lua, and "timeout: pattern budget exceeded"
 * past the deadline of the current call. */
static int str_find(lua_State *L)
{
    return str_find_aux(L, 1);
}

/* Lua: ... = string.match(s, pattern [, init]) -- as stock Lua, step-bounded. */
static int str_match(lua_State *L)
{
    return str_find_aux(L, 0);
}

/* state for 'gmatch' */
typedef struct GMatchState {
    const char *src;       /* current position */
    const char *p;         /* pattern */
    const char *lastmatch; /* end of last match */
    MatchState ms;         /* match state */
} GMatchState;

static int gmatch_aux(lua_State *L)
{
    GMatchState *gm = (GMatchState *)lua_touserdata(L, lua_upvalueindex(3));
    const char *src;
    gm->ms.L = L;
    gm->ms.steps.L = L; /* the iterator may run in another coroutine */
    for (src = gm->src; src <= gm->ms.src_end; src++) {
        const char *e;
        reprepstate(&gm->ms);
        if ((e = match(&gm->ms, src, gm->p)) != NULL && e != gm->lastmatch) {
            gm->src = gm->lastmatch = e;
            return push_captures(&gm->ms, src, e);
        }
    }
    return 0; /* not found */
}

/* Lua: iter = string.gmatch(s, pattern [, init]) -- as stock Lua, each
 * iteration step-bounded. */
static int gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelatI(luaL_optinteger(L, 3, 1), ls) - 1;
    GMatchState *gm;
    lua_settop(L, 2); /* keep strings on closure to avoid being collected */
    gm = (GMatchState *)lua_newuserdatauv(L, sizeof(GMatchState), 0);
    if (init > ls)     /* start after string's end? */
        init = ls + 1; /* avoid overflows in 's + init' */
    prepstate(&gm->ms, L, s, ls, p, lp);
    gm->src = s + init;
    gm->p = p;
    gm->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

static void add_s(MatchState *ms, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    lua_State *L = ms->L;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;
    while ((p = (char *)memchr(news, L_ESC, l)) != NULL) {
        luaL_addlstring(b, news, p - news);
        p++;             /* skip ESC */
        if (*p == L_ESC) /* '%%' */
            luaL_addchar(b, *p);
        else if (*p == '0') /* '%0' */
            luaL_addlstring(b, s, e - s);
        else if (isdigit(uchar(*p))) { /* '%n' */
            const char *cap;
            ptrdiff_t resl = get_onecapture(ms, *p - '1', s, e, &cap);
            if (resl == CAP_POSITION)
                luaL_addvalue(b); /* add position to accumulated result */
            else
                luaL_addlstring(b, cap, resl);
        } else
            luaL_error(L, "invalid use of '%c' in replacement string", L_ESC);
        l -= p + 1 - news;
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

/* Add the replacement value to the string buffer 'b'. Return true if the
 * original string was changed. (Function calls and table indexing resulting
 * in nil or false do not change the subject.) */
static int add_value(MatchState *ms, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = ms->L;
    switch (tr) {
    case LUA_TFUNCTION: { /* call the function */
        int n;
        lua_pushvalue(L, 3);         /* push the function */
        n = push_captures(ms, s, e); /* all captures as arguments */
        lua_call(L, n, 1);           /* call it */
        break;
    }
    case LUA_TTABLE: {                /* index the table */
        push_onecapture(ms, 0, s, e); /* first capture is the index */
        lua_gettable(L, 3);
        break;
    }
    default: {              /* LUA_TNUMBER or LUA_TSTRING */
        add_s(ms, b, s, e); /* add value to the buffer */
        return 1;           /* something changed */
    }
    }
    if (!lua_toboolean(L, -1)) {      /* nil or false? */
        lua_pop(L, 1);                /* remove value */
        luaL_addlstring(b, s, e - s); /* keep original text */
        return 0;                     /* no changes */
    } else if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    else {
        luaL_addvalue(b); /* add result to accumulator */
        return 1;         /* something changed */
    }
}

/* Lua: s, n = string.gsub(s, pattern, repl [, n]) -- as stock Lua,
 * step-bounded (repl functions run under the count hook as usual). */
static int str_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);                 /* subject */
    const char *p = luaL_checklstring(L, 2, &lp);                     /* pattern */
    const char *lastmatch = NULL;                                     /* end of last match */
    int tr = lua_type(L, 3);                                          /* replacement type */
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1); /* max replacements */
    int anchor = (*p == '^');
    lua_Integer n = 0; /* replacement count */
    int changed = 0;   /* change flag */
    MatchState ms;
    luaL_Buffer b;
    luaL_argexpected(
        L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
        "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--; /* skip anchor character */
    }
    prepstate(&ms, L, src, srcl, p, lp);
    while (n < max_s) {
        const char *e;
        reprepstate(&ms); /* (re)prepare state for new match */
        if ((e = match(&ms, src, p)) != NULL && e != lastmatch) { /* match? */
            n++;
            changed = add_value(&ms, &b, src, e, tr) | changed;
            src = lastmatch = e;
        } else if (src < ms.src_end) /* otherwise, skip one character */
            luaL_addchar(&b, *src++);
        else
            break; /* end of subject */
        if (anchor)
            break;
    }
    if (!changed)            /* no changes? */
        lua_pushvalue(L, 1); /* return original string */
    else {                   /* something changed */
        luaL_addlstring(&b, src, ms.src_end - src);
        luaL_pushresult(&b); /* create and return new string */
    }
    lua_pushinteger(L, n); /* number of substitutions */
    return 2;
}

/* ==== Table functions (ltablib.c of Lua 5.4.4, plus step charges) ==== */

#define TAB_R 1 /* read */
#define TAB_W 2 /* write */
#define TAB_L 4 /* length */
#define TAB_RW (TAB_R | TAB_W)

#define aux_getn(L, n, w) (checktab(L, n, (w) | TAB_L), luaL_len(L, n))

static int checkfield(lua_State *L, const char *key, int n)
{
    lua_pushstring(L, key);
    return (lua_rawget(L, -n) != LUA_TNIL);
}

/* Check that 'arg' either is a table or can behave like one (that is, has a
 * metatable with the required metamethods) */
static void checktab(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) != LUA_TTABLE) { /* is it not a table? */
        int n = 1;                        /* number of elements to pop */
        if (lua_getmetatable(L, arg) &&   /* must have metatable */
            (!(what & TAB_R) || checkfield(L, "__index", ++n)) &&
            (!(what & TAB_W) || checkfield(L, "__newindex", ++n)) &&
            (!(what & TAB_L) || checkfield(L, "__len", ++n))) {
            lua_pop(L, n); /* pop metatable and tested metamethods */
        } else
            luaL_checktype(L, arg, LUA_TTABLE); /* force an error */
    }
}

/* Lua: table.insert(t, [pos,] v) -- as stock Lua; the shift (whose length a
 * __len metamethod chooses) is step-bounded. */
static int tinsert(lua_State *L)
{
    step_counter_t steps;
    lua_Integer pos; /* where to insert new element */
    lua_Integer e = aux_getn(L, 1, TAB_RW);
    steps_init(&steps, L, TABLE_WHAT);
    e = luaL_intop(+, e, 1); /* first empty element */
    switch (lua_gettop(L)) {
    case 2: {    /* called with only 2 arguments */
        pos = e; /* insert new element at the end */
        break;
    }
    case 3: {
        lua_Integer i;
        pos = luaL_checkinteger(L, 2); /* 2nd argument is the position */
        /* check whether 'pos' is in [1, e] */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        for (i = e; i > pos; i--) { /* move up elements */
            steps_charge(&steps, 1);
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i); /* t[i] = t[i - 1] */
        }
        break;
    }
    default: {
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    }
    lua_seti(L, 1, pos); /* t[pos] = v */
    return 0;
}

/* Lua: v = table.remove(t [, pos]) -- as stock Lua, step-bounded. */
static int tremove(lua_State *L)
{
    step_counter_t steps;
    lua_Integer size = aux_getn(L, 1, TAB_RW);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    steps_init(&steps, L, TABLE_WHAT);
    if (pos != size) /* validate 'pos' if given */
        /* check whether 'pos' is in [1, size + 1] */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");
    lua_geti(L, 1, pos); /* result = t[pos] */
    for (; pos < size; pos++) {
        steps_charge(&steps, 1);
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos); /* t[pos] = t[pos + 1] */
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos); /* remove entry t[pos] */
    return 1;
}

/* Lua: a2 = table.move(a1, f, e, t [, a2]) -- as stock Lua, step-bounded
 * (the range is the script's choice: table.move({}, 1, 1e15, 2) loops 1e15
 * times in stock Lua). */
static int tmove(lua_State *L)
{
    step_counter_t steps;
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* destination table */
    steps_init(&steps, L, TABLE_WHAT);
    checktab(L, 1, TAB_R);
    checktab(L, tt, TAB_W);
    if (e >= f) { /* otherwise, nothing to move */
        lua_Integer n, i;
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        n = e - f + 1; /* number of elements to move */
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (i = 0; i < n; i++) {
                steps_charge(&steps, 1);
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else {
            for (i = n - 1; i >= 0; i--) {
                steps_charge(&steps, 1);
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
    }
    lua_pushvalue(L, tt); /* return destination table */
    return 1;
}

/* Quicksort (based on 'Algorithms in MODULA-3', Robert Sedgewick;
 * Addison-Wesley, 1993.) With the default comparison the whole sort runs in
 * C: a few million elements take seconds, so every comparison is charged. */

typedef unsigned int IdxT; /* type for array indices */

/* size of 'e' measured in number of 'unsigned int's */
#define sof(e) (sizeof(e) / sizeof(unsigned int))

/* Use 'time' and 'clock' as sources of "randomness" for the pivot. */
static unsigned int l_randomizePivot(void)
{
    clock_t c = clock();
    time_t t = time(NULL);
    unsigned int buff[sof(c) + sof(t)];
    unsigned int i, rnd = 0;
    memcpy(buff, &c, sof(c) * sizeof(unsigned int));
    memcpy(buff + sof(c), &t, sof(t) * sizeof(unsigned int));
    for (i = 0; i < sof(buff); i++)
        rnd += buff[i];
    return rnd;
}

/* arrays larger than 'RANLIMIT' may use randomized pivots */
#define RANLIMIT 100u

static void set2(lua_State *L, IdxT i, IdxT j)
{
    lua_seti(L, 1, i);
    lua_seti(L, 1, j);
}

/* Return true iff value at stack index 'a' is less than the value at index
 * 'b' (according to the order of the sort). */
static int sort_comp(lua_State *L, step_counter_t *steps, int a, int b)
{
    steps_charge(steps, 1);
    if (lua_isnil(L, 2))                       /* no function? */
        return lua_compare(L, a, b, LUA_OPLT); /* a < b */
    else {                                     /* function */
        int res;
        lua_pushvalue(L, 2);        /* push function */
        lua_pushvalue(L, a - 1);    /* -1 to compensate function */
        lua_pushvalue(L, b - 2);    /* -2 to compensate function and 'a' */
        lua_call(L, 2, 1);          /* call function */
        res = lua_toboolean(L, -1); /* get result */
        lua_pop(L, 1);              /* pop result */
        return res;
    }
}

/* Does the partition: Pivot P is at the top of the stack. precondition:
 * a[lo] <= P == a[up-1] <= a[up], so it only needs to do the partition from
 * lo + 1 to up - 2. Pos-condition: a[lo .. i - 1] <= a[i] == P <= a[i + 1 ..
 * up] returns 'i'. */
static IdxT partition(lua_State *L, step_counter_t *steps, IdxT lo, IdxT up)
{
    IdxT i = lo;     /* will be incremented before first use */
    IdxT j = up - 1; /* will be decremented before first use */
    /* loop invariant: a[lo .. i] <= P <= a[j .. up] */
    for (;;) {
        /* next loop: repeat ++i while a[i] < P */
        while ((void)lua_geti(L, 1, ++i), sort_comp(L, steps, -1, -2)) {
            if (i == up - 1) /* a[i] < P  but a[up - 1] == P  ?? */
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1); /* remove a[i] */
        }
        /* after the loop, a[i] >= P and a[lo .. i - 1] < P */
        /* next loop: repeat --j while P < a[j] */
        while ((void)lua_geti(L, 1, --j), sort_comp(L, steps, -3, -1)) {
            if (j < i) /* j < i  but  a[j] > P ?? */
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1); /* remove a[j] */
        }
        /* after the loop, a[j] <= P and a[j + 1 .. up] >= P */
        if (j < i) { /* no elements out of place? */
            /* a[lo .. i - 1] <= P <= a[j + 1 .. i .. up] */
            lua_pop(L, 1); /* pop a[j] */
            /* swap pivot (a[up - 1]) with a[i] to satisfy pos-condition */
            set2(L, up - 1, i);
            return i;
        }
        /* otherwise, swap a[i] - a[j] to restore invariant and repeat */
        set2(L, i, j);
    }
}

/* Choose an element in the middle (2nd-3th quarters) of [lo,up]
 * "randomized" by 'rnd' */
static IdxT choosePivot(IdxT lo, IdxT up, unsigned int rnd)
{
    IdxT r4 = (up - lo) / 4; /* range/4 */
    IdxT p = rnd % (r4 * 2) + (lo + r4);
    return p;
}

/* Quicksort algorithm (recursive function) */
static void auxsort(lua_State *L, step_counter_t *steps, IdxT lo, IdxT up, unsigned int rnd)
{
    while (lo < up) { /* loop for tail recursion */
        IdxT p;       /* Pivot index */
        IdxT n;       /* to be used later */
        /* sort elements 'lo', 'p', and 'up' */
        lua_geti(L, 1, lo);
        lua_geti(L, 1, up);
        if (sort_comp(L, steps, -1, -2)) /* a[up] < a[lo]? */
            set2(L, lo, up);             /* swap a[lo] - a[up] */
        else
            lua_pop(L, 2);                  /* remove both values */
        if (up - lo == 1)                   /* only 2 elements? */
            return;                         /* already sorted */
        if (up - lo < RANLIMIT || rnd == 0) /* small interval or no randomize? */
            p = (lo + up) / 2;              /* middle element is a good pivot */
        else                                /* for larger intervals, it is worth a random pivot */
            p = choosePivot(lo, up, rnd);
        lua_geti(L, 1, p);
        lua_geti(L, 1, lo);
        if (sort_comp(L, steps, -2, -1)) /* a[p] < a[lo]? */
            set2(L, p, lo);              /* swap a[p] - a[lo] */
        else {
            lua_pop(L, 1); /* remove a[lo] */
            lua_geti(L, 1, up);
            if (sort_comp(L, steps, -1, -2)) /* a[up] < a[p]? */
                set2(L, p, up);              /* swap a[up] - a[p] */
            else
                lua_pop(L, 2);
        }
        if (up - lo == 2)       /* only 3 elements? */
            return;             /* already sorted */
        lua_geti(L, 1, p);      /* get middle element (Pivot) */
        lua_pushvalue(L, -1);   /* push Pivot */
        lua_geti(L, 1, up - 1); /* push a[up - 1] */
        set2(L, p, up - 1);     /* swap Pivot (a[p]) with a[up - 1] */
        p = partition(L, steps, lo, up);
        /* a[lo .. p - 1] <= a[p] == P <= a[p + 1 .. up] */
        if (p - lo < up - p) {                 /* lower interval is smaller? */
            auxsort(L, steps, lo, p - 1, rnd); /* call recursively for lower interval */
            n = p - lo;                        /* size of smaller interval */
            lo = p + 1;                        /* tail call for [p + 1 .. up] (upper interval) */
        } else {
            auxsort(L, steps, p + 1, up, rnd); /* call recursively for upper interval */
            n = up - p;                        /* size of smaller interval */
            up = p - 1;                        /* tail call for [lo .. p - 1]  (lower interval) */
        }
        if ((up - lo) / 128 > n)      /* partition too imbalanced? */
            rnd = l_randomizePivot(); /* try a new randomization */
    }                                 /* tail call auxsort(L, lo, up, rnd) */
}

/* Lua: table.sort(t [, comp]) -- as stock Lua; with the default comparison
 * the sort never returns to Lua, so every comparison is charged. */
static int sort(lua_State *L)
{
    step_counter_t steps;
    lua_Integer n = aux_getn(L, 1, TAB_RW);
    steps_init(&steps, L, TABLE_WHAT);
    if (n > 1) { /* non-trivial interval? */
        luaL_argcheck(L, n < INT_MAX, 1, "array too big");
        if (!lua_isnoneornil(L, 2))              /* is there a 2nd argument? */
            luaL_checktype(L, 2, LUA_TFUNCTION); /* must be a function */
        lua_settop(L, 2);                        /* make sure there are two arguments */
        auxsort(L, &steps, 1, (IdxT)n, 0);
    }
    return 0;
}

/* ==== Installation ==== */

void sc_lua__install_bounded(lua_State *L, int strlib, int tablib)
{
    static const luaL_Reg str_funcs[] = {
        {"find", str_find}, {"match", str_match}, {"gmatch", gmatch},
        {"gsub", str_gsub}, {NULL, NULL},
    };
    static const luaL_Reg tab_funcs[] = {
        {"insert", tinsert}, {"remove", tremove}, {"move", tmove}, {"sort", sort}, {NULL, NULL},
    };
    strlib = lua_absindex(L, strlib);
    tablib = lua_absindex(L, tablib);
    for (int i = 0; str_funcs[i].name; i++) {
        lua_pushcfunction(L, str_funcs[i].func); /* fn */
        lua_setfield(L, strlib, str_funcs[i].name);
    }
    for (int i = 0; tab_funcs[i].name; i++) {
        lua_pushcfunction(L, tab_funcs[i].func); /* fn */
        lua_setfield(L, tablib, tab_funcs[i].name);
    }
}

/* Internal to src/lua: step-bounded replacements for the standard library
 * functions whose loops run in C, where the sandbox's count hook cannot fire.
 *
 * string.find/match/gmatch/gsub are a copy of Lua 5.4.4's matcher (lstrlib.c,
 * MIT licence, see bounded.c) that counts its steps and checks the deadline of
 * the current sc_lua_call every few thousand steps; table.insert/remove/move
 * and table.sort are copies of ltablib.c's that do the same (their loops follow
 * a __len or an index range the script chooses, and a sort of a few million
 * elements with the default comparison never returns to Lua). Results and error
 * messages are those of stock Lua 5.4.4; only the time they may take changes:
 * past the deadline they raise "timeout: pattern budget exceeded (...)" (or
 * "table operation budget exceeded").
 *
 * Threads: as the state that uses them. */
#ifndef SCENECOMP_LUA_BOUNDED_H
#define SCENECOMP_LUA_BOUNDED_H

#include <lua.h>

/* Replaces find/match/gmatch/gsub in the string library table at strlib and
 * insert/remove/move/sort in the table library table at tablib (the real ones, so
 * the string metatable's __index, which is strlib, gets them too).
 * Stack unchanged. SC_MAY_RAISE (memory). */
void sc_lua__install_bounded(lua_State *L, int strlib, int tablib);

#endif

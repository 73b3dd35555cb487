/* levelparty.h: levelparty linked into a C program (liblevelparty.a).
 *
 * Link:  cc host.c -Iinclude -I/usr/include/lua5.4 build/5.4/liblevelparty.a \
 *          /usr/lib/x86_64-linux-gnu/liblua5.4.a -lleveldb -luv -lpthread -lm -ldl
 * (build/luajit/liblevelparty.a: -I/usr/include/luajit-2.1 and -l:libluajit-5.1.a).  The
 * host needs no -Wl,-E: nothing is loaded with dlopen.  See README.md,
 * "Embedding levelparty in a C program". */
#ifndef LEVELPARTY_H
#define LEVELPARTY_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* syntax: levelparty_openlibs(L);
 *
 * context: any lua_State, once, before its first require "levelparty"
 *
 * Registers the whole module in package.preload, as luaL_openlibs does for
 * the standard libraries: "levelparty.core" (the C core, luaopen_levelparty_core)
 * and every Lua module of lua/levelparty/ ("levelparty", "levelparty.luv",
 * "levelparty.cqueues", ...), whose sources are embedded in the library at
 * build time.  Nothing is read from disk: after it, require "levelparty"
 * works with empty package.path and package.cpath.  Nothing is loaded yet:
 * each module loads at its first require.  Entries already in package.preload
 * are replaced.  Needs the package library (luaL_openlibs, or
 * luaL_requiref(L, "package", luaopen_package, 1)); raises a Lua error
 * otherwise, or when out of memory (call it under lua_pcall to catch those).
 *
 * Leaves the stack as it found it. */
void levelparty_openlibs(lua_State *L);

/* syntax: luaL_requiref(L, "levelparty.core", luaopen_levelparty_core, 0);
 *
 * The C core alone (what the shared module levelparty/core.so exports).
 * levelparty_openlibs preloads it; a host seldom calls it itself. */
int luaopen_levelparty_core(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif

/*
 * levelparty: the few Lua C API differences between 5.1/LuaJIT and 5.4 that
 * the binding needs, in one place.  Only lua_*.c include this.
 */
#ifndef LEVELPARTY_COMPAT_H
#define LEVELPARTY_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#if (defined(LP_LUAJIT) || defined(LUA_LJDIR)) && !defined(LUAJIT_VERSION)
#include <luajit.h>
#endif

#if LUA_VERSION_NUM == 501
/* Lua 5.1 and LuaJIT (which has some 5.2 functions; LuaJIT's lauxlib.h
 * declares luaL_setfuncs, luaL_testudata and luaL_setmetatable). */
#if !defined(LUAJIT_VERSION)
static inline void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  for (; l->name; l++) {
    int i;
    for (i = 0; i < nup; i++)
      lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void *luaL_testudata(lua_State *L, int i, const char *tname) {
  void *p = lua_touserdata(L, i);
  if (p == NULL || !lua_getmetatable(L, i)) return NULL;
  luaL_getmetatable(L, tname);
  if (!lua_rawequal(L, -1, -2)) p = NULL;
  lua_pop(L, 2);
  return p;
}
static inline void luaL_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#endif
#define lua_rawlen(L, i)      lua_objlen(L, (i))
#define lp_newuserdata(L, sz) lua_newuserdata(L, (sz))
#define lp_setuservalue(L, i) lua_setfenv(L, (i))
#define lp_getuservalue(L, i) lua_getfenv(L, (i))
#else
#define lp_newuserdata(L, sz) lua_newuserdatauv(L, (sz), 1)
#define lp_setuservalue(L, i) lua_setiuservalue(L, (i), 1)
#define lp_getuservalue(L, i) ((void)lua_getiuservalue(L, (i), 1))
#endif

#endif

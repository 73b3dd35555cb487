/* levelparty_openlibs: the whole module in package.preload, for hosts that
 * link liblevelparty.a (include/levelparty.h).  The Lua sources come from
 * lp_embed_lua.h, which mk/embed_lua.lua generates from the files lua/levelparty/NAME.lua
 * at build time (the Makefile's liblevelparty.a rule); this file is not part
 * of the shared module core.so. */
#include <lauxlib.h>
#include <lua.h>

#include "compat.h"
#include "levelparty.h"

typedef struct {
  const char *name;  /* module name: "levelparty", "levelparty.luv", ... */
  const char *chunk; /* chunk name for tracebacks: "@levelparty/luv.lua" */
  const char *src;   /* the file's bytes (static, not NUL-terminated) */
  size_t len;
} lp_embed_mod;

#include "lp_embed_lua.h"

/* The preload loader of one embedded Lua module: upvalue 1 is its index in
 * lp_embed_mods.  Called by require with (name, extra); runs the chunk with
 * the same arguments, as the file searcher does, and returns what it returns. */
static int embed_loader(lua_State *L) {
  const lp_embed_mod *m = &lp_embed_mods[lua_tointeger(L, lua_upvalueindex(1))];
  int base = lua_gettop(L);
  if (luaL_loadbuffer(L, m->src, m->len, m->chunk) != 0) return lua_error(L);
  lua_insert(L, 1);
  lua_call(L, base, 1);
  return 1;
}

void levelparty_openlibs(lua_State *L) {
  size_t i;
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) luaL_error(L, "levelparty_openlibs: no package library in this state");
  lua_getfield(L, -1, "preload");
  if (!lua_istable(L, -1)) luaL_error(L, "levelparty_openlibs: package.preload is not a table");
  lua_pushcfunction(L, luaopen_levelparty_core);
  lua_setfield(L, -2, "levelparty.core");
  for (i = 0; i < sizeof lp_embed_mods / sizeof lp_embed_mods[0]; i++) {
    lua_pushinteger(L, (lua_Integer)i);
    lua_pushcclosure(L, embed_loader, 1);
    lua_setfield(L, -2, lp_embed_mods[i].name);
  }
  lua_settop(L, top);
}

/*
 * lptest_fork: fork(), waitpid() and _exit() for the specs (spec/fork_spec.lua),
 * which must fork a Lua process that holds levelparty handles.  Test only:
 * never installed, built by `make build/<variant>/lptest_fork.so`.
 */
#include "compat.h"

#include <lauxlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* fork() -> pid in the parent, 0 in the child, or nil, message */
static int t_fork(lua_State *L) {
  pid_t pid = fork();
  if (pid < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "fork failed");
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

/* waitpid(pid) -> exit status (or 128 + signal) */
static int t_waitpid(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) return luaL_error(L, "waitpid failed");
  lua_pushinteger(L, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  return 1;
}

/* _exit(code): leaves without running Lua's or the C library's exit work */
static int t_exit(lua_State *L) {
  _exit((int)luaL_optinteger(L, 1, 0));
  return 0;
}

static int t_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

int luaopen_lptest_fork(lua_State *L);
int luaopen_lptest_fork(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, t_fork);
  lua_setfield(L, -2, "fork");
  lua_pushcfunction(L, t_waitpid);
  lua_setfield(L, -2, "waitpid");
  lua_pushcfunction(L, t_exit);
  lua_setfield(L, -2, "exit");
  lua_pushcfunction(L, t_getpid);
  lua_setfield(L, -2, "getpid");
  return 1;
}

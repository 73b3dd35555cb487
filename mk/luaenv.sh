#!/bin/sh
# mk/luaenv.sh VARIANT COMMAND [ARGS...]
#
# Runs COMMAND with this checkout's Lua modules on the search paths:
#   lua/?.lua, lua/?/init.lua   the levelparty Lua layer
#   ./?.lua, spec/?.lua         so specs can require "spec.helper" or "helper"
#   build/VARIANT/?.so          levelparty.core built for that Lua
# VARIANT is 5.4, asan, tsan (all three for lua5.4) or luajit.  Paths are absolute so child
# processes started from another directory find the same modules; `;;` keeps
# the interpreter's default paths (busted, luv, cjson).  LEVELPARTY_LUA names
# the interpreter that specs should use for child processes.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
v=$1; shift
lpath="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;$root/spec/?.lua;;"
cpath="$root/build/$v/?.so;;"
export LEVELPARTY_ROOT="$root" LEVELPARTY_BENCH_BIN="$root/build/bench"
case $v in
  5.4|asan|tsan)
    export LUA_PATH_5_4="$lpath" LUA_CPATH_5_4="$cpath" LEVELPARTY_LUA=lua5.4 ;;
  luajit)
    export LUA_PATH="$lpath" LUA_CPATH="$cpath" LEVELPARTY_LUA=luajit ;;
  *) echo "luaenv: unknown variant '$v' (5.4, asan, tsan, luajit)" >&2; exit 2 ;;
esac
exec "$@"

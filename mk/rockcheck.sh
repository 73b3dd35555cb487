#!/usr/bin/env bash
# mk/rockcheck.sh [all|5.4|luajit]: the luarocks install check.
#
# Installs levelparty with `luarocks make` (builtin backend, offline,
# --deps-mode none) into a temporary tree, for Lua 5.4 and for LuaJIT (5.1 ABI
# built against /usr/include/luajit-2.1), then runs mk/rocksmoke.lua with only
# that tree (and the interpreter's defaults) on the module paths, from an
# unrelated directory.  The build happens in a private copy of the sources:
# the builtin backend writes src/*.o and levelparty/core.so into the tree it
# builds, and concurrent runs in the checkout would trip over each other.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-all}
tmp=$(mktemp -d /tmp/levelparty-rock.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/run"
# The rockspec must list every src/*.c and lua/levelparty/*.lua of the checkout.
(cd "$root" && lua5.4 - src/*.c lua/levelparty/*.lua <<'LUA'
local spec = {}
assert(loadfile("levelparty-scm-1.rockspec", "t", spec))()
local listed, bad = {}, {}
for name, m in pairs(spec.build.modules) do
  if type(m) == "string" then listed[m] = name
  else for _, src in ipairs(m.sources) do listed[src] = name end end
end
for _, f in ipairs(arg) do
  if f:find("*", 1, true) then -- an empty glob
  elseif not listed[f] then bad[#bad + 1] = f .. " is not in the rockspec"
  else
    local mod = f:match("^lua/(.*)%.lua$")
    mod = mod and mod:gsub("/init$", ""):gsub("/", ".")
    if mod and listed[f] ~= mod then bad[#bad + 1] = f .. " is listed as " .. listed[f] end
  end
  listed[f] = nil
end
for f in pairs(listed) do bad[#bad + 1] = f .. " is in the rockspec but missing" end
if #bad > 0 then
  io.stderr:write("rockcheck: levelparty-scm-1.rockspec is out of date:\n  ",
    table.concat(bad, "\n  "), "\n")
  os.exit(1)
end
LUA
)
(cd "$root" && tar cf - --exclude='*.o' --exclude='*.so' src lua levelparty-scm-1.rockspec) |
  (cd "$tmp/src" && tar xf -)

# install LUAVER TREE [VAR=VALUE...]
install() {
  local luaver=$1 tree=$2; shift 2
  rm -rf "$tmp/src/levelparty" "$tmp"/src/src/*.o
  (cd "$tmp/src" && luarocks --lua-version "$luaver" make --tree="$tree" --deps-mode none \
     levelparty-scm-1.rockspec "$@")
}

if [ "$which" = all ] || [ "$which" = 5.4 ]; then
  tree=$tmp/tree54
  install 5.4 "$tree"
  (cd "$tmp/run" && env -u LUA_PATH -u LUA_CPATH \
     LUA_PATH_5_4="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
     LUA_CPATH_5_4="$tree/lib/lua/5.4/?.so;;" \
     lua5.4 "$root/mk/rocksmoke.lua" "$tree")
  echo "rockcheck: lua5.4 ok"
fi
if [ "$which" = all ] || [ "$which" = luajit ]; then
  tree=$tmp/treejit
  install 5.1 "$tree" LUA_INCDIR=/usr/include/luajit-2.1
  (cd "$tmp/run" && env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 \
     LUA_PATH="$tree/share/lua/5.1/?.lua;$tree/share/lua/5.1/?/init.lua;;" \
     LUA_CPATH="$tree/lib/lua/5.1/?.so;;" \
     luajit "$root/mk/rocksmoke.lua" "$tree")
  echo "rockcheck: luajit ok"
fi

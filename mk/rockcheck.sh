#!/usr/bin/env bash
# mk/rockcheck.sh [all|5.4|luajit]: the luarocks install check.
#
# 1. Both rockspecs (scm and the versioned one) list every src/*.c and
#    lua/levelparty/*.lua of the checkout, and build, install, copy and test
#    the same things (only version and source differ).
# 2. mk/pack.sh packs the versioned source rock from the working tree, and
#    `luarocks install ./levelparty-X.Y.Z-N.src.rock` (offline, --deps-mode
#    none) installs it into a temporary tree, for Lua 5.4 and for LuaJIT (5.1
#    ABI built against /usr/include/luajit-2.1, its command run by luajit).
# 3. With only that tree (and the interpreter's defaults) on the module paths,
#    from an unrelated directory: mk/rocksmoke.lua checks the modules come from
#    the tree and work, and the installed `levelparty` command puts, gets,
#    dumps and loads (its wrapper naming the interpreter of that Lua).
# 4. `luarocks test` runs the rockspec's test section (one quick spec file).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-all}
tmp=$(mktemp -d /tmp/levelparty-rock.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/run"
cd "$root"
versioned=$(ls levelparty-*-*.rockspec | grep -v -- '-scm-' | head -n 1)
# (src/lua_embed.c is liblevelparty.a's only, never the rock's: see the Makefile)
lua5.4 - "$versioned" $(ls src/*.c | grep -vx src/lua_embed.c) lua/levelparty/*.lua <<'LUA'
local function load_spec(file)
  local spec = {}
  assert(loadfile(file, "t", spec))()
  return spec
end
local versioned = table.remove(arg, 1)
local specs = { ["levelparty-scm-1.rockspec"] = load_spec("levelparty-scm-1.rockspec"),
  [versioned] = load_spec(versioned) }
local bad = {}
-- the same build and test, compared as text of their sorted contents
local function dump(v)
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. "=" .. dump(v[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end
local scm, ver = specs["levelparty-scm-1.rockspec"], specs[versioned]
for _, part in ipairs { "build", "test", "dependencies", "external_dependencies", "description" } do
  if dump(scm[part]) ~= dump(ver[part]) then
    bad[#bad + 1] = ("%s differs between levelparty-scm-1.rockspec and %s"):format(part, versioned)
  end
end
for name, spec in pairs(specs) do
  local listed = {}
  for mod, m in pairs(spec.build.modules) do
    if type(m) == "string" then listed[m] = mod
    else for _, src in ipairs(m.sources) do listed[src] = mod end end
  end
  for _, f in ipairs(arg) do
    if f:find("*", 1, true) then -- an empty glob
    elseif not listed[f] then bad[#bad + 1] = f .. " is not in " .. name
    else
      local mod = f:match("^lua/(.*)%.lua$")
      mod = mod and mod:gsub("/init$", ""):gsub("/", ".")
      if mod and listed[f] ~= mod then bad[#bad + 1] = f .. " is listed as " .. listed[f] .. " in " .. name end
    end
    listed[f] = nil
  end
  for f in pairs(listed) do bad[#bad + 1] = f .. " is in " .. name .. " but missing" end
  for cmd, f in pairs(spec.build.install and spec.build.install.bin or {}) do
    local h = io.open(f)
    if not h then bad[#bad + 1] = ("command %s: %s is missing (%s)"):format(cmd, f, name) else h:close() end
  end
end
if #bad > 0 then
  table.sort(bad)
  io.stderr:write("rockcheck: the rockspecs are out of date:\n  ", table.concat(bad, "\n  "), "\n")
  os.exit(1)
end
LUA

rock=$(bash mk/pack.sh "$tmp")
echo "rockcheck: packed $(basename "$rock")"

# install LUAVER TREE: luarocks install of the source rock, offline
install() {
  local luaver=$1 tree=$2
  (cd "$tmp/run" && luarocks --lua-version "$luaver" install --tree="$tree" --deps-mode none "$rock")
}

# command TREE LUAVER INTERP: the installed command, with only TREE on the paths
command_check() {
  local tree=$1 luaver=$2 interp=$3 bin=$1/bin/levelparty d
  d=$(mktemp -d "$tmp/cmd.XXXXXX")
  grep -q "exec '/usr/bin/$interp'" "$bin" || { echo "rockcheck: $bin does not run $interp:"; cat "$bin"; return 1; }
  "$bin" --version | grep -q '^levelparty ' || { echo "rockcheck: $bin --version failed"; return 1; }
  "$bin" "$d/db" put key value || return 1
  [ "$("$bin" "$d/db" get key)" = value ] || { echo "rockcheck: get after put failed"; return 1; }
  printf 'x\377y' | "$bin" "$d/db" put bin || return 1
  "$bin" "$d/db" dump | "$bin" "$d/copy" load || return 1
  [ "$("$bin" "$d/copy" dump)" = "$("$bin" "$d/db" dump)" ] || { echo "rockcheck: dump | load differs"; return 1; }
  [ "$("$bin" "$d/copy" count)" = 2 ] || { echo "rockcheck: count after load"; return 1; }
  echo "rockcheck: the levelparty command of the $luaver tree works"
}

if [ "$which" = all ] || [ "$which" = 5.4 ]; then
  tree=$tmp/tree54
  install 5.4 "$tree"
  (cd "$tmp/run" && unset LUA_PATH LUA_CPATH &&
     export LUA_PATH_5_4="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
       LUA_CPATH_5_4="$tree/lib/lua/5.4/?.so;;" &&
     lua5.4 "$root/mk/rocksmoke.lua" "$tree" && command_check "$tree" 5.4 lua5.4)
  [ -f "$tree/lib/luarocks/rocks-5.4/levelparty/"*/types/levelparty.lua ] ||
    { echo "rockcheck: types/levelparty.lua is not in the rock"; exit 1; }
  echo "rockcheck: lua5.4 ok"
  # luarocks test: the rockspec's test section, on one quick spec file
  luarocks --lua-version 5.4 test "$versioned" -- spec/encoding_spec.lua >"$tmp/test.log" 2>&1 ||
    { tail -n 30 "$tmp/test.log"; echo "rockcheck: luarocks test failed"; exit 1; }
  echo "rockcheck: luarocks test ok ($(grep -Eo '[0-9]+ successes' "$tmp/test.log"))"
fi
if [ "$which" = all ] || [ "$which" = luajit ]; then
  tree=$tmp/treejit
  # the 5.1 ABI, LuaJIT's headers, and LuaJIT to run the command
  printf 'lua_interpreter = "luajit"\nvariables = { LUA_INCDIR = "/usr/include/luajit-2.1", LUA_BINDIR = "/usr/bin" }\n' \
    >"$tmp/luajit-config.lua"
  LUAROCKS_CONFIG=$tmp/luajit-config.lua install 5.1 "$tree"
  (cd "$tmp/run" && unset LUA_PATH_5_4 LUA_CPATH_5_4 &&
     export LUA_PATH="$tree/share/lua/5.1/?.lua;$tree/share/lua/5.1/?/init.lua;;" \
       LUA_CPATH="$tree/lib/lua/5.1/?.so;;" &&
     luajit "$root/mk/rocksmoke.lua" "$tree" && command_check "$tree" luajit luajit)
  echo "rockcheck: luajit ok"
fi

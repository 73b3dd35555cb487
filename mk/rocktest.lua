-- mk/rocktest.lua [SPEC...]: what `luarocks test` runs (the rockspec's test
-- section), with the interpreter luarocks is configured for.  Builds the core
-- for that interpreter (build/5.4 or build/luajit) and runs busted over the
-- given spec files, or all of spec/, with this checkout's modules
-- (mk/luaenv.sh).  Exits with busted's status.
local variant = jit and "luajit" or (_VERSION == "Lua 5.4" and "5.4")
if not variant then
  io.stderr:write("rocktest: levelparty is tested with Lua 5.4 and LuaJIT, not ", _VERSION, "\n")
  os.exit(1)
end
local interp = variant == "luajit" and "luajit" or "lua5.4"
local function ok(r, _, code)
  if type(r) == "number" then return r == 0 end -- Lua 5.1/LuaJIT
  return r == true and code == 0
end
local here = (arg[0]:match("^(.*)/mk/[^/]*$")) or "."
local function sh(cmd)
  return ok(os.execute(("cd '%s' && %s"):format(here, cmd)))
end
if not sh(("make -s build/%s/levelparty/core.so"):format(variant)) then os.exit(1) end
local specs = {}
for i = 1, #arg do specs[#specs + 1] = "'" .. arg[i]:gsub("'", "'\\''") .. "'" end
if #specs == 0 then specs[1] = "spec" end
os.exit(sh(("sh mk/luaenv.sh %s %s /usr/bin/busted %s"):format(variant, interp, table.concat(specs, " "))) and 0 or 1)

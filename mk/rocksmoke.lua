-- mk/rocksmoke.lua TREE: run by mk/rockcheck.sh with only a luarocks tree on the
-- paths.  Checks that levelparty and levelparty.core come from TREE, then opens
-- a database in a fresh temporary directory and puts/gets/deletes a key.
local tree = assert(arg[1], "usage: rocksmoke.lua TREE")

local function from_tree(name, path)
  local file = package.searchpath(name, path)
  assert(file and file:sub(1, #tree) == tree,
    name .. " resolves to " .. tostring(file) .. ", not inside " .. tree)
  return file
end
from_tree("levelparty", package.path)
from_tree("levelparty.core", package.cpath)

local lp = require "levelparty"

local base = os.tmpname() -- a fresh file name; reused as a directory
os.remove(base)
os.execute("mkdir -m 700 '" .. base .. "'")
local dir = base .. "/db"

-- Checks a (result, err, code) triple of the blocking API.
local function ok(what, r, err, code)
  if r == nil and err ~= nil then
    error(what .. ": " .. tostring(err) .. " (" .. tostring(code) .. ")", 2)
  end
  return r
end

local success, failure = pcall(function()
  local db = ok("open", lp.open(dir))
  assert(db, "open returned nothing")
  ok("put", db:put("rock-key", "rock-value"))
  local v = ok("get", db:get("rock-key"))
  assert(v == "rock-value", "get returned " .. tostring(v))
  ok("del", db:del("rock-key"))
  assert(db:get("rock-key") == nil, "deleted key still there")
  ok("close", db:close())
end)
os.execute("rm -rf '" .. base .. "'")
if not success then error(failure, 0) end
print(("rocksmoke: %s ok (%s)"):format(jit and jit.version or _VERSION,
  package.searchpath("levelparty.core", package.cpath)))

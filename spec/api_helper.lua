-- spec/api_helper.lua: what the single-process API specs share, on top of spec/helper.lua.
--
--   A.open(dir, opts)        helper.open (the handle under test: leader, or follower in a second
--                            process with LEVELPARTY_SPEC_ROLE=follower); asserts success.
--                            Call it once per directory: in the follower role it starts a leader.
--   A.reopen(dir, opts)      levelparty.open in this process: another handle on a directory that
--                            helper.open already set up (shares its party, so same role)
--   A.close_all()            closes every handle opened through A (after_each)
--   A.child_role(dir)        starts spec/fixtures/holder.lua on dir in another process, returns
--                            the role it reports ("leader", "follower" or "error ...") and the proc
--   A.bytes_lt(a, b)         byte-wise a < b (LevelDB's default comparator)
--   A.entries(db, range)     { {k, v}, ... } read with it:next()
--   A.fill(db, map)          puts every key/value of map (asserting success)
--   A.hex(s)                 printable form of a byte string, for messages
local helper = require "helper"
local levelparty = require "levelparty"

local A = {}

-- Weak: a spec that drops its handle to test __gc must not be defeated by this list.
local handles = setmetatable({}, { __mode = "k" })

function A.open(dir, opts)
  local db, err, code = helper.open(dir, opts)
  assert(db, ("open %s failed: %s (%s)"):format(dir, tostring(err), tostring(code)))
  handles[db] = true
  return db
end

function A.reopen(dir, opts)
  local db, err, code = levelparty.open(dir, opts)
  if db then handles[db] = true end
  return db, err, code
end

function A.track(db)
  if db then handles[db] = true end
  return db
end

function A.close_all()
  for db in pairs(handles) do pcall(db.close, db) end
  for db in pairs(handles) do handles[db] = nil end
end

function A.child_role(dir, opts_lua)
  local p = helper.spawn(helper.fixtures .. "/holder.lua", { dir, opts_lua or "" })
  local line = p:wait_line("^%a", 30)
  return line:match("^(%a+)") == "error" and line or line:match("^(%a+)"), p
end

function A.bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

function A.sorted(keys)
  local t = {}
  for i, k in ipairs(keys) do t[i] = k end
  table.sort(t, A.bytes_lt)
  return t
end

function A.entries(db, range)
  local out = {}
  local it = db:iter(range)
  while true do
    local k, v, code = it:next()
    if k == nil then
      assert(v == nil, ("iterator failed: %s (%s)"):format(tostring(v), tostring(code)))
      break
    end
    out[#out + 1] = { k, v }
  end
  it:close()
  return out
end

function A.fill(db, map)
  for k, v in pairs(map) do assert(db:put(k, v)) end
end

function A.hex(s)
  return (tostring(s):gsub("[^%w%p ]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

return A

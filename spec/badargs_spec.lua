-- Misuse raises (luaposix badargs style).  For every function: wrong types for each
-- argument, too many arguments, unknown options, bad option types.  Each call must raise, the
-- message must name the function, and the db must still work afterwards.  Runs in both roles.
local helper = require "helper"
local A = require "api_helper"
local levelparty = require "levelparty"

local function fn() end

describe("bad arguments", function()
  local dir, db
  before_each(function()
    dir = helper.tmpdir()
    db = A.open(dir)
    assert(db:put("k", "v"))
  end)
  after_each(A.close_all)
  after_each(helper.cleanup)

  -- { function name as it must appear, call, what the message must also contain (optional) }
  local function cases()
    local b = db:batch()
    return {
      -- levelparty.open
      { "open", function() return levelparty.open() end, "#1" },
      { "open", function() return levelparty.open(42) end, "#1" },
      { "open", function() return levelparty.open({}) end, "#1" },
      { "open", function() return levelparty.open("") end, "#1" },
      { "open", function() return levelparty.open(dir, "opts") end, "table" },
      { "open", function() return levelparty.open(dir, 5) end, "table" },
      { "open", function() return levelparty.open(dir, {}, "extra") end, "no more than 2 arguments" },
      { "open", function() return levelparty.open(dir, nil, true) end, "no more than 2 arguments" },
      { "open", function() return levelparty.open(dir, { nosuch = 1 }) end, "nosuch" },
      { "open", function() return levelparty.open(dir, { createIfMissing = true }) end, "createIfMissing" },
      { "open", function() return levelparty.open(dir, { [1] = true }) end, "unknown option" },
      { "open", function() return levelparty.open(dir, { create_if_missing = "yes" }) end, "create_if_missing" },
      { "open", function() return levelparty.open(dir, { error_if_exists = 1 }) end, "error_if_exists" },
      { "open", function() return levelparty.open(dir, { compression = "snappy" }) end, "compression" },
      { "open", function() return levelparty.open(dir, { sync = 1 }) end, "sync" },
      { "open", function() return levelparty.open(dir, { retry = "no" }) end, "retry" },
      { "open", function() return levelparty.open(dir, { allow_other_users = 0 }) end, "allow_other_users" },
      { "open", function() return levelparty.open(dir, { cache_size = "8MB" }) end, "cache_size" },
      { "open", function() return levelparty.open(dir, { cache_size = -1 }) end, "cache_size" },
      { "open", function() return levelparty.open(dir, { write_buffer_size = true }) end, "write_buffer_size" },
      { "open", function() return levelparty.open(dir, { block_size = {} }) end, "block_size" },
      { "open", function() return levelparty.open(dir, { max_open_files = "many" }) end, "max_open_files" },
      { "open", function() return levelparty.open(dir, { bloom_bits = 0 / 0 }) end, "bloom_bits" },
      { "open", function() return levelparty.open(dir, { timeout = "1s" }) end, "timeout" },
      { "open", function() return levelparty.open(dir, { timeout = -1 }) end, "timeout" },
      { "open", function() return levelparty.open(dir, { open_timeout = false }) end, "open_timeout" },
      { "open", function() return levelparty.open(dir, { on_role = "print" }) end, "on_role" },
      { "open", function() return levelparty.open(dir, { key_encoding = "latin1" }) end, "key_encoding" },
      { "open", function() return levelparty.open(dir, { value_encoding = 8 }) end, "value_encoding" },
      { "open", function() return levelparty.open(dir, { value_encoding = { encode = fn } }) end, "value_encoding" },
      -- get
      { "get", function() return db:get() end, "#1" },
      { "get", function() return db:get(nil) end, "#1" },
      { "get", function() return db:get(true) end, "#1" },
      { "get", function() return db:get({}) end, "#1" },
      { "get", function() return db:get(fn) end, "#1" },
      { "get", function() return db:get("") end, "empty" },
      { "get", function() return db:get("k", "opts") end, "table" },
      { "get", function() return db:get("k", 1) end, "table" },
      { "get", function() return db:get("k", { nosuch = true }) end, "nosuch" },
      { "get", function() return db:get("k", { fill_cache = "no" }) end, "fill_cache" },
      { "get", function() return db:get("k", { sync = true }) end, "sync" }, -- a write option
      { "get", function() return db:get("k", {}, "extra") end, "no more than 2 arguments" },
      { "get", function() return db:get("k", nil, 0) end, "no more than 2 arguments" },
      -- put
      { "put", function() return db:put() end, "#1" },
      { "put", function() return db:put("k") end, "#2" },
      { "put", function() return db:put("k", nil) end, "#2" },
      { "put", function() return db:put(false, "v") end, "#1" },
      { "put", function() return db:put({}, "v") end, "#1" },
      { "put", function() return db:put("k", true) end, "#2" },
      { "put", function() return db:put("k", {}) end, "#2" },
      { "put", function() return db:put("k", fn) end, "#2" },
      { "put", function() return db:put("", "v") end, "empty" },
      { "put", function() return db:put("k", "v", "sync") end, "table" },
      { "put", function() return db:put("k", "v", { sync = "yes" }) end, "sync" },
      { "put", function() return db:put("k", "v", { fill_cache = true }) end, "fill_cache" },
      { "put", function() return db:put("k", "v", { nosuch = 1 }) end, "nosuch" },
      { "put", function() return db:put("k", "v", {}, "extra") end, "no more than 3 arguments" },
      { "put", function() return db:put("k", "v", nil, 1) end, "no more than 3 arguments" },
      -- del
      { "del", function() return db:del() end, "#1" },
      { "del", function() return db:del(true) end, "#1" },
      { "del", function() return db:del({}) end, "#1" },
      { "del", function() return db:del("") end, "empty" },
      { "del", function() return db:del("k", true) end, "table" },
      { "del", function() return db:del("k", { sync = 0 }) end, "sync" },
      { "del", function() return db:del("k", { nosuch = 1 }) end, "nosuch" },
      { "del", function() return db:del("k", {}, "extra") end, "no more than 2 arguments" },
      -- batch (array form)
      { "batch", function() return db:batch("ops") end, "#1" },
      { "batch", function() return db:batch(5) end, "#1" },
      { "batch", function() return db:batch(true) end, "#1" },
      { "batch", function() return db:batch { "put" } end, "operation #1" },
      { "batch", function() return db:batch { { type = "put", key = "a", value = "1" }, 7 } end, "operation #2" },
      { "batch", function() return db:batch { { type = "insert", key = "a", value = "1" } } end, "operation #1" },
      { "batch", function() return db:batch { { key = "a", value = "1" } } end, "operation #1" },
      { "batch", function() return db:batch { { type = "put", value = "1" } } end, "key" },
      { "batch", function() return db:batch { { type = "put", key = "a" } } end, "value" },
      { "batch", function() return db:batch { { type = "put", key = true, value = "1" } } end, "key" },
      { "batch", function() return db:batch { { type = "put", key = "a", value = {} } } end, "value" },
      { "batch", function() return db:batch { { type = "del" } } end, "key" },
      { "batch", function() return db:batch { { type = "del", key = "" } } end, "empty" },
      { "batch", function() return db:batch({}, "opts") end, "table" },
      { "batch", function() return db:batch({}, { sync = "y" }) end, "sync" },
      { "batch", function() return db:batch({}, { nosuch = 1 }) end, "nosuch" },
      { "batch", function() return db:batch({}, {}, "extra") end, "no more than 2 arguments" },
      { "batch", function() return db:batch(nil, { sync = true }) end, "write" }, -- options go to write()
      -- chained batch
      { "batch:put", function() return b:put() end, "#1" },
      { "batch:put", function() return b:put("k") end, "#2" },
      { "batch:put", function() return b:put(true, "v") end, "#1" },
      { "batch:put", function() return b:put("k", {}) end, "#2" },
      { "batch:put", function() return b:put("", "v") end, "empty" },
      { "batch:put", function() return b:put("k", "v", "opts") end, "options must be a table" },
      { "batch:put", function() return b:put("k", "v", nil, "extra") end, "no more than 3 arguments" },
      { "batch:del", function() return b:del() end, "#1" },
      { "batch:del", function() return b:del({}) end, "#1" },
      { "batch:del", function() return b:del("") end, "empty" },
      { "batch:del", function() return b:del("k", "opts") end, "options must be a table" },
      { "batch:del", function() return b:del("k", nil, "extra") end, "no more than 2 arguments" },
      { "batch:write", function() return b:write("sync") end, "table" },
      { "batch:write", function() return b:write({ sync = 1 }) end, "sync" },
      { "batch:write", function() return b:write({ nosuch = 1 }) end, "nosuch" },
      { "batch:write", function() return b:write({}, "extra") end, "no more than 1 argument" },
      -- get_many
      { "get_many", function() return db:get_many() end, "#1" },
      { "get_many", function() return db:get_many("k") end, "#1" },
      { "get_many", function() return db:get_many(5) end, "#1" },
      { "get_many", function() return db:get_many { "a", true } end, "#2" },
      { "get_many", function() return db:get_many { {} } end, "#1" },
      { "get_many", function() return db:get_many { "a", "" } end, "empty" },
      { "get_many", function() return db:get_many { n = 2, "a" } end, "#2" },
      { "get_many", function() return db:get_many({ "a" }, "opts") end, "table" },
      { "get_many", function() return db:get_many({ "a" }, { nosuch = 1 }) end, "nosuch" },
      { "get_many", function() return db:get_many({ "a" }, {}, "extra") end, "no more than 2 arguments" },
      -- iter
      { "iter", function() return db:iter("all") end, "table" },
      { "iter", function() return db:iter(5) end, "table" },
      { "iter", function() return db:iter { nosuch = 1 } end, "nosuch" },
      { "iter", function() return db:iter { start = "a" } end, "start" },
      { "iter", function() return db:iter { reverse = 1 } end, "reverse" },
      { "iter", function() return db:iter { reverse = "true" } end, "reverse" },
      { "iter", function() return db:iter { limit = "3" } end, "limit" },
      { "iter", function() return db:iter { limit = 0 / 0 } end, "limit" },
      { "iter", function() return db:iter { keys = 1 } end, "keys" },
      { "iter", function() return db:iter { values = "no" } end, "values" },
      { "iter", function() return db:iter { gt = true } end, "gt" },
      { "iter", function() return db:iter { gte = {} } end, "gte" },
      { "iter", function() return db:iter { lt = fn } end, "lt" },
      { "iter", function() return db:iter { lte = false } end, "lte" },
      { "iter", function() return db:iter({}, "extra") end, "no more than 1 argument" },
      -- clear
      { "clear", function() return db:clear("all") end, "table" },
      { "clear", function() return db:clear { nosuch = 1 } end, "nosuch" },
      { "clear", function() return db:clear { gt = true } end, "gt" },
      { "clear", function() return db:clear { limit = "2" } end, "limit" },
      { "clear", function() return db:clear { reverse = 1 } end, "reverse" },
      { "clear", function() return db:clear({}, "opts") end, "table" },
      { "clear", function() return db:clear({}, { sync = "y" }) end, "sync" },
      { "clear", function() return db:clear({}, { gt = "a" }) end, "gt" }, -- a range option among write options
      { "clear", function() return db:clear({}, {}, "extra") end, "no more than 2 arguments" },
    }
  end

  it("every misuse raises, names its function and what is wrong; the db keeps working", function()
    local problems = {}
    for i, c in ipairs(cases()) do
      local name, call, detail = c[1], c[2], c[3]
      local ok, err = pcall(call)
      local where = ("case %d (%s%s)"):format(i, name, detail and (", " .. detail) or "")
      if ok then
        problems[#problems + 1] = where .. ": did not raise"
      elseif type(err) ~= "string" then
        problems[#problems + 1] = where .. ": raised a " .. type(err)
      else
        -- the message starts with the function name (after an optional "file:line: ")
        local msg = err:gsub("^[^\n]-:%d+: ", "")
        if msg:sub(1, #name + 2) ~= name .. ": " then
          problems[#problems + 1] = where .. ": message does not start with '" .. name .. ": ': " .. err
        elseif detail and not err:find(detail, 1, true) then
          problems[#problems + 1] = where .. ": message does not mention '" .. detail .. "': " .. err
        end
      end
    end
    -- the handle is intact and nothing was written by a rejected call
    assert.equal(helper.role, db:role())
    assert.same({ { "k", "v" } }, A.entries(db))
    assert.is_true(db:put("after", "misuse"))
    assert.equal("misuse", db:get("after"))
    assert(#problems == 0, #problems .. " misuses not reported as expected:\n" .. table.concat(problems, "\n"))
  end)

  it("the error is reported at the caller's line, whatever the misuse", function()
    for _, c in ipairs {
      { "get", "extra argument", function() db:get("k", nil, 1) end },
      { "get", "bad key", function() db:get(true) end },
      { "get", "empty key", function() db:get("") end },
      { "put", "bad value", function() db:put("k", {}) end },
      { "put", "unknown option", function() db:put("k", "v", { nosuch = 1 }) end },
      { "iter", "bad option type", function() db:iter { limit = "x" } end },
      { "open", "bad option type", function() levelparty.open(dir, { sync = 1 }) end },
    } do
      local ok, err = pcall(c[3])
      assert.is_false(ok)
      assert(err:find("badargs_spec.lua:%d+: " .. c[1] .. ": "), c[2] .. ": " .. err)
    end
  end)

  it("a method called with '.' instead of ':' raises and names the function", function()
    for _, c in ipairs {
      { "get", function() return db.get("k") end },
      { "put", function() return db.put("k", "v") end },
      { "del", function() return db.del("k") end },
      { "iter", function() return db.iter() end },
      { "close", function() return db.close() end },
    } do
      local ok, err = pcall(c[2])
      assert.is_false(ok, c[1])
      assert.matches(c[1], tostring(err), 1, true)
    end
    assert.equal("v", db:get("k"))
  end)

  it("misuse inside a coroutine raises there and does not yield", function()
    local co = coroutine.create(function()
      local ok, err = pcall(db.put, db, "", "v")
      coroutine.yield(ok, err)
      return db:get("k")
    end)
    local ok, pok, perr = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_false(pok)
    assert.matches("put: ", perr)
  end)
end)

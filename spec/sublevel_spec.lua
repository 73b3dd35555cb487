-- Sublevels: db:sublevel(name, opts) stores keys under "!name!" (nested "!a!!b!"), the format of
-- Node's subleveldown 5 and abstract-level, with the whole API and its own encodings; ranges and
-- clear stay inside the prefix; batches across sublevels are atomic.  Each case runs with the
-- handle under test a leader and a follower of a leader in another process; the last ones share
-- a directory with Node's level-party 5.1.1 and subleveldown 5.0.1.
local lp = require "levelparty"
local helper = require "helper"
local H = require "interop_helper"

local ROLES = { "leader", "follower" }

-- A handle on a fresh directory in the given role (a follower: a leader process holds it).
local function open_as(role, opts)
  local dir = helper.tmpdir("sub")
  if role == "follower" then helper.start_leader(dir) end
  local db = assert(lp.open(dir, opts))
  assert.are.equal(role, db:role())
  return db, dir
end

-- Every raw key and value of db, in order, as "k=v" strings.
local function raw(db)
  local t = {}
  for k, v in db:iter() do t[#t + 1] = k .. "=" .. v end
  return t
end

local function keys_of(it)
  local t = {}
  for k in it do t[#t + 1] = k end
  return t
end

describe("db:sublevel", function()
  after_each(helper.cleanup)

  for _, role in ipairs(ROLES) do
    describe("on a " .. role, function()
      it("stores keys under !name! and !a!!b!, and reads them back through each sublevel", function()
        local db = open_as(role)
        local a = db:sublevel("a")
        local b = a:sublevel("b")
        assert.is_true(a:put("x", "1"))
        assert.is_true(b:put("y", "2"))
        assert.is_true(db:put("x", "root"))
        assert.are.same({ "!a!!b!y=2", "!a!x=1", "x=root" }, raw(db))
        assert.are.equal("1", a:get("x"))
        assert.are.equal("2", b:get("y"))
        assert.is_nil(a:get("y"))
        assert.are.equal("root", db:get("x"))
        assert.are.same({ "1", nil, n = 2 }, a:get_many { "x", "y" })
        assert.is_true(a:del("x"))
        assert.is_nil(a:get("x"))
        assert.are.equal("root", db:get("x"))
        db:close()
      end)

      it("keeps ranges, reverse, limit and clear inside the prefix, next to neighbours on both sides", function()
        local db = open_as(role)
        -- neighbours that sort right before and after the prefix "!b!" and its ceiling '!b"'
        local ops = {}
        for _, k in ipairs { "!a!z", "!b", "!b\"", "!b\"x", "!c!a" } do
          ops[#ops + 1] = { type = "put", key = k, value = "n" }
        end
        assert(db:batch(ops))
        local s = db:sublevel("b")
        for i = 1, 9 do assert(s:put("k" .. i, "v" .. i)) end
        assert(s:put("\255\255", "high")) -- the last key a sublevel can hold before its ceiling
        local all = { "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "\255\255" }
        assert.are.same(all, keys_of(s:iter()))
        assert.are.same({ "\255\255", "k9", "k8" }, keys_of(s:iter { reverse = true, limit = 3 }))
        assert.are.same({ "k3", "k4" }, keys_of(s:iter { gt = "k2", lte = "k4" }))
        assert.are.same({ "k8", "k9", "\255\255" }, keys_of(s:iter { gte = "k8" }))
        assert.are.same({ "k1" }, keys_of(s:iter { lt = "k2" }))
        assert.are.same({ "v1", "v2" }, keys_of(s:iter { keys = false, gte = "k", limit = 2 }))
        assert.is_true(s:clear { gte = "k5", reverse = true, limit = 2 }) -- \255\255, k9
        assert.are.same({ "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8" }, keys_of(s:iter()))
        assert.is_true(s:clear())
        assert.are.same({}, keys_of(s:iter()))
        assert.are.same({ "!a!z=n", "!b=n", "!b\"=n", "!b\"x=n", "!c!a=n" }, raw(db))
        db:close()
      end)

      it("applies its own encodings, not the db's", function()
        local db = open_as(role, { value_encoding = "json" })
        local s = db:sublevel("s", { value_encoding = "binary" })
        local j = db:sublevel("j", { value_encoding = "json", key_encoding = "json" })
        assert.is_true(s:put("k", "\0\255"))
        assert.is_true(j:put({ 1, "a" }, { deep = { true } }))
        assert.are.equal("\0\255", s:get("k"))
        assert.are.same({ deep = { true } }, j:get({ 1, "a" }))
        for k, v in j:iter() do
          assert.are.same({ 1, "a" }, k)
          assert.are.same({ deep = { true } }, v)
        end
        assert.are.equal('{"deep":[true]}', db:sublevel("j"):get('[1,"a"]'))
        db:close()
      end)

      it("writes one batch atomically across sublevels: ops with sublevel = s and chained { sublevel = s }", function()
        local db = open_as(role)
        local a, b = db:sublevel("a"), db:sublevel("b", { value_encoding = "json" })
        local nested = a:sublevel("n")
        assert.is_true(db:batch {
          { type = "put", key = "k", value = "root" },
          { type = "put", key = "k", value = "in a", sublevel = a },
          { type = "put", key = "k", value = { 1 }, sublevel = b },
          { type = "put", key = "k", value = "nested", sublevel = nested },
        })
        assert.are.same({ "!a!!n!k=nested", "!a!k=in a", "!b!k=[1]", "k=root" }, raw(db))
        -- a sublevel's batch may write to any sublevel of the same db, with that one's prefix
        assert.is_true(b:batch {
          { type = "del", key = "k", sublevel = a },
          { type = "put", key = "m", value = { 2 } },
        })
        local batch = a:batch()
        batch:put("c", "chained"):put("k", { 3 }, { sublevel = b }):del("k", { sublevel = nested })
        assert.is_true(batch:write())
        assert.are.same({ "!a!c=chained", "!b!k=[3]", "!b!m=[2]", "k=root" }, raw(db))
        -- one bad operation and nothing is written
        assert.has_error(function()
          db:batch { { type = "put", key = "z", value = "1", sublevel = a }, { type = "put", key = "z", value = 1,
            sublevel = db:sublevel("x", { value_encoding = "binary" }) } }
        end)
        assert.is_nil(a:get("z"))
        db:close()
      end)

      it("moves its iterators with seek without leaving the prefix", function()
        local db = open_as(role)
        assert(db:put("!s\"", "after"))
        assert(db:put("!s", "before"))
        local s = db:sublevel("s")
        for i = 1, 5 do assert(s:put("k" .. i, "v" .. i)) end
        local it = s:iter()
        assert.are.equal("k1", it:next())
        it:seek("k4")
        assert.are.equal("k4", it:next())
        it:seek("a") -- before every key of the sublevel: its first
        assert.are.equal("k1", it:next())
        it:seek("z")
        assert.is_nil(it:next())
        it = s:iter { reverse = true }
        it:seek("k2")
        assert.are.same({ "k2", "k1" }, keys_of(it))
        db:close()
      end)
    end)
  end

  it("refuses names subleveldown refuses, and sublevels of another db in batches", function()
    local db = open_as("leader")
    local other = assert(lp.open(helper.tmpdir("other")))
    for _, bad in ipairs { "", "a!b", "a b", "\"", "x\0", 1 } do
      assert.has_error(function() db:sublevel(bad) end)
    end
    assert.has_error(function() db:sublevel("a", { separator = "#" }) end, "sublevel: unknown option 'separator'")
    assert.has_error(function()
      db:batch { { type = "put", key = "k", value = "v", sublevel = other:sublevel("a") } }
    end)
    assert.has_error(function() db:batch():put("k", "v", { sublevel = {} }) end)
    assert.has_error(function() db:sublevel("a"):put("", "v") end, "put: bad argument #1 (key must not be empty)")
    assert.is_true(db:sublevel("é~\255"):put("k", "v")) -- any byte above '"'
    assert.are.equal("v", db:get("!é~\255!k"))
    other:close()
    db:close()
  end)

  it("lives as long as its db: keeps it alive, and fails with ECLOSED once it is closed", function()
    local s
    do
      local db = open_as("leader")
      s = db:sublevel("a")
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(s:put("k", "v")) -- the sublevel kept its db alive
    assert.are.equal("v", s:get("k"))
    assert.is_true(s:close()) -- nothing of its own to close
    assert.are.equal("v", s:get("k"))
    local root = s._root
    root:close()
    local v, err, code = s:get("k")
    assert.is_nil(v)
    assert.are.equal("ECLOSED", code, err)
  end)

  describe("with Node's subleveldown 5 on level-party 5.1.1", function()
    local NODE_OK, NODE_REASON = H.node_available()

    for _, node_leads in ipairs { true, false } do
      it((node_leads and "Node" or "Lua") .. " leads: each side reads what the other's sublevels wrote", function()
        if not NODE_OK then
          pending(NODE_REASON)
          return
        end
        finally(H.cleanup)
        local dir = H.mkdtemp("sublevel")
        local node, db
        if node_leads then
          node = H.start("node", dir, { script = "sublevel.js" })
          db = assert(lp.open(dir))
          assert.are.equal("follower", db:role())
        else
          db = assert(lp.open(dir))
          assert.are.equal("leader", db:role())
          node = H.start("node", dir, { script = "sublevel.js" })
        end
        finally(function() db:close() end)
        -- Node writes into a, a/b (json) and the root; Lua reads
        node:ok { op = "put", path = { "a" }, key = "from-node", value = "n1" }
        node:ok { op = "put", path = { "a", "b" }, key = "deep", value = { x = 1 }, valueEncoding = "json" }
        local a = db:sublevel("a")
        local ab = a:sublevel("b", { value_encoding = "json" })
        assert.are.equal("n1", a:get("from-node"))
        assert.are.same({ x = 1 }, ab:get("deep"))
        -- Lua writes one atomic batch across sublevels; Node reads each
        assert.is_true(db:batch {
          { type = "put", key = "from-lua", value = "l1", sublevel = a },
          { type = "put", key = "lua-deep", value = { y = { 2 } }, sublevel = ab },
          { type = "put", key = "c-key", value = "c", sublevel = db:sublevel("c") },
        })
        assert.are.equal("l1", node:ok({ op = "get", path = { "a" }, key = "from-lua" }).value)
        assert.are.same({ y = { 2 } },
          H.normalize(node:ok({ op = "get", path = { "a", "b" }, key = "lua-deep", valueEncoding = "json" }).value))
        assert.are.same({ { key = "c-key", value = "c" } },
          node:ok({ op = "readStream", path = { "c" } }).entries)
        -- the same entries, listed by each side through the nested sublevel
        local lua_side = {}
        for k, v in ab:iter() do lua_side[#lua_side + 1] = { key = k, value = v } end
        local node_side = H.normalize(
          node:ok({ op = "readStream", path = { "a", "b" }, valueEncoding = "json" }).entries)
        assert.are.same({ { key = "deep", value = { x = 1 } }, { key = "lua-deep", value = { y = { 2 } } } }, lua_side)
        assert.are.same(lua_side, node_side)
        -- and the bytes are subleveldown's
        assert.are.equal("n1", db:get("!a!from-node"))
        assert.are.equal('{"x":1}', db:get("!a!!b!deep"))
        -- a Lua seek on the follower or leader side stays inside a
        local it = a:iter()
        it:seek("from-m")
        assert.are.equal("from-node", it:next())
        assert.are.equal(node_leads and "leader" or "follower", node:role())
      end)
    end
  end)
end)

-- it:seek(key): moves an open iterator to the first key of its range >= key (forward) or <= key
-- (reverse), on a leader (its LevelDB iterator, same snapshot) and on a follower (the remote
-- iterator is reopened from the target), against a Lua and a Node leader, and exactly once
-- across failovers: the bookmark moves with the seek.
local lp = require "levelparty"
local helper = require "helper"
local H = require "interop_helper"

local function key(i) return ("k%04d"):format(i) end

-- keys from..to (step) as a list
local function keys(from, to, step)
  local t = {}
  for i = from, to, step or (from <= to and 1 or -1) do t[#t + 1] = key(i) end
  return t
end

-- n entries (all with n nil) of it, keys only (or what it yields first)
local function take(it, n)
  local t = {}
  while n == nil or #t < n do
    local k, v, code = it:next()
    if k == nil then
      assert(v == nil, tostring(v) .. " (" .. tostring(code) .. ")")
      break
    end
    t[#t + 1] = k
  end
  return t
end

local function fill(db, n)
  local ops = {}
  for i = 1, n do ops[#ops + 1] = { type = "put", key = key(i), value = "v" .. key(i) } end
  assert(db:batch(ops))
end

local function open_as(role, opts)
  local dir = helper.tmpdir("seek")
  local leader
  if role == "follower" then leader = helper.start_leader(dir) end
  local db = assert(lp.open(dir, opts))
  assert.are.equal(role, db:role())
  return db, dir, leader
end

describe("it:seek", function()
  after_each(helper.cleanup)

  for _, role in ipairs { "leader", "follower" } do
    describe("on a " .. role, function()
      it("moves forward and back within the range, forward and reverse", function()
        local db = open_as(role)
        fill(db, 50)
        local it = db:iter { gte = key(10), lt = key(40) }
        assert.are.same(keys(10, 12), take(it, 3))
        it:seek(key(30))
        assert.are.same(keys(30, 31), take(it, 2))
        it:seek(key(20)) -- back
        assert.are.same(keys(20, 21), take(it, 2))
        it:seek(key(1)) -- before the range: its first key
        assert.are.same({ key(10) }, take(it, 1))
        it:seek(key(25) .. "x") -- between keys: the next one
        assert.are.same({ key(26) }, take(it, 1))
        it:seek(key(45)) -- past the range: the end
        assert.are.same({}, take(it))
        it:seek(key(20)) -- an iterator that ended stays ended
        assert.are.same({}, take(it))

        it = db:iter { gt = key(10), lte = key(40), reverse = true }
        assert.are.same(keys(40, 39), take(it, 2))
        it:seek(key(15))
        assert.are.same(keys(15, 11), take(it))
        db:close()
      end)

      it("carries the limit over: what was consumed counts, what was not comes back", function()
        local db = open_as(role)
        fill(db, 50)
        local it = db:iter { limit = 10 }
        assert.are.same(keys(1, 4), take(it, 4))
        it:seek(key(30))
        assert.are.same(keys(30, 35), take(it)) -- 4 + 6
        it = db:iter { limit = 10, reverse = true }
        assert.are.same(keys(50, 49), take(it, 2))
        it:seek(key(5))
        assert.are.same(keys(5, 1), take(it)) -- fewer than the 8 left: the range ends first
        db:close()
      end)

      it("works for keys only, values only, decoding iterators and inside a for loop", function()
        local db = open_as(role, { value_encoding = "json" })
        local ops = {}
        for i = 1, 30 do ops[#ops + 1] = { type = "put", key = key(i), value = { n = i } } end
        assert(db:batch(ops))
        local it = db:iter { values = false }
        take(it, 2)
        it:seek(key(20))
        assert.are.same(keys(20, 22), take(it, 3))
        it = db:iter { keys = false }
        it:next()
        it:seek(key(29))
        assert.are.same({ n = 29 }, it:next())
        assert.are.same({ n = 30 }, it:next())
        assert.is_nil(it:next())
        local seen = {}
        it = db:iter()
        for k, v in it do
          seen[#seen + 1] = k
          assert.are.equal(tonumber(k:sub(2)), v.n)
          if k == key(3) then it:seek(key(28)) end
        end
        assert.are.same({ key(1), key(2), key(3), key(28), key(29), key(30) }, seen)
        -- identity encodings: the direct iterator of Lua 5.3+
        local raw = assert(lp.open(db._path))
        seen = {}
        it = raw:iter { gte = key(25) }
        for k in it do
          seen[#seen + 1] = k
          if k == key(26) then it:seek(key(29)) end
        end
        assert.are.same({ key(25), key(26), key(29), key(30) }, seen)
        raw:close()
        db:close()
      end)

      it("raises on misuse and accepts a seek after close", function()
        local db = open_as(role)
        fill(db, 3)
        local it = db:iter()
        assert.has_error(function() it:seek() end, "iterator:seek: bad argument #1 (key expected, got nil)")
        assert.has_error(function() it:seek({}) end)
        assert.has_error(function() it.seek(key(1)) end)
        assert.has_error(function() it:seek(key(1), 2) end, "iterator:seek: no more than 1 argument expected")
        it:close()
        it:seek(key(1))
        assert.is_nil(it:next())
        db:close()
      end)
    end)
  end

  -- A follower iterates, seeks, and its leader is killed: it resumes after the last entry it
  -- consumed since the seek, whoever takes over.
  for _, case in ipairs {
    { name = "it takes over itself", standby = false },
    { name = "a standby process takes over", standby = true },
    { name = "the seek comes after the kill, before the reconnection", standby = true, late = true },
  } do
    for _, reverse in ipairs { false, true } do
      it(("resumes exactly once after a failover when %s (%s)"):format(case.name, reverse and "reverse" or "forward"),
        function()
          local dir = helper.tmpdir("seekfail")
          local leader = helper.start_leader(dir)
          local db = assert(lp.open(dir))
          fill(db, 4000)
          if case.standby then
            helper.spawn(helper.fixtures .. "/holder.lua", { dir }):wait_line("^follower")
          end
          local it = db:iter { reverse = reverse, gt = key(100), limit = 2000 }
          local first = reverse and 4000 or 101
          assert.are.same(keys(first, first + (reverse and -9 or 9)), take(it, 10))
          local target = reverse and 2000 or 1500
          local got
          if case.late then
            leader:kill()
            leader:wait_exit()
            it:seek(key(target))
            got = take(it)
          else
            it:seek(key(target))
            got = take(it, 1200) -- more than a window: the leader has sent ahead
            leader:kill()
            leader:wait_exit()
            for _, k in ipairs(take(it)) do got[#got + 1] = k end
          end
          -- 1990 entries of the limit are left after the seek; reverse, the range ends first
          assert.are.same(keys(target, reverse and 101 or target + 1989), got)
          if not case.standby then assert.are.equal("leader", db:role()) end
          db:close()
        end)
    end
  end

  it("goes on in a coroutine on luv's loop when its process takes over (the loopback)", function()
    local dir = helper.tmpdir("seekco")
    local leader = helper.start_leader(dir)
    local db = assert(lp.open(dir))
    fill(db, 4000)
    local got
    helper.run_async(function()
      local it = db:iter()
      got = take(it, 1500)
      require("luv").kill(leader.pid, "sigkill")
      -- the window acks and the seek's reopen go to the loopback of the promoted process
      for _, k in ipairs(take(it, 1000)) do got[#got + 1] = k end
      it:seek(key(3001))
      for _, k in ipairs(take(it)) do got[#got + 1] = k end
    end, 60)
    assert.are.equal("leader", db:role())
    local unpack = table.unpack or unpack -- luacheck: ignore
    assert.are.same(keys(1, 2500), { unpack(got, 1, 2500) })
    assert.are.same(keys(3001, 4000), { unpack(got, 2501) })
    db:close()
  end)

  describe("against a Node level-party 5.1.1 leader", function()
    local NODE_OK, NODE_REASON = H.node_available()

    it("reopens the remote iterator from the target, with the rest of the range and limit", function()
      if not NODE_OK then
        pending(NODE_REASON)
        return
      end
      finally(H.cleanup)
      local dir = H.mkdtemp("seek")
      local node = H.start("node", dir)
      local db = assert(lp.open(dir))
      finally(function() db:close() end)
      assert.are.equal("follower", db:role())
      fill(db, 3000)
      local it = db:iter { gte = key(10), lt = key(2900), limit = 2500 }
      assert.are.same(keys(10, 19), take(it, 10))
      it:seek(key(1000))
      assert.are.same(keys(1000, 2899), take(it)) -- the range ends before the limit
      it = db:iter { lte = key(2000), reverse = true, limit = 50 }
      take(it, 20)
      it:seek(key(500))
      it:seek(key(100))
      assert.are.same(keys(100, 71), take(it))
      it = db:iter { gt = key(5) }
      it:seek(key(2)) -- before the range: gt stays
      assert.are.same({ key(6) }, take(it, 1))

      -- the Node leader dies after a seek; a Node standby takes over
      local standby = H.start("node", dir)
      it = db:iter { gte = key(1) }
      take(it, 5)
      it:seek(key(2000))
      local got = take(it, 1100)
      node:kill9()
      for _, k in ipairs(take(it)) do got[#got + 1] = k end
      assert.are.same(keys(2000, 3000), got)
      assert.are.equal("leader", db:role() == "leader" and "leader" or standby:role())
    end)
  end)
end)

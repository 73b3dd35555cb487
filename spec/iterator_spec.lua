-- Iterators.  Every bound combination x direction x limit against a brute-force
-- reference, keys-only / values-only, snapshots, lifetimes (break, close, db closed, db
-- collected), many at once.  Runs in both roles (LEVELPARTY_SPEC_ROLE).
local helper = require "helper"
local A = require "api_helper"

-- Different lengths and prefixes, a key with a NUL byte and one with byte 255.
local KEYS = { "a", "aa", "aab", "ab", "b", "ba", "c", "b\0x", "\255\1" }
local function value_of(k)
  if k == "ab" then return "" end -- an empty value among the others
  return "v:" .. k .. (("+"):rep(#k))
end

local SORTED = A.sorted(KEYS)

-- The reference: the keys of `range` in order, from the sorted key list.
local function reference(range)
  local lt = A.bytes_lt
  local out = {}
  for _, k in ipairs(SORTED) do
    if (range.gt == nil or lt(range.gt, k)) and (range.gte == nil or not lt(k, range.gte))
      and (range.lt == nil or lt(k, range.lt)) and (range.lte == nil or not lt(range.lte, k)) then
      out[#out + 1] = k
    end
  end
  if range.reverse then
    local r = {}
    for i = #out, 1, -1 do r[#r + 1] = out[i] end
    out = r
  end
  local limit = range.limit
  if limit ~= nil and limit >= 0 then
    local r = {}
    for i = 1, math.min(limit, #out) do r[i] = out[i] end
    out = r
  end
  return out
end

local function describe_range(r)
  local d = {}
  for _, f in ipairs { "gt", "gte", "lt", "lte", "reverse", "limit", "keys", "values" } do
    if r[f] ~= nil then d[#d + 1] = f .. "=" .. A.hex(r[f]) end
  end
  return "{" .. table.concat(d, ",") .. "}"
end

local function fill(db)
  local ops = {}
  for i, k in ipairs(KEYS) do ops[i] = { type = "put", key = k, value = value_of(k) } end
  assert(db:batch(ops))
end

describe("iterator", function()
  local dir, db
  before_each(function()
    dir = helper.tmpdir()
    db = A.open(dir)
  end)
  after_each(A.close_all)
  after_each(helper.cleanup)

  it("over an empty db ends at once, in every direction and with bounds", function()
    for _, r in ipairs { {}, { reverse = true }, { gt = "a" }, { lt = "z", reverse = true }, { limit = 5 } } do
      local n = 0
      for _ in db:iter(r) do n = n + 1 end
      assert.equal(0, n)
      local it = db:iter(r)
      assert.is_nil(it:next())
      assert.is_nil(it:next()) -- and stays ended
      it:close()
    end
  end)

  it("yields every key and value in byte order, forward and reverse", function()
    fill(db)
    local got = {}
    for k, v in db:iter() do got[#got + 1] = { k, v } end
    local want = {}
    for i, k in ipairs(SORTED) do want[i] = { k, value_of(k) } end
    assert.same(want, got)
    got = {}
    for k, v in db:iter { reverse = true } do got[#got + 1] = { k, v } end
    local rwant = {}
    for i = #want, 1, -1 do rwant[#rwant + 1] = want[i] end
    assert.same(rwant, got)
  end)

  -- 4 bounds, each absent or one of three values: a present key, an absent key between two
  -- keys (sorting right after "b" and before "b\0x"), and the key with a NUL byte; then every
  -- direction and limit.  Includes gt+gte and lt+lte together (a conjunction) and empty ranges.
  it("every bound combination x direction x limit matches the reference", function()
    fill(db)
    local CAND = { false, "aa", "b\0", "b\0x" }
    local LIMITS = { false, 0, -1, 1, 3, 100 }
    local checked, failures, nwrong = 0, {}, 0
    for _, gt in ipairs(CAND) do
      for _, gte in ipairs(CAND) do
        for _, lt in ipairs(CAND) do
          for _, lte in ipairs(CAND) do
            for _, reverse in ipairs { false, true } do
              for _, limit in ipairs(LIMITS) do
                local r = {
                  gt = gt or nil, gte = gte or nil, lt = lt or nil, lte = lte or nil,
                  reverse = reverse or nil, limit = limit or nil,
                }
                local want = reference(r)
                local ok, got = pcall(function()
                  local keys, vals = {}, {}
                  for k, v in db:iter(r) do
                    keys[#keys + 1] = k
                    vals[#vals + 1] = v
                  end
                  for i, k in ipairs(keys) do
                    if vals[i] ~= value_of(k) then error("wrong value for " .. A.hex(k) .. ": " .. A.hex(vals[i])) end
                  end
                  return keys
                end)
                checked = checked + 1
                local same = ok and #got == #want
                if same then for i = 1, #want do if got[i] ~= want[i] then same = false end end end
                if not same then
                  local g = ok and {} or nil
                  if ok then for i, k in ipairs(got) do g[i] = A.hex(k) end end
                  local w = {}
                  for i, k in ipairs(want) do w[i] = A.hex(k) end
                  -- wrong results first, raised errors after them
                  table.insert(failures, describe_range(r) .. ": got " ..
                    (ok and ("[" .. table.concat(g, " ") .. "]") or tostring(got)) ..
                    " want [" .. table.concat(w, " ") .. "]")
                  if ok then nwrong = nwrong + 1 end
                end
              end
            end
          end
        end
      end
    end
    assert.equal(4 * 4 * 4 * 4 * 2 * 6, checked)
    table.sort(failures, function(a, b)
      local ea, eb = a:find(": got %[") == nil, b:find(": got %[") == nil
      if ea ~= eb then return eb end
      return a < b
    end)
    assert(#failures == 0, #failures .. " ranges differ from the reference (" .. nwrong ..
      " wrong results, " .. (#failures - nwrong) .. " raised), e.g.:\n" ..
      table.concat(failures, "\n", 1, math.min(#failures, 15)))
  end)

  it("bounds beyond every key, and bounds on the extreme keys", function()
    fill(db)
    for _, r in ipairs {
      { gt = "\255\1" }, { gte = "\255\1" }, { gte = "\255\2" }, { lt = "a" }, { lte = "a" },
      { lt = "\0" }, { gte = "\0" }, { gt = "\255\255" }, { lte = "\255\255", reverse = true },
      { gte = "a", lte = "a" }, { gt = "a", lt = "aa" }, { gte = "b\0", lte = "b\0x", reverse = true },
      { gt = "aab", lt = "aab" }, { gte = "c", lt = "b" },
    } do
      local got = {}
      for k in db:iter(r) do got[#got + 1] = k end
      assert.same(reference(r), got, describe_range(r))
    end
  end)

  it("keys-only (values=false) and values-only (keys=false), all bounds and limits", function()
    fill(db)
    local ranges = {
      {}, { reverse = true }, { gte = "aa", lt = "c" }, { gt = "aa", lte = "c", reverse = true },
      { limit = 2 }, { reverse = true, limit = 4 }, { gte = "b", limit = 0 }, { gt = "b\0", limit = 100 },
    }
    for _, base in ipairs(ranges) do
      local want = reference(base)
      local r = {}
      for k, v in pairs(base) do r[k] = v end
      r.values = false
      local keys = {}
      for k, extra in db:iter(r) do
        keys[#keys + 1] = k
        assert.is_nil(extra, "keys-only iteration gave a second value for " .. describe_range(r))
      end
      assert.same(want, keys, describe_range(r))
      r.values, r.keys = nil, false
      local vals = {}
      for v, extra in db:iter(r) do
        vals[#vals + 1] = v
        assert.is_nil(extra, "values-only iteration gave a second value for " .. describe_range(r))
      end
      local wantv = {}
      for i, k in ipairs(want) do wantv[i] = value_of(k) end
      assert.same(wantv, vals, describe_range(r))
      -- with it:next() too
      local it = db:iter(r)
      local n = 0
      while true do
        local v, e = it:next()
        if v == nil then assert.is_nil(e) break end
        n = n + 1
        assert.equal(wantv[n], v)
        assert.is_nil(e)
      end
      assert.equal(#wantv, n)
    end
  end)

  it("keys=false, values=false still counts the entries", function()
    fill(db)
    local n = 0
    for x in db:iter { keys = false, values = false } do
      assert.is_not_nil(x)
      n = n + 1
    end
    assert.equal(#KEYS, n)
  end)

  it("a limit larger than the range, and a huge limit", function()
    fill(db)
    local got = {}
    for k in db:iter { gte = "b", limit = 1e15 } do got[#got + 1] = k end
    assert.same(reference { gte = "b" }, got)
    got = {}
    for k in db:iter { limit = math.huge, reverse = true } do got[#got + 1] = k end
    assert.same(reference { reverse = true }, got)
  end)

  it("breaking out early, then a new iterator works and closing the db works", function()
    for i = 1, 3000 do assert(db:put(("k%05d"):format(i), "v")) end
    for round = 1, 20 do
      local n = 0
      for _ in db:iter { reverse = round % 2 == 0 } do
        n = n + 1
        if n == round then break end
      end
      assert.equal(round, n)
    end
    collectgarbage()
    local n = 0
    for _ in db:iter() do n = n + 1 end
    assert.equal(3000, n)
    assert.is_true(db:put("after", "break"))
    assert.equal("break", db:get("after"))
    assert.is_true(db:close())
  end)

  it("it:close() ends it: next() returns nil afterwards, close is idempotent", function()
    fill(db)
    local it = db:iter()
    local k = it:next()
    assert.equal(SORTED[1], k)
    it:close()
    assert.is_nil(it:next())
    it:close()
    assert.is_nil(it:next())
    -- the db is fine
    assert.equal(#KEYS, #A.entries(db))
  end)

  it("many iterators open at once, advanced in turn, each see everything", function()
    for i = 1, 500 do assert(db:put(("k%04d"):format(i), tostring(i))) end
    local its = {}
    for i = 1, 100 do its[i] = db:iter { reverse = i % 2 == 0 } end
    local counts = {}
    for i = 1, 100 do counts[i] = 0 end
    local live = 100
    local step = 0
    while live > 0 do
      step = step + 1
      for i = 1, 100 do
        local it = its[i]
        if it then
          local k, v = it:next()
          if k == nil then
            assert.is_nil(v)
            its[i] = false
            live = live - 1
          else
            counts[i] = counts[i] + 1
            local expect = i % 2 == 0 and 501 - counts[i] or counts[i]
            assert.equal(("k%04d"):format(expect), k)
            assert.equal(tostring(expect), v)
          end
        end
      end
    end
    for i = 1, 100 do assert.equal(500, counts[i]) end
  end)

  it("sees a snapshot: writes made after it was created do not appear in it", function()
    -- A follower's iterator is served by an iterator the leader opens when the request arrives,
    -- which is before it reads our later writes on the same connection: the snapshot holds in
    -- both roles as long as no failover happens.
    for i = 1, 2000 do assert(db:put(("k%05d"):format(i * 2), "old")) end
    local it = db:iter()
    local first = it:next()
    assert.equal("k00002", first)
    -- new keys inside the range, overwrites and deletes of keys not read yet
    for i = 1, 2000 do assert(db:put(("k%05d"):format(i * 2 + 1), "new")) end
    for i = 1000, 2000 do assert(db:put(("k%05d"):format(i * 2), "changed")) end
    for i = 500, 700 do assert(db:del(("k%05d"):format(i * 2))) end
    local n, bad = 1, {}
    while true do
      local k, v = it:next()
      if k == nil then break end
      n = n + 1
      if v ~= "old" then bad[#bad + 1] = k .. "=" .. v end
    end
    assert.equal(2000, n)
    assert.same({}, bad)
    -- a new iterator sees the new state
    local count, new = 0, 0
    for _, v in db:iter() do
      count = count + 1
      if v == "new" then new = new + 1 end
    end
    assert.equal(4000 - 201, count)
    assert.equal(2000, new)
  end)

  it("writing while iterating with a for loop does not disturb the loop", function()
    for i = 1, 300 do assert(db:put(("k%04d"):format(i), "v")) end
    local n = 0
    for k in db:iter { values = false } do
      n = n + 1
      assert(db:put(k .. "x", "added")) -- sorts right after k
      assert(db:del(k))
    end
    assert.equal(300, n)
    assert.equal(300, #A.entries(db))
  end)

  it("keeps its db alive: drop the db variable, collect, iterate", function()
    fill(db)
    local it = db:iter()
    db = nil
    collectgarbage()
    collectgarbage()
    local got = {}
    while true do
      local k = it:next()
      if k == nil then break end
      got[#got + 1] = k
    end
    assert.same(SORTED, got)
    -- also when the iterator is created and the handle dropped before any next()
    local db2 = assert(A.reopen(dir))
    local it2 = db2:iter { reverse = true }
    db2 = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local n = 0
    for _ in it2 do n = n + 1 end
    assert.equal(#KEYS, n)
  end)

  it("closing the db with iterators open is safe: next() then fails with ECLOSED or ends", function()
    for i = 1, 3000 do assert(db:put(("k%05d"):format(i), "v")) end
    local fresh = db:iter()             -- never advanced
    local started = db:iter()           -- advanced once
    assert(started:next())
    local reversed = db:iter { reverse = true, limit = 10 }
    assert(reversed:next())
    local ended = db:iter { limit = 1 } -- already at its end
    assert(ended:next())
    assert.is_nil(ended:next())
    assert.is_true(db:close())
    for _, it in ipairs { fresh, started, reversed, ended } do
      for _ = 1, 3 do
        local k, msg, code = it:next()
        assert.is_nil(k)
        if msg ~= nil then
          assert.equal("ECLOSED", code)
          assert.is_string(msg)
        end
      end
      it:close()
      it:close()
    end
    -- in a for loop the failure raises (it does not crash, and names the cause)
    local ok, err = pcall(function() for _ in started do end end)
    if not ok then assert.matches("ECLOSED", err) end
    collectgarbage()
    collectgarbage()
  end)

  it("it:next() and a for loop over one iterator share its position", function()
    local all = {}
    for i = 1, 700 do
      all[i] = ("k%05d"):format(i)
      assert(db:put(all[i], "v" .. i))
    end
    for _, reverse in ipairs { false, true } do
      local it = db:iter { reverse = reverse }
      local seen = {}
      for _ = 1, 3 do seen[#seen + 1] = (it:next()) end
      local n = 0
      for k, v in it do -- no closing value: breaking leaves it open
        seen[#seen + 1] = k
        assert.equal("v" .. tonumber(k:sub(2)), v)
        n = n + 1
        if n == 300 then break end
      end
      for k in it.next, it do seen[#seen + 1] = k end
      assert.equal(700, #seen)
      for i = 1, 700 do assert.equal(all[reverse and 701 - i or i], seen[i]) end
      assert.is_nil(it:next())
    end
  end)

  it("a failure in a for loop raises ECLOSED at the loop's line", function()
    for i = 1, 700 do assert(db:put(("k%05d"):format(i), "v")) end
    for _, opts in ipairs { {}, { reverse = true }, { keys = false } } do
      local it, n = db:iter(opts), 0
      local line = debug.getinfo(1, "l").currentline + 2
      local ok, err = pcall(function()
        for _ in it do
          n = n + 1
          if n == 10 then db:close() end
        end
      end)
      assert.is_false(ok)
      assert.equal(10, n)
      assert.matches("ECLOSED", err)
      assert.matches("iterator_spec.lua:" .. line .. ":", err, 1, true)
      db = assert(A.reopen(dir))
    end
  end)

  it("creating an iterator on a closed db raises", function()
    db:close()
    local ok, err = pcall(db.iter, db)
    assert.is_false(ok)
    assert.matches("^[^\n]*iter: ", err)
    assert.matches("ECLOSED", err)
  end)

  it("a for loop closes its iterator when broken out of (Lua 5.4 to-be-closed)", function()
    if _VERSION ~= "Lua 5.4" then
      pending("the generic for closes its 4th value from Lua 5.4 on (" .. _VERSION .. ")")
      return
    end
    fill(db)
    local it, state, control, closing = db:iter()
    assert.equal(it, closing) -- db:iter() hands the for loop its to-be-closed value
    local seen
    for k in it, state, control, closing do -- luacheck: ignore 512 (leaving at once is the point)
      seen = k
      break
    end
    assert.equal(SORTED[1], seen)
    -- the loop closed it: nothing more comes out, though it had more entries
    assert.is_nil(it:next())
    -- and the same on an error leaving the loop
    local it2, s2, c2, cl2 = db:iter()
    local ok = pcall(function()
      for _ in it2, s2, c2, cl2 do error("leave") end
    end)
    assert.is_false(ok)
    assert.is_nil(it2:next())
    assert.is_true(db:close())
  end)

  it("large values and many entries through the iterator", function()
    local big = ("x"):rep(200 * 1024)
    for i = 1, 20 do assert(db:put(("big%02d"):format(i), big .. i)) end
    for i = 1, 5000 do assert(db:put(("small%05d"):format(i), tostring(i))) end
    local n, nbig = 0, 0
    for k, v in db:iter() do
      n = n + 1
      if k:sub(1, 3) == "big" then
        nbig = nbig + 1
        assert.equal(big .. tonumber(k:sub(4)), v)
      end
    end
    assert.equal(5020, n)
    assert.equal(20, nbig)
  end)
end)

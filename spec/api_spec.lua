-- Every call of the public API with its expected results: put/get/del, batch (array
-- and chained), get_many, clear with ranges.  Runs in both roles (LEVELPARTY_SPEC_ROLE).
local helper = require "helper"
local A = require "api_helper"

describe("api", function()
  local dir, db
  before_each(function()
    dir = helper.tmpdir()
    db = A.open(dir)
  end)
  after_each(A.close_all)
  after_each(helper.cleanup)

  describe("put/get/del", function()
    it("put returns true, get returns the value, a missing key is nil without an error", function()
      assert.is_true(db:put("k", "v"))
      assert.equal("v", db:get("k"))
      local v, err, code = db:get("missing")
      assert.is_nil(v)
      assert.is_nil(err)
      assert.is_nil(code)
    end)

    it("a missing key is exactly one nil (select('#', db:get(k)) == 1)", function()
      assert.equal(1, select("#", db:get("missing")))
      assert(db:put("k", "v"))
      assert(db:del("k"))
      assert.equal(1, select("#", db:get("k")))
    end)

    it("put overwrites", function()
      assert.is_true(db:put("k", "1"))
      assert.is_true(db:put("k", "2"))
      assert.equal("2", db:get("k"))
    end)

    it("del removes, returns true, and deleting a missing key is not an error", function()
      assert(db:put("k", "v"))
      assert.is_true(db:del("k"))
      assert.is_nil(db:get("k"))
      assert.is_true(db:del("k"))
      assert.is_true(db:del("never-there"))
    end)

    it("empty values are stored and are not missing keys", function()
      assert.is_true(db:put("empty", ""))
      assert.equal("", db:get("empty"))
      assert.same({ { "empty", "" } }, A.entries(db))
    end)

    it("large values and many keys", function()
      local big = ("0123456789abcdef"):rep(64 * 1024) -- 1 MiB
      assert.is_true(db:put("big", big))
      assert.equal(big, db:get("big"))
      for i = 1, 1000 do assert(db:put(("n%04d"):format(i), tostring(i))) end
      for i = 1, 1000, 37 do assert.equal(tostring(i), db:get(("n%04d"):format(i))) end
    end)

    it("write options {sync=true} and {sync=false} are accepted", function()
      assert.is_true(db:put("a", "1", { sync = true }))
      assert.is_true(db:put("b", "2", { sync = false }))
      assert.is_true(db:del("a", { sync = true }))
      assert.is_true(db:batch({ { type = "put", key = "c", value = "3" } }, { sync = true }))
      assert.is_nil(db:get("a"))
      assert.equal("2", db:get("b"))
      assert.equal("3", db:get("c"))
      assert.equal("3", db:get("c", { fill_cache = false }))
    end)
  end)

  describe("batch", function()
    it("applies puts and dels in order, atomically", function()
      assert(db:put("old", "x"))
      assert.is_true(db:batch {
        { type = "put", key = "a", value = "1" },
        { type = "put", key = "b", value = "2" },
        { type = "del", key = "old" },
        { type = "put", key = "a", value = "1b" }, -- later op wins
        { type = "put", key = "tmp", value = "t" },
        { type = "del", key = "tmp" },
      })
      assert.same({ { "a", "1b" }, { "b", "2" } }, A.entries(db))
    end)

    it("an empty batch succeeds and changes nothing", function()
      assert(db:put("k", "v"))
      assert.is_true(db:batch {})
      assert.same({ { "k", "v" } }, A.entries(db))
    end)

    it("an invalid operation anywhere rejects the whole batch (nothing written)", function()
      local ok = pcall(db.batch, db, {
        { type = "put", key = "a", value = "1" },
        { type = "frobnicate", key = "b" },
      })
      assert.is_false(ok)
      assert.is_nil(db:get("a"))
    end)

    it("a large batch", function()
      local ops = {}
      for i = 1, 5000 do ops[i] = { type = "put", key = ("k%05d"):format(i), value = ("v"):rep(i % 50) } end
      assert.is_true(db:batch(ops))
      assert.equal(5000, #A.entries(db))
      assert.equal(("v"):rep(4999 % 50), db:get("k04999"))
    end)

    describe("chained", function()
      it("put/del chain, length counts, write applies, nothing before write", function()
        assert(db:put("gone", "x"))
        local b = db:batch()
        assert.equal(0, b:length())
        assert.equal(b, b:put("a", "1"))
        assert.equal(b, b:del("gone"))
        b:put("b", "2"):put("c", "3"):del("c")
        assert.equal(5, b:length())
        -- nothing is written yet
        assert.is_nil(db:get("a"))
        assert.equal("x", db:get("gone"))
        assert.is_true(b:write())
        assert.same({ { "a", "1" }, { "b", "2" } }, A.entries(db))
      end)

      it("clear empties it and it stays usable", function()
        local b = db:batch()
        b:put("x", "1"):put("y", "2")
        assert.equal(b, b:clear())
        assert.equal(0, b:length())
        b:put("z", "3")
        assert.equal(1, b:length())
        assert.is_true(b:write({ sync = true }))
        assert.same({ { "z", "3" } }, A.entries(db))
      end)

      it("an empty chained batch writes", function()
        assert.is_true(db:batch():write())
      end)

      it("writing twice raises", function()
        local b = db:batch():put("k", "v")
        assert.is_true(b:write())
        local ok, err = pcall(b.write, b)
        assert.is_false(ok)
        assert.matches("batch:write: ", err)
        assert.equal("v", db:get("k"))
      end)

      it("several chained batches at once are independent", function()
        local b1, b2 = db:batch(), db:batch()
        b1:put("one", "1")
        b2:put("two", "2")
        assert.is_true(b2:write())
        assert.is_nil(db:get("one"))
        assert.is_true(b1:write())
        assert.equal("1", db:get("one"))
        assert.equal("2", db:get("two"))
      end)

      it("applies the value encoding of its db", function()
        local jdb = assert(A.reopen(dir, { value_encoding = "json" }))
        assert.is_true(jdb:batch():put("j", { 1, 2 }):write())
        assert.same({ 1, 2 }, jdb:get("j"))
        assert.equal("[1,2]", db:get("j"))
      end)
    end)
  end)

  describe("get_many", function()
    it("returns values in key order with nil holes and n", function()
      assert(db:batch {
        { type = "put", key = "a", value = "1" },
        { type = "put", key = "c", value = "3" },
        { type = "put", key = "e", value = "" },
      })
      local t = db:get_many { "a", "b", "c", "d", "e", "zz" }
      assert.equal(6, t.n)
      assert.equal("1", t[1])
      assert.is_nil(t[2])
      assert.equal("3", t[3])
      assert.is_nil(t[4])
      assert.equal("", t[5])
      assert.is_nil(t[6])
    end)

    it("all missing: every slot nil, n still counts them", function()
      local t = db:get_many { "x", "y", "z" }
      assert.equal(3, t.n)
      assert.is_nil(t[1])
      assert.is_nil(t[2])
      assert.is_nil(t[3])
      local fields = {}
      for k in pairs(t) do fields[#fields + 1] = tostring(k) end
      assert.same({ "n" }, fields)
    end)

    it("no keys: an empty result with n = 0", function()
      local t = db:get_many {}
      assert.equal(0, t.n)
      assert.is_nil(t[1])
    end)

    it("repeated keys and many keys", function()
      for i = 1, 300 do assert(db:put("k" .. i, "v" .. i)) end
      local keys = {}
      for i = 1, 600 do keys[i] = ("k%d"):format(i % 2 == 0 and i / 2 or 1000 + i) end
      keys[601], keys[602] = "k1", "k1"
      local t = db:get_many(keys)
      assert.equal(602, t.n)
      for i = 1, 600 do
        if i % 2 == 0 then assert.equal(("v%d"):format(i / 2), t[i]) else assert.is_nil(t[i]) end
      end
      assert.equal("v1", t[601])
      assert.equal("v1", t[602])
    end)

    it("honours keys.n", function()
      assert(db:put("a", "1"))
      assert(db:put("b", "2"))
      local t = db:get_many { "a", "b", n = 1 }
      assert.equal(1, t.n)
      assert.equal("1", t[1])
      assert.is_nil(t[2])
    end)
  end)

  describe("clear", function()
    local KEYS = { "a", "aa", "aab", "ab", "b", "ba", "c", "c\0", "\255" }

    local function reset()
      assert(db:clear())
      local ops = {}
      for i, k in ipairs(KEYS) do ops[i] = { type = "put", key = k, value = "v" .. k } end
      assert(db:batch(ops))
    end

    local function remaining()
      local ks = {}
      for k in db:iter { values = false } do ks[#ks + 1] = k end
      return ks
    end

    local function expected(range)
      local lt = A.bytes_lt
      local inrange = {}
      for _, k in ipairs(A.sorted(KEYS)) do
        if (range.gt == nil or lt(range.gt, k)) and (range.gte == nil or not lt(k, range.gte))
          and (range.lt == nil or lt(k, range.lt)) and (range.lte == nil or not lt(range.lte, k)) then
          inrange[#inrange + 1] = k
        end
      end
      if range.reverse then
        local r = {}
        for i = #inrange, 1, -1 do r[#r + 1] = inrange[i] end
        inrange = r
      end
      local gone = {}
      local limit = range.limit
      for i, k in ipairs(inrange) do
        if limit == nil or limit < 0 or i <= limit then gone[k] = true end
      end
      local left = {}
      for _, k in ipairs(A.sorted(KEYS)) do if not gone[k] then left[#left + 1] = k end end
      return left
    end

    it("with no range clears everything and returns true", function()
      reset()
      assert.is_true(db:clear())
      assert.same({}, remaining())
      assert.is_true(db:clear()) -- clearing an empty db
      assert.same({}, remaining())
    end)

    local RANGES = {
      {}, { gt = "a" }, { gte = "aa" }, { lt = "b" }, { lte = "b" }, { gt = "aa", lt = "c" },
      { gte = "aab", lte = "ba" }, { gt = "ab0", lt = "ba" }, { gte = "c" }, { gt = "c" },
      { gt = "\255" }, { lt = "a" }, { gt = "c", lt = "a" }, { gte = "b", lte = "b" },
      { gt = "a", gte = "ab" }, { gt = "ab", gte = "a" }, { lt = "c", lte = "b" }, { lt = "b", lte = "c" },
      { limit = 2 }, { limit = 0 }, { limit = -1 }, { reverse = true, limit = 2 },
      { gte = "aa", lt = "c", limit = 3 }, { gte = "aa", lt = "c", limit = 3, reverse = true },
      { gt = "a", limit = 100 }, { lte = "c\0", reverse = true, limit = 1 },
    }
    for _, range in ipairs(RANGES) do
      local desc = {}
      for _, f in ipairs { "gt", "gte", "lt", "lte", "reverse", "limit" } do
        if range[f] ~= nil then desc[#desc + 1] = f .. "=" .. A.hex(range[f]) end
      end
      it("{" .. table.concat(desc, ",") .. "} removes exactly that range", function()
        reset()
        assert.is_true(db:clear(range))
        assert.same(expected(range), remaining())
      end)
    end

    it("with write options", function()
      reset()
      assert.is_true(db:clear({ gte = "b" }, { sync = true }))
      assert.same(expected { gte = "b" }, remaining())
    end)

    it("clears many keys (more than one step of work)", function()
      local ops = {}
      for i = 1, 12000 do ops[i] = { type = "put", key = ("m%06d"):format(i), value = "x" } end
      assert(db:batch(ops))
      assert(db:put("z", "stays"))
      assert.is_true(db:clear { gte = "m", lt = "n" })
      assert.same({ { "z", "stays" } }, A.entries(db))
    end)

    it("applies the key encoding to the bounds", function()
      for i = 1, 20 do assert(db:put(i, "n")) end -- utf8: numbers become strings
      assert.is_true(db:clear { gte = 10, lt = 2 }) -- "10" .. "19" (and not "2")
      local ks = remaining()
      assert.same({ "1", "2", "20", "3", "4", "5", "6", "7", "8", "9" }, ks)
    end)
  end)
end)

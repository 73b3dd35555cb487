-- Key and value encodings (utf8, binary, json, custom tables): arbitrary bytes, empty
-- values, empty keys, numbers, decode failures.  Runs in both roles (LEVELPARTY_SPEC_ROLE).
local helper = require "helper"
local A = require "api_helper"

local ALL_BYTES
do
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  ALL_BYTES = table.concat(t)
end

-- keys and values that are not text
local NASTY = {
  "\0", "\0\0", "a\0b", "\0trailing", "leading\0", "\255", "\255\254\253", "\192\128", -- overlong NUL
  "\237\160\128", -- a UTF-16 surrogate
  "\128", "caf\233", "\226\130", -- truncated sequence
  "\239\187\191bom", "line\nbreak\r\n", ALL_BYTES, ALL_BYTES:reverse(),
}

describe("encodings", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(A.close_all)
  after_each(helper.cleanup)

  for _, enc in ipairs { "utf8", "binary" } do
    describe(enc, function()
      it("keys and values with NUL bytes and invalid UTF-8 round-trip", function()
        local db = A.open(dir, { key_encoding = enc, value_encoding = enc })
        for i, s in ipairs(NASTY) do
          assert.is_true(db:put(s, s .. "|" .. i))
        end
        for i, s in ipairs(NASTY) do
          assert.equal(s .. "|" .. i, db:get(s), "key " .. A.hex(s))
        end
        -- a key that is a prefix up to a NUL is a different key
        assert.is_nil(db:get("a"))
        assert.is_nil(db:get("a\0"))
        assert.is_nil(db:get("\0\0\0"))
        -- get_many, batch and iteration carry the same bytes
        local t = db:get_many(NASTY)
        assert.equal(#NASTY, t.n)
        for i, s in ipairs(NASTY) do assert.equal(s .. "|" .. i, t[i]) end
        local got = {}
        for k, v in db:iter() do got[k] = v end
        local n = 0
        for i, s in ipairs(NASTY) do
          assert.equal(s .. "|" .. i, got[s])
          n = n + 1
        end
        local count = 0
        for _ in pairs(got) do count = count + 1 end
        assert.equal(n, count)
        -- bounds with NUL bytes
        local keys = {}
        for k in db:iter { gte = "\0", lt = "\0\255", values = false } do keys[#keys + 1] = k end
        assert.same({ "\0", "\0\0", ALL_BYTES, "\0trailing" }, keys)
        assert.is_true(db:batch {
          { type = "del", key = "\0" },
          { type = "put", key = "x\0y", value = "\0" },
        })
        assert.is_nil(db:get("\0"))
        assert.equal("\0", db:get("x\0y"))
        assert.is_true(db:del("x\0y"))
        assert.is_nil(db:get("x\0y"))
      end)

      it("empty values work everywhere", function()
        local db = A.open(dir, { key_encoding = enc, value_encoding = enc })
        assert.is_true(db:put("e", ""))
        assert.equal("", db:get("e"))
        assert.is_true(db:batch { { type = "put", key = "f", value = "" } })
        assert.is_true(db:batch():put("g", ""):write())
        local t = db:get_many { "e", "f", "g", "missing" }
        assert.equal("", t[1])
        assert.equal("", t[2])
        assert.equal("", t[3])
        assert.is_nil(t[4])
        assert.same({ { "e", "" }, { "f", "" }, { "g", "" } }, A.entries(db))
        local vals = {}
        for v in db:iter { keys = false } do vals[#vals + 1] = v end
        assert.same({ "", "", "" }, vals)
      end)

      it("empty keys are rejected with a clear error, and nothing is written", function()
        local db = A.open(dir, { key_encoding = enc, value_encoding = enc })
        local calls = {
          { "get", function() return db:get("") end },
          { "put", function() return db:put("", "v") end },
          { "del", function() return db:del("") end },
          { "get_many", function() return db:get_many { "a", "" } end },
          { "batch", function() return db:batch { { type = "put", key = "", value = "v" } } end },
          { "batch", function() return db:batch { { type = "del", key = "" } } end },
          { "batch:put", function() return db:batch():put("", "v") end },
          { "batch:del", function() return db:batch():del("") end },
        }
        for _, c in ipairs(calls) do
          local ok, err = pcall(c[2])
          assert.is_false(ok, c[1] .. " accepted an empty key")
          assert.matches("^[^\n]-" .. c[1]:gsub("%p", "%%%0") .. ": ", err)
          assert.matches("empty", err)
        end
        assert.same({}, A.entries(db))
        assert.is_true(db:put("k", "v"))
      end)

      it("non-string keys and values", function()
        local db = A.open(dir, { key_encoding = enc, value_encoding = enc })
        if enc == "utf8" then
          -- numbers become strings
          assert.is_true(db:put(1, 2))
          assert.equal("2", db:get("1"))
          assert.equal("2", db:get(1))
          assert.is_true(db:put(2.5, -7))
          assert.equal("-7", db:get("2.5"))
          assert.is_true(db:put("n", 42))
          assert.equal("42", db:get("n"))
          local keys = {}
          for k in db:iter { values = false } do
            assert.equal("string", type(k))
            keys[#keys + 1] = k
          end
          assert.same({ "1", "2.5", "n" }, keys)
          assert.equal("2", db:get_many({ 1 })[1])
          assert.is_true(db:del(1))
          assert.is_nil(db:get("1"))
          -- numeric bounds are strings too
          local ks = {}
          for k in db:iter { gte = 2, values = false } do ks[#ks + 1] = k end
          assert.same({ "2.5", "n" }, ks)
        else
          for _, call in ipairs {
            function() return db:put(1, "v") end, function() return db:put("k", 1) end,
            function() return db:get(1) end, function() return db:iter { gt = 1 } end,
          } do
            local ok, err = pcall(call)
            assert.is_false(ok)
            assert.matches("must be a string", err)
          end
        end
        for _, bad in ipairs { true, {}, function() end } do
          local ok, err = pcall(db.put, db, bad, "v")
          assert.is_false(ok)
          assert.matches("^[^\n]-put: bad argument #1", err)
          ok, err = pcall(db.put, db, "k", bad)
          assert.is_false(ok)
          assert.matches("^[^\n]-put: bad argument #2", err)
        end
      end)
    end)
  end

  it("utf8 and binary handles on one directory see the same bytes", function()
    local u = A.open(dir, { key_encoding = "utf8", value_encoding = "utf8" })
    local b = assert(A.reopen(dir, { key_encoding = "binary", value_encoding = "binary" }))
    assert(u:put(7, "\0\255"))
    assert.equal("\0\255", b:get("7"))
    assert(b:put("\255key", ALL_BYTES))
    assert.equal(ALL_BYTES, u:get("\255key"))
  end)

  describe("json", function()
    it("values round-trip as Lua values", function()
      local db = A.open(dir, { value_encoding = "json" })
      local values = {
        { a = 1, b = { 1, 2, 3 }, c = { d = "e" } },
        { 1, "two", { three = 3 }, false },
        "a string", 42, 3.5, true, false, {},
        { nested = { deeper = { deepest = { "x" } } } },
        { unicode = "caf\195\169 \226\130\172" },
      }
      for i, v in ipairs(values) do assert.is_true(db:put("k" .. i, v)) end
      for i, v in ipairs(values) do assert.same(v, db:get("k" .. i)) end
      local t = db:get_many { "k1", "missing", "k2" }
      assert.same(values[1], t[1])
      assert.is_nil(t[2])
      assert.same(values[2], t[3])
      assert.equal(3, t.n)
      local n = 0
      for k, v in db:iter() do
        n = n + 1
        assert.same(values[tonumber(k:sub(2))], v)
      end
      assert.equal(#values, n)
      local vals = {}
      for v in db:iter { keys = false, lte = "k2" } do vals[#vals + 1] = v end
      assert.same({ values[1], values[10], values[2] }, vals)
      assert.is_true(db:batch { { type = "put", key = "b", value = { x = { 1 } } } })
      assert.is_true(db:batch():put("c", { y = 2 }):write())
      assert.same({ x = { 1 } }, db:get("b"))
      assert.same({ y = 2 }, db:get("c"))
    end)

    it("stores JSON text that a utf8 handle reads", function()
      local db = A.open(dir, { value_encoding = "json" })
      local raw = assert(A.reopen(dir))
      assert(db:put("k", { 1, 2, 3 }))
      assert.equal("[1,2,3]", raw:get("k"))
      assert(raw:put("j", '{"a":[true,null,"s"]}'))
      local v = db:get("j")
      assert.equal(true, v.a[1])
      assert.equal("s", v.a[3])
    end)

    it("json keys", function()
      local db = A.open(dir, { key_encoding = "json", value_encoding = "utf8" })
      assert.is_true(db:put({ 1, "a" }, "v1"))
      assert.is_true(db:put("plain", "v2"))
      assert.equal("v1", db:get({ 1, "a" }))
      local keys = {}
      for k in db:iter { values = false } do keys[#keys + 1] = k end
      assert.same({ "plain", { 1, "a" } }, keys)
    end)

    it("a stored value that is not JSON: nil, msg, EDECODE (get, get_many, iterator)", function()
      local db = A.open(dir, { value_encoding = "json" })
      local raw = assert(A.reopen(dir, { value_encoding = "utf8" }))
      assert(raw:put("bad", "{not json"))
      assert(db:put("good", { ok = true }))
      local v, msg, code = db:get("bad")
      assert.is_nil(v)
      assert.equal("EDECODE", code)
      assert.matches("^get: ", msg)
      local t, msg2, code2 = db:get_many { "good", "bad" }
      assert.is_nil(t)
      assert.equal("EDECODE", code2)
      assert.matches("^get_many: ", msg2)
      -- the iterator: next() returns the failure, a for loop raises it
      local it = db:iter()
      local k, m3, c3 = it:next()
      assert.is_nil(k)
      assert.equal("EDECODE", c3)
      assert.is_string(m3)
      it:close()
      local ok, err = pcall(function() for _ in db:iter() do end end)
      assert.is_false(ok)
      assert.matches("EDECODE", err)
      -- keys-only iteration does not decode values
      local keys = {}
      for key in db:iter { values = false } do keys[#keys + 1] = key end
      assert.same({ "bad", "good" }, keys)
      -- the handle keeps working
      assert.same({ ok = true }, db:get("good"))
      assert.is_true(db:del("bad"))
      assert.same({ { "good", { ok = true } } }, A.entries(db))
    end)

    it("a value lua-cjson cannot encode raises (put, batch) and writes nothing", function()
      local db = A.open(dir, { value_encoding = "json" })
      for _, call in ipairs {
        function() return db:put("k", function() end) end,
        function() return db:batch { { type = "put", key = "k", value = function() end } } end,
        function() return db:batch():put("k", function() end) end,
      } do
        local ok, err = pcall(call)
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end
      assert.is_nil(db:get("k"))
    end)
  end)

  describe("custom encoding table", function()
    local rot = {
      encode = function(v) return "<" .. tostring(v) .. ">" end,
      decode = function(s) return (s:gsub("^<(.*)>$", "%1")) end,
    }

    it("encodes on the way in and decodes on the way out, for keys and values", function()
      local db = A.open(dir, { key_encoding = rot, value_encoding = rot })
      local raw = assert(A.reopen(dir))
      assert.is_true(db:put("k", "v"))
      assert.equal("v", db:get("k"))
      assert.equal("<v>", raw:get("<k>"))
      assert.is_nil(raw:get("k"))
      assert.is_true(db:batch {
        { type = "put", key = "a", value = "1" }, { type = "put", key = "b", value = "2" },
      })
      assert.same({ { "a", "1" }, { "b", "2" }, { "k", "v" } }, A.entries(db))
      assert.same({ { "<a>", "<1>" }, { "<b>", "<2>" }, { "<k>", "<v>" } }, A.entries(raw))
      local keys = {}
      for k in db:iter { gt = "a", values = false } do keys[#keys + 1] = k end
      assert.same({ "b", "k" }, keys)
      local t = db:get_many { "a", "zz", "k" }
      assert.same({ "1", nil, "v" }, { t[1], t[2], t[3] })
      assert.is_true(db:del("a"))
      assert.is_nil(raw:get("<a>"))
      assert.is_true(db:clear { gte = "b", lt = "c" })
      assert.same({ { "<k>", "<v>" } }, A.entries(raw))
    end)

    it("an encode that does not return a string raises", function()
      local db = A.open(dir, { value_encoding = { encode = function() return 5 end, decode = tostring } })
      local ok, err = pcall(db.put, db, "k", "v")
      assert.is_false(ok)
      assert.matches("put: bad argument #2", err)
    end)

    it("a decode error (nil, err) is EDECODE", function()
      local db = A.open(dir, {
        value_encoding = { encode = function(v) return v end, decode = function() return nil, "nope" end },
      })
      assert.is_true(db:put("k", "v"))
      local v, msg, code = db:get("k")
      assert.is_nil(v)
      assert.equal("EDECODE", code)
      assert.matches("nope", msg)
    end)

    it("a table without encode/decode functions is refused by open", function()
      for _, enc in ipairs { {}, { encode = tostring }, { decode = tostring }, "nope", 5 } do
        local ok, err = pcall(A.reopen, dir, { value_encoding = enc })
        assert.is_false(ok)
        assert.matches("open: ", err)
        ok, err = pcall(A.reopen, dir, { key_encoding = enc })
        assert.is_false(ok)
        assert.matches("open: ", err)
      end
    end)
  end)
end)

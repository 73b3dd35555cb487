-- levelparty.open, close, roles and handle lifetimes (__close, __gc), and several
-- handles on one directory in one process.  Runs in both roles (LEVELPARTY_SPEC_ROLE).
local helper = require "helper"
local A = require "api_helper"
local levelparty = require "levelparty"
local uv = require "luv"

local function exists(path)
  return uv.fs_stat(path) ~= nil
end

describe("open", function()
  after_each(A.close_all)
  after_each(helper.cleanup)

  it("creates a missing directory (create_if_missing defaults to true) and works", function()
    local dir = helper.tmpdir() .. "/fresh"
    assert.is_false(exists(dir))
    local db = A.open(dir)
    assert.equal(helper.role, db:role())
    assert.equal("directory", uv.fs_stat(dir).type)
    assert.is_true(exists(dir .. "/CURRENT"))
    assert.is_true(db:put("k", "v"))
    assert.equal("v", db:get("k"))
  end)

  it("accepts every documented option", function()
    local dir = helper.tmpdir()
    local roles = 0
    local db = A.open(dir, {
      create_if_missing = true, error_if_exists = false, key_encoding = "utf8", value_encoding = "binary",
      cache_size = 1024 * 1024, write_buffer_size = 1024 * 1024, block_size = 4096, max_open_files = 100,
      bloom_bits = 10, compression = false, sync = true, timeout = 30, open_timeout = 30, retry = true,
      on_role = function() roles = roles + 1 end, allow_other_users = false,
    })
    assert.is_true(db:put("k", ("x"):rep(100000)))
    assert.equal(("x"):rep(100000), db:get("k"))
    assert.is_true(db:put("k2", "y", { sync = true }))
    assert.is_true(db:del("k2", { sync = false }))
    assert.is_nil(db:get("k2"))
    assert.equal(helper.role, db:role())
  end)

  it("keeps data across close and reopen", function()
    local dir = helper.tmpdir()
    local db = A.open(dir)
    for i = 1, 100 do assert(db:put("k" .. i, "v" .. i)) end
    assert.is_true(db:close())
    local db2 = assert(A.reopen(dir))
    assert.equal(helper.role, db2:role())
    for i = 1, 100 do assert.equal("v" .. i, db2:get("k" .. i)) end
  end)

  it("db:role() says leader or follower, then closed", function()
    local dir = helper.tmpdir()
    local db = A.open(dir)
    assert.equal(helper.role, db:role())
    assert.matches("levelparty.db", tostring(db), 1, true)
    db:close()
    assert.equal("closed", db:role())
  end)

  it("close is idempotent and always returns true", function()
    local db = A.open(helper.tmpdir())
    assert.is_true(db:close())
    assert.is_true(db:close())
    assert.is_true(db:close())
    assert.equal("closed", db:role())
    -- tostring of a closed handle does not raise
    assert.is_string(tostring(db))
  end)

  it("__close: `local db <close>` closes the handle at the end of the scope (Lua 5.4)", function()
    if _VERSION ~= "Lua 5.4" then
      pending("to-be-closed variables need Lua 5.4 (" .. _VERSION .. ")")
      return
    end
    local dir = helper.tmpdir()
    local first = A.open(dir)
    first:close()
    -- LuaJIT cannot even parse <close>: compile the chunk only here
    local chunk = assert(load([[
      local levelparty, dir = ...
      local escaped
      do
        local db <close> = assert(levelparty.open(dir))
        assert(db:put("scoped", "yes"))
        escaped = db
      end
      return escaped
    ]]))
    local escaped = chunk(levelparty, dir)
    A.track(escaped)
    assert.equal("closed", escaped:role())
    local v, msg, code = escaped:get("scoped")
    assert.is_nil(v)
    assert.equal("ECLOSED", code)
    assert.matches("^get: ", msg)
    -- also on an error leaving the scope
    local chunk2 = assert(load([[
      local levelparty, dir, out = ...
      local db <close> = assert(levelparty.open(dir))
      out.db = db
      error("boom")
    ]]))
    local out = {}
    local ok, err = pcall(chunk2, levelparty, dir, out)
    A.track(out.db)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.equal("closed", out.db:role())
    local db = assert(A.reopen(dir))
    assert.equal("yes", db:get("scoped"))
  end)

  it("__gc: a dropped handle is released by the collector, and reopening in-process works", function()
    local dir = helper.tmpdir()
    do
      local db = A.open(dir)
      assert(db:put("gc", "collected"))
      db = nil -- luacheck: ignore
    end
    collectgarbage()
    collectgarbage()
    if helper.role == "leader" then
      -- the LOCK was released: another process becomes the leader
      local role, p = A.child_role(dir)
      assert.equal("leader", role)
      p:kill()
      p:wait_exit()
    end
    local db = assert(A.reopen(dir))
    assert.equal(helper.role, db:role())
    assert.equal("collected", db:get("gc"))
    assert.is_true(db:put("gc2", "x"))
    assert.equal("x", db:get("gc2"))
  end)

  it("many open/close cycles in one process keep working", function()
    local dir = helper.tmpdir()
    local db = A.open(dir)
    db:close()
    for i = 1, 30 do
      local d = assert(A.reopen(dir))
      assert.equal(helper.role, d:role())
      assert.is_true(d:put("n", tostring(i)))
      if i % 2 == 0 then d:close() else d = nil end -- luacheck: ignore
      if i % 5 == 0 then collectgarbage() end
    end
    collectgarbage()
    local d = assert(A.reopen(dir))
    assert.equal("30", d:get("n"))
  end)
end)

describe("one directory opened twice in one process", function()
  after_each(A.close_all)
  after_each(helper.cleanup)

  local spellings = {
    { "the same path", function(dir) return dir end },
    { "dir/.", function(dir) return dir .. "/." end },
    { "dir/", function(dir) return dir .. "/" end },
    { "dir/../name", function(dir) return dir .. "/../" .. dir:match("[^/]+$") end },
    { "a symlink to it", function(dir)
      local link = helper.tmpdir() .. "/link"
      assert(uv.fs_symlink(dir, link))
      return link
    end },
    { "a relative path", function(dir)
      local cwd = uv.cwd()
      local rel = ("../"):rep(select(2, cwd:gsub("/[^/]+", ""))) .. dir:sub(2)
      return rel
    end },
  }

  for _, s in ipairs(spellings) do
    local name, spell = s[1], s[2]
    it("through " .. name .. ": both handles share one LevelDB", function()
      local dir = helper.tmpdir()
      local h1 = A.open(dir)
      local other = spell(dir)
      local h2, err, code = A.reopen(other)
      assert(h2, ("second open of %s failed: %s (%s)"):format(other, tostring(err), tostring(code)))
      assert.equal(helper.role, h2:role())
      -- writes through one are visible through the other at once
      assert.is_true(h1:put("from1", "a"))
      assert.equal("a", h2:get("from1"))
      assert.is_true(h2:put("from2", "b"))
      assert.equal("b", h1:get("from2"))
      assert.is_true(h2:del("from1"))
      assert.is_nil(h1:get("from1"))
      assert.same({ { "from2", "b" } }, A.entries(h1))
      -- closing one keeps the other working
      assert.is_true(h1:close())
      assert.equal("closed", h1:role())
      assert.equal(helper.role, h2:role())
      assert.is_true(h2:put("after", "close"))
      assert.equal("close", h2:get("after"))
      assert.same({ { "after", "close" }, { "from2", "b" } }, A.entries(h2))
      local _, _, c = h1:get("after")
      assert.equal("ECLOSED", c)
    end)
  end

  it("the LOCK stays held while any handle is open, and is released with the last", function()
    if helper.role ~= "leader" then
      return pending("leader only: the lock sharing in one process is the leader's")
    end
    local dir = helper.tmpdir()
    local h1 = A.open(dir)
    local h2 = assert(A.reopen(dir .. "/."))
    -- h3 is only held, then dropped for the collector to close it
    local h3 = assert(A.reopen(dir)) -- luacheck: ignore 231
    assert(h1:put("k", "v"))
    -- a child process cannot take the LOCK: it becomes a follower
    local role, child = A.child_role(dir)
    assert.equal("follower", role)
    child:kill()
    child:wait_exit()
    h1:close()
    h3 = nil
    collectgarbage()
    collectgarbage()
    assert.equal("leader", h2:role())
    assert.equal("v", h2:get("k"))
    -- still held by h2 alone: LevelDB's LOCK was never released
    local role2, child2 = A.child_role(dir)
    assert.equal("follower", role2)
    child2:kill()
    child2:wait_exit()
    assert.is_true(h2:put("k2", "v2"))
    assert.equal("v2", h2:get("k2"))
    -- the last handle closes: now another process becomes the leader
    h2:close()
    local role3 = A.child_role(dir)
    assert.equal("leader", role3)
  end)
end)

describe("open errors", function()
  after_each(A.close_all)
  after_each(helper.cleanup)

  local function check_err(db, msg, code, want)
    assert.is_nil(db)
    assert.is_string(msg)
    assert.matches("^open: ", msg)
    assert.equal(want, code)
  end

  it("a missing directory with create_if_missing=false: ENOENT, nothing created", function()
    local dir = helper.tmpdir() .. "/missing"
    local db, msg, code = A.reopen(dir, { create_if_missing = false })
    check_err(db, msg, code, "ENOENT")
    assert.is_false(exists(dir))
  end)

  it("missing parents are created as mkdir -p does, with the same mode; not with create_if_missing=false", function()
    local base = helper.tmpdir()
    local dir = base .. "/no/such/parent"
    local db, msg, code = A.reopen(dir, { create_if_missing = false })
    check_err(db, msg, code, "ENOENT")
    assert.is_false(exists(base .. "/no"))
    db = assert(A.reopen(dir))
    assert.is_true(db:put("k", "v"))
    for _, d in ipairs { base .. "/no", base .. "/no/such" } do
      local st = uv.fs_stat(d)
      assert.equal("directory", st.type)
      assert.equal(uv.fs_stat(dir).mode, st.mode)
    end
  end)

  it("a path that is a file: ENOTDIR", function()
    local file = helper.tmpdir() .. "/file"
    local f = assert(io.open(file, "w"))
    f:write("not a db")
    f:close()
    local db, msg, code = A.reopen(file)
    check_err(db, msg, code, "ENOTDIR")
    db, msg, code = A.reopen(file, { create_if_missing = false })
    check_err(db, msg, code, "ENOTDIR")
    -- below a file
    db, msg, code = A.reopen(file .. "/sub")
    check_err(db, msg, code, "ENOTDIR")
    local fh = assert(io.open(file))
    assert.equal("not a db", fh:read("a"))
    fh:close()
  end)

  it("a directory this user may not write: EACCES", function()
    -- we may run as root, which chmod does not stop: run the open as nobody instead
    if uv.getuid and uv.getuid() ~= 0 then
      local parent = helper.tmpdir()
      assert(uv.fs_chmod(parent, tonumber("555", 8)))
      local db, msg, code = A.reopen(parent .. "/db")
      uv.fs_chmod(parent, tonumber("755", 8))
      check_err(db, msg, code, "EACCES")
      return
    end
    local r = os.execute("command -v setpriv >/dev/null 2>&1")
    if r ~= true and r ~= 0 then
      pending("running as root without setpriv: cannot make a directory unwritable")
      return
    end
    local parent = helper.tmpdir()
    assert(uv.fs_chmod(parent, tonumber("755", 8)))
    -- an existing database nobody may write
    local db = assert(A.reopen(parent .. "/db"))
    assert(db:put("k", "v"))
    db:close()
    local script = [[
      local lp = require "levelparty"
      for _, d in ipairs { arg[1] .. "/sub", arg[1] .. "/db" } do
        local db, msg, code = lp.open(d)
        print(tostring(db ~= nil), tostring(code), tostring(msg))
      end
    ]]
    local sf = parent .. "/probe.lua"
    local f = assert(io.open(sf, "w"))
    f:write(script)
    f:close()
    local p = assert(io.popen(("setpriv --reuid=65534 --regid=65534 --clear-groups %s %s %s 2>&1"):format(
      helper.lua, sf, parent)))
    local out = p:read("a")
    p:close()
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert(#lines == 2, "unexpected output from the unprivileged probe:\n" .. out)
    assert.matches("^false\tEACCES\topen: ", lines[1])
    assert.matches("^false\tEACCES\topen: ", lines[2])
    assert.is_false(exists(parent .. "/sub"))
  end)

  it("an existing database with error_if_exists=true: EEXIST", function()
    if helper.role ~= "leader" then
      return pending("leader only: error_if_exists is a LevelDB open option, only a leader opens LevelDB")
    end
    local dir = helper.tmpdir()
    local db = A.open(dir)
    assert(db:put("k", "v"))
    db:close()
    local db2, msg, code = A.reopen(dir, { error_if_exists = true })
    check_err(db2, msg, code, "EEXIST")
    -- the database is intact
    local db3 = assert(A.reopen(dir))
    assert.equal("v", db3:get("k"))
  end)

  it("error_if_exists=true on a fresh directory opens it", function()
    if helper.role ~= "leader" then
      return pending("leader only: error_if_exists is a LevelDB open option, only a leader opens LevelDB")
    end
    local db = A.open(helper.tmpdir() .. "/new", { error_if_exists = true })
    assert.is_true(db:put("k", "v"))
    assert.equal("v", db:get("k"))
  end)

  it("a corrupt database: ECORRUPT, and the LOCK is not kept", function()
    if helper.role ~= "leader" then
      return pending("leader only: only a leader opens LevelDB (and the holder could not open a corrupt one)")
    end
    local dir = helper.tmpdir()
    local db = A.open(dir)
    assert(db:put("k", "v"))
    db:close()
    local f = assert(io.open(dir .. "/CURRENT", "w"))
    f:write("MANIFEST-999999\n")
    f:close()
    local db2, msg, code = A.reopen(dir)
    check_err(db2, msg, code, "ECORRUPT")
    -- a failed open does not leave the directory locked by this process
    local role = A.child_role(dir)
    assert.matches("^error", role)
    assert.matches("ECORRUPT", role)
  end)

  it("a failed open leaves the process able to open other directories", function()
    local bad = helper.tmpdir() .. "/missing"
    assert.is_nil((A.reopen(bad, { create_if_missing = false })))
    local db = A.open(helper.tmpdir())
    assert.is_true(db:put("k", "v"))
    assert.equal("v", db:get("k"))
  end)
end)

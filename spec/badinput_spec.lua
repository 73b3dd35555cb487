-- Bad input and faults: every case of spec/fixtures/badinput_cases.lua with
-- the result it asserts (that file says how a case reads), in the role
-- helper.open gives (mk/runtests.sh runs this spec as leader and as follower,
-- under Lua 5.4 and LuaJIT).  Scenarios that start their own processes run in
-- the leader pass only.  docs/RELIABILITY.md's table is generated from the
-- same cases (`make reliability`); the last test fails when it is stale.
local helper = require "helper"
local A = require "api_helper"
local P = require "party_helper"
local levelparty = require "levelparty"
local uv = require "luv"

local CASES = dofile(helper.fixtures .. "/badinput_cases.lua")
local table_gen = assert(loadfile(helper.root .. "/mk/reliability_table.lua"))("--lib")
local CHILD = P.fixtures .. "/badinput_child.lua"

local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function exists(path) return uv.fs_stat(path) ~= nil end
local function modeof(path)
  local st = uv.fs_stat(path)
  return st and st.mode % 512
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- What a scenario opened and started, closed and killed after it.
local opened_handles, started = {}, {}
local function scenario_cleanup()
  for i = #opened_handles, 1, -1 do
    pcall(opened_handles[i].close, opened_handles[i])
    opened_handles[i] = nil
  end
  for i = #started, 1, -1 do
    local p = started[i]
    p:kill("sigkill") -- a stopped process dies of it too
    pcall(p.wait_exit, p, 5)
    started[i] = nil
  end
end

local function spawn(script, args)
  local p = helper.spawn(script, args)
  started[#started + 1] = p
  return p
end

local function start_leader(d)
  local p = helper.start_leader(d)
  started[#started + 1] = p
  return p
end

local function track(db)
  opened_handles[#opened_handles + 1] = db
  return db
end

-- ------------------------------------------------------------- scenarios

local SCENARIOS = {}

-- name -> "size mtime" of every file in d
local function listing(d)
  local out = {}
  local req = assert(uv.fs_scandir(d))
  while true do
    local name = uv.fs_scandir_next(req)
    if not name then break end
    local st = assert(uv.fs_stat(d .. "/" .. name))
    out[name] = ("%d %d.%09d"):format(st.size, st.mtime.sec, st.mtime.nsec)
  end
  return out
end

local function has_file(list, pattern)
  for name in pairs(list) do if name:find(pattern) then return name end end
end

-- A database with tables and a MANIFEST (two sessions, so the first log is
-- written out as a table at the second open).
local function db_with_tables(d, n)
  local db = assert(levelparty.open(d, { write_buffer_size = 64 * 1024 }))
  for i = 1, n do assert(db:put(("k%05d"):format(i), ("v"):rep(100))) end
  db:close()
  db = assert(levelparty.open(d))
  db:close()
end

function SCENARIOS.current_missing()
  local d = helper.tmpdir("nocurrent")
  db_with_tables(d, 2000)
  local before = listing(d)
  assert(has_file(before, "%.ldb$"), "no table was written")
  local current = read_file(d .. "/CURRENT")
  assert(os.remove(d .. "/CURRENT"))
  local files = listing(d)
  local db, msg, code = levelparty.open(d)
  assert.is_nil(db)
  assert.equal("ECORRUPT", code, msg)
  assert.matches("^open: ", msg)
  assert.matches("no CURRENT", msg, 1, true)
  assert.same(files, listing(d))
  -- nothing was lost: with CURRENT back, every key is there
  write_file(d .. "/CURRENT", current)
  db = assert(levelparty.open(d))
  for i = 1, 2000, 97 do assert.equal(("v"):rep(100), db:get(("k%05d"):format(i))) end
  assert.equal(("v"):rep(100), db:get("k02000"))
  db:close()
end

function SCENARIOS.manifest_no_current()
  local d = helper.tmpdir("manifest")
  local db = assert(levelparty.open(d))
  assert(db:put("k", "v"))
  db:close()
  local before = listing(d)
  assert(has_file(before, "^MANIFEST%-") and has_file(before, "%.log$"), "no MANIFEST and log")
  assert.is_nil(has_file(before, "%.ldb$"))
  local current = read_file(d .. "/CURRENT")
  assert(os.remove(d .. "/CURRENT"))
  local files = listing(d)
  local msg, code
  db, msg, code = levelparty.open(d)
  assert.is_nil(db)
  assert.equal("ECORRUPT", code, msg)
  assert.matches("no CURRENT", msg, 1, true)
  assert.same(files, listing(d))
  write_file(d .. "/CURRENT", current)
  db = assert(levelparty.open(d))
  assert.equal("v", db:get("k"))
  db:close()
end

function SCENARIOS.paranoid_checks()
  local d = helper.tmpdir("paranoid")
  local db = assert(levelparty.open(d))
  for i = 1, 50 do assert(db:put(("k%02d"):format(i), ("v"):rep(200))) end
  db:close()
  local log = assert(has_file(listing(d), "%.log$"))
  local bytes = read_file(d .. "/" .. log)
  assert(#bytes > 4000)
  write_file(d .. "/" .. log, bytes:sub(1, 2000) .. ("\255"):rep(8) .. bytes:sub(2009))
  local msg, code
  db, msg, code = levelparty.open(d, { paranoid_checks = true })
  assert.is_nil(db)
  assert.equal("ECORRUPT", code, msg)
  assert.matches("^open: ", msg)
  -- LevelDB's default drops the damaged record and opens
  db = assert(levelparty.open(d, { paranoid_checks = false }))
  assert.equal(("v"):rep(200), db:get("k01"))
  db:close()
end

function SCENARIOS.on_role_blocking()
  local d = helper.tmpdir("onrole")
  local leader = start_leader(d)
  local child = spawn(CHILD, { "onrole-blocking", d })
  child:wait_line("^role follower$", 20)
  P.kill_and_wait(leader)
  child:send("go")
  local get = child:wait_line("^get ", 20)
  assert.equal("get v", get)
  local on_error = child:wait_line("^on_error ", 5)
  assert.matches("^on_error 1 nil .*on_role boom leader$", on_error)
  child:wait_line("^role leader$", 5)
end

function SCENARIOS.on_role_luv()
  local d = helper.tmpdir("onroleluv")
  local leader = start_leader(d)
  local child = spawn(CHILD, { "onrole-luv", d })
  child:wait_line("^role follower$", 20)
  P.kill_and_wait(leader)
  local line = child:wait_line("^leader ", 20)
  assert.equal("leader true y", line)
  assert.matches("^on_error nil .*on_role boom leader$", (child:wait_line("^on_error ", 5)))
  assert.is_false(child.exited)
  -- and it serves: a new process follows it
  local role, p = A.child_role(d)
  started[#started + 1] = p
  assert.equal("follower", role)
end

function SCENARIOS.open_timeout_huge()
  local has = os.execute("command -v python3 >/dev/null 2>&1")
  if has ~= true and has ~= 0 then
    return pending("python3 holds the LOCK here; it is missing")
  end
  local d = helper.tmpdir("huge")
  local py = P.spawn_cmd("python3", { "-c", [[
import fcntl, sys, time
f = open(sys.argv[1] + "/LOCK", "a+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(120)
]], d })
  py:wait_line("^locked", 10)
  local got, elapsed
  helper.run_async(function()
    local t0 = P.now()
    local timer = uv.new_timer()
    timer:start(500, 0, function()
      timer:close()
      uv.kill(py.pid, "sigkill")
    end)
    got = pack(levelparty.open(d, { open_timeout = math.huge }))
    elapsed = P.now() - t0
  end, 20)
  assert(got[1], ("open failed after %.3f s: %s (%s)"):format(elapsed, tostring(got[2]), tostring(got[3])))
  track(got[1])
  assert.is_true(elapsed >= 0.4, ("open returned after %.3f s, before the holder went"):format(elapsed))
  assert.equal("leader", got[1]:role())
end

-- A leader in another process; stop() stops it (SIGSTOP), cont() resumes it.
local function stopped_leader(d)
  local leader = start_leader(d)
  local function cont() leader:kill("sigcont") end
  return leader, function()
    leader:kill("sigstop")
    helper.wait_until(function() return P.state(leader.pid) == "T" end, 5, "the leader to stop")
  end, cont
end

function SCENARIOS.timeout_tiny()
  local d = helper.tmpdir("tiny")
  local _, stop, cont = stopped_leader(d)
  local db0 = track(assert(levelparty.open(d)))
  assert.equal("follower", db0:role())
  assert(db0:put("k", "v"))
  local db = track(assert(levelparty.open(d, { timeout = 1e-12 }))) -- timeout is the handle's
  stop()
  local r, t0 = nil, P.now()
  helper.run_async(function() r = pack(db:get("k")) end, 5)
  assert.same({ n = 3, nil, r[2], "ETIMEDOUT" }, r)
  assert.matches("^get: ", r[2])
  assert.is_true(P.now() - t0 < 2)
  -- the same in a blocking call
  r = pack(db:get("k"))
  assert.equal("ETIMEDOUT", r[3], tostring(r[2]))
  cont()
end

-- SIGINT to a child blocked in `what` (get or iter) on a stopped leader.  The
-- interpreter's own handler sets a hook that raises "interrupted!" once the
-- call returns: the script stops.  In a coroutine, with the main chunk
-- catching that error (pcall), the handle works on once the leader resumes.
-- (Lua 5.4 keeps hooks per thread: there the coroutine even sees the call's
-- own result; LuaJIT's one hook raises in the coroutine at once.)
local function sigint(what, opts_lua)
  local d = helper.tmpdir("sigint")
  local _, stop, cont = stopped_leader(d)
  for _, variant in ipairs { what, what .. "+pcall" } do
    local child = spawn(CHILD, { variant, d, opts_lua or "" })
    child:wait_line("^role follower$", 20)
    stop()
    child:send("go")
    child:wait_line("^calling$", 5)
    helper.wait_until(function() return P.in_poll(child.pid) end, 5, "the child to wait for the leader")
    child:kill("sigint")
    if variant == what then
      local code = child:wait_exit(5)
      assert.equal(1, code)
      assert.matches("interrupted!", child:stderr_text(), 1, true)
    else
      local line = child:wait_line("^caught ", 5)
      assert.matches("^caught false.*interrupted!$", line)
      if _VERSION == "Lua 5.4" then
        local op = what == "iter" and "iterator" or "get"
        local _, i = child:wait_line("^result ", 5)
        assert.equal(("result nil %s: interrupted EINTR"):format(op), child.lines[i])
      end
      cont()
      child:send("again")
      assert.equal("again v", (child:wait_line("^again ", 10)))
    end
    cont()
  end
end

function SCENARIOS.sigint_recv() sigint("get") end
function SCENARIOS.sigint_poll() sigint("get", "{ timeout = 60 }") end
function SCENARIOS.sigint_iter() sigint("iter") end

-- Runs fn with levelparty.on_error collecting its calls into a list; restores it.
local function with_on_error(fn)
  local saved, got = levelparty.on_error, {}
  levelparty.on_error = function(co, err) got[#got + 1] = { co = co, err = err } end
  local ok, err = pcall(fn, got)
  levelparty.on_error = saved
  if not ok then error(err, 0) end
end

function SCENARIOS.resume_by_hand()
  local d = helper.tmpdir("resume")
  local _, stop, cont = stopped_leader(d)
  local db = track(assert(levelparty.open(d)))
  assert(db:put("k", "v"))
  stop()
  with_on_error(function(errors)
    local co = coroutine.create(function() local v = db:get("k") return v end)
    assert.is_true((coroutine.resume(co)))
    assert.equal("suspended", coroutine.status(co))
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("^[^\n]*badinput_spec%.lua:%d+: get: this coroutine was resumed by hand while it waited", err)
    cont()
    P.run_for(300) -- the reply comes: nothing may resume the dead coroutine
    assert.same({}, errors)
    assert.equal("v", db:get("k"))
    helper.run_async(function() assert.equal("v", db:get("k")) end, 10)
  end)
end

function SCENARIOS.resume_tick_by_hand()
  local d = helper.tmpdir("tick")
  local db = track(assert(levelparty.open(d)))
  assert(db:put("k", "v"))
  with_on_error(function(errors)
    local co = coroutine.create(function() local v = db:get("k") return v end)
    levelparty._core.set_slice(0) -- every async call gives the loop a turn first
    local first = pack(coroutine.resume(co))
    local status = coroutine.status(co)
    local second = pack(coroutine.resume(co))
    levelparty._core.set_slice(2)
    assert.is_true(first[1], tostring(first[2]))
    assert.equal("suspended", status)
    assert.is_false(second[1], "the coroutine went on")
    assert.matches("^[^\n]*badinput_spec%.lua:%d+: get: this coroutine was resumed by hand while it waited", second[2])
    P.run_for(50) -- the loop's turn comes: nothing may resume the dead coroutine
    assert.same({}, errors)
  end)
end

-- ------------------------------------------------------------- the runner

local function describe_case(i, c)
  local what = c.scenario and (c.scenario .. ": " .. c.input) or (c.call or c.run)
  return ("#%d %s"):format(i, what)
end

-- The names a case's code sees; handles and iterators it opens go to `opened`.
local function case_env(dir, opened)
  local function keep(h)
    opened[#opened + 1] = h
    return h
  end
  local lazy = {
    lp = function() return levelparty end,
    dir = function() return dir end,
    db = function() return keep(assert(levelparty.open(dir))) end,
    newdir = function() return helper.tmpdir("new") .. "/new" end,
    b = function(e) return e.db:batch() end,
    it = function(e) return keep(e.db:iter()) end,
    op = function() return { type = "put", key = "a", value = "1" } end,
    fn = function() return function() end end,
    jdb = function() return keep(assert(levelparty.open(dir, { value_encoding = "json" }))) end,
    kdb = function() return keep(assert(levelparty.open(dir, { key_encoding = "json" }))) end,
    cdb = function()
      return keep(assert(levelparty.open(dir, { value_encoding = {
        encode = function(v) return v end,
        decode = function() error("custom decoder failed") end,
      } })))
    end,
    exists = function() return exists end,
    modeof = function() return modeof end,
  }
  return setmetatable({}, { __index = function(e, k)
    local make = lazy[k]
    if make == nil then return _G[k] end
    local v = make(e)
    rawset(e, k, v)
    return v
  end })
end

local function chunk(src, name, env)
  return assert(load(src, "=" .. name, "t", env))
end

local function check_case(c, r, env)
  local ok, r1, r2, r3 = r[1], r[2], r[3], r[4]
  local msg
  if c.raises then
    assert(not ok, "did not raise; returned " .. tostring(r1) .. ", " .. tostring(r2) .. ", " .. tostring(r3))
    assert.is_string(r1)
    local pos
    pos, msg = r1:match("^(badinput:%d+: )(.*)$")
    assert(pos, "not raised at the case's own line: " .. r1)
    assert(msg:sub(1, #c.raises) == c.raises, ("message does not start with %q:\n  %s"):format(c.raises, msg))
  else
    assert(ok, "raised: " .. tostring(r1))
    if c.fails then
      assert(r1 == nil and r3 == c.fails,
        ("expected nil, msg, %q; got %s, %s, %s"):format(c.fails, tostring(r1), tostring(r2), tostring(r3)))
      msg = r2
      assert.is_string(msg)
      assert(msg:sub(1, #c.msg) == c.msg, ("message does not start with %q:\n  %s"):format(c.msg, msg))
    else
      assert(not (r1 == nil and r2 ~= nil), "failed: " .. tostring(r2) .. " (" .. tostring(r3) .. ")")
      if c.value ~= nil then assert.same(c.value, r1) end
    end
  end
  if c.also then assert(msg:find(c.also, 1, true), ("message does not hold %q:\n  %s"):format(c.also, msg)) end
  if c.nodata then assert(not msg:find(c.nodata, 1, true), "message holds stored data: " .. msg) end
  if c.check then
    env.r1, env.r2, env.r3 = r1, r2, r3
    assert(chunk("return " .. c.check, "check", env)(), "afterwards, not true: " .. c.check)
  end
end

local function run_case(c, dir, base)
  assert(base:clear())
  local opened = {}
  local env = case_env(dir, opened)
  local r
  local ok, err = pcall(function()
    if c.before then chunk(c.before, "before", env)() end
    -- not `return <call>`: a tail call would leave no frame for error(msg, 2) to name
    r = pack(pcall(chunk(c.call and ("return select(1, " .. c.call .. ")") or c.run, "badinput", env)))
    if r[1] and type(r[2]) == "table" and getmetatable(r[2]) == getmetatable(base) then opened[#opened + 1] = r[2] end
    check_case(c, r, env)
  end)
  for i = #opened, 1, -1 do pcall(opened[i].close, opened[i]) end
  if not ok then error(err, 0) end
end

describe("bad input and faults", function()
  local dir, base
  setup(function()
    dir = helper.tmpdir("badinput")
    base = A.open(dir)
  end)
  teardown(function()
    A.close_all()
    P.cleanup()
  end)

  for i, c in ipairs(CASES) do
    local roles = c.roles or "both"
    local runs
    if c.own then runs = helper.role == "leader" else runs = roles == "both" or roles == helper.role end
    if runs then
      it(describe_case(i, c), function()
        if c.scenario then
          local ok, err = pcall(assert(SCENARIOS[c.scenario], "no scenario " .. c.scenario))
          scenario_cleanup()
          if not ok then error(err, 0) end
        else
          run_case(c, dir, base)
        end
      end)
    end
  end
end)

describe("the bad-input table", function()
  it("names a scenario for each scenario case and a case for each scenario", function()
    local named = {}
    for _, c in ipairs(CASES) do
      if c.scenario then
        named[c.scenario] = true
        assert(SCENARIOS[c.scenario], "no SCENARIOS." .. c.scenario)
        assert(c.input and c.result, c.scenario .. ": input and result are the table's text")
      else
        assert(c.call or c.run, "a case without call, run or scenario")
        assert(c.raises or c.fails or c.returns, (c.call or c.run) .. ": no expected result")
      end
    end
    for name in pairs(SCENARIOS) do assert(named[name], "scenario " .. name .. " is in no case") end
  end)

  it("in docs/RELIABILITY.md is the one these cases generate (make reliability)", function()
    local path = helper.root .. "/docs/RELIABILITY.md"
    local have = table_gen.current(read_file(path))
    assert(have, path .. " has no generated block: run make reliability")
    local want = table_gen.render(CASES)
    if have ~= want then
      local a, b = os.tmpname(), os.tmpname()
      write_file(a, have)
      write_file(b, want)
      local p = io.popen(("diff -u '%s' '%s'"):format(a, b))
      local diff = p:read("*a")
      p:close()
      os.remove(a)
      os.remove(b)
      error("docs/RELIABILITY.md's table is out of date (run `make reliability`):\n" .. diff, 0)
    end
  end)
end)

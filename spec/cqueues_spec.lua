-- levelparty.set_loop("cqueues"): calls inside cqueues-managed coroutines wait
-- in cqueues.poll, so the controller keeps running its other coroutines (a
-- timer coroutine ticks while calls wait), as a follower of a leader in
-- another process, through that leader's death (this process takes over),
-- and as the leader.
local has_cqueues, cqueues = pcall(require, "cqueues")
local helper = require "helper"
local lp = require "levelparty"

local describe_cq = has_cqueues and describe or pending

-- What every test leaves behind: closes the handles of list (last first; levelparty handles
-- or luv handles) and empties it, removes the test's directories and processes, and puts
-- the default loop back (set_loop(nil) refuses while a handle is open).
local function teardown(list)
  for i = #list, 1, -1 do
    list[i]:close()
    list[i] = nil
  end
  helper.cleanup()
  lp.set_loop(nil)
end

-- One call through fn(...), counted in st (st.calls): spanned (st.spanned) when the ticker
-- (st.ticks) ran meanwhile, which is impossible if the call blocked the scheduler.
local function call(st, fn, ...)
  local t0 = st.ticks
  local a, b, c = fn(...)
  st.calls = st.calls + 1
  if st.ticks > t0 then st.spanned = st.spanned + 1 end
  return a, b, c
end

-- Steps the controller cq until it has nothing left to run; fails the test if any step
-- fails, or if that takes more than timeout seconds (what: who did not finish).
local function drain(cq, timeout, what)
  local deadline = cqueues.monotime() + timeout
  while not cq:empty() do
    local ok, err = cq:step(1)
    assert(ok, err)
    assert(cqueues.monotime() < deadline, what .. " did not finish in time")
  end
end

describe_cq("the cqueues loop", function()
  local handles = {}
  -- lp.open, and the handle is closed after the test whatever happens (so
  -- that set_loop(nil) may run)
  local function open(dir, opts)
    local db, err, code = lp.open(dir, opts)
    handles[#handles + 1] = db
    return db, err, code
  end

  before_each(function() lp.set_loop("cqueues") end)
  after_each(function() teardown(handles) end)

  -- Runs the coroutines fns (each fn(i, st)) and a ticker under one controller,
  -- until they end; returns st: the ticker's count and, per call counted by
  -- call(st, ...), whether the ticker ran during it.  An error in any coroutine
  -- fails the test with its traceback.
  local function run(fns, timeout)
    local cq = cqueues.new()
    local st = { ticks = 0, running = #fns, spanned = 0, calls = 0 }
    for i, fn in ipairs(fns) do
      cq:wrap(function()
        local ok, err = xpcall(fn, debug.traceback, i, st)
        st.running = st.running - 1
        if not ok then st.err = st.err or err end
      end)
    end
    cq:wrap(function()
      while st.running > 0 do
        cqueues.sleep(0.002)
        st.ticks = st.ticks + 1
      end
    end)
    drain(cq, timeout or 60, "the coroutines")
    assert(st.err == nil, st.err)
    return st
  end

  -- n coroutines: puts, gets, a batch and an iterator over their own keys.
  local function workers(db, n, ops, hook)
    local fns = {}
    for w = 1, n do
      fns[w] = function(i, st)
        assert(cqueues.running())
        for j = 1, ops do
          local k = string.format("w%d:%04d", i, j)
          assert(call(st, db.put, db, k, "v" .. j))
          assert.equal("v" .. j, call(st, db.get, db, k))
          if hook then hook(st, i, j) end
        end
        assert(call(st, db.batch, db, {
          { type = "put", key = "w" .. i .. ":b1", value = "x" },
          { type = "del", key = string.format("w%d:%04d", i, 1) },
        }))
        local seen = 0
        for k, v in db:iter { gt = "w" .. i .. ":", lt = "w" .. i .. ";" } do
          seen = seen + 1
          assert(k:find("^w" .. i .. ":"), k)
          assert(v ~= nil)
        end
        assert.equal(ops, seen) -- ops - 1 deleted + b1
      end
    end
    return fns
  end

  it("waits in cqueues.poll as a follower, and the controller keeps running", function()
    local dir = helper.tmpdir("cq")
    helper.start_leader(dir)
    local db = assert(open(dir))
    assert.equal("follower", db:role())
    local st = run(workers(db, 4, 150))
    assert.equal(4 * (150 * 2 + 1), st.calls)
    -- calls yielded: the ticker ran while some of them waited
    assert.is_true(st.spanned > 0, "no call let the ticker run")
    assert.is_true(st.ticks > 0)
    assert.equal("v7", db:get("w3:0007")) -- blocking again outside the controller
    db:close()
  end)

  it("outside a controller's coroutine, a call blocks", function()
    local dir = helper.tmpdir("cq")
    helper.start_leader(dir)
    local db = assert(open(dir))
    local co = coroutine.wrap(function()
      assert(db:put("k", "v"))
      return db:get("k")
    end)
    assert.equal("v", co()) -- returned without yielding
    db:close()
  end)

  it("open waits in a coroutine, and calls survive the leader's death", function()
    local dir = helper.tmpdir("cq")
    local leader = helper.start_leader(dir)
    local db
    local killed = false
    local roles = {}
    run({ function()
      db = assert(open(dir, { on_role = function(role) roles[#roles + 1] = role end }))
      assert.equal("follower", db:role())
    end })
    local fns = workers(db, 3, 120, function(st, i, j)
      if i == 1 and j == 40 and not killed then
        killed = true
        leader:kill("sigkill")
        st.killed_at = st.calls
      end
    end)
    local st = run(fns, 90)
    assert.is_true(killed)
    assert.equal("leader", db:role())
    assert.same({ "leader" }, roles)
    assert.is_true(st.spanned > 0)
    -- every write of every coroutine is there, before and after the kill
    for i = 1, 3 do
      assert.is_nil(db:get(string.format("w%d:%04d", i, 1)))
      for j = 2, 120 do assert.equal("v" .. j, db:get(string.format("w%d:%04d", i, j))) end
      assert.equal("x", db:get("w" .. i .. ":b1"))
    end
    db:close()
  end)

  it("as the leader, calls from several coroutines go straight to LevelDB", function()
    local dir = helper.tmpdir("cq")
    local db = assert(open(dir))
    assert.equal("leader", db:role())
    local st = run(workers(db, 3, 50))
    assert.equal(3 * (50 * 2 + 1), st.calls)
    db:close()
  end)

  it("set_loop refuses while handles are open, and bad loops", function()
    local dir = helper.tmpdir("cq")
    local db = assert(open(dir))
    assert.error_matches(function() lp.set_loop("yield") end, "set_loop: handles are open")
    db:close()
    assert.error_matches(function() lp.set_loop("nope") end, "unknown loop 'nope'")
    assert.error_matches(function() lp.set_loop(42) end, "string, table or nil expected")
    assert.error_matches(function() lp.set_loop {} end, "backend.wait must be a function")
  end)
end)

-- Debian packages lua-http for Lua 5.1 (LuaJIT) only.
local has_http = has_cqueues and pcall(require, "http.server") and pcall(require, "http.request")
local describe_http = has_http and describe or pending

describe_http("a lua-http server", function()
  local db
  after_each(function()
    if db then db:close() end
    helper.cleanup()
    lp.set_loop(nil)
  end)

  it("serves requests whose handlers wait on levelparty while the server keeps serving", function()
    local http_server = require "http.server"
    local http_request = require "http.request"
    local http_headers = require "http.headers"
    lp.set_loop("cqueues")
    local dir = helper.tmpdir("cqhttp")
    helper.start_leader(dir)
    db = assert(lp.open(dir))
    assert.equal("follower", db:role())
    local waited = 0 -- handler calls during which another handler ran
    local inside = 0
    local server = assert(http_server.listen {
      host = "127.0.0.1", port = 0,
      onstream = function(_, stream)
        local req = assert(stream:get_headers())
        local key = req:get(":path"):sub(2)
        local body = req:get(":method") == "PUT" and assert(stream:get_body_as_string())
        -- from here to the answer, only levelparty's calls may yield
        inside = inside + 1
        local before = inside
        local value
        if body then
          assert(db:put(key, body))
          value = "ok"
        else
          value = db:get(key) or "missing"
        end
        if inside ~= before then waited = waited + 1 end
        local res = http_headers.new()
        res:append(":status", "200")
        assert(stream:write_headers(res, false))
        assert(stream:write_chunk(value, true))
      end,
    })
    assert(server:listen())
    local _, host, port = server:localname()
    local cq = cqueues.new()
    cq:wrap(function() assert(server:loop()) end)
    local done, results = 0, {}
    for c = 1, 4 do
      cq:wrap(function()
        for j = 1, 20 do
          local url = string.format("http://%s:%d/c%d-%d", host, port, c, j)
          local r = http_request.new_from_uri(url)
          r.headers:upsert(":method", "PUT")
          r:set_body("v" .. j)
          local h, s = assert(r:go(10))
          assert.equal("200", h:get(":status"))
          assert.equal("ok", s:get_body_as_string())
          h, s = assert(http_request.new_from_uri(url):go(10))
          assert.equal("200", h:get(":status"))
          local body = s:get_body_as_string() -- (yields: before taking #results)
          results[#results + 1] = body == "v" .. j
        end
        done = done + 1
        if done == 4 then server:close() end
      end)
    end
    drain(cq, 60, "the requests")
    assert.equal(160 / 2, #results)
    for _, ok in ipairs(results) do assert.is_true(ok) end
    assert.is_true(waited > 0, "no handler ran while another waited on levelparty")
    assert.equal("v20", db:get("c4-20"))
    db:close()
  end)
end)

-- levelparty.set_loop("yield"), the interface a C host uses (examples/embed):
-- a waiting call yields a pollable to whoever resumed the coroutine.  Here the
-- scheduler is the application's own, polling with luv's poll handles.
describe("the yield loop (a scheduler of the application's own)", function()
  local uv = require "luv"
  local handles = {}

  after_each(function() teardown(handles) end)

  local function now() return uv.hrtime() / 1e9 end

  -- The host's own pollable: no fd, a deadline.
  local Sleep = { pollfd = function() return -1 end, events = function() return "r" end }
  Sleep.__index = Sleep
  function Sleep:timeout() return math.max(0, self.deadline - now()) end
  local function sleep(s) coroutine.yield(setmetatable({ deadline = now() + s }, Sleep)) end

  -- Runs fns as coroutines: each pollable they yield is polled (its fd with a
  -- luv poll handle, its timeout asked again before each wait), and the
  -- coroutine is resumed when its fd is readable or its timeout passed.  The
  -- poll handles are closed before the handle (after_each).
  local function schedule(fns, timeout)
    local tasks, polls, readable = {}, {}, {}
    local timer = uv.new_timer()
    handles[#handles + 1] = timer
    local function resume(t)
      local ok, p = coroutine.resume(t.co)
      if not ok then error(debug.traceback(t.co, tostring(p)), 0) end
      if coroutine.status(t.co) == "dead" then t.done = true else t.p = p end
    end
    for i, fn in ipairs(fns) do
      tasks[i] = { co = coroutine.create(fn) }
      resume(tasks[i])
    end
    local deadline = now() + timeout
    while true do
      local live, wait, want = 0, math.huge, {}
      for _, t in ipairs(tasks) do
        if not t.done then
          live = live + 1
          assert(type(t.p) == "table" and t.p:events() == "r", "a coroutine yielded no pollable")
          t.timeout, t.fd = t.p:timeout() or math.huge, t.p:pollfd()
          if t.timeout < wait then wait = t.timeout end
          if t.fd >= 0 then want[t.fd] = true end
        end
      end
      if live == 0 then break end
      for k in pairs(readable) do readable[k] = nil end
      for fd in pairs(want) do
        if polls[fd] == nil then
          polls[fd] = uv.new_poll(fd)
          handles[#handles + 1] = polls[fd]
        end
        polls[fd]:start("r", function() readable[fd] = true end)
      end
      local t0 = now()
      if wait > 0 then
        if wait < math.huge then timer:start(math.ceil(wait * 1000), 0, function() end) end
        uv.run("once")
        timer:stop()
      end
      for _, p in pairs(polls) do p:stop() end
      local elapsed = now() - t0
      for _, t in ipairs(tasks) do
        if not t.done and (readable[t.fd] or elapsed >= t.timeout) then resume(t) end
      end
      assert(now() < deadline, "the coroutines did not finish in time")
    end
  end

  it("as a follower, calls wait while the scheduler runs a ticker; through the leader's death", function()
    lp.set_loop("yield")
    local dir = helper.tmpdir("yield")
    local leader = helper.start_leader(dir)
    local db = assert(lp.open(dir))
    assert.equal("follower", db:role())
    local st = { ticks = 0, running = 4, spanned = 0, calls = 0 }
    local fns = {}
    for i = 1, 4 do
      fns[i] = function()
        for j = 1, 150 do
          local k = string.format("c%d:%04d", i, j)
          assert(call(st, db.put, db, k, "v" .. j))
          assert.equal("v" .. j, call(st, db.get, db, k))
          if i == 1 and j == 100 then leader:kill("sigkill") end
        end
        local n = 0
        for _ in db:iter { gt = "c" .. i .. ":", lt = "c" .. i .. ";" } do n = n + 1 end
        assert.equal(150, n)
        st.running = st.running - 1
      end
    end
    fns[5] = function()
      while st.running > 0 do
        sleep(0.001)
        st.ticks = st.ticks + 1
      end
    end
    schedule(fns, 60)
    assert.equal(4 * 300, st.calls)
    assert.is_true(st.spanned > 0, "no call let the ticker run")
    assert.equal("leader", db:role())
    assert.equal("v150", db:get("c4:0150"))
    for _, h in ipairs(handles) do h:close() end
    handles = {}
    uv.run("nowait")
    db:close()
  end)
end)

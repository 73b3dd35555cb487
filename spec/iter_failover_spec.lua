-- The party: iterators resume after the leader dies, exactly once and in order.
--
-- A 100k-entry data set (spec/fixtures/lua/shapes.lua) is written once, then copied into a
-- fresh directory for every test.  A follower streams one iterator shape with
-- spec/fixtures/lua/streamer.lua, which checks order and count itself and prints "ok N" or
-- "fail ...".  The leader is SIGKILLed after a random number of consumed entries:
--   * "paused": the streamer stops at entry N (it does not touch levelparty while stopped, so
--     it takes no part in the election); the leader dies; then either the streamer is the only
--     one left (promotion through its loopback) or another follower takes over first (the
--     streamer reconnects to it); then the streamer goes on;
--   * "live": the leader dies while the streamer is streaming, another follower racing it.
-- The seed of the random kill points is printed in failure messages.
--
-- Run: make test SPEC=spec/iter_failover_spec.lua
local uv = require "luv"
local P = require "party_helper"
local H = P.helper
local S = P.shapes

local seed = tonumber(os.getenv("LEVELPARTY_SEED") or "") or (os.time() + math.floor(uv.hrtime() % 100000))
math.randomseed(seed)

local base -- the data set, written once

-- every test ends with its processes killed and its directories removed
after_each(P.cleanup)

-- A fresh copy of the data set.
local function dataset()
  local d = H.tmpdir("iter")
  assert(os.execute("cp -a '" .. base .. "/.' '" .. d .. "/'"))
  return d
end

local function streamer(d, shape, pause_at, every, pace)
  local s = H.spawn(P.fixtures .. "/streamer.lua", { d, shape, pause_at, every or 0, pace or 0 })
  local ready = s:wait_line("^ready ", 20)
  assert.matches("^ready follower", ready)
  return s
end

local function outcome(s)
  local line = s:wait_line("^[of][ka]", 60) -- "ok ..." or "fail ..."
  for _, l in ipairs(s.lines) do
    if l:find("^fail ") then return l end
  end
  return line
end

setup(function()
  base = os.tmpname()
  os.remove(base)
  base = base .. "-lp-iterbase"
  assert(uv.fs_mkdir(base, 493))
  local w = P.worker(base, nil, "sync")
  assert.equal("leader", w.role0)
  local st, rest = w:call("fill " .. S.TOTAL .. " 1000", 120)
  assert.equal("ok", st, rest)
  assert.equal("ok", (w:call("close")))
  P.kill_and_wait(w, "sigkill")
  H.cleanup()
end)

teardown(function()
  if base then os.execute("rm -rf '" .. base .. "'") end
end)

describe("iterator resume after the leader's SIGKILL", function()
  for _, shape in ipairs(S.list) do
    local n = #S.expected(shape.opts)

    it(shape.name .. ": paused, the streamer is the only follower (promoted, loopback)", function()
      local d = dataset()
      local l = P.worker(d, nil, "sync")
      assert.equal("leader", l.role0)
      -- leave more than the client's read-ahead (1.5 windows of 1024) after
      -- the kill: a streamer that already holds the rest never needs a leader
      -- again, and so is rightly never promoted
      local at = math.random(1, math.max(1, n - 1600))
      local s = streamer(d, shape.name, at)
      s:wait_line("^at " .. at .. "$", 60)
      P.kill_and_wait(l, "sigkill")
      s:send("go")
      local res = outcome(s)
      assert.equal(("ok %d leader"):format(n), res, ("killed after %d entries (seed %d)"):format(at, seed))
    end)

    it(shape.name .. ": paused, another follower takes over first", function()
      local d = dataset()
      local l = P.worker(d, nil, "sync")
      local g = P.worker(d, nil, "sync")
      local at = math.random(1, n - 1)
      local s = streamer(d, shape.name, at)
      s:wait_line("^at " .. at .. "$", 60)
      P.kill_and_wait(l, "sigkill")
      local st, v = g:call("get " .. S.key(7), 10)
      assert.same({ "ok", S.value(7) }, { st, v })
      assert.equal("leader", select(2, g:call("role")))
      s:send("go")
      local res = outcome(s)
      assert.equal(("ok %d follower"):format(n), res, ("killed after %d entries (seed %d)"):format(at, seed))
      assert.same({ g.pid }, P.lock_owners(d))
    end)

    it(shape.name .. ": live, killed mid-stream, another follower racing the streamer", function()
      local d = dataset()
      local l = P.worker(d, nil, "sync")
      local g = P.worker(d, nil, "sync")
      local every = 500
      -- in the first 80% of the stream; the streamer spends 1 ms per 100 entries, so at
      -- least ~80 ms of stream are usually left when the leader dies.  Mid-stream by
      -- construction: a streamer that gets further first waits 2000 entries (more than the
      -- client's read-ahead) before the end, until the kill is done.
      local at = every * math.random(1, math.floor(math.floor(n * 8 / 10) / every))
      local s = streamer(d, shape.name, n - 2000, every, 1)
      s:wait_line("^progress " .. at .. "$", 60)
      l:kill("sigkill")
      local gid = g:send("get " .. S.key(7))
      l:wait_exit(10)
      for _, line in ipairs(s.lines) do
        assert.is_nil(line:find("^ok "), "the stream ended before the leader died")
      end
      s:send("go")
      local res = outcome(s)
      assert.matches(("^ok %d "):format(n), res, 1, false)
      assert.is_nil(res:find("^fail"), ("%s (killed at progress %d, seed %d)"):format(res, at, seed))
      assert.equal("ok", (g:result(gid, 10)))
      -- exactly one of the two leads
      local srole = res:match(" (%S+)$")
      assert.is_true((srole == "leader") ~= (select(2, g:call("role")) == "leader"), "exactly one leader")
    end)
  end

  for _, case in ipairs { { "forward", 1 }, { "reverse", 1 }, { "forward", S.TOTAL - 1 }, { "reverse", S.TOTAL - 1 },
    { "keys-only", 32 }, { "values-only", 33 }, { "limit", 49999 } } do
    it(("%s: paused at entry %d (edge), promoted"):format(case[1], case[2]), function()
      local d = dataset()
      local l = P.worker(d, nil, "sync")
      local s = streamer(d, case[1], case[2])
      s:wait_line("^at " .. case[2] .. "$", 60)
      P.kill_and_wait(l, "sigkill")
      s:send("go")
      local n = #S.expected(S.by_name[case[1]].opts)
      -- near the end the rest may already be buffered: no election needed then
      assert.matches(("^ok %d "):format(n), outcome(s))
    end)
  end

  it("two leader deaths during one stream (promoted, then reconnecting)", function()
    local d = dataset()
    local l = P.worker(d, nil, "sync")
    local g = P.worker(d, nil, "sync")
    local s = streamer(d, "gte+lte", 0, 1000)
    s:wait_line("^progress 10000$", 60)
    l:kill("sigkill")
    assert.equal("ok", (g:call("get " .. S.key(1), 10)))
    s:wait_line("^progress 30000$", 60)
    -- kill whoever leads now, unless it is the streamer itself
    if select(2, g:call("role")) == "leader" then g:kill("sigkill") end
    local n = #S.expected(S.by_name["gte+lte"].opts)
    assert.matches(("^ok %d "):format(n), outcome(s))
  end)
end)

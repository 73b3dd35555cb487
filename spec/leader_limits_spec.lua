-- The leader's limits: out of file descriptors, and followers that never read.
-- A leader must say what happens, never spin, keep serving, and bound its memory in total.
--
-- Workers are spec/fixtures/lua/worker.lua processes (see there).  Every wait is bounded.
package.path = "./spec/?.lua;" .. package.path
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local mute_pipes = {} -- see mute_connect

local function test(name, body)
  it(name, function()
    finally(function()
      for i, p in ipairs(mute_pipes) do
        if not p:is_closing() then p:close() end
        mute_pipes[i] = nil
      end
      P.cleanup() -- runs the loop: the pipes' close callbacks too
    end)
    body()
  end)
end

local function sr(status, rest) return { status, rest } end

-- CPU seconds pid used so far (utime + stime).
local function cpu_s(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("a")
  f:close()
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local function count(text, needle)
  local n, at = 0, 1
  while true do
    local i = text:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + 1
  end
end

-- A sync worker.lua leader whose RLIMIT_NOFILE is `nofile` (sh's ulimit), driven through stdin.
local function limited_leader(dir, nofile)
  local p = P.spawn_cmd("sh", { "-c", ('ulimit -n %d && exec "$@"'):format(nofile), "sh", H.lua,
    P.fixtures .. "/worker.lua", dir, "sync", "{}" })
  p:wait_line("^ready leader ", 20)
  p.next_id = 0
  function p.call(_, cmd, timeout)
    p.next_id = p.next_id + 1
    p.stdin:write(p.next_id .. " " .. cmd .. "\n")
    local line = p:wait_line("^res " .. p.next_id .. " ", timeout or 10)
    return line:match("^res %d+ %S+ (%S+) ?(.*)$")
  end
  function p.stderr_text() return table.concat(p.err) end
  return p
end

describe("a leader out of file descriptors", function()
  test("says so once, does not spin, serves the followers it has, and accepts the waiting ones later", function()
    local d = H.tmpdir("emfile")
    local l = limited_leader(d, 64)
    local f = P.worker(d, nil, "sync")
    assert.equal("follower", f.role0)
    assert.equal("ok", (f:call("put k v")))
    -- more connections than the leader has descriptors left
    local raws = {}
    for i = 1, 80 do raws[i] = P.raw_connect(d .. "/level-party.sock") end
    P.wait_until(function()
      return l.stderr_text():find("cannot accept connections: too many open files (EMFILE)", 1, true) ~= nil
    end, 5, "the leader to log that it cannot accept")
    local cpu0 = cpu_s(l.pid)
    P.run_for(1000)
    local used = cpu_s(l.pid) - cpu0
    assert.is_true(used < 0.25, ("the leader used %.2f s of CPU in 1 s"):format(used))
    assert.equal(1, count(l.stderr_text(), "cannot accept connections"), l.stderr_text())
    -- the connections it has are served, the waiting ones are not dropped
    assert.same({ "ok", "v" }, sr(f:call("get k", 5)))
    assert.same({ "ok", "v" }, sr(l:call("get k", 5)))
    local dropped = 0
    for _, r in ipairs(raws) do if r.closed then dropped = dropped + 1 end end
    assert.equal(0, dropped, "connections the leader dropped")
    -- descriptors free again: a new follower gets in and is served
    for _, r in ipairs(raws) do r.close() end
    local g = P.worker(d, "{timeout=10}", "sync")
    assert.equal("follower", g.role0)
    assert.same({ "ok", "v" }, sr(g:call("get k", 10)))
    P.wait_until(function()
      return l.stderr_text():find("accepting connections again", 1, true) ~= nil
    end, 5, "the leader to log that it accepts again")
  end)
end)

-- Resident memory of pid, KiB.
local function rss_kib(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local kib
  for line in f:lines() do
    kib = kib or tonumber(line:match("^VmRSS:%s+(%d+)"))
  end
  f:close()
  return kib
end

-- A connection that never reads: no read_start, so whatever the leader sends stays with it.
local function mute_connect(path)
  local pipe = uv.new_pipe(false)
  local done, cerr = false, nil
  pipe:connect(path, function(err) done, cerr = true, err end)
  P.wait_until(function() return done end, 5, "connect")
  assert(not cerr, cerr)
  mute_pipes[#mute_pipes + 1] = pipe
  return pipe
end

describe("followers that never read", function()
  test("cost the leader a bounded total (max_send_buffer), the ones holding the most stopped; the others are served",
    function()
    local d = H.tmpdir("noread")
    local l = P.worker(d, nil, "sync")
    assert.equal("leader", l.role0)
    assert.equal("ok", (l:call("fillbig 4096 4096", 60))) -- 16 MiB
    local f = P.worker(d, nil, "sync")
    assert.equal("ok", (f:call("put k v")))
    local rss0 = rss_kib(l.pid)
    -- an iterator over everything with a window of a million entries, never read
    local open = P.frame("\4\8\0\16" .. P.varint(1000000) .. "\26\8\8\1\16\1\56\1\64\0")
    for _ = 1, 100 do mute_connect(d .. "/level-party.sock"):write(open) end
    -- until the leader stops producing: its memory no longer grows
    local last, still = rss_kib(l.pid), 0
    P.wait_until(function()
      P.run_for(200)
      local now = rss_kib(l.pid)
      still = math.abs(now - last) < 1024 and still + 1 or 0
      last = now
      return still >= 5
    end, 60, "the leader's memory to settle")
    local grew = (rss_kib(l.pid) - rss0) / 1024
    print(("# 100 followers that never read: the leader's RSS grew %.0f MiB"):format(grew))
    -- under ASan (LD_PRELOAD) RSS counts the allocator's quarantine and shadow, not the leader
    if not os.getenv("LD_PRELOAD") then
      assert.is_true(grew < 224, ("the leader's RSS grew %.0f MiB"):format(grew))
    end
    -- a follower that reads is served meanwhile
    local status, rest, ms = f:call("get k", 10)
    assert.same({ "ok", "v" }, sr(status, rest))
    assert.is_true(ms < 1000, ("a get took %.0f ms"):format(ms))
    assert.truthy(l:stderr_text():find("over the limit of 65536 KiB", 1, true), l:stderr_text())
  end)
end)

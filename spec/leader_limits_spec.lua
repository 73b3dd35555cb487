-- The leader's limits (issue 11): out of file descriptors, and followers that never read.
-- A leader must say what happens, never spin, keep serving, and bound its memory in total.
--
-- Workers are spec/fixtures/lua/worker.lua processes (see there).  Every wait is bounded.
package.path = "./spec/?.lua;" .. package.path
local P = require "party_helper"
local H = P.helper

local function test(name, body)
  it(name, function()
    finally(P.cleanup)
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

-- Frames over max_frame: a request or a reply that cannot fit in a
-- frame fails that request alone, at once, with ETOOLARGE; it never costs a reconnect, never
-- loops, and never makes the leader spin.
--
-- Workers are spec/fixtures/lua/worker.lua processes (see there); "sync" ones block in every
-- call.  Every wait is bounded.
package.path = "./spec/?.lua;" .. package.path
local P = require "party_helper"
local H = P.helper

local function test(name, body)
  it(name, function()
    finally(P.cleanup)
    body()
  end)
end

-- status and rest of a worker reply, as a table (drops the timing)
local function sr(status, rest) return { status, rest } end

-- The socket inodes a process holds: the same set before and after a call means the call
-- did not reconnect.
local function sockets(pid)
  local out = {}
  local p = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  for line in p:lines() do
    local ino = line:match("socket:%[(%d+)%]")
    if ino then out[#out + 1] = ino end
  end
  p:close()
  table.sort(out)
  return table.concat(out, ",")
end

-- CPU seconds pid used so far (utime + stime).
local function cpu_s(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("a")
  f:close()
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local function no_closing_lines(l)
  local text = l:stderr_text()
  assert.is_nil(text:find("closing connection", 1, true), "the leader closed a connection: " .. text)
end

describe("a follower's request over max_frame", function()
  for _, retry in ipairs { true, false } do
    local name = "fails at once with ETOOLARGE, put and batch, and costs no reconnect (retry=%s)"
    test(name:format(tostring(retry)), function()
      local d = H.tmpdir("bigreq")
      local l = P.worker(d, "{max_frame=4096}", "sync")
      assert.equal("leader", l.role0)
      local f = P.worker(d, ("{max_frame=4096, timeout=3, retry=%s}"):format(tostring(retry)), "sync")
      assert.equal("follower", f.role0)
      assert.equal("ok", (f:call("put small v")))
      local socks = sockets(f.pid)
      local status, rest, ms = f:call("putn big 5000", 10)
      assert.equal("err", status, rest)
      assert.matches("^ETOOLARGE put: the request is %d+ bytes, over the frame limit of 4096$", rest)
      assert.is_true(ms < 1000, ("ETOOLARGE took %.0f ms"):format(ms))
      status, rest = f:call("batchsync big " .. ("y"):rep(5000), 10)
      assert.equal("err", status, rest)
      assert.matches("^ETOOLARGE batch: the request is %d+ bytes, over the frame limit of 4096$", rest)
      -- the connection stayed up and serves the next request
      assert.same({ "ok", "v" }, sr(f:call("get small")))
      assert.equal(socks, sockets(f.pid), "the follower reconnected")
      assert.same({ "nil", "" }, sr(f:call("get big")))
      no_closing_lines(l)
    end)
  end

  test("a 64 MiB + 1 value under the default max_frame: ETOOLARGE from the follower, stored by the leader", function()
    local d = H.tmpdir("bigreq64")
    local l = P.worker(d, nil, "sync")
    local f = P.worker(d, "{timeout=20}", "sync")
    assert.equal("follower", f.role0)
    local status, rest, ms = f:call("putn huge " .. (64 * 1024 * 1024 + 1), 30)
    assert.equal("err", status, rest)
    assert.matches("^ETOOLARGE put: the request is %d+ bytes, over the frame limit of 67108864$", rest)
    assert.is_true(ms < 5000, ("ETOOLARGE took %.0f ms"):format(ms))
    -- the same put on the leader succeeds: no frame there
    assert.equal("ok", (l:call("putn huge " .. (64 * 1024 * 1024 + 1), 30)))
    no_closing_lines(l)
  end)
end)

describe("a reply over max_frame", function()
  test("from a leader that checks (smaller max_frame): get and iterators fail with ETOOLARGE, the connection stays",
    function()
    local d = H.tmpdir("bigrep")
    local l = P.worker(d, "{max_frame=4096}", "sync")
    assert.equal("ok", (l:call("put a 1")))
    assert.equal("ok", (l:call("putn big 8000")))
    local f = P.worker(d, "{timeout=3}", "sync")
    assert.equal("follower", f.role0)
    local socks = sockets(f.pid)
    local status, rest, ms = f:call("getn big", 10)
    assert.equal("err", status, rest)
    assert.equal("ETOOLARGE get: the value is 8000 bytes, over the frame limit of 4096", rest)
    assert.is_true(ms < 1000, ("ETOOLARGE took %.0f ms"):format(ms))
    status, rest = f:call("iter", 10)
    assert.equal("err", status, rest)
    assert.matches("^ETOOLARGE iterator: ETOOLARGE: iterator: an entry is %d+ bytes, over the frame limit of 4096$",
      rest)
    assert.same({ "ok", "1" }, sr(f:call("get a")))
    assert.equal(socks, sockets(f.pid), "the follower reconnected")
    no_closing_lines(l)
  end)

  test("from a leader that does not check (larger max_frame): the follower skips the frame, fails that request only",
    function()
    local d = H.tmpdir("bigskip")
    local l = P.worker(d, nil, "sync")
    assert.equal("ok", (l:call("put a 1")))
    assert.equal("ok", (l:call("putn big 200000")))
    local f = P.worker(d, "{max_frame=4096, timeout=3, retry=false}", "sync")
    assert.equal("follower", f.role0)
    local socks = sockets(f.pid)
    local cpu0 = cpu_s(l.pid)
    local status, rest, ms = f:call("getn big", 10)
    assert.equal("err", status, rest)
    assert.matches("^ETOOLARGE get: the reply is %d+ bytes, over the frame limit of 4096$", rest)
    assert.is_true(ms < 1000, ("ETOOLARGE took %.0f ms"):format(ms))
    status, rest = f:call("iter", 10)
    assert.equal("err", status, rest)
    assert.matches("^ETOOLARGE iterator: the entry is %d+ bytes, over the frame limit of 4096$", rest)
    assert.same({ "ok", "1" }, sr(f:call("get a")))
    assert.equal(socks, sockets(f.pid), "the follower reconnected")
    assert.is_true(cpu_s(l.pid) - cpu0 < 1, "the leader spun")
    no_closing_lines(l)
  end)

  test("a 64 MiB + 1 value under the default max_frame: the follower's get and iterator fail with ETOOLARGE", function()
    local d = H.tmpdir("bigrep64")
    local l = P.worker(d, nil, "sync")
    assert.equal("ok", (l:call("putn huge " .. (64 * 1024 * 1024 + 1), 30)))
    local f = P.worker(d, "{timeout=20}", "sync")
    local socks = sockets(f.pid)
    local status, rest, ms = f:call("getn huge", 30)
    assert.equal("err", status, rest)
    assert.equal("ETOOLARGE get: the value is 67108865 bytes, over the frame limit of 67108864", rest)
    assert.is_true(ms < 5000, ("ETOOLARGE took %.0f ms"):format(ms))
    status, rest = f:call("iter", 30)
    assert.equal("err", status, rest)
    assert.matches("^ETOOLARGE iterator: ", rest)
    assert.equal(socks, sockets(f.pid), "the follower reconnected")
    no_closing_lines(l)
  end)
end)

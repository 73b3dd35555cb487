-- Frames over max_frame (issue 11, items 1 and 2): a request or a reply that cannot fit in a
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

-- Durability that says what it does: a follower's write with sync = true travels with
-- levelparty's sync flag, and a Lua leader makes it a synced LevelDB write (fdatasync), seen
-- from outside with strace on the leader process; a write without it is not synced.
--
-- Workers are spec/fixtures/lua/worker.lua processes (see there).  Every wait is bounded.
package.path = "./spec/?.lua;" .. package.path
local P = require "party_helper"
local H = P.helper

local function strace_path()
  for _, p in ipairs { "/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace" } do
    local f = io.open(p)
    if f then
      f:close()
      return p
    end
  end
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

describe("a follower's write with sync = true", function()
  it("is synced by a Lua leader (fdatasync); without it, nothing is synced", function()
    finally(P.cleanup)
    local strace = strace_path()
    if not strace then
      pending("strace is not installed (mk/deps.sh installs it)")
      return
    end
    local d = H.tmpdir("sync")
    local l = P.worker(d, nil, "sync")
    assert.equal("leader", l.role0)
    local f = P.worker(d, nil, "sync")
    assert.equal("follower", f.role0)
    assert.equal("ok", (f:call("put warm v"))) -- the server thread exists and serves
    local st = P.spawn_cmd(strace, { "-f", "-e", "trace=fdatasync,fsync", "-p", tostring(l.pid) })
    local function text() return table.concat(st.err) end
    -- "Process N attached with M threads" (or one line per thread, with older straces)
    P.wait_until(function() return text():find("attached", 1, true) ~= nil or st.exited end, 10,
      "strace to attach to the leader")
    if st.exited then
      pending("strace cannot attach here: " .. text())
      return
    end
    local function syncs() return count(text(), "f%a*sync%(") end
    -- plain writes: no sync at all
    assert.equal("ok", (f:call("put a 1")))
    assert.equal("ok", (f:call("del a")))
    assert.equal("ok", (f:call("put b 2")))
    P.run_for(200)
    assert.equal(0, syncs(), text())
    -- each synced write: at least one more fdatasync
    for _, cmd in ipairs { "putsync c 3", "delsync c", "batchsync e 5" } do
      local before = syncs()
      assert.equal("ok", (f:call(cmd)))
      P.wait_until(function() return syncs() > before end, 5, "an fdatasync for " .. cmd)
    end
    st.handle:kill("sigint") -- strace detaches
    P.wait_until(function() return st.exited end, 10, "strace to detach")
    local status, value = f:call("get e")
    assert.same({ "ok", "5" }, { status, value })
  end)
end)

-- Fork safety: a handle belongs to the process that opened it.  A child of a fork (any fork:
-- the fixture forks itself through the test module lptest_fork) finds every call of an
-- inherited handle refused with a clear error, never acts as the leader (its close and its
-- garbage collection leave the parent's LevelDB, socket, server and connection alone), and may
-- open the directory afresh, as a follower of its parent.
--
-- Run: make test SPEC=spec/fork_spec.lua LUA=5.4 (and LUA=luajit)
local H = require "helper"

after_each(H.cleanup)

local function run_forker(dir, mode)
  local p = H.spawn(H.fixtures .. "/lua/forker.lua", { dir, mode })
  p:wait_line("^done$", 30)
  local code = p:wait_exit(10)
  return p.lines, code, p:stderr_text()
end

local REFUSED = {
  "child refused get", "child refused put", "child refused del", "child refused batch",
  "child refused get_many", "child refused clear", "child refused iter", "child refused role",
  "child refused iterator",
}

local function expect(lines, tail)
  local want = {}
  for _, l in ipairs(REFUSED) do want[#want + 1] = l end
  for _, l in ipairs(tail) do want[#want + 1] = l end
  assert.same(want, lines)
end

describe("fork", function()
  it("a leader's child: inherited handle refused, fresh open follows the parent", function()
    local dir = H.tmpdir("fork")
    local lines, code, err = run_forker(dir, "leader")
    assert.equal("parent role leader", table.remove(lines, 1))
    expect(lines, {
      "child fresh follower parent", "child socket true", "child again follower child",
      "parent child-status 0",
      "parent role leader true",     -- still leading, its socket still there
      "parent read child",           -- the child's write, through the parent's own LevelDB
      "parent write after",
      "parent iterator a parent",    -- the iterator that crossed the fork still works here
      "parent closed false",         -- the real leader's close does remove the socket
      "done",
    })
    assert.equal(0, code, err)
  end)

  it("a follower's child: refused, and the parent's connection carries on", function()
    local dir = H.tmpdir("forkf")
    local leader = H.start_leader(dir)
    local lines, code, err = run_forker(dir, "follower")
    assert.equal("parent role follower", table.remove(lines, 1))
    expect(lines, {
      "child fresh follower parent", "child socket true", "child again follower child",
      "parent child-status 0",
      "parent role follower true",
      "parent read child",
      "parent write after",
      "parent iterator a parent",
      "parent closed true",          -- a follower's close leaves the leader's socket
      "done",
    })
    assert.equal(0, code, err)
    leader:kill()
  end)
end)

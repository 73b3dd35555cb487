-- The party: roles, election, the socket, liveness and robustness, with real processes, real
-- LevelDB and real signals.
--
-- Workers are spec/fixtures/lua/worker.lua processes driven by stdin commands (see there).
-- "sync" workers block in every call (levelparty's blocking mode), "async" ones run every
-- command in a coroutine under luv's loop.  Every wait is bounded and waits for a printed line
-- or an observable state, never for a fixed time.
--
-- Run: make test SPEC=spec/party_spec.lua
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local SOCK = "level-party.sock"

-- status and rest of a worker reply, as a table (drops the timing)
local function sr(status, rest) return { status, rest } end

-- every test ends with its processes killed and its directories removed
after_each(P.cleanup)

-- The process among ws whose `role` command says "leader", and how many say so.
local function leaders_among(ws)
  local found, n = nil, 0
  for _, w in ipairs(ws) do
    local status, role = w:call("role")
    assert.equal("ok", status)
    if role == "leader" then found, n = w, n + 1 end
  end
  return found, n
end

describe("roles", function()
  it("the first opener is leader, later openers are followers", function()
    local d = H.tmpdir("roles")
    local a = P.worker(d, nil, "sync")
    local b = P.worker(d, nil, "sync")
    local c = P.worker(d, nil, "async")
    assert.equal("leader", a.role0)
    assert.equal("follower", b.role0)
    assert.equal("follower", c.role0)
    assert.same({ a.pid }, P.lock_owners(d))
    -- data flows both ways
    assert.equal("ok", (b:call("put from-b 1")))
    assert.equal("ok", (c:call("put from-c 2")))
    assert.same({ "ok", "2" }, sr(a:call("get from-c")))
    assert.same({ "ok", "1" }, sr(c:call("get from-b")))
  end)

  it("on_role fires 'leader' in the survivor that wins, and db:role() follows", function()
    local d = H.tmpdir("onrole")
    local a = P.worker(d, nil, "sync")
    local b = P.worker(d, nil, "sync")
    local c = P.worker(d, nil, "sync")
    assert.equal("ok", (b:call("put k v")))
    P.kill_and_wait(a, "sigkill")
    -- each survivor's next call goes through the election
    assert.same({ "ok", "v" }, sr(b:call("get k", 10)))
    assert.same({ "ok", "v" }, sr(c:call("get k", 10)))
    local winner, n = leaders_among { b, c }
    assert.equal(1, n)
    local loser = winner == b and c or b
    assert.same({ "leader" }, P.roles(winner), "on_role calls of the winner")
    assert.same({}, P.roles(loser), "the loser stays follower: on_role must not fire")
    assert.same({ winner.pid }, P.lock_owners(d))
  end)

  it("an idle follower under luv's loop takes over without making any call", function()
    -- luv.lua: "the poll handle stays active while the process is a follower, so a
    -- leader's death is noticed (and an election won) while the loop runs"
    local d = H.tmpdir("idle")
    local a = P.worker(d, nil, "sync")
    local b = P.worker(d, nil, "async")
    assert.equal("follower", b.role0)
    P.kill_and_wait(a, "sigkill")
    P.wait_role(b, "leader", 5)
    assert.same({ b.pid }, P.lock_owners(d))
    assert.same({ "ok", "leader" }, sr(b:call("role")))
  end)
end)

describe("election", function()
  it("4 processes started at once: exactly one leader; after each leader kill, exactly one new", function()
    local d = H.tmpdir("four")
    local ws = {}
    for i = 1, 4 do ws[i] = P.worker_nowait(d, nil, "sync") end
    local leader, n = nil, 0
    for _, w in ipairs(ws) do
      if w:ready() == "leader" then leader, n = w, n + 1 end
    end
    assert.equal(1, n, "processes that opened as leader")
    assert.same({ leader.pid }, P.lock_owners(d))
    local alive = {}
    for _, w in ipairs(ws) do if w ~= leader then alive[#alive + 1] = w end end
    while #alive >= 2 do
      P.kill_and_wait(leader, "sigkill")
      -- every survivor makes a call at the same time: they all run the election
      local ids = {}
      for i, w in ipairs(alive) do ids[i] = w:send("put after-" .. leader.pid .. "-" .. i .. " x") end
      for i, w in ipairs(alive) do assert.equal("ok", (w:result(ids[i], 10))) end
      local l, count = leaders_among(alive)
      assert.equal(1, count, "leaders among " .. #alive .. " survivors")
      assert.same({ l.pid }, P.lock_owners(d))
      -- each survivor printed 'role leader' at most once, and only the leader did
      for _, w in ipairs(alive) do
        local roles = P.roles(w)
        if w == l then assert.equal("leader", roles[#roles]) else assert.same({}, roles) end
      end
      leader = l
      local rest = {}
      for _, w in ipairs(alive) do if w ~= l then rest[#rest + 1] = w end end
      alive = rest
    end
  end)

  it("a stale socket file left by a SIGKILLed leader is replaced", function()
    local d = H.tmpdir("stale")
    local a = P.worker(d, nil, "sync")
    assert.equal("ok", (a:call("put k v")))
    local before = assert(uv.fs_stat(d .. "/" .. SOCK))
    P.kill_and_wait(a, "sigkill")
    local st = uv.fs_stat(d .. "/" .. SOCK)
    assert.truthy(st, "SIGKILL leaves the socket file behind")
    assert.equal(before.ino, st.ino)
    -- nobody serves it: a raw connect is refused
    local pipe = uv.new_pipe(false)
    local cerr
    pipe:connect(d .. "/" .. SOCK, function(err) cerr = err or "connected" end)
    P.wait_until(function() return cerr ~= nil end, 5, "connect result")
    pipe:close()
    assert.matches("ECONNREFUSED", cerr)
    -- a new opener becomes leader, replaces the file, and serves followers
    local b = P.worker(d, nil, "sync")
    assert.equal("leader", b.role0)
    local after = assert(uv.fs_stat(d .. "/" .. SOCK))
    assert.are_not.equal(before.ino, after.ino)
    local c = P.worker(d, nil, "sync")
    assert.equal("follower", c.role0)
    assert.same({ "ok", "v" }, sr(c:call("get k")))
    assert.equal("ok", (c:call("put k2 w")))
    assert.same({ "ok", "w" }, sr(b:call("get k2")))
  end)

  it("a follower whose leader was SIGKILLed, with a stale file, gets through to a new leader", function()
    local d = H.tmpdir("stale2")
    local a = P.worker(d, nil, "sync")
    local f = P.worker(d, nil, "sync")
    assert.equal("ok", (f:call("put k v")))
    P.kill_and_wait(a, "sigkill")
    -- a new opener races f (whose luv loop may notice the death first): either may win
    local b = P.worker(d, nil, "sync")
    assert.same({ "ok", "v" }, sr(f:call("get k", 10)))
    assert.equal("ok", (b:call("put k2 w", 10)))
    assert.same({ "ok", "w" }, sr(f:call("get k2", 10)))
    local l, n = leaders_among { f, b }
    assert.equal(1, n)
    assert.same({ l.pid }, P.lock_owners(d))
  end)
end)

describe("a busy leader", function()
  for _, mode in ipairs { "sync", "async" } do
    it("still answers a follower within 100 ms (median of 20 gets) while its main chunk spins 2 s ("
      .. mode .. " leader)", function()
      local d = H.tmpdir("busy")
      local l = P.worker(d, nil, mode)
      assert.equal("leader", l.role0)
      assert.equal("ok", (l:call("put k v")))
      local f = P.worker(d, nil, "sync")
      local busy_id = l:send("busy 2")
      l:wait_line("^busy " .. busy_id .. "$", 10)
      local status, rest = f:call("timedgets k 20", 10)
      -- the gets were answered while the leader's main thread was still spinning
      local still_busy = true
      for _, line in ipairs(l.lines) do
        if line:find("^res " .. busy_id .. " ") then still_busy = false end
      end
      assert.equal("ok", status)
      local median, max, failure = rest:match("^(%S+) (%S+) (%S+)$")
      assert.equal("-", failure)
      assert.is_true(still_busy, "the 20 gets should finish within the leader's 2 s busy loop")
      assert.is_true(tonumber(median) < 100, "median get took " .. median .. " ms (max " .. max .. ")")
      assert.equal("ok", (l:result(busy_id, 10)))
    end)
  end
end)

describe("protocol robustness", function()
  local GET_K = P.frame("\0\8\0\18\1k") -- Get{id=0, key="k"}

  local cases = {
    { "garbage (a varint that never ends)", ("\255"):rep(16) },
    { "an oversized length prefix (1 GiB)", P.varint(2 ^ 30) .. "\0\8\0" },
    { "an unknown tag", P.frame("\99\8\0\18\1k") },
    { "a malformed body", P.frame("\0\255\255\255") },
    { "a valid frame followed by garbage", GET_K .. ("\255"):rep(16) },
  }

  for _, case in ipairs(cases) do
    it("a raw client sending " .. case[1] .. " is disconnected; others are still served", function()
      local d = H.tmpdir("proto")
      local l = P.worker(d, nil, "sync")
      assert.equal("ok", (l:call("put k v")))
      local f = P.worker(d, nil, "sync")
      -- a stalled client holding half a frame must not block anyone either
      local stalled = P.raw_connect(d .. "/" .. SOCK)
      stalled.write(P.varint(100) .. "abc")
      local raw = P.raw_connect(d .. "/" .. SOCK)
      raw.write(case[2])
      P.wait_until(function() return raw.closed end, 5, "the leader to close the bad connection")
      raw.close()
      -- and says why, on its stderr (one line naming the peer's pid)
      P.wait_until(function()
        return l:stderr_text():find("leader [^\n]*: closing connection pid %d+: ") ~= nil
      end, 5, "the leader to log the reason")
      assert.same({ "ok", "v" }, sr(f:call("get k", 5)))
      assert.equal("ok", (f:call("put k2 v2", 5)))
      assert.is_true(P.alive(l.pid), "the leader process is alive")
      assert.same({ "ok", "leader" }, sr(l:call("role")))
      assert.same({ l.pid }, P.lock_owners(d))
      assert.is_false(stalled.closed)
      stalled.close()
    end)
  end

  it("a raw client speaking the protocol gets its reply (control); empty frames are skipped", function()
    local d = H.tmpdir("proto-ok")
    local l = P.worker(d, nil, "sync")
    assert.equal("ok", (l:call("put k v")))
    local raw = P.raw_connect(d .. "/" .. SOCK)
    raw.write("\0" .. GET_K)
    local want = P.frame("\0\8\0\26\1v") -- Callback{id=0, value="v"}
    P.wait_until(function() return #table.concat(raw.data) >= #want or raw.closed end, 5, "the reply")
    assert.equal(want, table.concat(raw.data))
    assert.is_false(raw.closed)
    raw.close()
  end)
end)

describe("liveness", function()
  for _, mode in ipairs { "sync", "async" } do
    it("a SIGSTOPped leader: get fails with ETIMEDOUT after timeout=0.5, works after SIGCONT ("
      .. mode .. ")", function()
      local d = H.tmpdir("stop")
      local l = P.worker(d, nil, "sync")
      local f = P.worker(d, "{timeout=0.5}", mode)
      assert.equal("ok", (f:call("put k v")))
      l:kill("sigstop")
      P.wait_until(function() return P.state(l.pid) == "T" end, 5, "the leader to stop")
      local t0 = P.now()
      local status, rest, ms = f:call("get k", 10)
      local elapsed = P.now() - t0
      assert.equal("err", status, rest)
      assert.matches("^ETIMEDOUT ", rest)
      assert.is_true(ms >= 450 and elapsed < 2.5, ("timed out after %.0f ms (spec saw %.2f s)"):format(ms, elapsed))
      l:kill("sigcont")
      assert.same({ "ok", "v" }, sr(f:call("get k", 5)))
      assert.same({ "ok", "follower" }, sr(f:call("role")))
    end)
  end

  -- A sync worker runs luv's loop between its commands, so levelparty's driver polls its
  -- connection (and libuv made the fd non-blocking); a blocking call must still wait for its
  -- reply in one recv (one send and one recv per request), not in poll then recv.
  it("a blocking follower call in a luv program waits for its reply in recvfrom", function()
    if not P.RECVFROM then pending("recvfrom's number is not known on this machine") return end
    local d = H.tmpdir("recvwait")
    local l = P.worker(d, nil, "sync")
    local f = P.worker(d, nil, "sync")
    assert.equal("ok", (f:call("put k v")))
    l:kill("sigstop")
    P.wait_until(function() return P.state(l.pid) == "T" end, 5, "the leader to stop")
    local id = f:send("get k")
    P.wait_until(function() return P.syscall(f.pid) == P.RECVFROM end, 5, "the follower to wait in recvfrom")
    l:kill("sigcont")
    assert.same({ "ok", "v" }, sr(f:result(id, 5)))
  end)

  it("with the LOCK held by a process serving no socket, open fails with ELOCKED after open_timeout", function()
    local d = H.tmpdir("locked")
    local py = P.spawn_cmd("python3", { "-c", [[
import fcntl, os, sys, time
f = open(sys.argv[1] + "/LOCK", "a+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", os.getpid(), flush=True)
time.sleep(120)
]], d })
    py:wait_line("^locked", 10)
    assert.same({ py.pid }, P.lock_owners(d))
    local t0 = P.now()
    local w = H.spawn(P.fixtures .. "/worker.lua", { d, "sync", "{open_timeout=1}" })
    local line = w:wait_line("^openfail ", 10)
    local elapsed = P.now() - t0
    local code, msg = line:match("^openfail (%S+) (.*)$")
    assert.equal("ELOCKED", code, line)
    assert.is_true(elapsed >= 0.9 and elapsed < 5, ("ELOCKED after %.2f s"):format(elapsed))
    assert.matches("pid " .. py.pid, msg, 1, true)
    assert.matches("stop that process", msg, 1, true)
    assert.equal(3, (w:wait_exit(5)))
    -- and once the holder goes, the directory opens normally
    uv.kill(py.pid, "sigkill")
    P.wait_until(function() return py.exited end, 5, "python to exit")
    local l = P.worker(d, "{open_timeout=5}", "sync")
    assert.equal("leader", l.role0)
  end)
end)

describe("the socket file", function()
  it("a data directory whose socket path is over 107 bytes works for leader and followers", function()
    local base = H.tmpdir("long")
    local comps, dir = {}, base
    while #(dir .. "/" .. SOCK) < 200 do
      local c = ("d%02d"):format(#comps) .. ("x"):rep(36)
      comps[#comps + 1] = c
      dir = dir .. "/" .. c
    end
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    assert.is_true(#(dir .. "/" .. SOCK) > 107)
    local l = P.worker(dir, nil, "sync")
    assert.equal("leader", l.role0)
    local f = P.worker(dir, nil, "sync")
    assert.equal("follower", f.role0)
    assert.equal("ok", (f:call("put k v")))
    assert.same({ "ok", "v" }, sr(l:call("get k")))
    local st = assert(uv.fs_stat(dir .. "/" .. SOCK))
    assert.equal("socket", st.type)
    -- no truncated name anywhere above the data directory
    local parent = base
    for _, c in ipairs(comps) do
      assert.same({ c }, P.ls(parent), "entries of " .. parent)
      parent = parent .. "/" .. c
    end
    -- failover at that path: the stale file is replaced, followers find the new leader
    local g = P.worker(dir, nil, "sync")
    P.kill_and_wait(l, "sigkill")
    assert.same({ "ok", "v" }, sr(f:call("get k", 10)))
    assert.same({ "ok", "v" }, sr(g:call("get k", 10)))
    local _, n = leaders_among { f, g }
    assert.equal(1, n)
    local h = P.worker(dir, nil, "sync")
    assert.equal("follower", h.role0)
    assert.same({ "ok", "v" }, sr(h:call("get k")))
    parent = base
    for _, c in ipairs(comps) do
      assert.same({ c }, P.ls(parent), "entries of " .. parent .. " after failover")
      parent = parent .. "/" .. c
    end
    for _, name in ipairs(P.ls(dir)) do
      assert.is_nil(name:match("%.tmp$"), "temporary socket name left behind: " .. name)
    end
  end)

  for _, m in ipairs { { "700", "600" }, { "750", "600" }, { "770", "660" }, { "777", "666" } } do
    it("the socket's mode follows the directory's write bits (dir " .. m[1]
      .. " -> socket " .. m[2] .. ")", function()
      local d = H.tmpdir("perm")
      assert(uv.fs_chmod(d, tonumber(m[1], 8)))
      local l = P.worker(d, nil, "sync")
      assert.equal("leader", l.role0)
      local st = assert(uv.fs_stat(d .. "/" .. SOCK))
      assert.equal("socket", st.type)
      assert.equal(m[2], ("%o"):format(st.mode % 512))
      local f = P.worker(d, nil, "sync")
      assert.equal("follower", f.role0)
    end)
  end

  it("a clean close removes the socket file; the next opener is leader", function()
    local d = H.tmpdir("clean")
    local l = P.worker(d, nil, "sync")
    assert.truthy(uv.fs_stat(d .. "/" .. SOCK))
    assert.equal("ok", (l:call("close")))
    assert.is_nil(uv.fs_stat(d .. "/" .. SOCK))
    assert.same({}, P.lock_owners(d))
    local b = P.worker(d, nil, "sync")
    assert.equal("leader", b.role0)
  end)
end)

describe("retry=false", function()
  for _, followers in ipairs { 1, 2 } do
    it("an op in flight fails with ELEADERLOST, later ops go to the new leader ("
      .. followers .. " follower(s))", function()
      local d = H.tmpdir("noretry")
      local l = P.worker(d, nil, "sync")
      local f = P.worker(d, "{retry=false}", "sync")
      local g = followers == 2 and P.worker(d, nil, "sync") or nil
      assert.equal("ok", (f:call("put k v")))
      l:kill("sigstop")
      P.wait_until(function() return P.state(l.pid) == "T" end, 5, "the leader to stop")
      local id = f:send("!get k")
      P.wait_sent(f, id)
      if g then
        -- g takes over first, so f's new leader is another process: f is
        -- stopped over the election (else, blocked in its get, it sees the
        -- EOF first and wins)
        f:kill("sigstop")
        P.wait_until(function() return P.state(f.pid) == "T" end, 5, "f to stop")
        P.kill_and_wait(l, "sigkill")
        assert.same({ "ok", "v" }, sr(g:call("get k", 10)))
        assert.same({ "ok", "leader" }, sr(g:call("role")))
        f:kill("sigcont")
      else
        P.kill_and_wait(l, "sigkill")
      end
      local status, rest = f:result(id, 10)
      assert.equal("err", status, rest)
      assert.matches("^ELEADERLOST ", rest)
      -- the handle carries on
      assert.same({ "ok", "v" }, sr(f:call("get k", 10)))
      assert.equal("ok", (f:call("put k2 w", 10)))
      assert.same({ "ok", g and "follower" or "leader" }, sr(f:call("role")))
      if g then assert.same({ "ok", "w" }, sr(g:call("get k2"))) end
    end)
  end
end)

describe("election speed", function()
  for _, mode in ipairs { "sync", "async" } do
    it("each of 3 followers is served within 1 s of the leader's SIGKILL (" .. mode .. ")", function()
      local d = H.tmpdir("speed")
      local l = P.worker(d, nil, "sync")
      local fs = {}
      for i = 1, 3 do
        fs[i] = P.worker(d, nil, mode)
        assert.equal("ok", (fs[i]:call("put k" .. i .. " v")))
      end
      l:kill("sigkill")
      local t_kill = P.now()
      local ids = {}
      for i, f in ipairs(fs) do ids[i] = f:send("put after" .. i .. " v") end
      for i, f in ipairs(fs) do
        local status, rest = f:result(ids[i], 10)
        local dt = P.now() - t_kill
        assert.equal("ok", status, rest)
        assert.is_true(dt < 1, ("follower %d served %.3f s after the kill"):format(i, dt))
      end
      local _, n = leaders_among(fs)
      assert.equal(1, n)
    end)
  end
end)

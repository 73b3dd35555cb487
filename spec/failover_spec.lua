-- The party: failover of writes.  The leader dies (SIGKILL, os.exit, a Lua error, a clean
-- close) while followers write; one follower takes over, the others reconnect, requests in
-- flight are replayed in submission order, and every acknowledged write survives (read back by
-- a fresh process).
--
-- Writers are spec/fixtures/lua/writer.lua (blocking mode, "ack <key>" per acknowledged put),
-- workers spec/fixtures/lua/worker.lua, the read-back spec/fixtures/lua/checker.lua.
--
-- Run: make test SPEC=spec/failover_spec.lua
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local function sr(status, rest) return { status, rest } end

-- every test ends with its processes killed and its directories removed
after_each(P.cleanup)

local N_WRITES = 400
local HOLD_AT = 200 -- where the writers of a single kill wait for it (see start_writer)

-- hold_at: the writer stops after that many puts until it reads a line ("go", sent once the
-- leader's end is done), so that a leader ended at an earlier put ends mid-run by
-- construction; a writer that is slower is still writing when it lands.
local function start_writer(d, prefix, opts_lua, hold_at)
  return H.spawn(P.fixtures .. "/writer.lua", { d, prefix, N_WRITES, 2, opts_lua or "{}", hold_at or 0 })
end

-- Keys a writer acknowledged, from its output.
local function acked(proc)
  local out = {}
  for _, l in ipairs(proc.lines) do
    local k = l:match("^ack (%S+)$")
    if k then out[#out + 1] = k end
  end
  return out
end

-- Runs checker.lua (a fresh process) over keys; returns missing keys and values of `show`.
local function read_back(d, keys, show)
  local file = H.tmpdir("keys") .. "/keys"
  local lines = {}
  for _, k in ipairs(keys) do lines[#lines + 1] = k end
  for _, k in ipairs(show or {}) do lines[#lines + 1] = "=" .. k end
  P.write_file(file, table.concat(lines, "\n") .. "\n")
  local c = H.spawn(P.fixtures .. "/checker.lua", { d, file })
  local last = c:wait_line("^checked ", 30)
  local missing, values = {}, {}
  for _, l in ipairs(c.lines) do
    local m = l:match("^missing (%S+)$")
    if m then missing[#missing + 1] = m end
    local k, v = l:match("^value (%S+) (.*)$")
    if k then values[k] = v end
  end
  local n, nmiss = last:match("^checked (%d+) (%d+)")
  assert.equal(#keys + #(show or {}), tonumber(n))
  assert.equal(#missing, tonumber(nmiss))
  return missing, values
end

describe("failover while followers write", function()
  local failures = {
    { "SIGKILL", function(l) l:kill("sigkill") end, nil },
    { "os.exit", function(l) l:send("exit 7") end, { code = 7 } },
    { "a Lua error in a luv callback", function(l) l:send("crash") end, { code_not = 0 } },
    { "a Lua error in the main chunk", function(l) l:send("crashmain") end, { code = 1 } },
    { "a clean db:close() (the process lives on)", function(l)
      assert.equal("ok", (l:call("close")))
    end, { alive = true } },
    { "db:close() then exit", function(l) l:send("closeexit") end, { code = 0 } },
  }
  for _, f in ipairs(failures) do
    it("leader ends by " .. f[1] .. ": one writer takes over, every acked write survives", function()
      local d = H.tmpdir("fo")
      local l = P.worker(d, nil, "sync")
      assert.equal("leader", l.role0)
      local ws = {}
      for i = 1, 3 do
        ws[i] = start_writer(d, "w" .. i .. "-", nil, HOLD_AT)
        assert.matches("^ready follower", (ws[i]:wait_line("^ready ", 20)))
      end
      -- the failure lands while every writer is in mid-run
      for i, w in ipairs(ws) do w:wait_line("^ack w" .. i .. "%-50$", 20) end
      f[2](l)
      local expect = f[3]
      if expect and expect.alive then
        assert.is_true(P.alive(l.pid))
      else
        local code = l:wait_exit(10)
        if expect and expect.code then assert.equal(expect.code, code, l:stderr_text()) end
        if expect and expect.code_not then assert.are_not.equal(expect.code_not, code) end
      end
      for _, w in ipairs(ws) do w:send("go") end
      local leaders, keys = 0, {}
      for i, w in ipairs(ws) do
        local line = w:wait_line("^done ", 120)
        local acks, fails, role = line:match("^done (%d+) (%d+) (%S+)")
        assert.equal("0", fails, "writer " .. i .. " failed puts: " .. table.concat(w.lines, "\n"))
        assert.equal(tostring(N_WRITES), acks)
        if role == "leader" then leaders = leaders + 1 end
        for _, k in ipairs(acked(w)) do keys[#keys + 1] = k end
      end
      assert.equal(1, leaders, "writers that ended as leader")
      assert.equal(3 * N_WRITES, #keys)
      -- the writers go away (the leader among them by SIGKILL: acked means durable
      -- against a process crash), then a fresh process reads everything back
      for _, w in ipairs(ws) do P.kill_and_wait(w, "sigkill") end
      if expect and expect.alive then P.kill_and_wait(l, "sigkill") end
      local missing = read_back(d, keys)
      assert.same({}, missing)
    end)
  end

  it("the leader is itself a writer and is SIGKILLed: every write it acked survives", function()
    local d = H.tmpdir("fo-self")
    local lw = start_writer(d, "L-")
    assert.matches("^ready leader", (lw:wait_line("^ready ", 20)))
    local ws = {}
    for i = 1, 2 do
      ws[i] = start_writer(d, "w" .. i .. "-", nil, HOLD_AT)
      assert.matches("^ready follower", (ws[i]:wait_line("^ready ", 20)))
    end
    for i, w in ipairs(ws) do w:wait_line("^ack w" .. i .. "%-50$", 20) end
    lw:wait_line("^ack L%-50$", 20)
    P.kill_and_wait(lw, "sigkill")
    for _, w in ipairs(ws) do w:send("go") end
    local keys = acked(lw)
    assert.is_true(#keys >= 50)
    local leaders = 0
    for _, w in ipairs(ws) do
      local line = w:wait_line("^done ", 120)
      assert.matches("^done " .. N_WRITES .. " 0 ", line)
      if line:match(" leader$") then leaders = leaders + 1 end
      for _, k in ipairs(acked(w)) do keys[#keys + 1] = k end
    end
    assert.equal(1, leaders)
    for _, w in ipairs(ws) do P.kill_and_wait(w, "sigkill") end
    assert.same({}, read_back(d, keys))
  end)

  it("three successive leaders die in turn: writes keep going, none acked is lost", function()
    local d = H.tmpdir("fo-chain")
    local ls = {}
    for i = 1, 3 do ls[i] = P.worker(d, nil, "sync") end
    assert.equal("leader", ls[1].role0)
    local w = start_writer(d, "w-", nil, 300)
    assert.matches("^ready follower", (w:wait_line("^ready ", 20)))
    local at = { 50, 120, 200 }
    local current = ls[1]
    for round = 1, 3 do
      w:wait_line("^ack w%-" .. at[round] .. "$", 20)
      P.kill_and_wait(current, "sigkill")
      if round < 3 then
        -- the next leader among the remaining workers (or the writer)
        local alive = {}
        for _, x in ipairs(ls) do if not x.exited then alive[#alive + 1] = x end end
        local nxt
        for _, x in ipairs(alive) do
          assert.equal("ok", (x:call("get w-1", 10)))
          if select(2, x:call("role")) == "leader" then nxt = x end
        end
        if not nxt then break end -- the writer itself won: nothing more to kill
        current = nxt
      end
    end
    w:send("go")
    local line = w:wait_line("^done ", 120)
    assert.matches("^done " .. N_WRITES .. " 0 ", line)
    local keys = acked(w)
    P.kill_and_wait(w, "sigkill")
    for _, x in ipairs(ls) do if not x.exited then P.kill_and_wait(x, "sigkill") end end
    assert.same({}, read_back(d, keys))
  end)
end)

describe("requests in flight at the leader's death", function()
  -- The leader is SIGSTOPped, the follower submits many requests that all stay in flight,
  -- then the leader is SIGKILLed: everything is replayed, and the final state is the one of
  -- the submission order.
  for _, other in ipairs { false, true } do
    local how = other and "another follower takes over" or "the submitter is promoted"
    it("are replayed in submission order: put/del/put... ends with the last put (" .. how .. ")", function()
      local d = H.tmpdir("order")
      local l = P.worker(d, nil, "sync")
      local f = P.worker(d, nil, "async")
      local g = other and P.worker(d, nil, "sync") or nil
      assert.equal("ok", (f:call("put K old")))
      l:kill("sigstop")
      P.wait_until(function() return P.state(l.pid) == "T" end, 5, "the leader to stop")
      local id = f:send("!seq K 60")
      P.wait_sent(f, id)
      local id2 = f:send("!burst B 60")
      P.wait_sent(f, id2)
      P.kill_and_wait(l, "sigkill")
      if g then
        assert.equal("ok", (g:call("put other x", 10)))
      end
      local status, rest = f:result(id, 10)
      assert.equal("ok", status, rest)
      assert.equal("0", rest)
      assert.same({ "ok", "60 fails=0" }, sr(f:result(id2, 10)))
      assert.same({ "ok", "a60" }, sr(f:call("get K", 10)))
      -- the reset connection was the party's business: nothing on stderr (luv
      -- printed "EBADF: bad file descriptor" while it polled the socket itself)
      assert.equal("", f:stderr_text())
      local roles = { f = select(2, f:call("role")), g = g and select(2, g:call("role")) }
      if g then
        assert.is_true((roles.f == "leader") ~= (roles.g == "leader"), "exactly one leader")
      else
        assert.equal("leader", roles.f)
      end
      local keys = {}
      for i = 1, 60 do keys[i] = "K." .. i end
      for _, x in ipairs { f, g } do P.kill_and_wait(x, "sigkill") end
      local missing, values = read_back(d, keys, { "K", "B" })
      assert.same({}, missing)
      assert.equal("a60", values.K)
      assert.equal("60", values.B)
    end)
  end
end)

describe("coroutine mode", function()
  it("a follower in this process, with concurrent gets/puts from 8 coroutines, survives a leader kill", function()
    local d = H.tmpdir("coro")
    local l = P.worker(d, nil, "sync")
    local g = P.worker(d, nil, "sync")
    local lp = require "levelparty"
    local roles = {}
    local keys = {}
    H.run_async(function()
      local db = assert(lp.open(d, { on_role = function(r) roles[#roles + 1] = r end }))
      assert.equal("follower", db:role())
      local done, ops, killed, errors = 0, 0, false, {}
      local NCO, NOPS = 8, 150
      for c = 1, NCO do
        local co = coroutine.create(function()
          for i = 1, NOPS do
            local k = ("c%d-%03d"):format(c, i)
            local ok, err, code = db:put(k, k .. "=" .. i)
            if not ok then errors[#errors + 1] = ("put %s: %s %s"):format(k, tostring(code), tostring(err)) end
            local v, gerr, gcode = db:get(k)
            if v ~= k .. "=" .. i then
              errors[#errors + 1] = ("get %s: %s %s %s"):format(k, tostring(v), tostring(gcode), tostring(gerr))
            end
            keys[#keys + 1] = k
            ops = ops + 1
            if ops == 300 and not killed then
              killed = true
              uv.kill(l.pid, "sigkill")
            end
          end
          done = done + 1
        end)
        assert(coroutine.resume(co))
      end
      -- wait (yielding to the loop) for the workers
      local me = coroutine.running()
      local timer = uv.new_timer()
      local deadline = uv.now() + 10000
      timer:start(5, 5, function()
        if done == NCO or uv.now() > deadline then timer:stop() coroutine.resume(me) end
      end)
      coroutine.yield()
      timer:close()
      assert.equal(NCO, done, "coroutines finished")
      assert.is_true(killed)
      assert.same({}, errors)
      assert.equal(NCO * NOPS, #keys)
      if db:role() == "leader" then assert.same({ "leader" }, roles) else assert.same({}, roles) end
      -- keep the db open until g got through (whoever leads now)
      local gid = g:send("get c8-150")
      local timer2 = uv.new_timer()
      local deadline2 = uv.now() + 10000
      timer2:start(5, 5, function()
        local got = false
        for _, line in ipairs(g.lines) do if line:find("^res " .. gid .. " ") then got = true end end
        if got or uv.now() > deadline2 then timer2:stop() coroutine.resume(me) end
      end)
      coroutine.yield()
      timer2:close()
      db:close()
    end, 60)
    l:wait_exit(5)
    assert.same({ "ok", "c8-150=150" }, sr(g:result(g.next_id, 5)))
    P.kill_and_wait(g, "sigkill")
    assert.same({}, read_back(d, keys))
  end)
end)

describe("a new leader", function()
  -- The winner of an election publishes level-party.sock before LevelDB's open, which replays
  -- the dead leader's log: the others connect at once and their requests wait in the kernel
  -- for its server thread, instead of polling for a socket while the open runs.
  it("publishes its socket before LevelDB's open; gets sent meanwhile are answered after it", function()
    local d = H.tmpdir("early")
    local opts = "{ write_buffer_size = 512 * 1024 * 1024 }"
    local l = P.worker(d, opts, "sync")
    -- 24 MiB in the log only (no memtable flush): the next open replays all of it
    assert.equal("ok", (l:call("fillbig 1500 16384", 60)))
    assert.equal("ok", (l:call("put K v", 10)))
    local f, g = P.worker(d, opts, "async"), P.worker(d, opts, "async")
    local sock = d .. "/level-party.sock"
    local old = assert(uv.fs_lstat(sock)).ino
    local function manifests()
      local out = {}
      for _, name in ipairs(P.ls(d)) do
        if name:match("^MANIFEST%-") then out[#out + 1] = name end
      end
      return table.concat(out, " ")
    end
    local before = manifests()
    P.kill_and_wait(l, "sigkill")
    -- the first look that finds another socket: LevelDB has not written its new MANIFEST yet
    local deadline, seen, at_seen = P.now() + 20, nil, nil
    while P.now() < deadline do
      local st = uv.fs_lstat(sock)
      if st and st.ino ~= old then
        seen, at_seen = st.ino, manifests()
        break
      end
      uv.sleep(1)
    end
    assert.is_not_nil(seen, "no new socket within 20 s")
    local idf, idg = f:send("get K"), g:send("get K")
    assert.equal(before, at_seen, "the new socket appeared after LevelDB's open rewrote the MANIFEST")
    assert.same({ "ok", "v" }, sr(f:result(idf, 30)))
    assert.same({ "ok", "v" }, sr(g:result(idg, 30)))
    assert.is_true(manifests() ~= before, "the new leader's open wrote no MANIFEST")
    local _, rf = f:call("role")
    local _, rg = g:call("role")
    local roles = { rf, rg }
    table.sort(roles)
    assert.same({ "follower", "leader" }, roles)
    assert.equal(seen, assert(uv.fs_lstat(sock)).ino)
  end)
end)

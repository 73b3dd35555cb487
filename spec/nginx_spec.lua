-- levelparty in a real nginx (Debian's nginx + libnginx-mod-http-lua): 4 workers on one
-- directory, started under a temporary prefix from examples/nginx/nginx.conf (with
-- spec/fixtures/nginx/test.conf's locations) on a loopback port, stopped by its own pid file.
-- Load comes from a luv HTTP client in this process; signals are real.  The nginx start/stop
-- and HTTP helpers are spec/nginx_helper.lua's (shared with spec/nginx_lifecycle_spec.lua).
--
-- Run: make test SPEC=spec/nginx_spec.lua LUA=luajit
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local NX = require "nginx_helper"

local ROOT = H.root
local read = NX.read
local start_nginx, http, req, load, finish = NX.start, NX.http, NX.req, NX.load, NX.finish
local workers_of, nginx_signal, dechunk, leader_of, check_acked =
  NX.workers_of, NX.signal, NX.dechunk, NX.leader_of, NX.check_acked

local function first_line(cmd)
  local f = io.popen(cmd)
  local s = f:read("*l")
  f:close()
  return s or ""
end

-- Another user (the trust checks of the nginx transport): root and setpriv run
-- spec/fixtures/fake_leader.py as user nobody.
local SETPRIV = first_line("command -v setpriv 2>/dev/null")
local PYTHON
for _, p in ipairs { "/usr/bin/python3", "/usr/local/bin/python3" } do
  if uv.fs_access(p, "X") then PYTHON = p break end
end
local function other_user_missing()
  if uv.getuid() ~= 0 then return "needs root, to run the fake leader as user nobody" end
  if SETPRIV == "" then return "needs setpriv, to run the fake leader as user nobody" end
  if not PYTHON then return "needs python3 for the fake leader" end
end

local describe_nginx = NX.runnable and describe or pending

describe_nginx("nginx", function()
  local n
  after_each(function()
    if n then pcall(n.stop) end
    n = nil
    P.cleanup()
  end)

  it("one leader among the workers; every worker reads what another wrote", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    assert.equal(204, (req(n.port, "PUT", "/kv/shared", "one")))
    local pids, roles = {}, {}
    for _ = 1, 200 do
      local st, b = req(n.port, "GET", "/_lp/role")
      assert.equal(200, st)
      local pid, role = b:match("^(%d+) (%a+)")
      pids[pid] = true
      roles[pid] = role
      local st2, v = req(n.port, "GET", "/kv/shared")
      assert.equal(200, st2)
      assert.equal("one", v)
    end
    local nw, nl = 0, 0
    for pid in pairs(pids) do
      nw = nw + 1
      if roles[pid] == "leader" then nl = nl + 1 end
    end
    assert.is_true(nw >= 2, "requests reached only one worker")
    assert.is_true(nl <= 1)
    assert.equal(1, #P.lock_owners(n.db))
    -- the LOCK's owner is a worker of this nginx (its parent is the master)
    local leader = leader_of(n)
    assert.truthy(read("/proc/" .. leader .. "/stat"):match("^%d+ %b() %a (%d+)") == tostring(n.master()))
  end)

  it("64 concurrent clients, unique-key PUT then GET: nothing lost", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    local s = load(n.port, 64, "c")
    P.wait_until(function() return s.nacked >= 3000 end, 60, "3000 acknowledged puts")
    finish(s)
    assert.same({}, s.fails)
    assert.equal(0, check_acked(n, s))
  end)

  -- /_lp/burst?n=N: N calls at once from one request's light threads (gets of the keys put by
  -- the spec, a put every fifth, and a scan beside them); answers "<pid> <role> bad=<count>"
  local BURST = [[
location = /_lp/burst {
  content_by_lua_block {
    local db = require("kv").db()
    local n, role = tonumber(ngx.var.arg_n), db:role()
    local ths = {}
    for i = 1, n do
      ths[i] = ngx.thread.spawn(function()
        if i % 5 == 0 then return db:put("burst-" .. i, "w" .. i) == true end
        return db:get("b" .. i % 10) == "v" .. i % 10
      end)
    end
    ths[n + 1] = ngx.thread.spawn(function()
      local c = 0
      for _ in db:iter { gte = "b", lt = "b:" } do c = c + 1 end
      return c == 10
    end)
    local bad = 0
    for i = 1, n + 1 do
      local ok, good = ngx.thread.wait(ths[i])
      if not (ok and good) then bad = bad + 1 end
    end
    ngx.say(ngx.worker.pid(), " ", role, " bad=", bad)
  }
}
]]

  -- connections the leader has accepted on dir's socket: /proc/net/unix shows an accepted
  -- socket with its listener's path, connected (state 03)
  local function accepted(dir)
    local c = 0
    for line in io.lines("/proc/net/unix") do
      local st, path = line:match("^%x+: %x+ %x+ %x+ %x+ (%x+) %d+ (.*)$")
      if st == "03" and path and path:sub(1, #dir + 1) == dir .. "/" then c = c + 1 end
    end
    return c
  end

  it("a worker's concurrent calls share one connection to the leader", function()
    n = start_nginx { extra = BURST }
    assert.is_true(n.started, n.log())
    for i = 0, 9 do assert.equal(204, (req(n.port, "PUT", "/kv/b" .. i, "v" .. i))) end
    local bursts = 0
    for _ = 1, 100 do
      local st, b = req(n.port, "GET", "/_lp/burst?n=64")
      assert.equal(200, st, b)
      assert.truthy(b:match(" bad=0\n$"), b)
      if b:match(" follower ") then bursts = bursts + 1 end
      if bursts >= 6 then break end
    end
    assert.is_true(bursts >= 6, "too few bursts reached a follower worker")
    -- one connection per follower worker, whatever its calls in flight: 3 at most (a
    -- connection per call, pooled, would leave up to pool_size = 32 per worker)
    local c = accepted(n.db)
    assert.is_true(c >= 1 and c <= 3, c .. " connections accepted by the leader")
  end)

  it("without a timer for its dispatcher, a worker's calls dispatch in their own request", function()
    -- ngx.timer.at fails as when lua_max_pending_timers is reached
    local notimer = BURST:gsub("/_lp/burst", "/_lp/notimer")
      :gsub("local db = require%(\"kv\"%).db%(%)", 'local db = require("kv").db() '
        .. 'local at = ngx.timer.at ngx.timer.at = function() return nil, "too many pending timers" end')
      :gsub("ngx.say%(ngx.worker.pid%(%)", "ngx.timer.at = at ngx.say(ngx.worker.pid()")
    assert(notimer:match("too many pending timers") and notimer:match("ngx.timer.at = at"))
    n = start_nginx { extra = notimer }
    assert.is_true(n.started, n.log())
    for i = 0, 9 do assert.equal(204, (req(n.port, "PUT", "/kv/b" .. i, "v" .. i))) end
    local followers = 0
    for _ = 1, 100 do
      local st, b = req(n.port, "GET", "/_lp/notimer?n=32")
      assert.equal(200, st, b)
      assert.truthy(b:match(" bad=0\n$"), b)
      if b:match(" follower ") then followers = followers + 1 end
      if followers >= 3 then break end
    end
    assert.is_true(followers >= 3, "too few requests reached a follower worker")
    assert.falsy(n.log():match("dispatcher:"), n.log())
  end)

  it("the leader worker killed -9 under load: every acknowledged write is there", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    req(n.port, "PUT", "/kv/warm", "x")
    local leader = leader_of(n)
    local s = load(n.port, 32, "k")
    P.wait_until(function() return s.nacked >= 500 end, 30, "500 acknowledged puts")
    uv.kill(leader, "sigkill")
    local at = s.nacked
    P.wait_until(function() return s.nacked >= at + 1000 end, 30, "1000 more acknowledged puts")
    finish(s)
    assert.is_true(leader_of(n) ~= leader)
    -- only requests in flight on the killed worker may fail (their connection was reset)
    assert.is_true(#s.fails <= 32, table.concat(s.fails, "\n"))
    assert.equal(0, check_acked(n, s))
  end)

  it("a leader of another uid: every request fails with EACCES, nothing reaches it", function()
    local why = other_user_missing()
    if why then return pending(why) end
    local d = H.tmpdir("ngx-fake")
    assert(uv.fs_chmod(d, 511))
    local f = P.spawn_cmd(SETPRIV, { "--reuid=nobody", "--regid=nogroup", "--clear-groups", PYTHON,
      H.fixtures .. "/fake_leader.py", d })
    local fpid, fuid = f:wait_line("^ready ", 10):match("^ready (%d+) (%d+)")
    n = start_nginx { db = d }
    assert.is_true(n.started, n.log())
    local t0 = P.now()
    for i = 1, 8 do
      local method = i % 2 == 0 and "PUT" or "GET"
      local st, b = req(n.port, method, "/kv/k" .. i, "v")
      assert.equal(503, st, b)
      assert.truthy(b:find("(EACCES)", 1, true), b)
      assert.truthy(b:find("pid " .. fpid .. " running as uid " .. fuid, 1, true), b)
      st, b = req(n.port, "GET", "/kv/?gte=a")
      assert.equal(200, st)
      assert.truthy(b:find('"code":"EACCES"', 1, true), b)
    end
    assert.is_true(P.now() - t0 < 5, "refusals took too long")
    -- the workers connected (their check reads the fake's credentials), then left
    -- without a byte: every connection the fake saw carried nothing
    local conns = {}
    P.wait_until(function()
      conns = {}
      for _, l in ipairs(f.lines) do
        local nb = l:match("^conn %d+ (%d+)$")
        if nb then conns[#conns + 1] = tonumber(nb) end
      end
      return #conns >= 16
    end, 10, "the fake to see the connections close")
    for _, nb in ipairs(conns) do assert.equal(0, nb, table.concat(f.lines, "\n")) end
  end)

  it("the leader stopped 3 s: followers time out at 2 s, static locations stay fast", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    assert.equal(204, (req(n.port, "PUT", "/kv/here", "v")))
    local leader = leader_of(n)
    -- a static location every 20 ms, from before the stop until after it (one that
    -- lands on the stopped leader waits, the next ones do not wait for it)
    local pings, sent = {}, 0
    local timer = uv.new_timer()
    timer:start(0, 20, function()
      local t0 = P.now()
      sent = sent + 1
      http(n.port, "GET", "/ping", nil, function(st, b)
        pings[#pings + 1] = { st = st, pid = tonumber(b and b:match("pong (%d+)")), ms = (P.now() - t0) * 1000,
          t0 = t0 }
      end)
    end)
    P.run_for(200)
    uv.kill(leader, "sigstop")
    local stopped_at = P.now()
    local ok, err = pcall(function()
      P.wait_until(function() return P.state(leader) == "T" end, 5, "the leader to stop")
      local gets = {}
      for i = 1, 12 do
        local t0 = P.now()
        http(n.port, "GET", "/kv/here", nil, function(st, b)
          gets[i] = { st = st, body = b, s = P.now() - t0 }
        end)
      end
      P.wait_until(function() return P.now() - stopped_at >= 3 end, 5, "3 s")
      uv.kill(leader, "sigcont")
      P.wait_until(function()
        for i = 1, 12 do if gets[i] == nil then return false end end
        return true
      end, 10, "every GET to answer")
      local timedout = 0
      for _, g in ipairs(gets) do
        if g.st == 503 then
          -- a follower's: ETIMEDOUT at its timeout (2 s in nginx.conf)
          assert.truthy(g.body:find("(ETIMEDOUT)", 1, true), g.body)
          assert.is_true(g.s >= 1.9 and g.s < 2.6, ("ETIMEDOUT after %.2f s"):format(g.s))
          timedout = timedout + 1
        else
          -- the leader's own, served once it runs again
          assert.equal(200, g.st, g.body)
          assert.is_true(g.s >= 2.8, ("answered after %.2f s while the leader was stopped"):format(g.s))
        end
      end
      assert.is_true(timedout >= 1, "no GET reached a follower")
    end)
    if not ok then uv.kill(leader, "sigcont") end
    P.run_for(200)
    timer:close()
    P.wait_until(function() return #pings == sent end, 10, "every ping to answer")
    assert(ok, err)
    -- every ping a follower answered while the leader was stopped (the leader's
    -- waited for SIGCONT) took < 50 ms.  A loaded machine slows every request,
    -- stopped leader or not: the bound is then twice the slowest follower ping
    -- sent before the stop (same clients, same load).  A follower waiting on the
    -- stopped leader would take its whole 2 s timeout.
    local answered, slow, before = 0, {}, 0
    for _, p in ipairs(pings) do
      if p.pid ~= leader and p.t0 < stopped_at then before = math.max(before, p.ms) end
    end
    local bound = math.max(50, 2 * before)
    for _, p in ipairs(pings) do
      assert.equal(200, p.st)
      if p.pid ~= leader then
        answered = answered + 1
        local into = p.t0 - stopped_at
        if p.ms >= bound and into >= 0 and into < 3 then
          slow[#slow + 1] = ("worker %d: %.1f ms (bound %.0f ms), sent %.2f s into the stop"):format(p.pid,
            p.ms, bound, into)
        end
      end
    end
    assert.is_true(answered >= 80, "only " .. answered .. " pings answered by followers")
    assert.same({}, slow)
    -- nothing failed over, and the leader serves again
    assert.equal(leader, leader_of(n))
    local st, b = req(n.port, "GET", "/kv/here")
    assert.equal(200, st)
    assert.equal("v", b)
  end)

  it("nginx -s reload twice under load (once amid slow requests): nothing fails; -s quit is clean", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    for i = 1, 100 do assert.equal(204, (req(n.port, "PUT", ("/kv/slow-%03d"):format(i), "s"))) end
    local s = load(n.port, 32, "r")
    local function more(k)
      local at = s.nacked
      P.wait_until(function() return s.nacked >= at + k end, 30, k .. " more acknowledged puts")
    end
    -- reload; waits for every old worker to exit (well before worker_shutdown_timeout):
    -- nothing of ours keeps one alive
    local function reload()
      local old = workers_of(n)
      local t0 = P.now()
      nginx_signal(n, "reload")
      P.wait_until(function()
        for pid in pairs(old) do if P.alive(pid) then return false end end
        return true
      end, 8, "the old workers to exit")
      return P.now() - t0
    end
    more(300)
    local took = reload()
    assert.is_true(took < 5, ("old workers took %.1f s to exit"):format(took))
    more(300)
    -- slow requests (about 1.2 s each) on every worker, the leader among them, then a reload
    local old_leader = leader_of(n)
    local slow = {}
    for i = 1, 8 do
      http(n.port, "GET", "/_lp/slow", nil, function(st, b) slow[i] = { st = st, b = b } end)
    end
    P.run_for(300)
    local owner_during
    local old = workers_of(n)
    nginx_signal(n, "reload")
    -- the new workers follow the old leader while it drains
    P.wait_until(function()
      local st, b = req(n.port, "GET", "/_lp/role")
      local pid = st == 200 and tonumber(b:match("^(%d+)"))
      if pid and not old[pid] then owner_during = P.lock_owners(n.db)[1] return true end
    end, 5, "a new worker to answer")
    P.wait_until(function()
      for pid in pairs(old) do if P.alive(pid) then return false end end
      return true
    end, 8, "the old workers to exit")
    P.wait_until(function()
      for i = 1, 8 do if slow[i] == nil then return false end end
      return true
    end, 10, "the slow requests")
    local on_leader = false
    for _, r in ipairs(slow) do
      assert.equal(200, r.st, r.b)
      local cnt, ordered, pid, role = r.b:match("^(%d+) (%a+) (%d+) (%a+)")
      assert.equal("100", cnt, r.b)
      assert.equal("yes", ordered, r.b)
      if tonumber(pid) == old_leader and role == "leader" then on_leader = true end
    end
    if on_leader then assert.equal(old_leader, owner_during) end
    more(300)
    assert.is_true(leader_of(n) ~= old_leader)
    finish(s)
    assert.same({}, s.fails)
    assert.equal(0, check_acked(n, s))
    -- -s quit: the workers close, the leader's socket goes with it, nothing is left locked
    local master, nn = n.master(), n
    nginx_signal(n, "quit")
    P.wait_until(function() return not P.alive(master) end, 15, "nginx to quit")
    n = nil
    assert.is_nil(uv.fs_lstat(nn.db .. "/level-party.sock"))
    assert.same({}, P.lock_owners(nn.db))
    -- no alert, no Lua error (a failover's failed connects and sends to a leader that
    -- left are logged, lua_socket_log_errors notwithstanding)
    for line in nn.log():gmatch("[^\n]+") do
      for _, bad in ipairs { "[alert]", "[emerg]", "runtime error", "entry thread aborted" } do
        assert.is_nil(line:find(bad, 1, true), line)
      end
    end
  end)

  it("a chunked scan of 100k entries across a leader kill: exactly once, in order, both ways", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    local N = 100000
    local st, b = req(n.port, "GET", "/_lp/fill?prefix=scan-&n=" .. N)
    assert.equal(200, st, b)
    -- one scan on a follower; kills the leader once `at` entries have come
    local function scan(reverse, at)
      for _ = 1, 20 do
        local leader = leader_of(n)
        local t = uv.new_tcp()
        local chunks, lines, done, killed, role = {}, 0, false, nil, nil
        t:connect("127.0.0.1", n.port, function(err)
          assert(not err, err)
          -- HTTP/1.1: ngx_lua buffers a whole HTTP/1.0 response (lua_http10_buffering)
          t:write(("GET /_lp/scan?gte=scan-&lt=scan.&reverse=%s HTTP/1.1\r\nHost: lp\r\nConnection: close\r\n\r\n")
            :format(reverse and "1" or "0"))
          t:read_start(function(e, data)
            if data and not e then
              chunks[#chunks + 1] = data
              local _, c = data:gsub("\n", "")
              lines = lines + c
              if role == nil then role = table.concat(chunks):match("\r\n\r\n%x+\r\n%d+ (%a+)\n") end
              if role == "follower" and not killed and lines >= at then
                killed = lines
                uv.kill(leader, "sigkill")
              end
              return
            end
            t:close()
            done = true
          end)
        end)
        if not pcall(P.wait_until, function() return done or role == "leader" end, 30, "the scan") then
          error(("the scan did not end: %d lines, killed at %s; it ends with %q"):format(lines, tostring(killed),
            table.concat(chunks):sub(-200)))
        end
        if role == "leader" then -- served by the leader itself: ask again
          if not done then t:close() end
        else
          return dechunk(table.concat(chunks):match("\r\n\r\n(.*)$")), killed, leader
        end
      end
      error("20 scans in a row landed on the leader")
    end
    for _, reverse in ipairs { false, true } do
      local body, killed, leader = scan(reverse, 20000)
      assert.truthy(killed, "the scan ended before the kill")
      assert.is_true(killed < N / 2, "killed at " .. tostring(killed))
      local i, errors = 0, {}
      for line in body:gmatch("([^\n]*)\n") do
        if i == 0 then
          i = 1 -- "<pid> follower"
        elseif line:match("^END ") or line:match("^ERROR") then
          assert.equal("END " .. N, line)
          i = -1
        else
          local j = reverse and N - i or i - 1
          local want = ("scan-%06d %d"):format(j, j)
          if line ~= want and #errors < 5 then errors[#errors + 1] = ("entry %d: %q, not %q"):format(i, line, want) end
          i = i + 1
        end
      end
      assert.same({}, errors)
      assert.equal(-1, i, "no END line")
      P.wait_until(function() return not P.alive(leader) end, 10, "the old leader to go")
      assert.is_true(leader_of(n) ~= leader)
    end
  end)

  it("a directory whose socket path is over 107 bytes: served and followed, across a kill", function()
    local prefix = H.tmpdir("ngx-long")
    local db = prefix .. "/" .. ("d"):rep(150)
    assert.is_true(#(db .. "/level-party.sock") > 107)
    n = start_nginx { db = db }
    assert.is_true(n.started, n.log())
    assert.equal(204, (req(n.port, "PUT", "/kv/long", "yes")))
    local function every_worker_reads(want)
      local seen, followers = {}, 0
      P.wait_until(function()
        local st, b = req(n.port, "GET", "/_lp/role")
        assert.equal(200, st)
        local pid, role = b:match("^(%d+) (%a+)")
        local st2, v = req(n.port, "GET", "/kv/long")
        assert.equal(200, st2, v)
        assert.equal(want, v)
        if role == "follower" and not seen[pid] then followers = followers + 1 end
        seen[pid] = true
        return followers >= 2
      end, 20, "two followers to answer")
    end
    every_worker_reads("yes")
    assert.truthy(uv.fs_lstat(db .. "/level-party.sock"))
    local leader = leader_of(n)
    uv.kill(leader, "sigkill")
    P.wait_until(function() return not P.alive(leader) end, 10, "the leader to die")
    assert.equal(204, (req(n.port, "PUT", "/kv/long", "still")))
    every_worker_reads("still")
    assert.is_true(leader_of(n) ~= leader)
  end)

  it("the levelparty command joins a directory nginx workers lead", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    assert.equal(204, (req(n.port, "PUT", "/kv/from-http", "written by a worker")))
    local leader = leader_of(n)
    local cli = H.lua .. " " .. ROOT .. "/bin/levelparty " .. n.db
    local function sh(args)
      local f = io.popen(cli .. " " .. args .. " 2>&1; echo \"exit $?\"")
      local out = f:read("*a")
      f:close()
      local body, code = out:match("^(.-)exit (%d+)%s*$")
      return tonumber(code), body
    end
    local code, out = sh("get from-http")
    assert.equal(0, code, out)
    assert.equal("written by a worker\n", out)
    code, out = sh("put from-cli 'written by the command'")
    assert.equal(0, code, out)
    local st, b = req(n.port, "GET", "/kv/from-cli")
    assert.equal(200, st)
    assert.equal("written by the command", b)
    code, out = sh("scan --prefix from- --keys")
    assert.equal(0, code, out)
    assert.equal("from-cli\nfrom-http\n", out)
    code, out = sh("status --json")
    assert.equal(0, code, out)
    assert.matches('"role":"follower"', out, 1, true)
    assert.matches('"leader_pid":' .. leader .. ",", out, 1, true)
    code, out = sh("get no-such-key")
    assert.equal(1, code, out)
    -- the command left as a follower: the worker still leads, and serves
    assert.equal(leader, leader_of(n))
    assert.equal(200, (req(n.port, "GET", "/kv/from-http")))
  end)

  it("a call in the log phase raises a clear error naming the phase", function()
    n = start_nginx()
    assert.is_true(n.started, n.log())
    assert.equal(200, (req(n.port, "GET", "/phase")))
    P.wait_until(function() return n.log():find("PHASEGUARD", 1, true) ~= nil end, 10, "the log line")
    local line = n.log():match("PHASEGUARD[^\n]*")
    assert.truthy(line:find("PHASEGUARD false get: levelparty cannot be called in nginx's 'log' phase", 1, true), line)
  end)

  it("open in init_by_lua raises: nginx refuses to start, saying where to open", function()
    n = start_nginx { init = ("require('levelparty').open(%q)"):format("/tmp/lp-never-" .. uv.os_getpid()) }
    assert.is_false(n.started)
    local log = n.log()
    assert.truthy(log:find("cannot open in nginx's init_by_lua", 1, true), log)
    assert.truthy(log:find("init_worker_by_lua", 1, true), log)
    assert.is_nil(uv.fs_stat("/tmp/lp-never-" .. uv.os_getpid() .. "/LOCK"))
    n = nil
  end)
end)

-- Signals inside an nginx worker reach its main thread only if every thread levelparty
-- starts blocks them (nginx's own thread pool does the same).  A plain Lua leader has the
-- same threads: the server thread, the party's worker thread (a big batch from a
-- coroutine) and LevelDB's background thread (started by the first compaction, here
-- forced from the main thread by small puts over a 64 KiB write buffer).
describe("levelparty's threads in a leader", function()
  after_each(P.cleanup)

  -- signals that must never be delivered to a thread of ours (1..31 but SIGKILL, SIGSTOP,
  -- and the synchronous faults SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV)
  local MUST = { 1, 2, 3, 6, 10, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31 }

  local function blocked(hex, sig)
    local low = tonumber(hex:sub(-8), 16)
    return math.floor(low / 2 ^ (sig - 1)) % 2 == 1
  end

  it("block every asynchronous signal (SigBlk of /proc/<pid>/task/*/status)", function()
    local d = H.tmpdir("sigmask")
    local w = P.worker(d, "{ write_buffer_size = 65536 }", "async")
    assert.equal("leader", w.role0)
    local big = ("x"):rep(70000)
    for i = 1, 4 do assert.equal("ok", (w:call("put big" .. i .. " " .. big))) end
    assert.equal("ok", (w:call("fill 5000 5000"))) -- one batch of 5000 ops: the worker thread
    local others, bad = 0, {}
    for _, tid in ipairs(P.ls("/proc/" .. w.pid .. "/task")) do
      if tonumber(tid) ~= w.pid then
        local st = read("/proc/" .. w.pid .. "/task/" .. tid .. "/status")
        local name, hex = st:match("Name:%s*(%S*)"), st:match("SigBlk:%s*(%x+)")
        others = others + 1
        for _, sig in ipairs(MUST) do
          if not blocked(hex, sig) then
            bad[#bad + 1] = ("thread %s (%s) SigBlk %s: signal %d"):format(tid, name, hex, sig)
            break
          end
        end
      end
    end
    -- the server thread, the worker thread and LevelDB's background thread at least
    assert.is_true(others >= 3, "only " .. others .. " threads besides the main one")
    assert.same({}, bad)
  end)
end)

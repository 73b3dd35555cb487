-- Whom a follower trusts, and what a process of another
-- user meets in a shared directory (docs/RELIABILITY.md, "Trust model").
--
-- Other users are played by `setpriv --reuid=nobody --regid=nogroup --clear-groups`, so
-- most tests need root and setpriv; without them they are pending, with the reason.  The
-- fake leader (fixtures/fake_leader.py, run by python3) is any local user's program: it
-- takes the LOCK with a plain fcntl lock, publishes level-party.sock, records every byte it
-- receives and never answers.  Every wait is bounded.
--
-- Run: make test SPEC=spec/trust_spec.lua LUA=5.4
package.path = "./spec/?.lua;" .. package.path
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local SOCK = "level-party.sock"
local FAKE = H.fixtures .. "/fake_leader.py"
local MODE_0777, MODE_0755, MODE_0600 = 511, 493, 384

local function first_line(cmd)
  local f = io.popen(cmd)
  local s = f:read("*l")
  f:close()
  return s
end

local ME = tonumber(first_line("id -u"))
local SETPRIV = first_line("command -v setpriv 2>/dev/null")
if SETPRIV == "" then SETPRIV = nil end
-- a python3 that user nobody can run (not a shim under root's home)
local PYTHON
for _, p in ipairs { "/usr/bin/python3", "/usr/local/bin/python3" } do
  if uv.fs_access(p, "X") then PYTHON = p break end
end
local CLK_TCK = tonumber(first_line("getconf CLK_TCK")) or 100

local function other_user_missing()
  if ME ~= 0 then return "needs root, to run processes as user nobody" end
  if not SETPRIV then return "needs setpriv, to run processes as user nobody" end
end

-- A test that plays another user (needs.python: also runs the fake leader).
local function test(name, body, needs)
  it(name, function()
    local why = (not (needs and needs.root == false)) and other_user_missing()
    if not why and needs and needs.python and not PYTHON then why = "needs python3 for the fake leader" end
    if why then
      pending(why)
      return
    end
    finally(P.cleanup)
    body()
  end)
end

local AS_NOBODY = { "--reuid=nobody", "--regid=nogroup", "--clear-groups" }

--- fixtures/fake_leader.py on dir as user nobody; waits until it holds the LOCK (and
-- listens, unless "nosock").  Fields fpid, fuid.
local function fake(dir, nosock)
  local args = { AS_NOBODY[1], AS_NOBODY[2], AS_NOBODY[3], PYTHON, FAKE, dir, nosock and "nosock" or nil }
  local p = P.spawn_cmd(SETPRIV, args)
  local pid, uid = p:wait_line("^ready ", 10):match("^ready (%d+) (%d+)")
  p.fpid, p.fuid = tonumber(pid), tonumber(uid)
  return p
end

--- Bytes each closed connection carried to the fake, in order.
local function carried(f)
  local out = {}
  for _, l in ipairs(f.lines) do
    local n = l:match("^conn %d+ (%d+)$")
    if n then out[#out + 1] = tonumber(n) end
  end
  return out
end

local function nobody(dir, opts_lua, mode)
  return P.worker_as("nobody", "nogroup", dir, opts_lua, mode or "sync")
end

--- Waits for a worker's failed open: code, message, seconds it took from t0.
local function openfail(w, t0, timeout)
  local line = w:wait_line("^openfail ", timeout or 15)
  local code, msg = line:match("^openfail (%S+) (.*)$")
  return code, msg, P.now() - t0
end

--- CPU seconds (user + system) pid used so far.
local function cpu(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("*a")
  f:close()
  local fields = {}
  for w in s:match("^%d+ %b() (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK -- utime, stime (stat fields 14, 15)
end

--- True once every thread of pid is stopped (SIGSTOP stops the threads one by one).
local function stopped(pid)
  local tasks = P.ls("/proc/" .. pid .. "/task")
  for _, t in ipairs(tasks) do
    local f = io.open("/proc/" .. pid .. "/task/" .. t .. "/stat")
    local st = f and f:read("*a"):match("^%d+ %b() (%S)")
    if f then f:close() end
    if st ~= nil and st ~= "T" then return false end
  end
  return #tasks > 0
end

local function has(s, sub) return s ~= nil and s:find(sub, 1, true) ~= nil end

local function count(s, sub)
  local n, i = 0, 1
  while true do
    local j = s:find(sub, i, true)
    if not j then return n end
    n, i = n + 1, j + #sub
  end
end

describe("a follower checks who serves the socket", function()
  test("a fake leader of another uid, there first, is refused at open and receives nothing", function()
    local d = H.tmpdir("fake-first")
    assert(uv.fs_chmod(d, MODE_0777))
    local f = fake(d)
    for _, mode in ipairs { "sync", "async" } do
      local t0 = P.now()
      local code, msg, took = openfail(P.worker_nowait(d, nil, mode), t0)
      assert.equal("EACCES", code, msg)
      assert.is_true(has(msg, "uid " .. f.fuid), msg)
      assert.is_true(has(msg, "pid " .. f.fpid), msg)
      assert.is_true(took < 5, ("open took %.1f s"):format(took))
    end
    -- the fake saw both followers connect, check it and leave without a byte
    P.wait_until(function() return #carried(f) >= 2 end, 10, "both connections to close")
    assert.same({ 0, 0 }, carried(f))
  end, { python = true })

  for _, mode in ipairs { "sync", "async" } do
    test("a fake that takes the LOCK and socket of a dead leader is refused at the reconnect (" .. mode .. ")",
      function()
        local d = H.tmpdir("fake-after")
        assert(uv.fs_chmod(d, MODE_0777))
        local a = P.worker(d, nil, "sync")
        local b = P.worker(d, nil, mode)
        assert.equal("follower", b.role0)
        assert.equal("ok", (b:call("put before 1")))
        -- a request in flight when the leader dies, and the survivor held still until the
        -- fake has the LOCK and the socket
        a:kill("sigstop")
        P.wait_until(function() return stopped(a.pid) end, 5, "the leader to stop")
        local id = b:send("!put secret hunter2")
        P.wait_sent(b, id)
        b:kill("sigstop")
        P.wait_until(function() return stopped(b.pid) end, 5, "the follower to stop")
        P.kill_and_wait(a, "sigkill")
        local f = fake(d)
        assert.same({ f.fpid }, P.lock_owners(d))
        b:kill("sigcont")
        local status, rest = b:result(id, 5)
        assert.equal("err", status, rest)
        assert.matches("^EACCES ", rest)
        assert.is_true(has(rest, "uid " .. f.fuid), rest)
        assert.is_true(has(rest, "pid " .. f.fpid), rest)
        -- the next call elects again and is refused again, at once
        status, rest = b:call("get secret", 5)
        assert.equal("err", status, rest)
        assert.matches("^EACCES ", rest)
        -- nothing reached the fake, and the refused follower idles
        P.wait_until(function() return #carried(f) >= 2 end, 10, "the follower's connections to close")
        for _, n in ipairs(carried(f)) do assert.equal(0, n) end
        local c0, t0 = cpu(b.pid), P.now()
        P.run_for(500)
        assert.is_true(cpu(b.pid) - c0 < 0.2 * (P.now() - t0), "the refused follower spins")
        local st, role = b:call("role")
        assert.same({ "ok", "follower" }, { st, role })
      end, { python = true })
  end

  test("allowed: a leader and a follower of the same (non-root) uid", function()
    local d = H.tmpdir("same-uid")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = nobody(d)
    assert.equal("leader", a:ready())
    local b = nobody(d, nil, "async")
    assert.equal("follower", b:ready())
    assert.equal("ok", (b:call("put k v")))
    local status, v = a:call("get k")
    assert.same({ "ok", "v" }, { status, v })
  end)

  test("allowed: a root follower of a leader that owns the directory and its LOCK", function()
    local d = H.tmpdir("owner")
    assert(uv.fs_chown(d, 65534, 65534))
    -- the leader serves other users (leader side); the follower needs nothing: the leader
    -- owns the directory and the LOCK
    local a = nobody(d, "{ allow_other_users = true }")
    assert.equal("leader", a:ready())
    local b = P.worker(d, nil, "sync")
    assert.equal("follower", b.role0)
    assert.equal("ok", (b:call("put k v")))
    local status, v = a:call("get k")
    assert.same({ "ok", "v" }, { status, v })
  end)

  test("allowed: allow_other_users = true follows a leader of another uid, and only then", function()
    local d = H.tmpdir("allow")
    assert(uv.fs_chmod(d, MODE_0777))
    -- nobody leads in root's directory: the LOCK is nobody's, the directory root's
    local a = nobody(d, "{ allow_other_users = true }")
    assert.equal("leader", a:ready())
    local code, msg = openfail(P.worker_nowait(d, nil, "sync"), P.now())
    assert.equal("EACCES", code, msg)
    assert.is_true(has(msg, "uid 65534") and has(msg, "pid " .. a.pid), msg)
    assert.is_true(has(msg, "allow_other_users"), msg)
    local b = P.worker(d, "{ allow_other_users = true }", "sync")
    assert.equal("follower", b.role0)
    assert.equal("ok", (b:call("put k v")))
    local status, v = a:call("get k")
    assert.same({ "ok", "v" }, { status, v })
  end)

  test("a LOCK held by another user's process that serves no socket: EACCES at once, not ELOCKED", function()
    local d = H.tmpdir("planted")
    assert(uv.fs_chmod(d, MODE_0777))
    local f = fake(d, true)
    local code, msg, took = openfail(P.worker_nowait(d, "{ open_timeout = 5 }", "sync"), P.now())
    assert.equal("EACCES", code, msg)
    assert.is_true(has(msg, d .. "/LOCK") and has(msg, "uid 65534") and has(msg, "pid " .. f.fpid), msg)
    assert.is_true(took < 3, ("open took %.1f s"):format(took))
  end, { python = true })
end)

describe("another uid in a shared directory", function()
  test("item 3: a peer the leader refuses gets EACCES at open; the leader logs it once a minute", function()
    local d = H.tmpdir("refused")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = P.worker(d, nil, "sync") -- root, who owns the directory: the followers trust it
    for _, o in ipairs { { "{}", "sync" }, { "{}", "async" }, { "{ allow_other_users = true }", "sync" } } do
      local t0 = P.now()
      local code, msg, took = openfail(nobody(d, o[1], o[2]), t0)
      assert.equal("EACCES", code, msg)
      assert.is_true(has(msg, "pid " .. a.pid) and has(msg, "uid 0") and has(msg, "uid 65534"), msg)
      assert.is_true(took < 5, ("open took %.1f s"):format(took))
    end
    -- 100 more refused connections of the same uid: no more lines
    -- (each connects, then waits for the leader to close the connection)
    local connect = ("local u = require 'luv' local p = u.new_pipe() p:connect('%s/%s', function(e) " ..
      "if e then os.exit(1) end p:read_start(function() os.exit(0) end) end) u.run() os.exit(2)"):format(d, SOCK)
    local burst = P.spawn_cmd(SETPRIV, { AS_NOBODY[1], AS_NOBODY[2], AS_NOBODY[3], "/bin/sh", "-c",
      "for i in $(seq 100); do " .. H.lua .. " -e \"" .. connect .. "\" || exit 1; done; echo done" })
    burst:wait_line("^done$", 60)
    local log = a:stderr_text()
    assert.equal(1, count(log, "refused peer"), log)
    assert.is_true(has(log, "uid 65534"), log)
    assert.equal("ok", (a:call("put still serving")))
  end)

  test("item 3: a follower whose new leader refuses it fails its calls with EACCES, no loop", function()
    local d = H.tmpdir("refused-later")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = P.worker(d, "{ allow_other_users = true }", "sync")
    local n = nobody(d, "{ allow_other_users = true }", "sync")
    assert.equal("follower", n:ready())
    assert.equal("ok", (n:call("put k v")))
    -- the next leader serves its own uid only; nobody cannot lead (root's LOCK)
    local b = P.worker(d, nil, "async")
    P.kill_and_wait(a, "sigkill")
    P.wait_role(b, "leader", 10)
    local status, rest = n:call("put k2 v", 10)
    assert.equal("err", status, rest)
    assert.matches("^EACCES ", rest)
    assert.is_true(has(rest, "pid " .. b.pid), rest)
    local c0, t0 = cpu(n.pid), P.now()
    P.run_for(500)
    assert.is_true(cpu(n.pid) - c0 < 0.2 * (P.now() - t0), "the refused follower spins")
    assert.is_true(count(b:stderr_text(), "refused peer") <= 1, b:stderr_text())
  end)

  test("item 4: a follower that can neither lead nor follow waits idle, then fails with EACCES", function()
    local d = H.tmpdir("neither")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = P.worker(d, "{ allow_other_users = true }", "sync")
    local n = nobody(d, "{ allow_other_users = true, open_timeout = 1 }", "sync")
    assert.equal("follower", n:ready())
    assert.equal("ok", (n:call("put k v")))
    P.kill_and_wait(a, "sigkill") -- the LOCK is free; nobody may not write it
    local c0, t0 = cpu(n.pid), P.now()
    local status, rest = n:call("put k2 v", 10)
    local took, used = P.now() - t0, cpu(n.pid) - c0
    assert.equal("err", status, rest)
    assert.matches("^EACCES ", rest)
    assert.is_true(has(rest, d .. "/LOCK"), rest)
    assert.is_true(took < 4, ("the call took %.1f s"):format(took))
    assert.is_true(used < 0.2 * took + 0.05, ("%.2f s of CPU in %.2f s"):format(used, took))
    -- idle afterwards, with luv's loop running
    c0, t0 = cpu(n.pid), P.now()
    P.run_for(500)
    assert.is_true(cpu(n.pid) - c0 < 0.2 * (P.now() - t0), "the follower spins")
    -- and a new opener in the same plight fails at once
    local code, msg, otook = openfail(nobody(d, "{ allow_other_users = true }", "async"), P.now())
    assert.equal("EACCES", code, msg)
    assert.is_true(has(msg, d .. "/LOCK"), msg)
    assert.is_true(otook < 3, ("open took %.1f s"):format(otook))
  end)

  test("item 5: another uid's open of a 0755 directory fails at once, naming the socket", function()
    local d = H.tmpdir("0755")
    assert(uv.fs_chmod(d, MODE_0755))
    local a = P.worker(d, "{ allow_other_users = true }", "sync")
    assert.equal("leader", a.role0)
    local code, msg, took = openfail(nobody(d, "{ allow_other_users = true, open_timeout = 5 }"), P.now())
    assert.equal("EACCES", code, msg)
    assert.is_true(has(msg, d .. "/" .. SOCK) and has(msg, "uid 0"), msg)
    assert.is_true(took < 3, ("open took %.1f s"):format(took))
  end)

  test("item 5: an open by another uid never touches the leader's LOG", function()
    local d = H.tmpdir("log")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = P.worker(d, "{ allow_other_users = true }", "sync")
    assert.equal("ok", (a:call("put k v")))
    assert(uv.fs_chmod(d .. "/LOCK", MODE_0600)) -- as a leader with umask 077 makes it
    local log = assert(uv.fs_stat(d .. "/LOG"))
    local n = nobody(d, "{ allow_other_users = true }")
    assert.equal("follower", n:ready())
    assert.equal(log.ino, assert(uv.fs_stat(d .. "/LOG")).ino)
    assert.is_nil(uv.fs_stat(d .. "/LOG.old"))
    local status, v = n:call("get k")
    assert.same({ "ok", "v" }, { status, v })
  end)

  test("item 5: a LOCK this uid may not read, and no leader: EACCES saying so, LOG untouched", function()
    local d = H.tmpdir("unreadable")
    assert(uv.fs_chmod(d, MODE_0777))
    local a = P.worker(d, nil, "sync")
    assert.equal("ok", (a:call("put k v")))
    P.kill_and_wait(a, "sigkill")
    assert(uv.fs_chmod(d .. "/LOCK", MODE_0600))
    local log = assert(uv.fs_stat(d .. "/LOG"))
    local code, msg = openfail(nobody(d, "{ open_timeout = 0.5 }"), P.now())
    assert.equal("EACCES", code, msg)
    assert.is_true(has(msg, d .. "/LOCK") and has(msg, "uid 65534"), msg)
    assert.equal(log.ino, assert(uv.fs_stat(d .. "/LOG")).ino)
    assert.is_nil(uv.fs_stat(d .. "/LOG.old"))
  end)

  test("item 5: a LOCK held by a holder we cannot name: no leveldb_open, LOG untouched", function()
    local d = H.tmpdir("ofd")
    local w = P.worker(d, nil, "sync")
    assert.equal("ok", (w:call("closeexit")))
    w:wait_exit(10)
    local log = assert(uv.fs_stat(d .. "/LOG"))
    -- an open-file-description lock shows as l_pid -1: held, by whom we cannot tell
    local holder = P.spawn_cmd(PYTHON, { "-c", [[
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.read()
]], d .. "/LOCK" })
    holder:wait_line("^locked$", 10)
    local code, msg = openfail(P.worker_nowait(d, "{ open_timeout = 0.5 }", "sync"), P.now())
    assert.equal("ELOCKED", code, msg)
    assert.equal(log.ino, assert(uv.fs_stat(d .. "/LOG")).ino)
    assert.is_nil(uv.fs_stat(d .. "/LOG.old"))
  end, { root = false, python = true })
end)

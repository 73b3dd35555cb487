-- spec/party_helper.lua: what the multi-process party specs share.
--
-- Built on spec/helper.lua (processes, tmpdirs, cleanup); adds:
--   P.worker(dir, opts_lua, mode)   a stdin-driven worker (fixtures/lua/worker.lua), waits for
--                                   its "ready" line; w:call(cmd, timeout) -> status, rest, ms
--   P.worker_as(user, group, ...)   P.worker_nowait as another user (root only, setpriv)
--   P.wait_role(proc, role, t)      waits for a "role <role>" line from a worker/writer
--   P.lock_owners(dir)              pids holding a POSIX lock on dir/LOCK (from /proc/locks)
--   P.alive(pid)                    true while pid exists (and is no zombie)
--   P.wait_exit(proc, t)            waits for a child to exit and reaps it
--   P.raw_connect(path)             a raw unix-socket client from the spec process (luv pipe)
--   P.shapes                        the iterator shapes shared with the streamer fixture
-- Every wait is bounded; nothing sleeps for a fixed time to let something happen.

local uv = require "luv"
local helper = require "helper"

local P = {}
P.helper = helper
P.fixtures = helper.fixtures .. "/lua"
P.shapes = dofile(P.fixtures .. "/shapes.lua")

--- Seconds (float) since an arbitrary origin.
function P.now() return uv.hrtime() / 1e9 end

-- Workers ------------------------------------------------------------------------------------

local Worker = {}
Worker.__index = function(w, k)
  local m = Worker[k]
  if m ~= nil then return m end
  -- fall through to the proc (wait_line, kill, pid, lines, ...)
  local v = w.proc[k]
  if type(v) == "function" then return function(self, ...) return v(self.proc, ...) end end
  return v
end

--- Starts fixtures/lua/worker.lua on dir.  mode: "async" (default: every command runs in its
-- own coroutine under luv) or "sync" (commands block the process).  Waits for "ready".
function P.worker(dir, opts_lua, mode, timeout)
  local proc = helper.spawn(P.fixtures .. "/worker.lua", { dir, mode or "async", opts_lua or "{}" })
  local w = setmetatable({ proc = proc, next_id = 0 }, Worker)
  local line = proc:wait_line("^ready ", timeout or 20)
  w.role0 = line:match("^ready (%S+)")
  w.pid = proc.pid
  return w
end

--- Starts workers without waiting; returns them (call w:ready() later).
function P.worker_nowait(dir, opts_lua, mode)
  local proc = helper.spawn(P.fixtures .. "/worker.lua", { dir, mode or "async", opts_lua or "{}" })
  return setmetatable({ proc = proc, next_id = 0, pid = proc.pid }, Worker)
end

--- P.worker_nowait run as another user and group (names), through
-- `setpriv --reuid --regid --clear-groups` (root only); the pid is the worker's.
function P.worker_as(user, group, dir, opts_lua, mode)
  local lua = helper.lua
  helper.lua = "setpriv" -- helper.spawn runs helper.lua with the script first
  local ok, proc = pcall(helper.spawn, "--reuid=" .. user, { "--regid=" .. group, "--clear-groups", lua,
    P.fixtures .. "/worker.lua", dir, mode or "async", opts_lua or "{}" })
  helper.lua = lua
  assert(ok, proc)
  return setmetatable({ proc = proc, next_id = 0, pid = proc.pid }, Worker)
end

function Worker:ready(timeout)
  local line = self.proc:wait_line("^ready ", timeout or 20)
  self.role0 = line:match("^ready (%S+)")
  return self.role0
end

--- Sends a command without waiting; returns its id (for w:result(id)).
function Worker:send(cmd)
  self.next_id = self.next_id + 1
  local id = self.next_id
  self.proc:send(id .. " " .. cmd)
  return id
end

--- Waits for the reply to command id: returns status ("ok", "nil", "err"), rest, ms.
function Worker:result(id, timeout)
  local line = self.proc:wait_line("^res " .. id .. " ", timeout or 20)
  local ms, status, rest = line:match("^res %d+ (%S+) (%S+) ?(.*)$")
  return status, rest, tonumber(ms)
end

--- Sends cmd and waits for its reply.
function Worker:call(cmd, timeout)
  return self:result(self:send(cmd), timeout)
end

--- Waits for "role <role>" printed (by on_role) after line index `from`.
function P.wait_role(proc, role, timeout, from)
  return proc:wait_line("^role " .. role .. "$", timeout or 10, from)
end

--- All "role X" lines a process printed, in order.
function P.roles(proc)
  local out = {}
  for _, l in ipairs(proc.lines) do
    local r = l:match("^role (%S+)$")
    if r then out[#out + 1] = r end
  end
  return out
end

-- Processes ----------------------------------------------------------------------------------

function P.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("*a") or ""
  f:close()
  local state = s:match("^%d+ %b() (%S)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- Process state letter (R, S, T for stopped, ...) or nil.
function P.state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("*a") or ""
  f:close()
  return s:match("^%d+ %b() (%S)")
end

--- The number of the system call pid sleeps in (false when it runs, nil when there
-- is no such process), and this machine's number for recvfrom.
local arch = (io.popen("uname -m"):read("*l"))
function P.syscall(pid)
  local f = io.open("/proc/" .. pid .. "/syscall")
  if not f then return nil end
  local n = f:read("*n")
  f:close()
  return n or false
end
P.RECVFROM = ({ x86_64 = 45, aarch64 = 207 })[arch]

--- True when pid sleeps in poll/epoll or recvfrom (x86_64 and arm64 syscall numbers):
-- a blocking levelparty call that printed "sent" and then sleeps there has submitted
-- its request (a follower's blocking call waits for its reply in one recv).
local POLL_SYSCALLS = ({
  x86_64 = { [7] = true, [271] = true, [232] = true, [281] = true, [441] = true },
  aarch64 = { [73] = true, [22] = true, [441] = true },
})[arch]
if POLL_SYSCALLS then POLL_SYSCALLS[P.RECVFROM] = true end
function P.in_poll(pid)
  local n = P.syscall(pid)
  if n == nil then return false end
  if not POLL_SYSCALLS then return true end -- unknown arch: rely on the "sent" line alone
  return POLL_SYSCALLS[n] == true
end

--- After w:send("!cmd"): waits for "sent <id>", then until the worker sleeps waiting (P.in_poll).
function P.wait_sent(w, id, timeout)
  w:wait_line("^sent " .. id .. "$", timeout or 10)
  helper.wait_until(function() return P.in_poll(w.pid) end, timeout or 10, "pid " .. w.pid .. " to wait for its reply")
end

--- Sends sig and waits until the child has exited (reaped by luv).
function P.kill_and_wait(proc, sig, timeout)
  proc:kill(sig or "sigkill")
  return proc:wait_exit(timeout or 10)
end

--- Pids holding a POSIX lock on dir/LOCK (inode match in /proc/locks).
function P.lock_owners(dir)
  local st = uv.fs_stat(dir .. "/LOCK")
  if not st then return {} end
  local owners = {}
  local f = assert(io.open("/proc/locks"))
  for line in f:lines() do
    -- "1: POSIX  ADVISORY  WRITE 12345 08:01:123456 0 EOF"
    local kind, pid, ino = line:match("^%d+:%s+(%S+)%s+%S+%s+%S+%s+(%d+)%s+%x+:%x+:(%d+)")
    if kind == "POSIX" and tonumber(ino) == st.ino then owners[#owners + 1] = tonumber(pid) end
  end
  f:close()
  table.sort(owners)
  return owners
end

--- Waits until pred() holds (runs the loop meanwhile), bounded.
P.wait_until = helper.wait_until

--- Runs the loop for about ms milliseconds (for measuring that nothing happens, never for
-- waiting that something happens).
function P.run_for(ms)
  local done = false
  local t = uv.new_timer()
  t:start(ms, 0, function() done = true end)
  while not done do uv.run("once") end
  t:close()
  uv.run("nowait")
end

-- Other commands -----------------------------------------------------------------------------

local extra_procs = {}

--- Spawns any command (not the Lua interpreter) with line-based stdout, like helper.spawn;
-- killed by P.cleanup.
function P.spawn_cmd(file, args)
  local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local p = { lines = {}, err = {}, exited = false, buf = "" }
  local handle, pid = uv.spawn(file, { args = args or {}, stdio = { stdin, stdout, stderr } },
    function(code, signal) p.exited, p.code, p.signal = true, code, signal end)
  assert(handle, pid)
  p.handle, p.pid, p.stdin, p.stdout, p.stderr = handle, pid, stdin, stdout, stderr
  stdout:read_start(function(_, data)
    if data then
      p.buf = p.buf .. data
      for line in p.buf:gmatch("([^\n]*)\n") do p.lines[#p.lines + 1] = line end
      p.buf = p.buf:match("[^\n]*$")
    end
  end)
  stderr:read_start(function(_, data) if data then p.err[#p.err + 1] = data end end)
  function p.wait_line(_, pattern, timeout)
    local found
    helper.wait_until(function()
      for _, l in ipairs(p.lines) do if l:find(pattern) then found = l return true end end
      return p.exited
    end, timeout or 10, "line /" .. pattern .. "/ from " .. file)
    if not found then error(file .. " exited before printing /" .. pattern .. "/: " .. table.concat(p.err)) end
    return found
  end
  extra_procs[#extra_procs + 1] = p
  return p
end

--- Kills what P.spawn_cmd started, then helper.cleanup().
function P.cleanup()
  for i = #extra_procs, 1, -1 do
    local p = extra_procs[i]
    if not p.exited then
      uv.kill(p.pid, "sigkill")
      pcall(helper.wait_until, function() return p.exited end, 5)
    end
    for _, h in ipairs { p.stdin, p.stdout, p.stderr, p.handle } do
      if h and not h:is_closing() then h:close() end
    end
    extra_procs[i] = nil
  end
  -- a child stopped with SIGSTOP dies of SIGKILL too: helper.cleanup covers the rest
  helper.cleanup()
end

-- Raw clients --------------------------------------------------------------------------------

--- Connects a luv pipe to a unix socket path.  Returns a conn with fields closed, data, err
-- and methods write(bytes), close().  Waits (bounded) for the connection.
function P.raw_connect(path, timeout)
  local pipe = uv.new_pipe(false)
  local c = { pipe = pipe, data = {}, closed = false, connected = false }
  local cerr
  pipe:connect(path, function(err)
    if err then cerr = err return end
    c.connected = true
    pipe:read_start(function(rerr, chunk)
      if rerr then c.err = rerr c.closed = true return end
      if chunk then c.data[#c.data + 1] = chunk else c.closed = true end
    end)
  end)
  helper.wait_until(function() return c.connected or cerr ~= nil end, timeout or 5, "raw connect")
  if cerr then pipe:close() error("raw connect to " .. path .. ": " .. cerr) end
  function c.write(bytes)
    if c.closed then return end
    pipe:write(bytes, function(err) if err then c.werr = err end end)
  end
  function c.close() if not pipe:is_closing() then pipe:close() end end
  return c
end

--- Unsigned LEB128.
function P.varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor((n - b) / 128)
    out[#out + 1] = string.char(math.floor(n > 0 and b + 128 or b))
  until n == 0
  return table.concat(out)
end

--- A frame: varint(len(payload)) payload.
function P.frame(payload) return P.varint(#payload) .. payload end

-- Files --------------------------------------------------------------------------------------

function P.write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

--- Directory entries (names) of path.
function P.ls(path)
  local out = {}
  local req = uv.fs_scandir(path)
  if not req then return out end
  while true do
    local name = uv.fs_scandir_next(req)
    if not name then break end
    out[#out + 1] = name
  end
  table.sort(out)
  return out
end

function P.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  local h = math.floor(n / 2)
  if n % 2 == 1 then return s[h + 1] end
  return (s[h] + s[h + 1]) / 2
end

return P

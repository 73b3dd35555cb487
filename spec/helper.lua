-- spec/helper.lua: what every spec shares.
--
--   helper.tmpdir()                 a fresh directory under /tmp, removed by helper.cleanup()
--   helper.open(dir, opts)          opens the db under test.  With LEVELPARTY_SPEC_ROLE=follower
--                                   a leader process is started on dir first, so the handle
--                                   under test is a follower in a second process
--   helper.spawn(script, args, env) a child process (lua fixture) with line-based stdout,
--                                   returning a proc object: proc:wait_line(pattern, timeout),
--                                   proc:kill(sig), proc:wait_exit(timeout), proc.pid
--   helper.run_async(fn, timeout)   runs fn in a coroutine under uv.run(), fails on timeout,
--                                   re-raises errors with the coroutine's traceback
--   helper.role                     "leader" or "follower" (what helper.open gives)
--
-- Specs run under mk/luaenv.sh (`make test SPEC=spec/x_spec.lua [LUA=5.4|luajit]`),
-- the one place that puts lua/, spec/ and build/<variant>/ on the module paths
-- and names the interpreter (LEVELPARTY_LUA); a spec requires its helpers by
-- name and sets no path itself.  Child processes are started with the same
-- interpreter and module paths (LEVELPARTY_LUA, LUA_PATH*, LUA_CPATH*), and
-- every child still alive at cleanup is SIGKILLed.

local uv = require "luv"

local helper = {}

helper.lua = os.getenv("LEVELPARTY_LUA") or "lua5.4"
helper.role = os.getenv("LEVELPARTY_SPEC_ROLE") == "follower" and "follower" or "leader"
helper.root = os.getenv("LEVELPARTY_ROOT") or "."
helper.fixtures = helper.root .. "/spec/fixtures"

local dirs, procs = {}, {}

function helper.tmpdir(tag)
  local name = os.tmpname() -- creates a file: replace it by a directory
  os.remove(name)
  name = name .. "-lp" .. (tag and ("-" .. tag) or "")
  assert(uv.fs_mkdir(name, 493))
  dirs[#dirs + 1] = name
  return name
end

local function rm_rf(path)
  os.execute("rm -rf '" .. path:gsub("'", "'\\''") .. "'")
end

-- Runs the loop until pred() is true or timeout (seconds) passes.
function helper.wait_until(pred, timeout, what)
  local deadline = uv.hrtime() + (timeout or 10) * 1e9
  local timer = uv.new_timer()
  timer:start(10, 10, function() end)
  while not pred() do
    if uv.hrtime() > deadline then
      timer:close()
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    uv.run("once")
  end
  timer:close()
  uv.run("nowait")
end

local Proc = {}
Proc.__index = Proc

function helper.spawn(script, args, env)
  local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local p = setmetatable({ lines = {}, err = {}, exited = false, stdin = stdin, buf = "" }, Proc)
  local fullenv = {}
  for _, k in ipairs { "PATH", "HOME", "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4",
    "LEVELPARTY_LUA", "LEVELPARTY_ROOT", "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do
    local v = os.getenv(k)
    if v then fullenv[#fullenv + 1] = k .. "=" .. v end
  end
  for k, v in pairs(env or {}) do fullenv[#fullenv + 1] = k .. "=" .. v end
  local argv = { script }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = tostring(a) end
  local handle, pid = uv.spawn(helper.lua, { args = argv, stdio = { stdin, stdout, stderr }, env = fullenv },
    function(code, signal)
      p.exited, p.code, p.signal = true, code, signal
    end)
  assert(handle, pid)
  p.handle, p.pid = handle, pid
  stdout:read_start(function(_, data)
    if data then
      p.buf = p.buf .. data
      for line in p.buf:gmatch("([^\n]*)\n") do p.lines[#p.lines + 1] = line end
      p.buf = p.buf:match("[^\n]*$")
    end
  end)
  stderr:read_start(function(_, data)
    if data then p.err[#p.err + 1] = data end
  end)
  p.stdout, p.stderr = stdout, stderr
  procs[#procs + 1] = p
  return p
end

--- Waits for a stdout line matching pattern (from line `from` on); returns it and its index.
function Proc:wait_line(pattern, timeout, from)
  local found, idx
  helper.wait_until(function()
    for i = from or 1, #self.lines do
      if self.lines[i]:find(pattern) then
        found, idx = self.lines[i], i
        return true
      end
    end
    if self.exited then return true end
    return false
  end, timeout or 20, "line /" .. pattern .. "/ from pid " .. tostring(self.pid))
  if not found then
    error(("process %d exited (code %s, signal %s) before printing /%s/; stderr:\n%s"):format(
      self.pid, tostring(self.code), tostring(self.signal), pattern, table.concat(self.err)), 2)
  end
  return found, idx
end

function Proc:send(line)
  self.stdin:write(line .. "\n")
end

function Proc:kill(sig)
  if not self.exited then uv.kill(self.pid, sig or "sigkill") end
end

function Proc:wait_exit(timeout)
  helper.wait_until(function() return self.exited end, timeout or 20, "exit of pid " .. tostring(self.pid))
  return self.code, self.signal
end

function Proc:stderr_text() return table.concat(self.err) end

local function close_proc(p)
  if not p.exited then
    uv.kill(p.pid, "sigkill")
    pcall(helper.wait_until, function() return p.exited end, 5)
  end
  for _, h in ipairs { p.stdin, p.stdout, p.stderr, p.handle } do
    if h and not h:is_closing() then h:close() end
  end
end

--- A leader process holding dir until it is killed or its stdin closes.
function helper.start_leader(dir, opts_lua)
  local p = helper.spawn(helper.fixtures .. "/holder.lua", { dir, opts_lua or "" })
  p:wait_line("^leader", 20)
  return p
end

--- Opens the db under test (see the header).
function helper.open(dir, opts)
  local lp = require "levelparty"
  if helper.role == "follower" then
    helper.start_leader(dir)
    local db, err, code = lp.open(dir, opts)
    if db then assert(db:role() == "follower", "expected a follower, got " .. db:role()) end
    return db, err, code
  end
  return lp.open(dir, opts)
end

--- Runs fn inside a coroutine under uv.run(); errors carry its traceback.
function helper.run_async(fn, timeout)
  local done, err = false, nil
  local co = coroutine.create(function()
    local ok, e = xpcall(fn, debug.traceback)
    if not ok then err = e end
    done = true
  end)
  local ok, e = coroutine.resume(co)
  if not ok then error(e, 2) end
  helper.wait_until(function() return done end, timeout or 30, "the coroutine to finish")
  if err then error(err, 2) end
end

function helper.cleanup()
  for i = #procs, 1, -1 do
    close_proc(procs[i])
    procs[i] = nil
  end
  uv.run("nowait")
  for i = #dirs, 1, -1 do
    rm_rf(dirs[i])
    dirs[i] = nil
  end
end

return helper

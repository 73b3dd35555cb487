-- Drives Node (spec/fixtures/node/party.js) and Lua (spec/fixtures/lua/interop_worker.lua)
-- level-party workers over the JSON-lines protocol documented in party.js.
--
-- Every wait is bounded: a hung or dead child fails the test with its stderr instead of
-- hanging the run. Processes are tracked and H.cleanup() SIGKILLs whatever is still
-- alive and removes the temporary directories (call it from `finally`).
local uv = require "luv"
local cjson = require "cjson"

local H = {}

H.DEFAULT_TIMEOUT = 30 -- seconds; generous, only reached when something is broken

local function script_dir()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local d = src:match("^(.*)/[^/]*$") or "."
  if d:sub(1, 1) ~= "/" then d = (uv.cwd() .. "/" .. d):gsub("/%./", "/"):gsub("/%.$", "") end
  return d
end

H.spec_dir = script_dir()
H.root = H.spec_dir:gsub("/spec$", "")
H.lua_interp = os.getenv("LEVELPARTY_LUA") or "lua5.4"

local live = {}     -- worker -> true while its process may be running
local tmpdirs = {}

-- Node availability -------------------------------------------------------------------------

local node_checked, node_ok, node_reason
-- Runs mk/node-deps.sh once; returns true, or false plus "node unavailable: <reason>".
function H.node_available()
  if not node_checked then
    node_checked = true
    local p = io.popen("sh '" .. H.root .. "/mk/node-deps.sh' 2>/dev/null")
    local out = p:read("a") or ""
    local ok, _, code = p:close()
    out = out:gsub("%s+$", "")
    -- Lua 5.1/LuaJIT's close gives no exit status: judge by what it printed
    if code == nil and ok then
      code = (out:find("node available:", 1, true) and not out:find("node unavailable:", 1, true)) and 0 or 3
    end
    if ok and code == 0 then
      node_ok = true
    else
      node_ok = false
      node_reason = out:match("node unavailable:[^\n]*") or
        ("node unavailable: mk/node-deps.sh exited " .. tostring(code) .. " " .. out)
    end
  end
  return node_ok, node_reason
end

-- Event loop helpers ---------------------------------------------------------------------------

-- Runs the loop until pred() is true; errors with `what` after `timeout` seconds.
function H.wait_until(pred, timeout, what)
  timeout = timeout or H.DEFAULT_TIMEOUT
  if pred() then return end
  local expired = false
  local timer = uv.new_timer()
  timer:start(math.floor(timeout * 1000), 0, function() expired = true end)
  while not pred() do
    if expired then
      timer:close()
      error(("timeout after %gs waiting for %s"):format(timeout, what or "condition"), 2)
    end
    uv.run("once")
  end
  timer:stop()
  timer:close()
end

-- Lets the loop run for `ms` milliseconds (only for pacing polls, never as synchronisation).
function H.pause(ms)
  local done = false
  local timer = uv.new_timer()
  timer:start(ms, 0, function() done = true end)
  while not done do uv.run("once") end
  timer:close()
end

function H.mkdtemp(tag)
  local d = assert(uv.fs_mkdtemp("/tmp/lpinterop-" .. (tag or "x") .. "-XXXXXX"))
  tmpdirs[#tmpdirs + 1] = d
  return d
end

-- Worker ---------------------------------------------------------------------------------------

local Worker = {}
Worker.__index = Worker

local function describe_worker(w)
  return ("%s worker #%d (pid %s)"):format(w.kind, w.seq, tostring(w.pid))
end

local seq = 0

-- kind: "node" | "lua"; opts: value_encoding, key_encoding, name, script (a Node fixture
-- other than party.js that speaks the same protocol, e.g. "sublevel.js").
-- INTEROP_LUA_AS_NODE=1 runs Node workers in the Lua roles: a self-test of the harness only
-- (Node followers' streams are not exactly-once, so those assertions are expected to fail).
function H.spawn(kind, dir, opts)
  opts = opts or {}
  if kind == "lua" and os.getenv("INTEROP_LUA_AS_NODE") == "1" then kind = "node" end
  local venc = opts.value_encoding or "utf8"
  local kenc = opts.key_encoding or "utf8"
  local cmd, args
  if kind == "node" then
    cmd = "node"
    args = { H.root .. "/spec/fixtures/node/" .. (opts.script or "party.js"), dir, venc, kenc }
  elseif kind == "lua" then
    cmd = H.lua_interp
    args = { H.root .. "/spec/fixtures/lua/interop_worker.lua", dir, venc, kenc }
  else
    error("unknown worker kind " .. tostring(kind))
  end
  -- The ASan pass preloads libasan for levelparty's C code, and children inherit it; Node is
  -- none of ours, and under it takes seconds to start: Node runs without it.
  local env
  if kind == "node" and os.getenv("LD_PRELOAD") then
    env = {}
    for k, v in pairs(uv.os_environ()) do
      if k ~= "LD_PRELOAD" then env[#env + 1] = k .. "=" .. v end
    end
  end
  seq = seq + 1
  local w = setmetatable({
    kind = kind, seq = seq, dir = dir, name = opts.name, value_encoding = venc, key_encoding = kenc,
    events = {}, replies = {}, progress = {}, held = {}, misc = {}, stderr = {}, stderr_len = 0,
    buf = "", next_id = 0, leader_events = 0, ready = false,
  }, Worker)
  w.stdin = uv.new_pipe(false)
  w.stdout = uv.new_pipe(false)
  w.stderr_pipe = uv.new_pipe(false)
  local handle, pid_or_err = uv.spawn(cmd, {
    args = args,
    stdio = { w.stdin, w.stdout, w.stderr_pipe },
    cwd = H.root,
    env = env,
  }, function(code, signal)
    w.exited = { code = code, signal = signal }
    live[w] = nil
    if w.handle and not w.handle:is_closing() then w.handle:close() end
  end)
  if not handle then
    w.stdin:close(); w.stdout:close(); w.stderr_pipe:close()
    error(("cannot spawn %s: %s"):format(cmd, tostring(pid_or_err)))
  end
  w.handle, w.pid = handle, pid_or_err
  live[w] = true
  w.stdout:read_start(function(err, data)
    if err or not data then
      w.stdout_eof = true
      if not w.stdout:is_closing() then w.stdout:close() end
      return
    end
    w.buf = w.buf .. data
    while true do
      local nl = w.buf:find("\n", 1, true)
      if not nl then break end
      local line = w.buf:sub(1, nl - 1)
      w.buf = w.buf:sub(nl + 1)
      w:_dispatch(line)
    end
  end)
  w.stderr_pipe:read_start(function(err, data)
    if err or not data then
      if not w.stderr_pipe:is_closing() then w.stderr_pipe:close() end
      return
    end
    if w.stderr_len < 65536 then
      w.stderr[#w.stderr + 1] = data
      w.stderr_len = w.stderr_len + #data
    end
  end)
  return w
end

function Worker:_dispatch(line)
  if line == "" then return end
  local ok, msg = pcall(cjson.decode, line)
  if not ok or type(msg) ~= "table" then
    self.misc[#self.misc + 1] = { bad_line = line }
    return
  end
  if msg.event then
    self.events[#self.events + 1] = msg
    if msg.event == "leader" then self.leader_events = self.leader_events + 1 end
    if msg.event == "ready" then self.ready = true; self.ready_msg = msg end
  elseif msg.id ~= nil and msg.held then
    self.held[msg.id] = true
  elseif msg.id ~= nil and (msg.entry ~= nil or msg.acked ~= nil) then
    local list = self.progress[msg.id]
    if not list then list = {}; self.progress[msg.id] = list end
    list[#list + 1] = msg.entry or msg.acked
  elseif msg.id ~= nil then
    self.replies[msg.id] = msg
  else
    self.misc[#self.misc + 1] = msg
  end
end

function Worker:stderr_text()
  return table.concat(self.stderr)
end

function Worker:describe()
  return describe_worker(self)
end

-- Error text for a worker that went away while we waited on it.
function Worker:_gone_msg(what)
  return ("%s exited (code %s, signal %s) while waiting for %s; stderr:\n%s"):format(
    self:describe(), tostring(self.exited.code), tostring(self.exited.signal), what, self:stderr_text())
end

function Worker:_wait(pred, timeout, what)
  local ok, err = pcall(H.wait_until, function()
    return pred() or self.exited ~= nil
  end, timeout, what .. " from " .. self:describe())
  if not ok then
    error(tostring(err) .. "\nstderr of " .. self:describe() .. ":\n" .. self:stderr_text(), 3)
  end
  if not pred() then error(self:_gone_msg(what), 3) end
end

function Worker:send(cmd)
  assert(not self.exited, self:describe() .. " already exited")
  local id = self.next_id
  self.next_id = id + 1
  cmd.id = id
  self.stdin:write(cjson.encode(cmd) .. "\n")
  return id
end

function Worker:wait_reply(id, timeout)
  self:_wait(function() return self.replies[id] ~= nil end, timeout, "reply to request " .. tostring(id))
  local r = self.replies[id]
  self.replies[id] = nil
  return r
end

-- Sends a command and returns its reply table ({ok=..., ...}).
function Worker:call(cmd, timeout)
  local op = cmd.op
  local id = self:send(cmd)
  local ok, r = pcall(self.wait_reply, self, id, timeout)
  if not ok then error(("%s (op %s)"):format(r, op), 2) end
  return r
end

-- Like call but errors unless the reply is ok.
function Worker:ok(cmd, timeout)
  local r = self:call(cmd, timeout)
  if not r.ok then
    error(("%s: op %s failed: %s"):format(self:describe(), cmd.op, cjson.encode(r)), 2)
  end
  return r
end

function Worker:wait_ready(timeout)
  self:_wait(function() return self.ready end, timeout, "ready event")
  return self.ready_msg
end

-- Waits until the progress list of request `id` (stream entries, acked keys) has n items.
function Worker:wait_progress(id, n, timeout)
  self:_wait(function()
    local l = self.progress[id]
    return (l and #l >= n) or self.replies[id] ~= nil
  end, timeout, ("%d progress lines of request %d"):format(n, id))
  return self.progress[id] or {}
end

-- Lets request `id`, sent with "hold_at", carry on past its hold (whether it got there yet or
-- not); the reply to the release is not waited for.
function Worker:release(id)
  self:send({ op = "release", ref = id })
end

function Worker:progress_of(id)
  return self.progress[id] or {}
end

function Worker:role(timeout)
  return self:ok({ op = "role" }, timeout).role
end

-- Sends a real signal ("sigkill", "sigstop", "sigcont", "sigterm").
function Worker:signal(sig)
  if self.exited then return end
  local ok, err = self.handle:kill(sig)
  if not ok and not tostring(err):match("ESRCH") then error("kill " .. sig .. ": " .. tostring(err)) end
end

function Worker:kill9(timeout)
  self:signal("sigkill")
  H.wait_until(function() return self.exited ~= nil end, timeout or 10, "exit of " .. self:describe())
end

function Worker:wait_exit(timeout)
  H.wait_until(function() return self.exited ~= nil end, timeout or 10, "exit of " .. self:describe())
  return self.exited
end

-- Closes stdin (the worker closes its handle and exits); SIGKILL when it does not.
function Worker:stop(timeout)
  if self.exited then return end
  if not self.stdin:is_closing() then self.stdin:close() end
  local ok = pcall(H.wait_until, function() return self.exited ~= nil end, timeout or 10, "exit")
  if not ok then self:kill9() end
end

function H.cleanup()
  for w in pairs(live) do
    pcall(function()
      w.handle:kill("sigcont")
      w.handle:kill("sigkill")
    end)
  end
  pcall(H.wait_until, function() return next(live) == nil end, 10, "children to exit")
  for w in pairs(live) do live[w] = nil end
  for i = #tmpdirs, 1, -1 do
    os.execute("rm -rf '" .. tmpdirs[i] .. "'")
    tmpdirs[i] = nil
  end
  -- let pending close callbacks run
  uv.run("nowait")
end

-- Spawns and waits for readiness.
function H.start(kind, dir, opts, timeout)
  local w = H.spawn(kind, dir, opts)
  w:wait_ready(timeout)
  return w
end

-- Polls the roles of the given (idle, alive) workers until exactly one says "leader".
function H.wait_single_leader(workers, timeout)
  local leader, roles
  H.wait_until(function()
    roles = {}
    local leaders = {}
    for _, w in ipairs(workers) do
      if not w.exited then
        local r = w:role()
        roles[#roles + 1] = w:describe() .. "=" .. r
        if r == "leader" then leaders[#leaders + 1] = w end
      end
    end
    if #leaders == 1 then leader = leaders[1]; return true end
    H.pause(50)
    return false
  end, timeout or 20, "a single leader")
  return leader, roles
end

-- Data helpers ---------------------------------------------------------------------------------

function H.hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

function H.unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

function H.keyname(prefix, n)
  return prefix .. ("%06d"):format(n)
end

-- Deep copy that turns cjson.null into nil (for comparisons) while keeping array shape.
function H.normalize(v)
  if v == cjson.null then return nil end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = H.normalize(x) end
  return t
end

H.null = cjson.null
H.json = cjson

return H

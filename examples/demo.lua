-- examples/demo.lua: the README's example, live.
--
-- Starts three writers and one reader on one directory, in random order.
-- Whoever takes LevelDB's LOCK first is the leader; the rest are followers.
-- After two seconds the demo SIGKILLs the leader.  A follower takes over, the
-- others reconnect, and everyone carries on.  At the end a fresh process
-- checks that every write a writer saw acknowledged is in the database.
--
-- When nginx with ngx_lua is installed, two nginx workers
-- (examples/nginx/nginx.conf, on 127.0.0.1) share the directory too: the
-- demo asks them every 400 ms to write a key and to count the writes, and
-- prints which worker answered and its role.
local uv = require "luv"
local levelparty = require "levelparty"

local lua = os.getenv("LEVELPARTY_LUA") or "lua5.4"
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local dir = os.getenv("DEMO_DIR") or (os.tmpname() .. "-party")
os.remove(dir)
os.execute("rm -rf '" .. dir .. "'")

local procs, acked, leader = {}, {}, nil
local start_time

local function start(name, mode)
  local out = uv.new_pipe(false)
  local p = { name = name }
  p.handle, p.pid = uv.spawn(lua, { args = { here .. "/worker.lua", dir, name, mode }, stdio = { nil, out, 2 } },
    function() p.exited = true end)
  local buf = ""
  out:read_start(function(_, data)
    if not data then return end
    buf = buf .. data
    for line in buf:gmatch("([^\n]*)\n") do
      local key = line:match(" ack (%S+)$")
      if key then
        acked[#acked + 1] = key
      else
        print(("[%5.2fs] %s"):format(uv.now() / 1000 - start_time, line))
      end
      if line:find("opened as leader") or line:find("is now leader") then leader = p end
    end
    buf = buf:match("[^\n]*$")
  end)
  p.out = out
  procs[#procs + 1] = p
  return p
end

-- nginx --------------------------------------------------------------------

local NGINX, NGX_LUA = "/usr/sbin/nginx", "/usr/lib/nginx/modules/ngx_http_lua_module.so"
local root = os.getenv("LEVELPARTY_ROOT") or (here .. "/..")
local ngx_proc, ngx_port, ngx_n = nil, ("%d"):format(18000 + uv.os_getpid() % 2000), 0

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local t = f:read("*a")
  f:close()
  return t
end

local function spit(path, t)
  local f = assert(io.open(path, "wb"))
  f:write(t)
  f:close()
end

-- nginx in the foreground under a temporary prefix; nil when it is not installed
local function start_nginx()
  if not (uv.fs_access(NGINX, "X") and uv.fs_access(NGX_LUA, "R")) then
    print("demo: no nginx with ngx_lua here (" .. NGX_LUA .. "): the demo runs without it")
    return
  end
  local prefix = dir .. "-nginx"
  for _, d in ipairs { "", "/conf", "/logs", "/tmp" } do uv.fs_mkdir(prefix .. d, 493) end
  spit(prefix .. "/conf/demo.conf", [[
location = /demo {
  content_by_lua_block {
    local db = require("kv").db()
    local ok, err, code = db:put(ngx.var.arg_key, ngx.unescape_uri(ngx.var.arg_value))
    if not ok then return ngx.say("failed ", err, " (", code, ")") end
    local n = 0
    for _ in db:iter { gte = "w", lt = "x", values = false } do n = n + 1 end
    ngx.say("worker ", ngx.worker.pid(), " (", db:role(), ") wrote ", ngx.var.arg_key, "; counts ", n, " writer keys")
  }
}
]])
  local subst = { ROOT = root, PREFIX = prefix, PORT = ngx_port, DB = dir, WORKERS = "2",
    USER = uv.getuid() == 0 and "user root root;" or "", INCLUDE = prefix .. "/conf/demo.conf" }
  local conf = slurp(root .. "/examples/nginx/nginx.conf"):gsub("@(%u+)@", function(k) return subst[k] end)
  spit(prefix .. "/conf/nginx.conf", conf)
  local p = { name = "nginx", prefix = prefix }
  p.handle, p.pid = uv.spawn(NGINX, { args = { "-p", prefix, "-c", "conf/nginx.conf", "-g", "daemon off;" },
    stdio = { nil, 1, 2 } }, function() p.exited = true end)
  if not p.handle then
    print("demo: nginx did not start: " .. tostring(p.pid))
    return
  end
  print(("[%5.2fs] demo: nginx (master pid %d, 2 workers) on 127.0.0.1:%d opens it too"):format(
    uv.now() / 1000 - start_time, p.pid, ngx_port))
  return p
end

-- asks a worker to write nginx:N (a JSON value, like the writers') and count the writes
local function ask_nginx()
  ngx_n = ngx_n + 1
  local key = ("nginx:%06d"):format(ngx_n)
  local value = ('{"n":%d,"by":"nginx"}'):format(ngx_n)
  local t = uv.new_tcp()
  t:connect("127.0.0.1", ngx_port, function(err)
    if err then return t:close() end
    t:write(("GET /demo?key=%s&value=%s HTTP/1.0\r\nHost: demo\r\n\r\n"):format(key, value:gsub("[^%w]",
      function(c) return ("%%%02X"):format(c:byte()) end)))
    local buf = {}
    t:read_start(function(e, data)
      if data and not e then buf[#buf + 1] = data return end
      t:close()
      local line = table.concat(buf):match("\r\n\r\n([^\n]*)")
      if line then
        print(("[%5.2fs] nginx %s"):format(uv.now() / 1000 - start_time, line))
        if line:find(" wrote ", 1, true) then acked[#acked + 1] = key end
      end
    end)
  end)
end

start_time = uv.now() / 1000
math.randomseed(os.time())
local names = { { "w1", "put" }, { "w2", "put" }, { "w3", "put" }, { "r1", "get" } }
for i = #names, 2, -1 do local j = math.random(i); names[i], names[j] = names[j], names[i] end
print("demo: " .. #names .. " processes on " .. dir .. " (started in random order)")
for _, n in ipairs(names) do start(n[1], n[2]) end

-- nginx joins once a writer leads, and is asked every 400 ms
local ngx_timer = uv.new_timer()
ngx_timer:start(100, 100, function()
  if leader == nil then return end
  ngx_timer:stop()
  ngx_proc = start_nginx()
  if ngx_proc then ngx_timer:start(400, 400, ask_nginx) else ngx_timer:close() end
end)

local timer = uv.new_timer()
timer:start(2000, 0, function()
  print(("[%5.2fs] demo: SIGKILL the leader, %s (pid %d)"):format(uv.now() / 1000 - start_time, leader.name,
    leader.pid))
  local victim = leader
  uv.kill(victim.pid, "sigkill")
  timer:start(700, 0, function()
    print(("[%5.2fs] demo: restarting %s; it joins as a follower"):format(uv.now() / 1000 - start_time, victim.name))
    start(victim.name .. "b", victim.name:sub(1, 1) == "r" and "get" or "put")
    timer:start(2000, 0, function()
      for _, p in ipairs(procs) do if not p.exited then uv.kill(p.pid, "sigterm") end end
      if ngx_proc then
        if not ngx_timer:is_closing() then ngx_timer:close() end
        uv.kill(ngx_proc.pid, "sigquit") -- graceful: its leader, if any, removes the socket
        timer:start(12000, 0, function() -- worker_shutdown_timeout is 10 s
          if not ngx_proc.exited then uv.kill(ngx_proc.pid, "sigkill") end
          timer:close()
        end)
        timer:unref()
      else
        timer:close()
      end
    end)
  end)
end)
uv.run()
for _, p in ipairs(procs) do p.out:close() p.handle:close() end
if ngx_proc then ngx_proc.handle:close() end
uv.run()

-- every acknowledged write must be there
local db = assert(levelparty.open(dir, { value_encoding = "json" }))
local missing = 0
for _, key in ipairs(acked) do
  if db:get(key) == nil then missing = missing + 1 print("MISSING " .. key) end
end
db:close()
os.execute("rm -rf '" .. dir .. "' '" .. dir .. "-nginx'")
print(("demo: %d writes were acknowledged; %d missing after the leader was killed"):format(#acked, missing))
os.exit(missing == 0 and 0 or 1)

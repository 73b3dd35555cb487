-- examples/demo.lua: the README's example, live.
--
-- Starts three writers and one reader on one directory, in random order.
-- Whoever takes LevelDB's LOCK first is the leader; the rest are followers.
-- After two seconds the demo SIGKILLs the leader.  A follower takes over, the
-- others reconnect, and everyone carries on.  At the end a fresh process
-- checks that every write a writer saw acknowledged is in the database.
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

start_time = uv.now() / 1000
math.randomseed(os.time())
local names = { { "w1", "put" }, { "w2", "put" }, { "w3", "put" }, { "r1", "get" } }
for i = #names, 2, -1 do local j = math.random(i); names[i], names[j] = names[j], names[i] end
print("demo: " .. #names .. " processes on " .. dir .. " (started in random order)")
for _, n in ipairs(names) do start(n[1], n[2]) end

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
      timer:close()
    end)
  end)
end)
uv.run()
for _, p in ipairs(procs) do p.out:close() p.handle:close() end
uv.run()

-- every acknowledged write must be there
local db = assert(levelparty.open(dir, { value_encoding = "json" }))
local missing = 0
for _, key in ipairs(acked) do
  if db:get(key) == nil then missing = missing + 1 print("MISSING " .. key) end
end
db:close()
os.execute("rm -rf '" .. dir .. "'")
print(("demo: %d writes were acknowledged; %d missing after the leader was killed"):format(#acked, missing))
os.exit(missing == 0 and 0 or 1)

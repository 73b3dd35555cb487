-- bench/node/run.lua: the Node part of `make bench` (dofile'd by bench/run.lua, or run alone:
--   LUA_PATH=... LUA_CPATH_5_4=... lua5.4 bench/node/run.lua).
--
-- Three pairings, same workload (N puts then N gets one at a time, then one stream of M entries):
--   Node follower vs Node leader   (bench/node/follower.js vs bench/node/leader.js): the reference
--   Node follower vs Lua leader    (follower.js vs this process, leader through levelparty)
--   Lua follower  vs Node leader   (this process as follower vs leader.js)
-- Ratios are against the Node/Node pairing. Nothing fails on a slow machine.
-- BENCH_NODE_N (default 20000) and BENCH_NODE_M (default 100000) size the runs.
local uv = require "luv"
local levelparty = require "levelparty"

local root = os.getenv("LEVELPARTY_ROOT") or "."
local N = tonumber(os.getenv("BENCH_NODE_N") or "20000")
local M = tonumber(os.getenv("BENCH_NODE_M") or "100000")
local VALUE_SIZE = 100

local function line(name, value, unit, ref)
  local s = ("%-9s %-34s %12.0f %-9s"):format("node", name, value, unit or "ops/s")
  if ref and ref > 0 then s = s .. ("  %5.2fx node/node"):format(value / ref) end
  print(s)
  io.stdout:flush()
end

local function tmpdir(tag)
  local d = assert(uv.fs_mkdtemp("/tmp/lpbench-node-" .. tag .. "-XXXXXX"))
  return d
end

local function rmrf(d) os.execute("rm -rf '" .. d .. "'") end

-- Node available?
do
  local p = io.popen("sh '" .. root .. "/mk/node-deps.sh' 2>/dev/null")
  local out = p:read("a") or ""
  local ok, _, code = p:close()
  if not (ok and code == 0) then
    print(("%-9s (skipped: %s)"):format("node", (out:match("node unavailable:[^\n]*") or "node unavailable")))
    return
  end
end

-- Runs follower.js against dir; returns { put_ops_per_sec = n, ... } or nil, output.
local function node_follower(dir)
  local p = io.popen(("node '%s/bench/node/follower.js' '%s' %d %d %d 2>&1"):format(root, dir, N, M, VALUE_SIZE))
  local out = p:read("a")
  p:close()
  local r = {}
  for name, v in out:gmatch("node_follower (%S+) (%S+)") do r[name] = tonumber(v) or v end
  if not r.stream_entries_per_sec then return nil, out end
  return r
end

-- Starts leader.js on dir; returns a handle with :stop(), once it printed "ready".
local function node_leader(dir)
  local stdin, stdout = uv.new_pipe(false), uv.new_pipe(false)
  local buf, exited = "", false
  local proc = uv.spawn("node", {
    args = { root .. "/bench/node/leader.js", dir }, stdio = { stdin, stdout, 2 },
  }, function() exited = true end)
  assert(proc, "cannot spawn node")
  stdout:read_start(function(_, data) if data then buf = buf .. data end end)
  local timer = uv.new_timer()
  local expired = false
  timer:start(15000, 0, function() expired = true end)
  while not buf:find("ready\n", 1, true) and not buf:find("error", 1, true) and not exited and not expired do
    uv.run("once")
  end
  timer:close()
  if not buf:find("ready\n", 1, true) then
    proc:kill("sigkill")
    error("Node leader did not start: " .. buf)
  end
  return {
    stop = function()
      stdin:close()
      local t = uv.new_timer()
      local late = false
      t:start(10000, 0, function() late = true end)
      while not exited and not late do uv.run("once") end
      t:close()
      if not exited then proc:kill("sigkill") end
      if not stdout:is_closing() then stdout:close() end
      if not proc:is_closing() then proc:close() end
      uv.run("nowait")
    end,
  }
end

local function clock() return uv.hrtime() / 1e9 end

-- This process as a follower of whatever leads dir.
local function lua_follower(dir)
  local db = assert(levelparty.open(dir, { value_encoding = "binary" }))
  assert(db:get("\0bench-probe") == nil)
  if db:role() ~= "follower" then
    db:close()
    error("the Lua process became leader: no Node leader on " .. dir)
  end
  local value = ("a"):rep(VALUE_SIZE)
  local r = {}
  local t = clock()
  for i = 0, N - 1 do assert(db:put(("k%09d"):format(i), value)) end
  r.put_ops_per_sec = N / (clock() - t)
  t = clock()
  for i = 0, N - 1 do assert(#db:get(("k%09d"):format(i)) == VALUE_SIZE) end
  r.get_ops_per_sec = N / (clock() - t)
  local ops = {}
  for i = 0, M - 1 do
    ops[#ops + 1] = { type = "put", key = ("s%09d"):format(i), value = value }
    if #ops == 1000 or i == M - 1 then assert(db:batch(ops)); ops = {} end
  end
  t = clock()
  local n = 0
  for _ in db:iter { gte = "s", lt = "t" } do n = n + 1 end
  assert(n == M, "stream gave " .. n .. " entries")
  r.stream_entries_per_sec = M / (clock() - t)
  db:close()
  return r
end

local ok, err = pcall(function()
  -- reference: Node follower vs Node leader
  local d = tmpdir("nn")
  local leader = node_leader(d)
  local ref, out = node_follower(d)
  leader:stop()
  rmrf(d)
  if not ref then error("Node follower vs Node leader failed: " .. tostring(out)) end
  line("node follower / node leader: get", ref.get_ops_per_sec)
  line("node follower / node leader: put", ref.put_ops_per_sec)
  line("node follower / node leader: stream", ref.stream_entries_per_sec, "entries/s")

  -- Node follower vs Lua leader (this process)
  d = tmpdir("nl")
  local db = assert(levelparty.open(d, { value_encoding = "binary" }))
  assert(db:role() == "leader", "this process should lead a fresh directory")
  local r
  r, out = node_follower(d)
  db:close()
  rmrf(d)
  if not r then error("Node follower vs Lua leader failed: " .. tostring(out)) end
  line("node follower / lua leader: get", r.get_ops_per_sec, nil, ref.get_ops_per_sec)
  line("node follower / lua leader: put", r.put_ops_per_sec, nil, ref.put_ops_per_sec)
  line("node follower / lua leader: stream", r.stream_entries_per_sec, "entries/s", ref.stream_entries_per_sec)

  -- Lua follower (this process) vs Node leader
  d = tmpdir("ln")
  leader = node_leader(d)
  local okf, rf = pcall(lua_follower, d)
  leader:stop()
  rmrf(d)
  if not okf then error("Lua follower vs Node leader failed: " .. tostring(rf)) end
  line("lua follower / node leader: get", rf.get_ops_per_sec, nil, ref.get_ops_per_sec)
  line("lua follower / node leader: put", rf.put_ops_per_sec, nil, ref.put_ops_per_sec)
  line("lua follower / node leader: stream", rf.stream_entries_per_sec, "entries/s", ref.stream_entries_per_sec)
end)
if not ok then print(("%-9s FAILED: %s"):format("node", tostring(err))) end

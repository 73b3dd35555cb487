-- bench/run.lua: `make bench`.  Runs every workload in one go on this machine
-- and prints each figure with its ratio to the reference point the issues name.
--
--   leader            the Lua API as leader, blocking and in luv coroutines,
--                     against bench/raw_leveldb.c on raw LevelDB, same workload
--   follower          a follower in this process against a leader process,
--                     against bench/sock_floor.c (bare unix-socket round trips
--                     between two processes, the floor; and the same with a C
--                     server doing a LevelDB get per request, waiting in a
--                     blocking read or, as a leader's loop does, in
--                     epoll_wait), plus failover times
--   node              a Node level-party follower against a Lua leader and
--                     against a Node leader; a Lua follower against a Node leader
--   loopgap           bench/loopgap.lua: the longest gaps of a leader's luv loop while a
--                     coroutine writes flat out, inline and with the hand-off
--   embed             bench/embed_get.c: the leader's own get from 1, 2 and 4
--                     threads at once (liblevelparty.a, one lua_State each)
--                     against raw LevelDB gets from as many threads
--   nginx             nginx workers sharing one directory (bench/nginx/run.lua):
--                     levelparty against ngx.shared.DICT and against one worker,
--                     driven by wrk; a leader worker's kill against LevelDB's reopen
--
-- ONLY (`make bench ONLY=embed`; a command-line variable reaches the
-- environment) runs only the sections it names, comma-separated: leader,
-- follower (with failover), node, loopgap, embed, nginx.
--
-- Figures are operations per second unless a unit is printed.  Nothing here is
-- a test: nothing fails on a slow machine; the ratios are what to read.
local uv = require "luv"
local levelparty = require "levelparty"
local B = require "bench.common"
local sh, tmpdir, key, value_of = B.sh, B.tmpdir, B.key, B.value_of

local root = os.getenv("LEVELPARTY_ROOT") or "."
local bin = os.getenv("LEVELPARTY_BENCH_BIN") or (root .. "/build/bench")
local lua = os.getenv("LEVELPARTY_LUA") or "lua5.4"
local N = tonumber(os.getenv("BENCH_N") or "100000")

local results = {}

local ONLY = os.getenv("ONLY") or ""
for name in ONLY:gmatch("[^,%s]+") do
  local known = { leader = true, follower = true, embed = true, node = true, loopgap = true, nginx = true }
  assert(known[name], "ONLY: no section " .. name .. " (leader, follower, embed, node, loopgap, nginx)")
end
local function want(section)
  if ONLY == "" then return true end
  for name in ONLY:gmatch("[^,%s]+") do
    if name == section then return true end
  end
  return false
end

local function report(group, name, value, unit, ref_name, ref_value, goal)
  local line = ("%-9s %-34s %12.0f %-9s"):format(group, name, value, unit or "ops/s")
  if ref_value then
    local ratio = value / ref_value
    line = line .. ("  %5.2fx %s"):format(ratio, ref_name)
    if goal then line = line .. ("  (goal %.2fx: %s)"):format(goal, ratio >= goal and "met" or "MISSED") end
  end
  print(line)
  io.stdout:flush()
  results[#results + 1] = { group = group, name = name, value = value }
end

local function clock() return uv.hrtime() / 1e9 end

-- xorshift, the same sequence shape as bench/raw_leveldb.c (uniform keys)
local function rng(seed)
  local x = seed
  return function(n)
    x = x ~ (x << 13) & 0xffffffff
    x = x ~ (x >> 17)
    x = x ~ (x << 5) & 0xffffffff
    return x % n
  end
end

-- The leader workload (as bench/raw_leveldb.c) through `db`; `wrap` runs a function (directly, or in
-- a luv coroutine).  Keys, values, the random read order and the batch
-- tables are made before the clock starts: the figures are the library's, not
-- Lua's string formatting (the C program formats its keys with sprintf inside
-- its loops, which costs it far less).  Returns put, get, iter, batch ops/s.
local function workload(db, wrap, n)
  local r = {}
  local keys, values, order, batches
  -- each phase's inputs are made just before it and dropped after it, and
  -- the heap is collected before the clock starts: the harness's garbage is
  -- not charged to the phase
  local function prepare(phase)
    keys, values, order, batches = nil, nil, nil, nil
    if phase == "put" or phase == "get" then
      keys, values = {}, {}
      for i = 0, n - 1 do
        local k = key(i)
        keys[i + 1], values[i + 1] = k, value_of(k)
      end
    end
    if phase == "get" then
      local rand = rng(2463534242)
      order = {}
      for i = 1, n do order[i] = keys[rand(n) + 1] end
      keys, values = nil, nil
    end
    if phase == "batch" then
      batches = {}
      for b = 0, 99 do
        local ops = {}
        for j = 1, 1000 do
          local k = key(n + b * 1000 + j)
          ops[j] = { type = "put", key = k, value = value_of(k) }
        end
        batches[b + 1] = ops
      end
    end
    collectgarbage()
    collectgarbage()
  end
  prepare("put")
  wrap(function()
    local t = clock()
    for i = 1, n do
      assert(db:put(keys[i], values[i]))
    end
    r.put = n / (clock() - t)
  end)
  prepare("get")
  wrap(function()
    local t = clock()
    for i = 1, n do
      assert(db:get(order[i]))
    end
    r.get = n / (clock() - t)
  end)
  -- five full iterations, the median rate (as bench/raw_leveldb.c does):
  -- one iteration is tens of milliseconds on a noisy machine
  prepare("iter")
  wrap(function()
    local rates = {}
    for run = 1, 5 do
      local t = clock()
      local count = 0
      for _, _ in db:iter() do count = count + 1 end
      assert(count == n, "iterated " .. count)
      rates[run] = n / (clock() - t)
    end
    table.sort(rates)
    r.iter = rates[3]
  end)
  prepare("batch")
  wrap(function()
    local t = clock()
    for b = 1, 100 do assert(db:batch(batches[b])) end
    r.batch = 100000 / (clock() - t)
  end)
  prepare()
  return r
end

local function direct(fn) fn() end
-- Runs fn in a coroutine and drives luv's loop until it is done (other
-- handles, such as a spawned leader's pipes, may keep the loop alive).
local function in_coroutine(fn)
  local done, err = false, nil
  coroutine.wrap(function()
    local ok, e = pcall(fn)
    done, err = true, (not ok) and e or nil
  end)()
  while not done do uv.run("once") end
  if err then error(err) end
end

------------------------------------------------------- leader vs raw LevelDB
print(("levelparty bench: %s, %s, N=%d, %d CPUs"):format(_VERSION, levelparty.leveldb_version, N, #uv.cpu_info()))
print()
local raw, s, c -- the leader medians (the follower section prints its own get beside them)
if want("leader") then
  -- Each side's phases last a fraction of a second on a VM whose speed drifts
  -- by tens of percent within minutes, so raw C, blocking and coroutine runs
  -- take turns ROUNDS times and each figure is the median of its rounds.
  local ROUNDS = 3
  local function raw_run()
    local d = tmpdir("raw")
    local r = {}
    for name, v in sh(("%s/raw_leveldb '%s' -n %d 2>/dev/null"):format(bin, d, N)):gmatch("raw (%w+) ([%d.]+)") do
      r[name] = tonumber(v)
    end
    os.execute("rm -rf '" .. d .. "'")
    return r
  end

  local function leader_run(tag, wrap)
    local d = tmpdir(tag)
    local db = assert(levelparty.open(d))
    local r = workload(db, wrap, N)
    db:close()
    os.execute("rm -rf '" .. d .. "'")
    return r
  end

  local runs = { raw = {}, sync = {}, co = {} }
  for _ = 1, ROUNDS do
    runs.raw[#runs.raw + 1] = raw_run()
    runs.sync[#runs.sync + 1] = leader_run("sync", direct)
    runs.co[#runs.co + 1] = leader_run("co", in_coroutine)
  end
  local function medians(list)
    local m = {}
    for _, w in ipairs { "put", "get", "iter", "batch" } do
      local v = {}
      for i = 1, #list do v[i] = list[i][w] end
      table.sort(v)
      m[w] = v[(#v + 1) // 2]
    end
    return m
  end
  raw, s, c = medians(runs.raw), medians(runs.sync), medians(runs.co)
  for _, w in ipairs { "put", "get", "iter", "batch" } do report("raw", w, raw[w]) end

  local goals = { put = 0.6, get = 0.6, iter = 0.3, batch = 0.6 }
  for _, w in ipairs { "put", "get", "iter", "batch" } do
    report("leader", "blocking " .. w, s[w], nil, "raw", raw[w], goals[w])
  end
  for _, w in ipairs { "put", "get", "iter", "batch" } do
    report("leader", "luv coroutine " .. w, c[w], nil, "raw", raw[w], w == "iter" and 0.3 or 0.5)
  end
  print()
end

--------------------------------------------- follower vs the socket floor
if want("follower") then
  -- Placement decides a round trip's cost on these machines (a wake-up on the
  -- same CPU costs a few us, across CPUs tens of us), so every follower figure
  -- is taken with the leader process and this process pinned the same way as
  -- the floor's two processes: both on CPU 0 ("same"), or 0 and 1 ("split").
  local ncpu = #uv.cpu_info()
  local placements = ncpu >= 2 and { "same", "split" } or { "same" }
  local floors = {}
  for _, pin in ipairs(placements) do
    local f = {}
    local out = sh(("%s/sock_floor --pin %s 2>/dev/null"):format(bin, pin))
    for name, v in out:gmatch("floor (%S+) ([%d.]+)") do f[name] = tonumber(v) end
    floors[pin] = f
    report("floor", pin .. ": round trip, one at a time", f.rtt_ops_per_sec)
    report("floor", pin .. ": 64 in flight", f.pipelined64_ops_per_sec)
    report("floor", pin .. ": stream frames", f.stream_frames_per_sec)
  end

  local function self_pid()
    local fh = io.open("/proc/self/stat")
    local pid = fh:read("*n")
    fh:close()
    return pid
  end
  local function pin_self(cpus) os.execute(("taskset -a -pc %s %d >/dev/null 2>&1"):format(cpus, self_pid())) end

  local function spawn(args, on_line)
    local out = uv.new_pipe(false)
    local inp = uv.new_pipe(false)
    local p = {}
    p.handle, p.pid = uv.spawn(args[1], { args = { table.unpack(args, 2) }, stdio = { inp, out, 2 } },
      function() p.exited = true end)
    assert(p.handle, p.pid)
    local buf = ""
    out:read_start(function(_, data)
      if not data then return end
      buf = buf .. data
      for line in buf:gmatch("([^\n]*)\n") do on_line(line, p) end
      buf = buf:match("[^\n]*$")
    end)
    p.out, p.inp = out, inp
    return p
  end

  local function wait_for(pred, secs)
    local deadline = clock() + (secs or 30)
    local t = uv.new_timer()
    t:start(5, 5, function() end)
    while not pred() and clock() < deadline do uv.run("once") end
    t:close()
    return pred()
  end

  local function stop(p)
    if not p.exited then uv.kill(p.pid, "sigkill") end
    wait_for(function() return p.exited end, 5)
    p.out:close() p.inp:close() p.handle:close()
  end

  for _, pin in ipairs(placements) do
    local floor = floors[pin]
    local d = tmpdir("follower")
    -- seed the directory, then hand it to a leader process
    local db = assert(levelparty.open(d))
    for b = 0, N / 1000 - 1 do
      local ops = {}
      for j = 1, 1000 do local k = key(b * 1000 + j - 1) ops[j] = { type = "put", key = k, value = value_of(k) } end
      assert(db:batch(ops))
    end
    db:close()
    -- the floor with LevelDB's work: a C server doing a get of a random key per
    -- request, on this same directory, before the leader opens it
    local ldb_out = sh(("%s/sock_floor --pin %s -n 20000 --leveldb '%s' --keys %d"):format(bin, pin, d, N))
    local ldb_floor = assert(tonumber(ldb_out:match("floor rtt_leveldb_ops_per_sec ([%d.]+)")),
      "sock_floor --leveldb failed")
    local ldb_floor64 = assert(tonumber(ldb_out:match("floor pipelined64_leveldb_ops_per_sec ([%d.]+)")),
      "sock_floor --leveldb failed")
    -- and that server waiting in epoll_wait, as any server with an event loop
    local ldbe_out = sh(("%s/sock_floor --pin %s -n 20000 --epoll --leveldb '%s' --keys %d"):format(bin, pin, d, N))
    local ldbe_floor = assert(tonumber(ldbe_out:match("floor rtt_leveldb_ops_per_sec ([%d.]+)")),
      "sock_floor --epoll failed")
    local ready = false
    local leader = spawn({ "taskset", "-c", "0", lua, root .. "/spec/fixtures/holder.lua", d },
      function(line) if line:find("^leader") then ready = true end end)
    assert(wait_for(function() return ready end), "leader did not start")
    pin_self(pin == "same" and "0" or "1")

    local f = assert(levelparty.open(d))
    assert(f:role() == "follower")
    local M = math.min(N, 20000)
    local rand = rng(88172645)
    local gets, puts, pvals = {}, {}, {}
    for i = 1, M do gets[i] = key(rand(N)) end
    -- fresh keys with full-size values: the gets below must keep reading the
    -- seeded data, not small values this phase would leave in the memtable
    for i = 1, M do puts[i] = key(N + i) pvals[i] = value_of(puts[i]) end
    collectgarbage()
    local t = clock()
    for i = 1, M do assert(f:get(gets[i])) end
    local get1 = M / (clock() - t)
    t = clock()
    for i = 1, M do assert(f:put(puts[i], pvals[i])) end
    local put1 = M / (clock() - t)

    -- 64 coroutines in flight
    local total, inflight = N, 64
    t = clock()
    in_coroutine(function()
      local left = inflight
      local me = coroutine.running()
      for w = 1, inflight do
        coroutine.wrap(function()
          for i = w, total, inflight do assert(f:get(gets[(i - 1) % M + 1])) end
          left = left - 1
          if left == 0 then coroutine.resume(me) end
        end)()
      end
      if left > 0 then coroutine.yield() end
    end)
    local get64 = total / (clock() - t)

    t = clock()
    local count = 0
    for _ in f:iter() do count = count + 1 end
    local stream = count / (clock() - t)
    t = clock()
    count = 0
    in_coroutine(function() for _ in f:iter() do count = count + 1 end end)
    local stream_co = count / (clock() - t)
    f:close()
    stop(leader)
    pin_self("0-" .. (ncpu - 1))
    os.execute("rm -rf '" .. d .. "'")

    local g = "follower"
    report("floor", pin .. ": round trip + LevelDB get (C)", ldb_floor, nil, "floor rtt", floor.rtt_ops_per_sec)
    report("floor", pin .. ": + LevelDB get, in epoll (C)", ldbe_floor, nil, "floor rtt", floor.rtt_ops_per_sec)
    report(g, pin .. ": get, one at a time", get1, nil, "floor rtt", floor.rtt_ops_per_sec, 0.8)
    report(g, pin .. ": get, one at a time", get1, nil, "C+LevelDB", ldb_floor)
    report(g, pin .. ": get, one at a time", get1, nil, "C+LDB+epoll", ldbe_floor)
    report(g, pin .. ": put, one at a time", put1, nil, "floor rtt", floor.rtt_ops_per_sec, 0.8)
    report("floor", pin .. ": 64 in flight + LevelDB gets (C)", ldb_floor64, nil, "floor 64",
      floor.pipelined64_ops_per_sec)
    report(g, pin .. ": get, 64 in flight", get64, nil, "floor 64", floor.pipelined64_ops_per_sec, 0.8)
    print(("%-9s %-34s %12s  (goal: 400000 ops/s or 0.8x the floor: %s)"):format("", "", "",
      (get64 >= 400000 or get64 >= 0.8 * floor.pipelined64_ops_per_sec) and "met" or "MISSED"))
    report(g, pin .. ": get, 64 in flight", get64, nil, "C+LevelDB", ldb_floor64)
    report(g, pin .. ": stream (blocking)", stream, "entries/s", "1M/s goal", 1e6, 1.0)
    report(g, pin .. ": stream (coroutine)", stream_co, "entries/s", "1M/s goal", 1e6, 1.0)
  end
  if s then report("leader", "own get, same run (for comparison)", s.get) end

  -- Failover: SIGKILL the leader; time until each survivor's next successful op,
  -- compared with how long LevelDB itself takes to reopen the same directory.
  do
    local rounds, survivors = 5, 3
    local delays, reopens = {}, {}
    for round = 1, rounds do
      local d = tmpdir("failover" .. round)
      local db = assert(levelparty.open(d))
      for b = 0, 19 do
        local ops = {}
        for j = 1, 1000 do local k = key(b * 1000 + j) ops[j] = { type = "put", key = k, value = value_of(k) } end
        assert(db:batch(ops))
      end
      db:close()
      local leader_ready = false
      local leader = spawn({ lua, root .. "/bench/failover_worker.lua", d, "leader" }, function(line)
        if line:find("^ready") then leader_ready = true end
      end)
      assert(wait_for(function() return leader_ready end), "no leader")
      local procs, firsts, started = {}, {}, 0
      local kill_at
      for i = 1, survivors do
        procs[i] = spawn({ lua, root .. "/bench/failover_worker.lua", d, "follower" }, function(line)
          if line:find("^ready") then started = started + 1 end
          -- the first request *started* after the kill: the new leader served it
          local t0, t1 = line:match("^ok (%d+) (%d+)")
          if t0 and kill_at and not firsts[i] and tonumber(t0) > kill_at then firsts[i] = tonumber(t1) end
        end)
      end
      assert(wait_for(function() return started == survivors end), "followers did not start")
      wait_for(function() return false end, 0.2)
      kill_at = uv.hrtime()
      uv.kill(leader.pid, "sigkill")
      wait_for(function()
        for i = 1, survivors do if not firsts[i] then return false end end
        return true
      end, 20)
      for i = 1, survivors do
        if firsts[i] then delays[#delays + 1] = (firsts[i] - kill_at) / 1e6 end
      end
      for i = 1, survivors do stop(procs[i]) end
      stop(leader)
      -- LevelDB's own reopen of this directory (a fresh open, as after a crash)
      local t = clock()
      local r = assert(levelparty.open(d))
      reopens[#reopens + 1] = (clock() - t) * 1000
      r:close()
      os.execute("rm -rf '" .. d .. "'")
    end
    table.sort(delays)
    table.sort(reopens)
    local med = delays[math.ceil(#delays / 2)]
    local reopen = reopens[math.ceil(#reopens / 2)]
    print(("%-9s %-34s %12.1f ms   (median of %d survivors over %d kills; max %.1f ms)"):format("failover",
      "kill -> survivor served", med, #delays, rounds, delays[#delays]))
    print(("%-9s %-34s %12.1f ms"):format("failover", "LevelDB reopen (same dirs)", reopen))
    print(("%-9s %-34s %12.2fx   (goal <= 2x: %s)"):format("failover", "ratio", med / reopen,
      med <= 2 * reopen and "met" or "MISSED"))
  end
  print()
end

----------------------------------------- leader get from several threads
-- The leader's get from several threads, each its own lua_State, in a C host
-- (bench/embed_get.c); the raw figure is taken in the same run, same threads.
if want("embed") then
  local d = tmpdir("embed")
  local out = sh(("timeout 600 %s/embed_get '%s' -n %d 1 2 4 2>/dev/null; echo \"exit $?\""):format(bin, d, 2 * N))
  os.execute("rm -rf '" .. d .. "'")
  local got = {}
  for side, t, v in out:gmatch("(%a+) get (%d+) (%d+)") do got[side .. t] = tonumber(v) end
  for _, t in ipairs { "1", "2", "4" } do
    if got["embed" .. t] and got["raw" .. t] then
      report("raw", t .. " thread(s): get", got["raw" .. t])
      report("embed", t .. " thread(s): leader get", got["embed" .. t], nil, "raw, " .. t .. " thread(s)",
        got["raw" .. t], 0.6)
    else
      print(("%-9s %-34s %s"):format("embed", t .. " thread(s): leader get",
        "failed (" .. (out:match("exit %d+") or "?") .. "; run build/bench/embed_get for its stderr)"))
    end
  end
end
print()

---------------------------------------------------------- Node level-party
if want("node") then
  local node_bench = root .. "/bench/node/run.lua"
  local f = io.open(node_bench)
  if f then
    f:close()
    dofile(node_bench)
  else
    print("node      (bench/node/run.lua not present)")
  end
end

------------------------------------------------ the loop's longest gaps
-- The loop's gaps while a coroutine on a leader writes flat out
-- (bench/loopgap.lua, LOOPGAP_SECONDS each, default 60): every write inline
-- (as before the hand-off), then with the hand-off to the worker.  "own" leaves
-- out of each gap the time the Lua thread waited for a CPU.
if want("loopgap") then
  print()
  local secs = tonumber(os.getenv("LOOPGAP_SECONDS") or "60")
  for _, inline in ipairs { "1", "0" } do
    local out = sh(("LOOPGAP_INLINE=%s %s %s/bench/loopgap.lua %d 2>&1"):format(inline, lua, root, secs))
    io.write(out)
    io.stdout:flush()
  end
  print()
end

----------------------------------------------------------- nginx workers
-- its own nginx processes and directory; last, since it loads both CPUs fully
if want("nginx") then dofile(root .. "/bench/nginx/run.lua") end

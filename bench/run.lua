-- bench/run.lua: `make bench`.  Runs every workload in one go on this machine
-- and prints each figure with its ratio to the reference point the issues name.
--
--   leader (issue 2)  the Lua API as leader, blocking and in luv coroutines,
--                     against bench/raw_leveldb.c on raw LevelDB, same workload
--   follower (issue 3) a follower in this process against a leader process,
--                     against bench/sock_floor.c (bare unix-socket round trips
--                     between two processes, the floor), plus failover times
--   node (issue 4)    a Node level-party follower against a Lua leader and
--                     against a Node leader; a Lua follower against a Node leader
--
-- Figures are operations per second unless a unit is printed.  Nothing here is
-- a test: nothing fails on a slow machine; the ratios are what to read.
local uv = require "luv"
local levelparty = require "levelparty"

local root = os.getenv("LEVELPARTY_ROOT") or "."
local bin = os.getenv("LEVELPARTY_BENCH_BIN") or (root .. "/build/bench")
local lua = os.getenv("LEVELPARTY_LUA") or "lua5.4"
local N = tonumber(os.getenv("BENCH_N") or "100000")

local results = {}

local function tmpdir(tag)
	local d = os.tmpname()
	os.remove(d)
	d = d .. "-bench-" .. tag
	os.execute("rm -rf '" .. d .. "'")
	return d
end

local function sh(cmd)
	local f = assert(io.popen(cmd))
	local out = f:read("a")
	f:close()
	return out
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

local function key(i) return ("key%013d"):format(i) end
local function value_of(k) return (k:rep(7)):sub(1, 100) end

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

-- The issue-2 workload through `db`; `wrap` runs a function (directly, or in
-- a luv coroutine).  Keys, values, the random read order and the batch
-- tables are made before the clock starts: the figures are the library's, not
-- Lua's string formatting (the C program formats its keys with sprintf inside
-- its loops, which costs it far less).  Returns put, get, iter, batch ops/s.
local function workload(db, wrap, n)
	local keys, values, order = {}, {}, {}
	for i = 0, n - 1 do
		local k = key(i)
		keys[i + 1], values[i + 1] = k, value_of(k)
	end
	local rand = rng(2463534242)
	for i = 1, n do order[i] = keys[rand(n) + 1] end
	local batches = {}
	for b = 0, 99 do
		local ops = {}
		for j = 1, 1000 do
			local k = key(n + b * 1000 + j)
			ops[j] = { type = "put", key = k, value = value_of(k) }
		end
		batches[b + 1] = ops
	end
	local r = {}
	wrap(function()
		local t = clock()
		for i = 1, n do
			assert(db:put(keys[i], values[i]))
		end
		r.put = n / (clock() - t)
		t = clock()
		for i = 1, n do
			assert(db:get(order[i]))
		end
		r.get = n / (clock() - t)
		t = clock()
		local count = 0
		for _, _ in db:iter() do count = count + 1 end
		assert(count == n, "iterated " .. count)
		r.iter = n / (clock() - t)
		t = clock()
		for b = 1, 100 do assert(db:batch(batches[b])) end
		r.batch = 100000 / (clock() - t)
	end)
	return r
end

local function direct(fn) fn() end
local function in_coroutine(fn)
	local done, err = false, nil
	coroutine.wrap(function()
		local ok, e = pcall(fn)
		done, err = true, (not ok) and e or nil
	end)()
	uv.run()
	assert(done, "coroutine did not finish")
	if err then error(err) end
end

------------------------------------------------------------------- issue 2
print(("levelparty bench: %s, %s, N=%d, %d CPUs"):format(_VERSION, levelparty.leveldb_version, N, #uv.cpu_info()))
print()
local raw = {}
do
	local d = tmpdir("raw")
	for name, v in sh(("%s/raw_leveldb '%s' -n %d 2>/dev/null"):format(bin, d, N)):gmatch("raw (%w+) ([%d.]+)") do
		raw[name] = tonumber(v)
	end
	os.execute("rm -rf '" .. d .. "'")
	for _, w in ipairs { "put", "get", "iter", "batch" } do report("raw", w, raw[w]) end
end

local function leader_run(tag, wrap)
	local d = tmpdir(tag)
	local db = assert(levelparty.open(d))
	local r = workload(db, wrap, N)
	db:close()
	os.execute("rm -rf '" .. d .. "'")
	return r
end

local goals = { put = 0.6, get = 0.6, iter = 0.3, batch = 0.6 }
local s = leader_run("sync", direct)
for _, w in ipairs { "put", "get", "iter", "batch" } do
	report("leader", "blocking " .. w, s[w], nil, "raw", raw[w], goals[w])
end
local c = leader_run("co", in_coroutine)
for _, w in ipairs { "put", "get", "iter", "batch" } do
	report("leader", "luv coroutine " .. w, c[w], nil, "raw", raw[w], w == "iter" and 0.3 or 0.5)
end
print()

------------------------------------------------------------------- issue 3
local floor = {}
for name, v in sh(("%s/sock_floor 2>/dev/null"):format(bin)):gmatch("floor (%S+) ([%d.]+)") do floor[name] = tonumber(v) end
report("floor", "round trip, one at a time", floor.rtt_ops_per_sec)
report("floor", "64 in flight", floor.pipelined64_ops_per_sec)
report("floor", "stream frames", floor.stream_frames_per_sec)

local function spawn(args, on_line)
	local out = uv.new_pipe(false)
	local inp = uv.new_pipe(false)
	local p = {}
	p.handle, p.pid = uv.spawn(args[1], { args = { table.unpack(args, 2) }, stdio = { inp, out, 2 } },
		function(code, sig) p.exited = true end)
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

do
	local d = tmpdir("follower")
	-- seed the directory, then hand it to a leader process
	local db = assert(levelparty.open(d))
	for b = 0, N / 1000 - 1 do
		local ops = {}
		for j = 1, 1000 do local k = key(b * 1000 + j - 1) ops[j] = { type = "put", key = k, value = value_of(k) } end
		assert(db:batch(ops))
	end
	db:close()
	local ready = false
	local leader = spawn({ lua, root .. "/spec/fixtures/holder.lua", d }, function(line) if line:find("^leader") then ready = true end end)
	assert(wait_for(function() return ready end), "leader did not start")

	local f = assert(levelparty.open(d))
	assert(f:role() == "follower")
	local M = math.min(N, 20000)
	local rand = rng(88172645)
	local t = clock()
	for _ = 1, M do assert(f:get(key(rand(N)))) end
	local get1 = M / (clock() - t)
	t = clock()
	for i = 1, M do assert(f:put(key(i), "x")) end
	local put1 = M / (clock() - t)

	-- 64 coroutines in flight
	local total, inflight = N, 64
	t = clock()
	in_coroutine(function()
		local left = inflight
		local me = coroutine.running()
		for w = 1, inflight do
			coroutine.wrap(function()
				for i = w, total, inflight do assert(f:get(key(i - 1))) end
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
	os.execute("rm -rf '" .. d .. "'")

	report("follower", "get, one at a time", get1, nil, "floor rtt", floor.rtt_ops_per_sec, 0.8)
	report("follower", "put, one at a time", put1, nil, "floor rtt", floor.rtt_ops_per_sec, 0.8)
	report("follower", "get, 64 in flight (coroutines)", get64, nil, "floor 64", floor.pipelined64_ops_per_sec, 0.8)
	print(("%-9s %-34s %12s  (goal: 400000 ops/s or 0.8x the floor: %s)"):format("", "", "",
		(get64 >= 400000 or get64 >= 0.8 * floor.pipelined64_ops_per_sec) and "met" or "MISSED"))
	report("follower", "stream entries (blocking)", stream, "entries/s", "1M/s goal", 1e6, 1.0)
	report("follower", "stream entries (coroutine)", stream_co, "entries/s", "1M/s goal", 1e6, 1.0)
	report("follower", "leader's own get (same run)", s.get, nil, "follower get", get1)
end

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
				local ts = line:match("^ok (%d+)")
				if ts and kill_at and not firsts[i] and tonumber(ts) > kill_at then firsts[i] = tonumber(ts) end
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

------------------------------------------------------------------- issue 4
local node_bench = root .. "/bench/node/run.lua"
local f = io.open(node_bench)
if f then
	f:close()
	dofile(node_bench)
else
	print("node      (bench/node/run.lua not present)")
end

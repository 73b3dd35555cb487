-- bench/nginx/run.lua: the nginx part of `make bench` (bench/run.lua runs it; alone:
-- `sh mk/luaenv.sh 5.4 lua5.4 bench/nginx/run.lua`, after `make build`).
--
-- Debian's nginx with the Lua module serves bench/nginx/nginx.conf: examples/nginx/kv.lua on
-- /kv/ (levelparty, one handle per worker; one worker leads) and the same GET/PUT on /dict/
-- backed by ngx.shared.DICT.  Load comes from wrk (bench/nginx/wrk.lua) with 64 connections on
-- 100k seeded keys, 100-byte values, uniformly random keys:
--   peak       closed loop, 90% GET / 10% PUT ("mix") and 100% GET ("get"), 4 workers, /kv/,
--              /dict/ and /floor/ (bench/ngx_floor.c: one cosocket round trip to a C server
--              doing only the LevelDB work) and /inline/ (bench/nginx/inline.lua: no party, each
--              worker its own copy of the directory, LevelDB through the FFI: the work itself)
--              in turn, ROUNDS times; each figure is the median
--   paced      the mix at 70% of its peak (each connection waits a random exponential time
--              between requests; wrk's latencies are then those of a loaded, not saturated, server),
--              and /dict/ and /static/ (nginx's `return 200`: HTTP only) at the same offered load,
--              in turn, ROUNDS times; each figure is the run with the median p99
--   1 worker   the same peak runs with worker_processes 1 (the leader only: LevelDB inline)
--   failover   the leader worker killed -9 under the mix, 5 times: the longest gap between
--              successful responses of any surviving worker around the kill, against
--              bench/reopen_leveldb (LevelDB's own open of the directory a kill left behind)
-- Nothing here fails on a slow machine; the ratios are what to read.
-- Knobs: BENCH_NGX_SECONDS per run (5), BENCH_NGX_ROUNDS (3), BENCH_NGX_KILLS (5),
-- BENCH_NGX_PART=peak|failover (one part only), BENCH_NGX_KEEP=1 (keep wrk's response logs).
local uv = require "luv"
local levelparty = require "levelparty"
-- the bench scripts' shared helpers, and the nginx specs' (spec/ is on mk/luaenv.sh's path)
local B = require "bench.common"
local N = require "nginx_helper"
local P = require "party_helper"
local sh, tmpdir, key, value_of = B.sh, B.tmpdir, B.key, B.value_of
local read, write = N.read, N.write

local root = os.getenv("LEVELPARTY_ROOT") or "."
local bin = os.getenv("LEVELPARTY_BENCH_BIN") or (root .. "/build/bench")
local KEYS = 100000
local CONNS = 64
local SECONDS = tonumber(os.getenv("BENCH_NGX_SECONDS") or "5")
local ROUNDS = tonumber(os.getenv("BENCH_NGX_ROUNDS") or "3")
local KILLS = tonumber(os.getenv("BENCH_NGX_KILLS") or "5")

local function loadavg() return (read("/proc/loadavg"):match("^(%S+ %S+ %S+)")) end

if not (N.have_nginx and os.execute("command -v wrk >/dev/null") == true) then
  print("nginx     (wrk or nginx with the Lua module missing: run make deps)")
  return
end

-- the pid holding a POSIX lock on dir/LOCK (the leader), or nil
local function lock_owner(dir) return P.lock_owners(dir)[1] end

-- (not P.wait_until: that one runs the loop while it waits, and on a timeout leaves a timer
-- closing, which crashes a plain lua at exit; here nothing needs the loop meanwhile)
local function wait_until(pred, secs, what)
  local deadline = uv.hrtime() + secs * 1e9
  while not pred() do
    if uv.hrtime() > deadline then error("bench: timed out waiting for " .. what) end
    uv.sleep(10)
  end
end

-- a pid that is gone or a zombie (init in a container may be slow to reap)
local function gone(pid) return not P.alive(pid) end

-- bench/ngx_floor on its own copy of the seeded directory (made before nginx opens the original)
local floor_dir, floor_sock, floor_proc
local function start_floor(seeded)
  floor_dir = tmpdir("floordb")
  os.execute(("cp -a '%s' '%s'"):format(seeded, floor_dir))
  floor_sock = floor_dir .. "/floor.sock"
  local h, pid = uv.spawn(bin .. "/ngx_floor", { args = { floor_sock, floor_dir } }, function() end)
  assert(h, pid)
  floor_proc = { handle = h, pid = pid }
  wait_until(function() return uv.fs_stat(floor_sock) ~= nil end, 10, "ngx_floor to listen")
end
local function stop_floor()
  uv.kill(floor_proc.pid, "sigkill")
  floor_proc.handle:close()
  floor_proc = nil
  -- let the close complete now: luv runs what is pending when Lua closes, and a close callback
  -- then finds its state gone (a segfault at exit)
  uv.run("nowait")
  os.execute("rm -rf '" .. floor_dir .. "'")
end

-- bench/nginx/inline.lua's directories: one copy of the seeded directory per worker
-- (<dir>/w<worker id>), for the peak runs of one nginx
local inline_dir
local function make_inline(seeded, workers)
  inline_dir = tmpdir("inline")
  assert(uv.fs_mkdir(inline_dir, 493))
  for w = 0, workers - 1 do os.execute(("cp -a '%s' '%s/w%d'"):format(seeded, inline_dir, w)) end
end
local function drop_inline()
  os.execute("rm -rf '" .. inline_dir .. "'")
  inline_dir = nil
end

local port = math.floor(40000 + (uv.os_getpid() * 7) % 20000)
-- the next port after `port` that nothing listens on now (other sessions run nginx too)
local function next_free_port()
  for _ = 1, 100 do
    port = port < 60000 and port + 1 or 40000
    local t = uv.new_tcp()
    local ok = t:bind("127.0.0.1", port)
    t:close()
    uv.run("nowait")
    if ok then return port end
  end
  error("bench: no free port")
end

-- Starts nginx with `workers` workers on db; returns { prefix, url, master(), stop(), kill() }.
local function start_nginx(workers, db)
  local prefix = tmpdir("ngx")
  for _, d in ipairs { "", "/conf", "/logs", "/tmp" } do assert(uv.fs_mkdir(prefix .. d, 493)) end
  next_free_port()
  local subst = { ROOT = uv.fs_realpath(root), PREFIX = prefix, PORT = tostring(port), DB = db,
    WORKERS = tostring(workers), USER = uv.getuid() == 0 and "user root root;" or "", KEYS = tostring(KEYS),
    FLOOR = floor_sock or "", INLINE = inline_dir or "" }
  local conf = read(root .. "/bench/nginx/nginx.conf"):gsub("@(%u+)@", function(k) return subst[k] end)
  write(prefix .. "/conf/nginx.conf", conf)
  local n = { prefix = prefix, url = ("http://127.0.0.1:%d"):format(port) }
  function n.master() return tonumber(read(prefix .. "/logs/nginx.pid")) end
  local ok = os.execute("nginx -p " .. prefix .. " -c conf/nginx.conf >" .. prefix .. "/logs/start.txt 2>&1")
  if ok ~= true then error("nginx did not start: " .. read(prefix .. "/logs/start.txt")) end
  wait_until(function()
    return sh(("curl -s -o /dev/null -w '%%{http_code}' %s/kv/%s"):format(n.url, key(0))) == "200"
  end, 20, "nginx to answer")
  wait_until(function() return lock_owner(db) ~= nil end, 10, "a leader")
  function n.stop()
    local pid = n.master()
    uv.kill(pid, "sigquit")
    wait_until(function() return gone(pid) end, 30, "nginx to quit")
    os.execute("rm -rf '" .. prefix .. "'")
  end
  -- kill -9 of the master and every worker at once (the directory is left as a crash leaves it)
  function n.kill()
    local pid = n.master()
    local procs = N.workers_of(n)
    uv.kill(pid, "sigkill")
    for w in pairs(procs) do uv.kill(w, "sigkill") end
    wait_until(function()
      for w in pairs(procs) do if not gone(w) then return false end end
      return true
    end, 10, "the workers to die")
    wait_until(function() return gone(pid) end, 10, "nginx to die")
    wait_until(function() return lock_owner(db) == nil end, 10, "the LOCK to be free")
    os.execute("rm -rf '" .. prefix .. "'")
  end
  return n
end

-- wrk against n: env settings for bench/nginx/wrk.lua; returns its wrkstats as a table.
local function wrk_cmd(n, env, secs)
  local vars = {}
  for k, v in pairs(env) do vars[#vars + 1] = ("%s='%s'"):format(k, v) end
  table.sort(vars)
  return ("env %s wrk -t2 -c%d -d%ds --timeout 10s -s %s/bench/nginx/wrk.lua %s/"):format(table.concat(vars, " "),
    CONNS, secs, root, n.url)
end
local function stats_of(out)
  local s = {}
  local line = out:match("wrkstats [^\n]*")
  if not line then error("wrk printed no stats:\n" .. out) end
  for k, v in line:gmatch("(%S+) (%d+)") do s[k] = tonumber(v) end
  s.rate = s.requests / (s.duration_us / 1e6)
  return s
end
-- CPU seconds the workers of n have used (all their threads: a leader's server thread too), and
-- bench/ngx_floor's (it serves the /floor/ location as the leader's thread serves /kv/)
local TICK = 1 / tonumber(sh("getconf CLK_TCK"))
local function workers_cpu(n)
  local total = 0
  local pids = N.workers_of(n)
  if floor_proc then pids[floor_proc.pid] = true end
  for pid in pairs(pids) do
    local u, st = read("/proc/" .. pid .. "/stat"):match("^%d+ %b() %a" .. (" %S+"):rep(10) .. " (%d+) (%d+)")
    if u then total = total + (u + st) * TICK end
  end
  return total
end
-- Besides the rate, each run's CPU per request: the servers' (from /proc, in ticks) and wrk's
-- (from time(1)), in microseconds.  On a machine that others load, what a request costs is
-- steadier than how many of them fit in the CPU time left.
local function wrk(n, env, secs)
  local cpu0 = workers_cpu(n)
  local out = sh("/usr/bin/time -f 'wrkcpu %U %S' " .. wrk_cmd(n, env, secs or SECONDS) .. " 2>&1")
  local cpu = workers_cpu(n) - cpu0
  local s = stats_of(out)
  local u, st = out:match("wrkcpu ([%d.]+) ([%d.]+)")
  s.cpu_us = cpu * 1e6 / s.requests
  s.wrk_cpu_us = (tonumber(u) + tonumber(st)) * 1e6 / s.requests
  return s
end

local function median_by(list, field)
  local sorted = {}
  for i, s in ipairs(list) do sorted[i] = s end
  table.sort(sorted, function(a, b) return a[field] < b[field] end)
  return sorted[(#sorted + 1) // 2]
end

local function line(group, name, s, ref_name, ref, goal)
  local out = ("%-9s %-34s %7.0f req/s  p50 %5.2f p99 %6.2f p99.9 %6.2f ms  cpu/req %3.0f+%2.0f us"):format(group,
    name, s.rate, s.p50 / 1e3, s.p99 / 1e3, s.p999 / 1e3, s.cpu_us, s.wrk_cpu_us)
  if s.errors + s.status_errors > 0 then out = out .. ("  ERRORS %d+%d"):format(s.errors, s.status_errors) end
  if ref then
    local ratio = s.rate / ref.rate
    out = out .. ("  %5.2fx %s"):format(ratio, ref_name)
    if goal then out = out .. ("  (goal %.2fx: %s)"):format(goal, ratio >= goal and "met" or "MISSED") end
    -- the same ratio from the CPU each request took (workers and wrk): the rate an idle machine
    -- would show when both are CPU-bound
    out = out .. ("; by cpu/req %.2fx"):format((ref.cpu_us + ref.wrk_cpu_us) / (s.cpu_us + s.wrk_cpu_us))
  end
  print(out)
  io.stdout:flush()
end

-------------------------------------------------------------------- setup
local db = tmpdir("ngxdb")
do
  local h = assert(levelparty.open(db))
  for b = 0, KEYS / 1000 - 1 do
    local ops = {}
    for j = 1, 1000 do
      local k = key(b * 1000 + j - 1)
      ops[j] = { type = "put", key = k, value = value_of(k) }
    end
    assert(h:batch(ops))
  end
  h:close()
end
print(("nginx     %s, wrk -t2 -c%d, %ds per run, median of %d rounds; load average before: %s"):format(
  sh("nginx -v 2>&1"):match("nginx/(%S+)") or "?", CONNS, SECONDS, ROUNDS, loadavg()))

local MIX = { BENCH_KEYS = KEYS, BENCH_PUT_PCT = 10 }
local GET = { BENCH_KEYS = KEYS, BENCH_PUT_PCT = 0 }
local function with(env, more)
  local e = {}
  for k, v in pairs(env) do e[k] = v end
  for k, v in pairs(more) do e[k] = v end
  return e
end

-- the peak runs of one nginx: lp and dict take turns, each workload ROUNDS times
local function peaks(n)
  local r = { kv_mix = {}, dict_mix = {}, floor_mix = {}, inline_mix = {}, kv_get = {}, dict_get = {}, floor_get = {},
    inline_get = {} }
  -- warm up: the page cache, LuaJIT's traces, every worker's connection pool
  wrk(n, with(MIX, { BENCH_PREFIX = "/kv/" }), 2)
  wrk(n, with(MIX, { BENCH_PREFIX = "/dict/" }), 1)
  wrk(n, with(MIX, { BENCH_PREFIX = "/floor/" }), 1)
  wrk(n, with(MIX, { BENCH_PREFIX = "/inline/" }), 1)
  for _ = 1, ROUNDS do
    for _, w in ipairs { "mix", "get" } do
      for _, p in ipairs { "kv", "dict", "floor", "inline" } do
        local list = r[p .. "_" .. w]
        list[#list + 1] = wrk(n, with(w == "mix" and MIX or GET, { BENCH_PREFIX = "/" .. p .. "/" }))
      end
    end
  end
  for k, list in pairs(r) do r[k] = median_by(list, "rate") end
  return r
end

-- The mix at `frac` of `peak` req/s on /kv/, and the other locations at the same offered load
-- (the same waits): each connection's mean wait between requests is set from the target, then
-- corrected once by the rate a first /kv/ run reached.  Then the locations take turns, ROUNDS
-- times (a single run's p99 swings with the machine as much as a peak does); each figure is
-- the run with the median p99.  Returns { [prefix] = stats }, stats.mean_ms the wait and, for
-- /kv/, stats.frac its rate over peak.
local function paced(n, prefixes, peak, frac)
  local target = frac * peak
  local mean_ms = CONNS / target * 1000
  local s = wrk(n, with(MIX, { BENCH_PREFIX = "/kv/", BENCH_DELAY_MS = ("%.4f"):format(mean_ms) }))
  mean_ms = mean_ms * s.rate / target
  local runs = {}
  for _ = 1, ROUNDS do
    for _, prefix in ipairs(prefixes) do
      local list = runs[prefix] or {}
      runs[prefix] = list
      list[#list + 1] = wrk(n, with(MIX, { BENCH_PREFIX = prefix, BENCH_DELAY_MS = ("%.4f"):format(mean_ms) }))
    end
  end
  local r = {}
  for prefix, list in pairs(runs) do
    r[prefix] = median_by(list, "p99")
    r[prefix].mean_ms = mean_ms
  end
  r["/kv/"].frac = r["/kv/"].rate / peak
  return r
end

-- BENCH_NGX_PART=peak or failover runs one part only (for reruns when the machine is quieter)
local part = os.getenv("BENCH_NGX_PART")
if part ~= "failover" then
  -------------------------------------------------------------------- 4 workers
  start_floor(db)
  make_inline(db, 4)
  local n4 = start_nginx(4, db)
  local p4 = peaks(n4)
  local pace = paced(n4, { "/kv/", "/dict/", "/static/" }, p4.kv_mix.rate, 0.7)
  local pace_kv, pace_dict, pace_static = pace["/kv/"], pace["/dict/"], pace["/static/"]
  n4.stop()
  drop_inline()
  -------------------------------------------------------------------- 1 worker
  make_inline(db, 1)
  local n1 = start_nginx(1, db)
  local p1 = peaks(n1)
  n1.stop()
  drop_inline()
  stop_floor()

  for _, c in ipairs { { "4 workers", p4 }, { "1 worker", p1 } } do
    local tag, p = c[1], c[2]
    line("nginx", tag .. ": DICT mix 90/10", p.dict_mix)
    line("nginx", tag .. ": floor mix 90/10", p.floor_mix, "DICT", p.dict_mix)
    line("nginx", tag .. ": levelparty mix 90/10", p.kv_mix, "DICT", p.dict_mix)
    line("nginx", tag .. ": levelparty mix 90/10", p.kv_mix, "floor", p.floor_mix)
    line("nginx", tag .. ": inline mix 90/10", p.inline_mix, "DICT", p.dict_mix)
    line("nginx", tag .. ": levelparty mix 90/10", p.kv_mix, "inline", p.inline_mix)
    line("nginx", tag .. ": DICT get", p.dict_get)
    line("nginx", tag .. ": floor get", p.floor_get, "DICT", p.dict_get)
    line("nginx", tag .. ": levelparty get", p.kv_get, "DICT", p.dict_get, tag == "4 workers" and 0.8 or nil)
    line("nginx", tag .. ": levelparty get", p.kv_get, "floor", p.floor_get)
    line("nginx", tag .. ": inline get (no party)", p.inline_get, "DICT", p.dict_get)
    line("nginx", tag .. ": levelparty get", p.kv_get, "inline", p.inline_get)
  end
  line("nginx", "4 vs 1 worker: levelparty mix", p4.kv_mix, "1 worker", p1.kv_mix)
  line("nginx", "4 vs 1 worker: levelparty get", p4.kv_get, "1 worker", p1.kv_get)
  line("nginx", ("levelparty mix at %.0f%% of peak"):format(pace_kv.frac * 100), pace_kv)
  print(("%-9s %-34s %9s        (goal p99 <= 2 ms at 70%% of peak: %s)"):format("", "", "",
    pace_kv.p99 <= 2000 and "met" or "MISSED"))
  line("nginx", "DICT mix at the same load", pace_dict)
  line("nginx", "return 200 at the same load", pace_static)
end

if part ~= "peak" then
  -------------------------------------------------------------------- failover
  -- Each round: a fresh nginx of 4 workers on the directory, wrk's mix on /kv/ with every
  -- response logged (time, status, worker), the leader worker killed -9 after 2 s.  Then the
  -- whole nginx is killed -9 and bench/reopen_leveldb opens the directory it left: LevelDB's
  -- own reopen after a kill, of the same directory, with the same kind of log to replay.
  -- The load is paced (each of the 64 connections waits 16 ms on average between requests: at most
-- 4k requests/s in all, ~1k per worker), so that a survivor's gaps are the failover's and not
-- the queueing of a saturated machine; the gaps with no kill are printed beside.
local FAILOVER_DELAY_MS = 16
local stalls, reopens, baselines, survivor_fails, killed_fails = {}, {}, {}, 0, 0
local conn_errors, rates = 0, {}
  for _ = 1, KILLS do
    local n = start_nginx(4, db)
    local leader = lock_owner(db)
    local logs = tmpdir("wrklog")
    local done = false
    local env = with(MIX, { BENCH_PREFIX = "/kv/", BENCH_LOG = logs, BENCH_DELAY_MS = FAILOVER_DELAY_MS })
    local cmd = wrk_cmd(n, env, 6)
    local h = uv.spawn("sh", { args = { "-c", cmd .. " >" .. logs .. ".out 2>&1" } }, function() done = true end)
    assert(h, "could not start wrk")
    -- wrk writes to a file: nothing to serve meanwhile (its exit is seen by the loop below)
    uv.sleep(2000)
    local kill_at = uv.hrtime()
    if os.getenv("BENCH_NGX_KEEP") then print("kill_at", kill_at, "leader", leader, logs) end
    uv.kill(leader, "sigkill")
    while not done do uv.run("once") end
    h:close()
    uv.run("nowait") -- as in stop_floor
    n.kill()
    local ws = stats_of(read(logs .. ".out"))
    conn_errors, rates[#rates + 1] = conn_errors + ws.errors, ws.rate
    -- a killed process's LOCK is released once its last thread is gone, which may be after its
    -- pid shows as a zombie: an open refused at the LOCK (which it takes before any work) is retried
    local out
    wait_until(function()
      out = sh(("%s/reopen_leveldb '%s' 2>&1"):format(bin, db))
      return not out:find("LOCK: Resource temporarily unavailable", 1, true)
    end, 10, "LevelDB's LOCK")
    reopens[#reopens + 1] = assert(tonumber(out:match("open_ms ([%d.]+)")), "reopen_leveldb: " .. out)
    -- per worker: the times of its successful responses
    local ok_times = {}
    for t = 1, 2 do
      for l in io.lines(logs .. "." .. t) do
        local ts, status, pid = l:match("^(%d+) (%d+) (%S+)")
        ts, status, pid = tonumber(ts), tonumber(status), tonumber(pid)
        if ts and pid then
          if status < 300 then
            local list = ok_times[pid] or {}
            ok_times[pid] = list
            list[#list + 1] = ts
          elseif pid == leader then
            killed_fails = killed_fails + 1
          else
            survivor_fails = survivor_fails + 1
          end
        end
      end
    end
    -- the longest gap between consecutive successes of a survivor (a worker that answered before
    -- the kill and is not the killed one): around the kill (a gap that ends within 3 s after it),
    -- and before it (the gaps of 1.5 s before, for the noise of the loaded machine itself)
    local stall, base = 0, 0
    for pid, list in pairs(ok_times) do
      if pid ~= leader and list[1] < kill_at then
        table.sort(list)
        for i = 2, #list do
          local gap = (list[i] - list[i - 1]) / 1e6
          if list[i] > kill_at and list[i - 1] < kill_at + 3e9 then stall = math.max(stall, gap) end
          if list[i] < kill_at and list[i - 1] > kill_at - 1.5e9 then base = math.max(base, gap) end
        end
      end
    end
    stalls[#stalls + 1], baselines[#baselines + 1] = stall, base
    if not os.getenv("BENCH_NGX_KEEP") then os.execute(("rm -f '%s'.*"):format(logs)) end
  end
  local function med(t)
    local s = { table.unpack(t) }
    table.sort(s)
    return s[(#s + 1) // 2], s[#s]
  end
  local stall, stall_max = med(stalls)
  local base, base_max = med(baselines)
  local reopen, reopen_max = med(reopens)
  local rate = med(rates)
  print(("%-9s %-34s %9.1f ms     (median of %d kills; max %.1f; each the longest of the survivors)"):format("nginx",
    "leader worker kill: survivor stall", stall, KILLS, stall_max))
  print(("%-9s %-34s %9.0f req/s  (paced; connection errors, all on the killed worker's connections: %d)"):format(
    "nginx", "  load during the kills", rate, conn_errors))
  print(("%-9s %-34s %9.1f ms     (max %.1f; the same measure over 1.5 s before each kill)"):format("nginx",
    "  longest gap with no kill", base, base_max))
  print(("%-9s %-34s %9.1f ms     (max %.1f)"):format("nginx", "LevelDB reopen after the kill", reopen, reopen_max))
  print(("%-9s %-34s %9.2fx      (goal <= 2x: %s); failed responses: %d on survivors, %d on the killed worker"):format(
    "nginx", "stall / reopen", stall / reopen, stall <= 2 * reopen and "met" or "MISSED", survivor_fails, killed_fails))
end
os.execute("rm -rf '" .. db .. "'")
print(("%-9s load average after: %s"):format("nginx", loadavg()))

-- bench/nginx/wrk.lua: wrk's script for the nginx bench (wrk runs it under LuaJIT, one Lua
-- state per wrk thread).  Settings come from the environment:
--   BENCH_PREFIX   "/kv/" or "/dict/"
--   BENCH_KEYS     keys are key%013d of 0 .. BENCH_KEYS-1, uniformly random
--   BENCH_PUT_PCT  percent of requests that are PUTs of a 100-byte value (the rest GETs)
--   BENCH_DELAY_MS when set: each connection waits a random time of this mean (exponential)
--                  after each response before its next request: an open-ish load at a set
--                  rate, since wrk's own loop is closed (see docs/BENCHMARKS.md)
--   BENCH_LOG      when set: each request carries "?r=<thread>.<n>" (kv.lua reads only the
--                  path; nginx echoes it in X-Req), and each response is logged to
--                  BENCH_LOG.<thread> as "<CLOCK_MONOTONIC ns> <status> <X-Worker> <latency us>
--                  <X-Time>": the latency from wrk's request() (called right before the
--                  request's write) to its response, and nginx's $request_time (ms); done()
--                  prints "wrkunanswered <n> <issue ns>...": the requests issued but never
--                  answered (a socket error loses the request in flight too: wrk's "errors")
-- done() prints one line: "wrkstats requests N duration_us D errors E p50 .. p99 .. p999 .. max .."
-- (latencies in microseconds, from wrk's own histogram).
-- wrk calls these globals, and sets `wrk` (and `id`, per thread, in setup below)
-- luacheck: globals setup init request delay response done issued, read_globals wrk id
local prefix = os.getenv("BENCH_PREFIX") or "/kv/"
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "100000")
local put_pct = tonumber(os.getenv("BENCH_PUT_PCT") or "10")
local mean_delay = tonumber(os.getenv("BENCH_DELAY_MS") or "")
local log_path = os.getenv("BENCH_LOG")

local random, floor, log, format = math.random, math.floor, math.log, string.format

local threads, counter, log_file = {}, 0, nil
-- BENCH_LOG: CLOCK_MONOTONIC in ns, and the issue time of each request in flight by its id (a
-- global: done() reads each thread's with thread:get)
local now_ns
issued = {}
local seq = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  threads[#threads + 1] = thread
end

function init()
  -- every thread its own sequence (wrk's states would otherwise all start alike)
  math.randomseed(1000003 * (id or 1) + 12345)
  if log_path then log_file = assert(io.open(log_path .. "." .. tostring(id), "w")) end
end

function request()
  local k = format("key%013d", random(0, nkeys - 1))
  local path = prefix .. k
  if now_ns then
    seq = seq + 1
    local r = format("%d.%d", id or 1, seq)
    issued[r] = now_ns()
    path = path .. "?r=" .. r
  end
  if random(100) <= put_pct then
    return wrk.format("PUT", path, nil, (k:rep(7)):sub(1, 100))
  end
  return wrk.format("GET", path)
end

if mean_delay then
  -- wrk's timers take whole milliseconds: round at random so that the mean stays exact
  function delay()
    local d = -mean_delay * log(1 - random())
    local whole = floor(d)
    if random() < d - whole then whole = whole + 1 end
    return whole
  end
end

if log_path then
  local ffi = require "ffi"
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  now_ns = function()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, as uv.hrtime() in bench/nginx/run.lua
    return tonumber(ts.tv_sec) * 1000000000 + tonumber(ts.tv_nsec)
  end
  function response(status, headers)
    local t = now_ns()
    local r = headers["X-Req"]
    local t0 = r and issued[r]
    if t0 then issued[r] = nil end
    local lat = t0 and floor((t - t0) / 1000) or -1
    log_file:write(format("%d %d %s %d %s\n", t, status, headers["X-Worker"] or "-", lat, headers["X-Time"] or "-"))
  end
end

function done(summary, latency)
  local e = summary.errors
  io.write(format("wrkstats requests %d duration_us %d errors %d status_errors %d p50 %d p99 %d p999 %d max %d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
  if log_path then
    -- requests issued and never answered, with their issue times (wrk copies each thread's
    -- table into this state)
    local times = {}
    for _, t in ipairs(threads) do
      for _, t0 in pairs(t:get("issued") or {}) do times[#times + 1] = format("%d", t0) end
    end
    io.write("wrkunanswered ", #times, " ", table.concat(times, " ", 1, math.min(#times, 1000)), "\n")
  end
end

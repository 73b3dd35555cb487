-- bench/loopgap.lua: how long a leader's own writes hold a luv loop
-- (docs/ARCHITECTURE.md, "The loop never stalls").
--
--   sh mk/luaenv.sh 5.4 lua5.4 bench/loopgap.lua [SECONDS [DIR]]
--
-- (bench/run.lua, itself under mk/luaenv.sh, passes its paths on; they hold levelparty and
-- spec/sched_helper.lua, the run-queue wait below.)
--
-- A leader opens DIR (a fresh temporary directory by default); one coroutine
-- on luv writes flat out for SECONDS (default 60): puts of 100 B to 1 KiB
-- values under uniformly random keys, and every tenth call a batch of 10 such
-- puts.  A luv timer due every 1 ms records the time between its runs: the
-- loop's gaps.  Prints one line:
--
--   loopgap MODE max MS p99 MS p99.9 MS (own: max MS p99 MS p99.9 MS) gaps N
--     writes OPS/s MB/s handed JOBS
--
-- LevelDB's stalls (a memtable flush it must wait for, level-0 slowdown and
-- stop) are what the gaps show.  The machines this runs on are shared: the
-- Lua thread often waits for a CPU, and a gap then says more about the
-- scheduler than about us.  The "own" figures take out of each gap the time
-- the Lua thread spent runnable but not running (the run-queue wait of
-- /proc/thread-self/schedstat): what remains is the time it ran or blocked
-- (in LevelDB, say).  JOBS: writes the leader handed to its worker thread.
-- MODE: "handoff" (the default settings), or "inline" with LOOPGAP_INLINE=1
-- (the hand-off off: every write inline, as before the hand-off).  Nothing here
-- is a test.
local uv = require "luv"
local levelparty = require "levelparty"

local secs = tonumber(arg[1] or os.getenv("LOOPGAP_SECONDS") or "60")
local dir = arg[2]
local own_dir = dir == nil
if own_dir then
  dir = os.tmpname()
  os.remove(dir)
  dir = dir .. "-loopgap"
  os.execute("rm -rf '" .. dir .. "'")
end

local core = require "levelparty.core"
local mode = os.getenv("LOOPGAP_INLINE") == "1" and "inline" or "handoff"
if mode == "inline" then core.write_handoff { slow_ms = 1e12, l0 = 1e9, mem_pct = 1e9 } end

local db = assert(levelparty.open(dir))
assert(db:role() == "leader", "loopgap: not the leader of " .. dir)

-- xorshift: keys and value sizes, cheap and the same every run
local s = 88172645463325252 % 2 ^ 31
local function rand()
  s = s ~ ((s << 13) & 0x7fffffff)
  s = s ~ (s >> 17)
  s = s ~ ((s << 5) & 0x7fffffff)
  return s
end

local filler = ("0123456789abcdef"):rep(64) -- 1 KiB
local values = {}
for i = 1, 925 do values[i] = filler:sub(1, 99 + i) end -- 100 .. 1024 bytes

-- the Lua thread's run-queue wait so far, in ns (0 without schedstat)
local runq_wait = require("sched_helper").runq_wait_ns

local gaps, own, ngaps = {}, {}, 0
local last, last_wait = uv.hrtime(), runq_wait()
local timer = uv.new_timer()
timer:start(1, 1, function()
  local now, wait = uv.hrtime(), runq_wait()
  ngaps = ngaps + 1
  gaps[ngaps] = (now - last) / 1e6
  own[ngaps] = math.max(0, (now - last) - (wait - last_wait)) / 1e6
  last, last_wait = now, wait
end)

local writes, bytes, done = 0, 0, false
local t0 = uv.hrtime()
local stop_at = t0 + secs * 1e9
coroutine.wrap(function()
  local ops = {}
  for j = 1, 10 do ops[j] = { type = "put" } end
  local i = 0
  while uv.hrtime() < stop_at do
    i = i + 1
    if i % 10 == 0 then
      for j = 1, 10 do
        local op = ops[j]
        op.key = ("k%012d"):format(rand() % 10000000)
        op.value = values[rand() % 925 + 1]
        bytes = bytes + #op.key + #op.value
      end
      assert(db:batch(ops))
      writes = writes + 10
    else
      local k, v = ("k%012d"):format(rand() % 10000000), values[rand() % 925 + 1]
      assert(db:put(k, v))
      writes = writes + 1
      bytes = bytes + #k + #v
    end
  end
  done = true
end)()
while not done do uv.run("once") end
local elapsed = (uv.hrtime() - t0) / 1e9
timer:stop()
timer:close()
local jobs = db._c:handed()
db:close()
if own_dir then os.execute("rm -rf '" .. dir .. "'") end

table.sort(gaps)
table.sort(own)
local function pct(t, p) return t[math.max(1, math.ceil(ngaps * p))] or 0 end
print(("loopgap %s max %.1f ms p99 %.2f ms p99.9 %.2f ms (own: max %.1f ms p99 %.2f ms p99.9 %.2f ms) " ..
  "gaps %d writes %.0f/s %.1f MB/s handed %d"):format(mode, gaps[ngaps] or 0, pct(gaps, 0.99), pct(gaps, 0.999),
  own[ngaps] or 0, pct(own, 0.99), pct(own, 0.999), ngaps, writes / elapsed, bytes / elapsed / 1e6, jobs))

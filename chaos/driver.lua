-- chaos/driver.lua: the chaos soak (`make chaos`; docs/RELIABILITY.md, "Chaos soak").
--
--   lua5.4 chaos/driver.lua [--duration S] [--seed N] [--procs N] [--timeout S] [--out DIR] [--lie]
--   lua5.4 chaos/driver.lua --check-only DIR   judges a finished run's logs in DIR again, prints
--     the same summary and exits as the run did (`make chaos CHAOS_ARGS='--check-only DIR'`)
--   (run it under mk/luaenv.sh 5.4, which `make chaos` does)
--
-- Starts PROCS actors on one directory (Lua 5.4 and LuaJIT, blocking and luv, and a Node
-- level-party process when Node is available), then for DURATION seconds, every 100-800 ms:
-- SIGKILLs the leader, or one or two followers, or SIGSTOPs a process for longer than the
-- timeout, or closes a handle gracefully; whatever it took away comes back.  It samples the
-- LOCK's holders (/proc/locks) every 100 ms and each process's RSS, fds and CPU every second.
-- At the end: every process is resumed, restarted and left to run, then told to go idle
-- (each must answer: no call hangs), idle CPU is measured, everything is SIGKILLed, the
-- directory is read, and chaos/check.lua judges the logs.  Exit 0 when every check passed.
-- Besides the actors' logs, OUT holds events.log, driver.log and final.log: all that the
-- judgement needs, so --check-only can repeat it (a replay of the checks, or of a changed checker).
-- The seed fixes the driver's schedule and every actor's workload; --lie makes actor 1 log
-- puts it never makes (the checker must catch it).
local uv = require "luv"

local root = os.getenv("LEVELPARTY_ROOT") or "."
local C = dofile(root .. "/chaos/common.lua")
local K = dofile(root .. "/chaos/check.lua")

local o = { lie = false } -- --duration 60 --procs 6 --timeout 1 unless given
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--lie" then o.lie = true
    elseif a:match("^%-%-") and arg[i + 1] then
      o[a:sub(3)] = arg[i + 1]
      i = i + 1
    else error("driver: unknown argument " .. a) end
    i = i + 1
  end
end
local function say(...) io.stdout:write(table.concat({ ... }, " "), "\n") io.stdout:flush() end

local function read_lines(path)
  local f = io.open(path)
  if not f then return {} end
  local t = {}
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local KINDS = { "5.4 sync", "luajit luv", "node", "5.4 luv", "luajit sync", "5.4 luv", "luajit luv", "5.4 sync" }

-- Judging ------------------------------------------------------------------------------------

--- Checks a finished run's logs and prints the summary; returns the exit status (0: passed).
--- r: { out, seed, duration, procs, timeout, slots = { { kind, incs = { { name, samples } } } },
---   events = { starts, exits = { { name, exit_t } }, kills = { { t, name, leader } },
---   stops = { { t, name, cont } }, closes, stalls = { { t, text } } }, final = { key -> value },
---   lock_samples, multi, idle_cpu = { "name pct%" }, problems = { text } }
--- A live run passes its own state; --check-only DIR reads it back from DIR (load_run).
local function judge(r)
  local slots, events, final, timeout = r.slots, r.events, r.final, r.timeout
  local seed, duration, procs = r.seed, r.duration, r.procs
  -- The checker reads the logs twice, line by line (chaos/check.lua): first the writes, then
  -- every read, iterator, batch and call judged against them; nothing per call is kept.  Each
  -- line leaves garbage: a GC cycle starts at 1.2 times the live heap, not twice it (Lua 5.4's
  -- default), which keeps the peak near what the checks hold.
  collectgarbage("incremental", 120, 200)
  local h = K.new(C.NKEYS, C.key)
  local function each_log(pass)
    for _, s in ipairs(slots) do
      for _, inc in ipairs(s.incs) do
        local path = r.out .. "/" .. inc.name .. ".log"
        local f = io.open(path)
        if f then f:close() end
        pass(inc.name, f and io.lines(path) or {}, { node = s.kind == "node", timeout = timeout })
      end
    end
  end
  each_log(function(who, lines, info) h:scan(who, lines, info) end)
  h:build(final)

  -- one leader at a time: the claims of the logs, each ending when its process was killed,
  -- closed its handle or exited
  local ends = {}
  for _, inc in ipairs(events.exits) do ends[inc.name] = inc.exit_t end
  for _, k in ipairs(events.kills) do ends[k.name] = math.min(ends[k.name] or math.huge, k.t) end
  local closes = {}
  for _, c in ipairs(h.closes) do
    closes[c.who] = closes[c.who] or {}
    table.insert(closes[c.who], c.t)
  end
  for _, l in ipairs(h.leaders) do
    l["end"] = ends[l.who] or math.huge
    for _, t in ipairs(closes[l.who] or {}) do if t > l.from and t < l["end"] then l["end"] = t end end
  end
  table.sort(h.leaders, function(a, b) return a.from < b.from end)
  local prev
  for _, l in ipairs(h.leaders) do
    if prev and l.from < prev["end"] and l.who ~= prev.who then
      h:fail("leader", "two leaders: %s from %d while %s led until %.0f", l.who, l.from, prev.who, prev["end"])
    end
    if not prev or l["end"] > prev["end"] then prev = l end
  end

  -- hangs: every call within its bound, plus the time its own process was stopped
  local stopped_of = {}
  for _, ev in ipairs(events.stops) do
    stopped_of[ev.name] = stopped_of[ev.name] or {}
    table.insert(stopped_of[ev.name], ev)
  end
  local function overlap(a0, a1, b0, b1) return math.max(0, math.min(a1, b1) - math.max(a0, b0)) end
  -- disruptions: a leader's kill until a new leader (+0.5 s), a stop (+0.5 s), a close (+0.5 s)
  local disrupt = {}
  local failover = {}
  for _, k in ipairs(events.kills) do
    if k.leader then
      local nxt
      for _, l in ipairs(h.leaders) do if l.from > k.t then nxt = l.from break end end
      if nxt then failover[#failover + 1] = (nxt - k.t) / 1000 end
      disrupt[#disrupt + 1] = { k.t, (nxt or k.t + 5e6) + 5e5 }
    end
  end
  for _, ev in ipairs(events.stops) do disrupt[#disrupt + 1] = { ev.t, (ev.cont or ev.t) + 5e5 } end
  for _, c in ipairs(h.closes) do disrupt[#disrupt + 1] = { c.t, c.t + 5e5 } end
  -- A call is clean when no disruption overlaps it: disruptions by start, with the running
  -- max of their ends, so each call costs a binary search (an hour holds ~10^6 calls and
  -- ~10^4 disruptions).
  table.sort(disrupt, function(a, b) return a[1] < b[1] end)
  local disrupt_end = {}
  for i, d in ipairs(disrupt) do disrupt_end[i] = math.max(disrupt_end[i - 1] or -math.huge, d[2]) end
  local function disrupted(inv, resp)
    local lo, hi, best = 1, #disrupt, 0
    while lo <= hi do
      local mid = (lo + hi) // 2
      if disrupt[mid][1] < resp then best, lo = mid, mid + 1 else hi = mid - 1 end
    end
    return best > 0 and disrupt_end[best] > inv
  end
  local worst, worst_call, lats = 0, nil, {}
  local function on_call(who, kind, inv, resp, lat, bound, ok)
    lat = lat or (resp - inv)
    local allow = 0
    for _, ev in ipairs(stopped_of[who] or {}) do allow = allow + overlap(inv, resp, ev.t, ev.cont or resp) end
    if lat > bound + allow then
      h:fail("call", "%s: %s took %.0f ms (bound %.0f ms)", who, kind, lat / 1000, (bound + allow) / 1000)
    end
    if ok and kind ~= "open" then
      if not disrupted(inv, resp) then
        lats[#lats + 1] = lat
        if lat > worst then worst, worst_call = lat, { who = who, kind = kind } end
      end
    end
  end
  each_log(function(who, lines, info) h:verify(who, lines, info, on_call) end)
  h:finish()

  -- memory and descriptors: caps, and the trend of the longest-lived process
  local longest
  for _, s in ipairs(slots) do
    for _, inc in ipairs(s.incs) do
      for _, sm in ipairs(inc.samples) do
        if sm.fds > 256 then h:fail("resource", "%s: %d file descriptors", inc.name, sm.fds) break end
        if sm.rss > 512 * 1024 then h:fail("resource", "%s: RSS %d MiB", inc.name, sm.rss // 1024) break end
      end
      if not longest or #inc.samples > #longest.samples then longest = inc end
    end
  end
  local trend = "-"
  if longest and #longest.samples >= 8 then
    local ss = longest.samples
    local q = #ss // 4
    local function mean(a, b, f)
      local sum = 0
      for i = a, b do sum = sum + ss[i][f] end
      return sum / (b - a + 1)
    end
    local r2, r4 = mean(q + 1, 2 * q, "rss"), mean(#ss - q + 1, #ss, "rss")
    local f2, f4 = mean(q + 1, 2 * q, "fds"), mean(#ss - q + 1, #ss, "fds")
    -- A follower that became leader between the two quarters (or the reverse) holds LevelDB's
    -- files, the socket and a connection per follower more (or fewer): its descriptors are not
    -- compared across that change (seed 351994: 16 -> 30 after a6i6 took over).
    local function leads(t)
      for _, l in ipairs(h.leaders) do
        if l.who == longest.name and t >= l.from and t < l["end"] then return true end
      end
      return false
    end
    local role_changed = leads(ss[q + 1].t) ~= leads(ss[#ss].t)
    trend = ("%s (%s, %d s): RSS %.1f -> %.1f MiB, fds %.1f -> %.1f%s"):format(longest.name, longest.slot.kind,
      #ss, r2 / 1024, r4 / 1024, f2, f4, role_changed and " (role changed: fds not compared)" or "")
    if #ss >= 30 and r4 > r2 * 1.5 and r4 - r2 > 20 * 1024 then
      h:fail("resource", "%s: RSS grows: %s", longest.name, trend)
    end
    if #ss >= 30 and f4 > f2 + 8 and not role_changed then
      h:fail("resource", "%s: descriptors grow: %s", longest.name, trend)
    end
  end

  -- the summary

  local function pct(t, p)
    if #t == 0 then return 0 end
    table.sort(t)
    return t[math.max(1, math.ceil(#t * p))]
  end
  local kinds = {}
  for k, n in pairs(h.stats.kinds) do kinds[#kinds + 1] = k .. " " .. n end
  table.sort(kinds)
  local outs = {}
  for k, n in pairs(h.stats.outcomes) do if not k:match(" ok$") then outs[#outs + 1] = k .. " " .. n end end
  table.sort(outs)
  local nk, nkl = 0, 0
  for _, k in ipairs(events.kills) do nk = nk + 1 if k.leader then nkl = nkl + 1 end end
  local kinds_of = {}
  for _, s in ipairs(slots) do kinds_of[#kinds_of + 1] = s.kind end
  say("chaos: processes: " .. table.concat(kinds_of, ", ") .. "; incarnations " .. #events.starts)
  say("chaos: operations: " .. table.concat(kinds, ", "))
  say("chaos: not ok: " .. (#outs > 0 and table.concat(outs, ", ") or "none"))
  local nfinal = 0
  for _ in pairs(final) do nfinal = nfinal + 1 end
  say(("chaos: checked %d reads, %d iterators (%d stably present keys owed), %d batches, %d final keys"):format(
    h.stats.reads, h.stats.iters, h.stats.stable or 0, h.stats.batches, nfinal))
  say(("chaos: kills %d (leader %d, follower %d), stops %d, closes %d, LOCK samples %d (max 1 holder: %s)"):format(
    nk, nkl, nk - nkl, #events.stops, #events.closes, r.lock_samples, r.multi == 0 and "yes" or "NO"))
  say(("chaos: failovers %d: p50 %.1f ms, p99 %.1f ms, max %.1f ms"):format(#failover, pct(failover, 0.5),
    pct(failover, 0.99), pct(failover, 1)))
  say(("chaos: calls outside failovers %d: p99 %.1f ms, worst %.1f ms%s"):format(#lats, pct(lats, 0.99) / 1000,
    worst / 1000, worst_call and (" (" .. worst_call.who .. " " .. worst_call.kind .. ")") or ""))
  say("chaos: memory trend: " .. trend)
  say("chaos: idle CPU: " .. table.concat(r.idle_cpu, ", "))
  if #events.stalls > 0 then
    local who = {}
    for _, st in ipairs(events.stalls) do who[#who + 1] = st.text:match("^stall (%S+)") end
    say(("chaos: stalls (no log line for %.0f s; threads described in events.log): %s"):format(math.max(3, 3 * timeout),
      table.concat(who, ", ")))
  end
  for _, p in ipairs(r.problems) do h:fail("problem", "%s", p) end
  if h.nerrors > 0 then
    for _, e in ipairs(h:first_errors()) do say("chaos: FAIL " .. e) end
    say(("chaos: FAILED: %d problems (seed %d) -- replay: make chaos SEED=%d DURATION=%d PROCS=%d"):format(
      h.nerrors, seed, seed, duration, procs))
    return 1
  end
  say(("chaos: PASSED (seed %d, %d s)"):format(seed, duration))
  return 0
end

-- A finished run, read back from its directory (--check-only DIR): events.log (the driver's
-- record), driver.log (the run's parameters, the processes' kinds, the resource and LOCK
-- samples, idle CPU, problems seen live) and final.log (the directory's contents at the end).
-- A run of a driver that wrote no driver.log (before it existed) is judged without what only
-- that file holds, with the kinds of a run with Node and the parameters given on the command
-- line; with no final.log the directory is read again (a copy: the read may write to it).
local function load_run(dir)
  local r = { out = dir, slots = {}, final = {}, idle_cpu = {}, problems = {}, lock_samples = 0, multi = 0,
    seed = tonumber(o.seed) or tonumber(dir:match("^(%d+)/*$") or dir:match("/(%d+)/*$")) or 0,
    duration = tonumber(o.duration) or 0, procs = tonumber(o.procs), timeout = tonumber(o.timeout) or 1 }
  local events = { kills = {}, stops = {}, closes = {}, exits = {}, starts = {}, stalls = {} }
  r.events = events
  local incs, kinds = {}, {}
  local function inc_of(name)
    if not incs[name] then incs[name] = { name = name, samples = {} } end
    return incs[name]
  end
  local have_state = false
  for _, l in ipairs(read_lines(dir .. "/driver.log")) do
    have_state = true
    local tag, rest = l:match("^(%S+) ?(.*)$")
    local w = {}
    for x in rest:gmatch("%S+") do w[#w + 1] = x end
    if tag == "run" then
      r.seed, r.duration, r.procs, r.timeout = tonumber(w[1]), tonumber(w[2]), tonumber(w[3]), tonumber(w[4])
    elseif tag == "slot" then
      kinds[tonumber(w[1])] = rest:match("^%S+ (.*)$")
    elseif tag == "sample" then
      local s = inc_of(w[1]).samples
      s[#s + 1] = { t = tonumber(w[2]), rss = tonumber(w[3]), fds = tonumber(w[4]), cpu = tonumber(w[5]), state = w[6] }
    elseif tag == "locks" then
      r.lock_samples, r.multi = tonumber(w[1]), tonumber(w[2])
    elseif tag == "idle" then
      r.idle_cpu[#r.idle_cpu + 1] = rest
    elseif tag == "problem" then
      r.problems[#r.problems + 1] = rest
    end
  end
  for _, l in ipairs(read_lines(dir .. "/events.log")) do
    local t, what, name, rest = l:match("^(%d+) (%S+) (%S+) ?(.*)$")
    t = tonumber(t)
    if what == "start" then
      events.starts[#events.starts + 1] = inc_of(name)
    elseif what == "kill" then
      events.kills[#events.kills + 1] = { t = t, name = name, leader = rest == "(leader)" }
    elseif what == "stop" then
      events.stops[#events.stops + 1] = { t = t, name = name, cont = tonumber(rest:match("^until (%S+)")) }
    elseif what == "close" then
      events.closes[#events.closes + 1] = { t = t, name = name }
    elseif what == "stall" then
      events.stalls[#events.stalls + 1] = { t = t, text = l:match("^%d+ (.*)$") }
    elseif what == "exit" then
      local e = inc_of(name)
      e.exit_t = t
      events.exits[#events.exits + 1] = e
    end
  end
  -- the slots and their incarnations, in the order the driver started them
  local nslots = 0
  for name in pairs(incs) do nslots = math.max(nslots, tonumber(name:match("^a(%d+)i"))) end
  if not have_state then
    say("chaos: no driver.log in " .. dir .. ": resource and LOCK samples, idle CPU and the problems seen live are "
      .. "not judged; kinds as in a run with Node")
    r.procs = math.max(r.procs or 0, nslots)
  end
  for i = 1, r.procs do
    r.slots[i] = { slot = i, kind = kinds[i] or KINDS[(i - 1) % #KINDS + 1], incs = {} }
  end
  for name, inc in pairs(incs) do
    local s = r.slots[tonumber(name:match("^a(%d+)i"))]
    inc.slot, inc.n = s, tonumber(name:match("i(%d+)$"))
    s.incs[#s.incs + 1] = inc
  end
  for _, s in ipairs(r.slots) do table.sort(s.incs, function(a, b) return a.n < b.n end) end
  local fl = read_lines(dir .. "/final.log")
  if #fl > 0 or have_state then
    for _, l in ipairs(fl) do
      local k, v = l:match("^(%S+) (%S+)$")
      r.final[k] = v
    end
  else
    local lp = require "levelparty"
    local db = assert(lp.open(dir .. "/db", { open_timeout = 10 }))
    for k, v in db:iter() do r.final[k] = v end
    db:close()
  end
  return r
end

--- Saves what judge needs beyond the logs and events.log (load_run reads it back).
local function save_run(r)
  local f = assert(io.open(r.out .. "/driver.log", "w"))
  f:write(("run %d %d %d %s\n"):format(r.seed, r.duration, r.procs, tostring(r.timeout)))
  for i, s in ipairs(r.slots) do f:write(("slot %d %s\n"):format(i, s.kind)) end
  for _, s in ipairs(r.slots) do
    for _, inc in ipairs(s.incs) do
      for _, sm in ipairs(inc.samples) do
        f:write(("sample %s %.0f %d %d %d %s\n"):format(inc.name, sm.t, sm.rss, sm.fds, sm.cpu, sm.state))
      end
    end
  end
  f:write(("locks %d %d\n"):format(r.lock_samples, r.multi))
  for _, x in ipairs(r.idle_cpu) do f:write("idle ", x, "\n") end
  for _, p in ipairs(r.problems) do f:write("problem ", (p:gsub("\n", " ")), "\n") end
  f:close()
  f = assert(io.open(r.out .. "/final.log", "w"))
  local ks = {}
  for k in pairs(r.final) do ks[#ks + 1] = k end
  table.sort(ks)
  for _, k in ipairs(ks) do f:write(k, " ", r.final[k], "\n") end
  f:close()
end

if o["check-only"] then
  local r = load_run(o["check-only"])
  say(("chaos: checking the logs in %s (seed %d, %d s, %d processes, timeout %g s)"):format(r.out, r.seed,
    r.duration, r.procs, r.timeout))
  os.exit(judge(r))
end

-- The run ------------------------------------------------------------------------------------

local duration, procs, timeout = tonumber(o.duration or 60), tonumber(o.procs or 6), tonumber(o.timeout or 1)
local seed = tonumber(o.seed) or (math.floor(uv.hrtime() / 1000) % 1000000 + 1)
local out = o.out or (root .. "/build/chaos/" .. seed)
os.execute("rm -rf '" .. out .. "' && mkdir -p '" .. out .. "'")
local dir = out .. "/db"
local R = C.rng(seed)
local now = C.now_us

say(("chaos: seed %d, %d s, %d processes, timeout %g s, logs in %s%s"):format(seed, duration, procs,
  timeout, out, o.lie and ", LYING actor a1" or ""))

local have_node = os.execute("sh '" .. root .. "/mk/node-deps.sh' >'" .. out .. "/node-deps.log' 2>&1") == true
local slots = {}
for i = 1, procs do
  local kind = KINDS[(i - 1) % #KINDS + 1]
  if kind == "node" and not have_node then kind = "5.4 sync" end
  slots[i] = { slot = i, kind = kind, inc = 0, incs = {} }
end

-- Processes ----------------------------------------------------------------------------------

local ending = false
local events = { kills = {}, stops = {}, closes = {}, exits = {}, starts = {}, stalls = {} }
local problems = {}
local function problem(fmt, ...)
  problems[#problems + 1] = fmt:format(...)
  say("chaos: PROBLEM " .. problems[#problems])
end

local start_slot
local function on_exit(s, inc, code, sig)
  inc.exited, inc.code, inc.signal, inc.exit_t = true, code, sig, now()
  events.exits[#events.exits + 1] = inc
  local expected = (inc.sigkilled and sig == 9) or (inc.close_exit and code == 0)
  if not expected then
    local err = table.concat(read_lines(inc.errfile), " | "):sub(1, 600)
    problem("%s (%s) exited unexpectedly: code %s signal %s; stderr: %s", inc.name, s.kind, tostring(code),
      tostring(sig), err)
  end
  for _, h in ipairs { inc.stdin, inc.handle } do if not h:is_closing() then h:close() end end
  if not ending then
    local t = uv.new_timer()
    t:start(R(50, 300), 0, function() t:close() if not ending then start_slot(s) end end)
  end
end

function start_slot(s)
  s.inc = s.inc + 1
  local name = ("a%di%d"):format(s.slot, s.inc)
  local inc = { name = name, slot = s, pid = nil, log = out .. "/" .. name .. ".log",
    errfile = out .. "/" .. name .. ".err", samples = {}, started = now() }
  local aseed = C.actor_seed(seed, s.slot, s.inc)
  local file, args
  if s.kind == "node" then
    file, args = "node", { root .. "/chaos/actor.js", dir, name, aseed, timeout, inc.log }
  else
    local variant, mode = s.kind:match("^(%S+) (%S+)$")
    file = "sh"
    args = { root .. "/mk/luaenv.sh", variant, variant == "5.4" and "lua5.4" or "luajit",
      root .. "/chaos/actor.lua", dir, name, aseed, mode, timeout, inc.log,
      (o.lie and s.slot == 1) and "1" or "0" }
  end
  local efd = assert(uv.fs_open(inc.errfile, "w", 420))
  inc.stdin = uv.new_pipe(false)
  local handle, pid = uv.spawn(file, { args = args, stdio = { inc.stdin, efd, efd } },
    function(code, sig) on_exit(s, inc, code, sig) end)
  uv.fs_close(efd)
  if not handle then
    problem("cannot start %s: %s", name, tostring(pid))
    return
  end
  inc.handle, inc.pid = handle, pid
  s.cur = inc
  s.incs[#s.incs + 1] = inc
  events.starts[#events.starts + 1] = inc
end

-- A command line to an actor.  The actor may have died since the driver last
-- looked: the write then fails (EPIPE) and its exit callback says the rest.
local function tell(inc, line)
  if line == "idle" then inc.told_idle = true end
  inc.stdin:write(line .. "\n", function() end)
end

local function alive_incs()
  local t = {}
  for _, s in ipairs(slots) do
    if s.cur and not s.cur.exited then t[#t + 1] = s.cur end
  end
  return t
end

local function by_pid(pid)
  for _, s in ipairs(slots) do
    for _, inc in ipairs(s.incs) do if inc.pid == pid and not inc.exited then return inc end end
  end
end

local function kill_all()
  for _, s in ipairs(slots) do
    for _, inc in ipairs(s.incs) do
      if not inc.exited and inc.pid then
        inc.sigkilled = true
        uv.kill(inc.pid, "sigcont")
        uv.kill(inc.pid, "sigkill")
      end
    end
  end
end

local function wait_until(pred, secs)
  local deadline = uv.hrtime() + secs * 1e9
  local t = uv.new_timer()
  t:start(10, 10, function() end)
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  t:close()
  return pred()
end

local function run_for(secs) wait_until(function() return false end, secs) end

-- Samplers -----------------------------------------------------------------------------------

local lock_ino
local lock_samples, multi = 0, 0
local holder, holder_changes = nil, {}
local function lock_holders()
  if not lock_ino then
    local st = uv.fs_stat(dir .. "/LOCK")
    if not st then return {} end
    lock_ino = st.ino
  end
  local owners = {}
  local f = io.open("/proc/locks")
  if not f then return owners end
  for line in f:lines() do
    local pid, ino = line:match("^%d+:%s+%S+%s+%S+%s+%S+%s+(%-?%d+)%s+%x+:%x+:(%d+)")
    if pid and tonumber(ino) == lock_ino then owners[#owners + 1] = tonumber(pid) end
  end
  f:close()
  return owners
end

-- Every 100 ms, not faster: reading /proc/locks takes the kernel's global
-- file-lock semaphore for writing (an RCU grace period under load), and while
-- it waits every fcntl lock and every close of a locked file in the machine
-- waits too, the actors' LOCK probes among them (docs/RELIABILITY.md).
local lock_timer = uv.new_timer()
lock_timer:start(100, 100, function()
  local owners = lock_holders()
  lock_samples = lock_samples + 1
  local distinct = {}
  for _, p in ipairs(owners) do distinct[p] = true end
  local n = 0
  for _ in pairs(distinct) do n = n + 1 end
  if n > 1 then
    multi = multi + 1
    if multi <= 5 then problem("LOCK held by %d processes at once: %s", n, table.concat(owners, ",")) end
  end
  local h = owners[1]
  if h ~= holder then
    holder = h
    holder_changes[#holder_changes + 1] = { t = now(), pid = h }
  end
end)

local function proc_stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local rest = s:match("%) (.*)$")
  if not rest then return nil end
  local w = {}
  for x in rest:gmatch("%S+") do w[#w + 1] = x end
  return w[1], tonumber(w[12]) + tonumber(w[13]) -- state, utime + stime (ticks)
end

local function sample(inc)
  local state, cpu = proc_stat(inc.pid)
  if not state or state == "Z" then return end
  local rss
  local f = io.open("/proc/" .. inc.pid .. "/status")
  if f then
    for l in f:lines() do
      local v = l:match("^VmRSS:%s+(%d+)")
      if v then rss = tonumber(v) end
    end
    f:close()
  end
  local nfd = 0
  local req = uv.fs_scandir("/proc/" .. inc.pid .. "/fd")
  if req then while uv.fs_scandir_next(req) do nfd = nfd + 1 end end
  if rss then inc.samples[#inc.samples + 1] = { t = now(), rss = rss, fds = nfd, cpu = cpu, state = state } end
end

-- Stalls: a process that logged nothing for STALL_US although it was neither stopped by us nor
-- told to go idle (every actor logs each call, and each call is bounded by the timeout) has its
-- threads described in events.log -- state, wait channel, system call, the top of the kernel
-- stack -- once per quiet spell: what a post-mortem needs to tell a blocked syscall from a lock,
-- a loop or a process starved of CPU.
local STALL_US = math.max(3, 3 * timeout) * 1e6
local stopped -- the process the schedule stopped (below)
local function first_line(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("l")
  f:close()
  return s
end
local function describe_threads(pid)
  local parts = {}
  local req = uv.fs_scandir("/proc/" .. pid .. "/task")
  while req do
    local tid = uv.fs_scandir_next(req)
    if not tid then break end
    local base = "/proc/" .. pid .. "/task/" .. tid .. "/"
    local comm = first_line(base .. "comm") or "?"
    local st = first_line(base .. "stat") or ""
    local state = st:match("%) (%S)") or "?"
    local sc = (first_line(base .. "syscall") or "?"):match("^(%S+)")
    local frames = {}
    local f = io.open(base .. "stack")
    if f then
      for l in f:lines() do
        if #frames >= 4 then break end
        frames[#frames + 1] = l:match("%] ([%w_%.]+)") or l
      end
      f:close()
    end
    parts[#parts + 1] = ("%s/%s %s wchan=%s syscall=%s stack=%s"):format(tid, comm, state,
      first_line(base .. "wchan") or "?", sc or "?", table.concat(frames, "<"))
  end
  return table.concat(parts, "; ")
end
local function watch_stall(inc)
  local st = uv.fs_stat(inc.log)
  local size, t = st and st.size or 0, now()
  if size ~= inc.log_size then
    inc.log_size, inc.quiet_since, inc.stall_told = size, t, false
    return
  end
  if inc.stall_told or inc.told_idle or inc == stopped or not inc.quiet_since then return end
  if t - inc.quiet_since < STALL_US then return end
  inc.stall_told = true
  local h = holder and by_pid(holder)
  local text = ("stall %s (%s): no log line for %.0f ms; LOCK held by %s; %s"):format(inc.name,
    inc.slot.kind, (t - inc.quiet_since) / 1000, h and h.name or tostring(holder or "nobody"),
    describe_threads(inc.pid))
  events.stalls[#events.stalls + 1] = { t = t, text = text }
end

local res_timer = uv.new_timer()
res_timer:start(1000, 1000, function()
  for _, inc in ipairs(alive_incs()) do
    sample(inc)
    watch_stall(inc)
  end
end)

-- The schedule ---------------------------------------------------------------------------------

local function leader_inc()
  return holder and by_pid(holder)
end

local function pick(list) if #list > 0 then return list[R(#list)] end end

local function chaos_step()
  local x = R()
  local alive = alive_incs()
  local leader = leader_inc()
  local followers = {}
  for _, inc in ipairs(alive) do if inc ~= leader then followers[#followers + 1] = inc end end
  if x < 0.55 then
    if leader and leader ~= stopped then
      leader.sigkilled = true
      events.kills[#events.kills + 1] = { t = now(), name = leader.name, leader = true }
      uv.kill(leader.pid, "sigkill")
    end
  elseif x < 0.70 then
    for _ = 1, R(2) do
      local f = pick(followers)
      if f and not f.sigkilled then
        f.sigkilled = true
        events.kills[#events.kills + 1] = { t = now(), name = f.name, leader = false }
        uv.kill(f.pid, "sigkill")
      end
    end
  elseif x < 0.82 then
    local target = (R() < 0.5 and leader) or pick(followers)
    local ms = math.floor(timeout * 1000) + R(300, 1500)
    if target and not stopped then
      stopped = target
      local ev = { t = now(), name = target.name, pid = target.pid, leader = target == leader }
      events.stops[#events.stops + 1] = ev
      uv.kill(target.pid, "sigstop")
      local t = uv.new_timer()
      t:start(ms, 0, function()
        t:close()
        ev.cont = now()
        if not target.exited then uv.kill(target.pid, "sigcont") end
        stopped = nil
      end)
    end
  else
    local target = pick(alive)
    if target and target ~= stopped then
      events.closes[#events.closes + 1] = { t = now(), name = target.name }
      if target.slot.kind == "node" then target.close_exit = true end
      tell(target, "close")
    end
  end
end

local chaos_timer = uv.new_timer()
local function arm()
  chaos_timer:start(R(100, 800), 0, function()
    if ending then return end
    chaos_step()
    arm()
  end)
end

local function has_line(inc, pat)
  for _, l in ipairs(read_lines(inc.log)) do if l:find(pat) then return true end end
  return false
end

-- SIGPIPE: a line to an actor that died a moment ago (its exit not yet
-- reaped) must fail that write, not kill the driver; libuv leaves SIGPIPE's
-- default action in place unless a handler is installed.
local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)

-- SIGINT/SIGTERM: kill the children, then leave
for _, sig in ipairs { "sigint", "sigterm" } do
  local h = uv.new_signal()
  h:start(sig, function()
    kill_all()
    say("chaos: interrupted; children killed")
    os.exit(130)
  end)
end

-- The schedule's end ---------------------------------------------------------------------------

local final = {}
local idle_cpu = {}
local function main()
  for _, s in ipairs(slots) do start_slot(s) end
  if not wait_until(function()
    for _, s in ipairs(slots) do if not has_line(s.cur, "^O ") then return false end end
    return true
  end, 30) then error("the actors did not all open within 30 s") end
  say("chaos: all open; chaos for " .. duration .. " s")
  local t_start = now()
  arm()
  run_for(duration)
  ending = true
  chaos_timer:stop()
  say("chaos: chaos over; resuming and restarting everything")
  if stopped and not stopped.exited then uv.kill(stopped.pid, "sigcont") end
  run_for(0.1)
  for _, s in ipairs(slots) do if not s.cur or s.cur.exited then start_slot(s) end end
  if not wait_until(function()
    for _, s in ipairs(slots) do
      if s.cur.exited or not has_line(s.cur, "^O ") then return false end
    end
    return true
  end, 30) then problem("not every process opened within 30 s after the chaos") end
  run_for(2)
  for _, inc in ipairs(alive_incs()) do tell(inc, "idle") end
  local hang_wait = 3 * timeout + 5
  if not wait_until(function()
    for _, inc in ipairs(alive_incs()) do if not has_line(inc, "^Z ") then return false end end
    return true
  end, hang_wait) then
    for _, inc in ipairs(alive_incs()) do
      if not has_line(inc, "^Z ") then
        local ls = read_lines(inc.log)
        problem("%s (%s) hung: no idle after %d s; last log line: %s", inc.name, inc.slot.kind, hang_wait,
          ls[#ls] or "")
      end
    end
  end
  -- idle CPU: a process with nothing to do must not spin
  local cpu0 = {}
  for _, inc in ipairs(alive_incs()) do cpu0[inc] = select(2, proc_stat(inc.pid)) end
  run_for(3)
  for _, inc in ipairs(alive_incs()) do
    local c1 = select(2, proc_stat(inc.pid))
    if c1 and cpu0[inc] then
      local pct = (c1 - cpu0[inc]) / 100 / 3 * 100
      idle_cpu[#idle_cpu + 1] = ("%s %.1f%%"):format(inc.name, pct)
      if pct > 5 then problem("%s (%s) spins while idle: %.1f%% CPU", inc.name, inc.slot.kind, pct) end
    end
    sample(inc)
  end
  lock_timer:stop()
  res_timer:stop()
  kill_all()
  if not wait_until(function() return #alive_incs() == 0 end, 10) then problem("children survived SIGKILL") end
  -- the final read, by a fresh leader (this process)
  local lp = require "levelparty"
  local db = assert(lp.open(dir, { open_timeout = 10 }))
  for k, v in db:iter() do final[k] = v end
  db:close()
  return t_start
end

local ok, t_start = xpcall(main, debug.traceback)
ending = true
kill_all()
wait_until(function() return #alive_incs() == 0 end, 10)

-- The driver's own record, for a failure's post-mortem (OUT/events.log): every start, kill,
-- stop, close and exit, and every change of the LOCK's holder, in time order (µs, the logs' clock).
do
  local ev, pid_name = {}, {}
  local function add(t, text) if t then ev[#ev + 1] = { t, text } end end
  for _, inc in ipairs(events.starts) do
    add(inc.started, ("start %s pid %s"):format(inc.name, tostring(inc.pid)))
    if inc.pid then pid_name[inc.pid] = inc.name end
  end
  for _, k in ipairs(events.kills) do add(k.t, ("kill %s (%s)"):format(k.name, k.leader and "leader" or "follower")) end
  for _, st in ipairs(events.stops) do add(st.t, ("stop %s until %s"):format(st.name, tostring(st.cont))) end
  for _, c in ipairs(events.closes) do add(c.t, "close " .. c.name) end
  for _, st in ipairs(events.stalls) do add(st.t, st.text) end
  for _, inc in ipairs(events.exits) do
    add(inc.exit_t, ("exit %s code %s signal %s"):format(inc.name, tostring(inc.code), tostring(inc.signal)))
  end
  for _, hc in ipairs(holder_changes) do
    add(hc.t, "LOCK held by " .. (hc.pid and (pid_name[hc.pid] or ("pid " .. hc.pid)) or "nobody"))
  end
  table.sort(ev, function(a, b) return a[1] < b[1] end)
  local f = io.open(out .. "/events.log", "w")
  if f then
    for _, e in ipairs(ev) do f:write(("%.0f %s\n"):format(e[1], e[2])) end
    f:close()
  end
end
if not ok then
  say("chaos: driver error: " .. tostring(t_start))
  say(("chaos: FAILED (seed %d) -- replay: make chaos SEED=%d DURATION=%d PROCS=%d"):format(seed, seed,
    duration, procs))
  os.exit(2)
end

local run = { out = out, seed = seed, duration = duration, procs = procs, timeout = timeout, slots = slots,
  events = events, final = final, lock_samples = lock_samples, multi = multi, idle_cpu = idle_cpu,
  problems = problems }
save_run(run)
os.exit(judge(run))

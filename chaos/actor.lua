-- chaos/actor.lua DIR NAME SEED MODE TIMEOUT LOG [LIE]: one process of the chaos soak.
--
-- Opens DIR with levelparty and runs a random workload until stdin closes, logging every
-- operation to LOG, one line each, line-buffered (a SIGKILL loses at most the line being
-- written).  Times are CLOCK_MONOTONIC microseconds (uv.hrtime).
--   MODE "sync": every call blocks (main chunk); "luv": three coroutines on luv's loop.
--   NAME (a<slot>i<incarnation>) makes every written value unique: NAME.<seq>.
--   SEED seeds the workload (chaos/common.lua's generator).
--   LIE  "1": every 10th put is logged as acknowledged but never made (a checker test).
-- stdin commands: "close" closes the handle (with calls in flight, in luv mode) and opens
-- it again after a pause; "idle" stops issuing operations (logged "Z" once idle).
--
-- Log records (chaos/driver.lua parses them):
--   O t role gen               open returned (gen counts the opens of this process)
--   F t code msg               open failed (the process exits 3)
--   R t role                   on_role fired
--   C t gen                    about to close handle gen
--   I id t gen kind args...    invocation: put k v | del k | batch|chain p:k:v d:k ... |
--                              clear gte lt | get k | getm k... |
--                              iter loop lo hiop hi rev limit slow
--   E id t key value           an iterator entry
--   D id t ok [results]        completion: get -> v|-, getm -> v|- ..., iter -> n maxnext_us
--   D id t stop n maxnext_us   an iterator abandoned early (on purpose)
--   D id t err CODE [n maxnext_us]
--   Z t                        idle
--   X t message                levelparty.on_error was called (the checker fails the run)
local uv = require "luv"
local levelparty = require "levelparty"

local script_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local C = dofile(script_dir .. "/common.lua")

local dir, name, seed, mode = arg[1], arg[2], tonumber(arg[3]), arg[4]
local timeout, logfile, lie = tonumber(arg[5]), arg[6], arg[7] == "1"
assert(dir and name and seed and (mode == "sync" or mode == "luv") and timeout and logfile,
  "usage: actor.lua DIR NAME SEED sync|luv TIMEOUT LOG [LIE]")

local r = C.rng(seed)
local now = C.now_us
local log = assert(io.open(logfile, "a"))
log:setvbuf("line")
local function rec(...)
  local t = { ... }
  for i = 1, #t do t[i] = tostring(t[i]) end
  log:write(table.concat(t, " "), "\n")
end

levelparty.on_error = function(_, err)
  rec("X", now(), (tostring(err):gsub("%s+", " ")))
  io.stderr:write("levelparty.on_error: ", tostring(err), "\n")
end

local opts = {
  timeout = timeout,
  open_timeout = 10,
  on_role = function(role) rec("R", now(), role) end,
}

local db, gen = nil, 0
local seq, opid = 0, 0
local idle, closing = false, false

local sleep -- set per mode below

local function value()
  seq = seq + 1
  return name .. "." .. seq
end

local function rkey() return C.key(r(0, C.NKEYS - 1)) end

local function done(id, ok, a, b, ...)
  if ok then
    rec("D", id, now(), "ok", ...)
  else
    rec("D", id, now(), "err", tostring(b), ...)
  end
  return a
end

local function distinct_keys(n)
  local seen, out = {}, {}
  while #out < n do
    local k = rkey()
    if not seen[k] then seen[k], out[#out + 1] = true, k end
  end
  return out
end

local ops = {}

function ops.put(h, id)
  local k, v = rkey(), value()
  rec("I", id, now(), gen, "put", k, v)
  if lie and seq % 10 == 0 then return rec("D", id, now(), "ok") end
  local ok, err, code = h:put(k, v)
  done(id, ok, nil, code or err)
end

function ops.del(h, id)
  local k = rkey()
  rec("I", id, now(), gen, "del", k)
  local ok, err, code = h:del(k)
  done(id, ok, nil, code or err)
end

local function batch_ops()
  local list, words = {}, {}
  for i, k in ipairs(distinct_keys(r(2, 5))) do
    if r() < 0.7 then
      local v = value()
      list[i] = { type = "put", key = k, value = v }
      words[i] = "p:" .. k .. ":" .. v
    else
      list[i] = { type = "del", key = k }
      words[i] = "d:" .. k
    end
  end
  return list, table.concat(words, " ")
end

function ops.batch(h, id)
  local list, words = batch_ops()
  rec("I", id, now(), gen, "batch", words)
  local ok, err, code = h:batch(list)
  done(id, ok, nil, code or err)
end

function ops.chain(h, id)
  local list, words = batch_ops()
  local b = h:batch()
  for _, o in ipairs(list) do
    if o.type == "put" then b:put(o.key, o.value) else b:del(o.key) end
  end
  rec("I", id, now(), gen, "chain", words)
  local ok, err, code = b:write()
  done(id, ok, nil, code or err)
end

function ops.clear(h, id)
  local lo = r(0, C.NKEYS - 1)
  local hi = lo + r(1, 4)
  rec("I", id, now(), gen, "clear", C.key(lo), C.key(hi))
  local ok, err, code = h:clear { gte = C.key(lo), lt = C.key(hi) }
  done(id, ok, nil, code or err)
end

function ops.get(h, id)
  local k = rkey()
  rec("I", id, now(), gen, "get", k)
  local v, err, code = h:get(k)
  if v == nil and err ~= nil then return done(id, false, nil, code or err) end
  rec("D", id, now(), "ok", v or "-")
end

function ops.getm(h, id)
  local keys = distinct_keys(r(1, 5))
  rec("I", id, now(), gen, "getm", table.concat(keys, " "))
  local vs, err, code = h:get_many(keys)
  if not vs then return done(id, false, nil, code or err) end
  local out = {}
  for i = 1, #keys do out[i] = vs[i] or "-" end
  rec("D", id, now(), "ok", table.concat(out, " "))
end

function ops.iter(h, id)
  local o, lo, hi, loop, hiop = {}, "-", "-", "-", "-"
  if r() < 0.8 then
    lo, loop = C.key(r(0, C.NKEYS - 1)), r() < 0.5 and "gt" or "gte"
    o[loop] = lo
  end
  if r() < 0.8 then
    local base = lo == "-" and r(0, C.NKEYS - 1) or tonumber(lo:sub(2))
    hi, hiop = C.key(math.min(C.NKEYS, base + r(1, 40))), r() < 0.5 and "lt" or "lte"
    o[hiop] = hi
  end
  o.reverse = r() < 0.4
  local limit = r() < 0.5 and -1 or r(1, 25)
  o.limit = limit
  local slow = r() < 0.25
  local stop_at = r() < 0.1 and r(1, 10) or math.huge
  rec("I", id, now(), gen, "iter", loop, lo, hiop, hi, o.reverse and 1 or 0, limit, slow and 1 or 0)
  local it = h:iter(o)
  local n, maxnext = 0, 0
  while true do
    local t0 = now()
    local k, v, code = it:next()
    local t1 = now()
    if t1 - t0 > maxnext then maxnext = t1 - t0 end
    if k == nil then
      it:close()
      if v ~= nil then return rec("D", id, t1, "err", tostring(code), n, maxnext) end
      return rec("D", id, t1, "ok", n, maxnext)
    end
    n = n + 1
    rec("E", id, t1, k, v)
    if n >= stop_at then
      it:close()
      return rec("D", id, now(), "stop", n, maxnext)
    end
    -- a slow consumer: pauses shorter than the timeout (the leader must keep its place)
    if slow and r() < 0.3 then sleep(r(20, math.max(20, math.floor(timeout * 600)))) end
  end
end

local mix = {
  { 30, "put" }, { 9, "del" }, { 7, "batch" }, { 5, "chain" }, { 4, "clear" },
  { 15, "get" }, { 10, "getm" }, { 14, "iter" }, { 6, "pause" },
}
local total = 0
for _, m in ipairs(mix) do total = total + m[1] end

local function one_op()
  local x = r(total)
  local kind
  for _, m in ipairs(mix) do
    x = x - m[1]
    if x <= 0 then kind = m[2] break end
  end
  if kind == "pause" then return sleep(r(5, 60)) end
  opid = opid + 1
  ops[kind](db, opid)
end

local function open()
  gen = gen + 1
  local t0 = now()
  local h, err, code = levelparty.open(dir, opts)
  if not h then
    rec("F", now(), tostring(code), (tostring(err):gsub("%s+", " ")))
    os.exit(3)
  end
  rec("O", now(), h:role(), gen, t0)
  return h
end

local function close_and_reopen()
  local h = db
  db = nil
  rec("C", now(), gen)
  h:close()
  sleep(r(20, 300))
  db = open()
end

-- stdin: commands from the driver; EOF means the driver is gone.
local stdin = uv.new_pipe(false)
stdin:open(0)
local inbuf = ""
local on_command
stdin:read_start(function(err, data)
  if err or not data then os.exit(0) end
  inbuf = inbuf .. data
  for line in inbuf:gmatch("([^\n]*)\n") do on_command(line) end
  inbuf = inbuf:match("[^\n]*$")
end)

local function fatal(err)
  io.stderr:write("actor ", name, ": ", tostring(err), "\n")
  log:flush()
  os.exit(70)
end

if mode == "sync" then
  sleep = function(ms) uv.sleep(ms) end
  on_command = function(line)
    if line == "close" then closing = true elseif line == "idle" then idle = true end
  end
  local ok, err = xpcall(function()
    db = open()
    local said_idle = false
    while true do
      uv.run("nowait")
      if idle then
        if not said_idle then rec("Z", now()) said_idle = true end
        uv.sleep(50)
      elseif closing then
        closing = false
        close_and_reopen()
      else
        one_op()
      end
    end
  end, debug.traceback)
  if not ok then fatal(err) end
else
  local NW = 3
  sleep = function(ms)
    local co = coroutine.running()
    local t = uv.new_timer()
    t:start(ms, 0, function()
      t:close()
      local ok, err = coroutine.resume(co)
      if not ok then fatal(err) end
    end)
    coroutine.yield()
  end
  local function spawn(fn)
    local co = coroutine.create(function()
      local ok, err = xpcall(fn, debug.traceback)
      if not ok then fatal(err) end
    end)
    local ok, err = coroutine.resume(co)
    if not ok then fatal(err) end
  end
  local nidle = 0
  on_command = function(line)
    if line == "close" and db and not closing then
      closing = true
      spawn(function()
        close_and_reopen()
        closing = false
      end)
    elseif line == "idle" then
      idle = true
    end
  end
  spawn(function()
    db = open()
    for _ = 1, NW do
      spawn(function()
        while not idle do
          if db then one_op() else sleep(20) end
        end
        nidle = nidle + 1
        if nidle == NW then rec("Z", now()) end
      end)
    end
  end)
  uv.run()
end

-- levelparty.loop: what every loop adaptor shares, and the adaptor for any
-- scheduler that polls (the host's loop).
--
-- One driver per party (per directory in this process).  The C core says what
-- to wait for: db:pollinfo() gives an fd to poll for reading (the party's own
-- epoll set, the same for the party's life) and a timeout; db:step() does
-- what is due; db:finished() logs the tokens of the requests that finished.
-- collect() below steps the party and finds the coroutines that can go on:
-- those whose request, worker job, iterator or open is done.  What differs is
-- who resumes them:
--   * levelparty.luv resumes them itself from luv's callbacks (it polls the
--     fd with uv.new_poll);
--   * the adaptors made by new() here leave that to the host's scheduler: a
--     call that must wait hands the scheduler a pollable (an object with
--     :pollfd(), :events() "r" and :timeout(), as cqueues' pollables have)
--     and waits until the scheduler resumes it; then it steps the party
--     itself, and waits again until its own result is there.
--
-- The host-loop contract (backend.wait), in full: README.md, "The loop
-- interface".

local core = require "levelparty.core"

local coroutine_running, coroutine_yield = coroutine.running, coroutine.yield
local next, pairs, setmetatable, type, error = next, pairs, setmetatable, type, error
local slice_begin = core.slice_begin
local JOB_TOKEN = core.JOB_TOKEN -- tokens of worker jobs are >= this

local _M = {}

-- A driver's fields, shared by the adaptors:
--   cref     { core handle }, weak: a handle the application dropped can be
--            collected (its finalizer releases the driver)
--   tokens   request token -> waiting coroutine; jobs: job token -> coroutine
--   iters    core iterator -> coroutine; openers: coroutine -> true
--   orphans  tokens whose coroutine stopped waiting (results to drop)
--   fin      the array c:finished() fills; progress: the party's last seen
--   nwait    how many coroutines wait; on_role: the application's callback
function _M.new_driver(fields)
  fields.cref = setmetatable({}, { __mode = "v" })
  fields.tokens, fields.jobs, fields.fin, fields.iters = {}, {}, {}, {}
  fields.openers, fields.orphans = {}, {}
  fields.nwait, fields.fd, fields.progress = 0, -1, -1
  return fields
end

-- Moves the waiters of the finished tokens of `waiting` (token -> coroutine)
-- to ready[nready + 1 ...]; returns the new count.  Asks the core after each.
local function take_done(c, waiting, ready, nready)
  for token, co in pairs(waiting) do
    if c:done(token) then
      waiting[token] = nil
      nready = nready + 1
      ready[nready] = co
    end
  end
  return nready
end

--- collect(d, c): steps the party of core handle c (driver d) and takes the
-- coroutines that can go on out of d's lists.  Returns ready (an array of
-- coroutines to resume with no values), nready, and opened (nil, or an array
-- of { coroutine, ok, err, code } for the openers).  The client logs the
-- tokens of the requests that finished (c:finished), so waiters are found
-- without asking after each token; worker jobs (big batches) are few and
-- asked after.  Reports a role change to d.on_role.
function _M.collect(d, c)
  local progress, err, code = c:step()
  local ready, nready = {}, 0
  local opened
  if progress == nil then
    -- the first election failed for good: every opener gets the error
    opened = {}
    for co in pairs(d.openers) do opened[#opened + 1] = { co, nil, err, code } end
    d.openers = {}
  elseif next(d.openers) ~= nil and c:opened() then
    opened = {}
    for co in pairs(d.openers) do opened[#opened + 1] = { co, true } end
    d.openers = {}
  end
  local tokens, fin = d.tokens, d.fin
  local n = c:finished(fin)
  if n < 0 then
    nready = take_done(c, tokens, ready, nready)
  else
    for i = 1, n do
      local token = fin[i]
      local co = tokens[token]
      if co ~= nil then
        tokens[token] = nil
        nready = nready + 1
        ready[nready] = co
      end
    end
  end
  nready = take_done(c, d.jobs, ready, nready)
  -- results nobody waits for any more (their coroutine stopped waiting)
  for token in next, d.orphans do
    if c:done(token) then
      d.orphans[token] = nil
      c:result(token, "orphan")
    end
  end
  if progress ~= nil and progress ~= d.progress then
    d.progress = progress
    for it, co in pairs(d.iters) do
      if it:ready() then
        d.iters[it] = nil
        nready = nready + 1
        ready[nready] = co
      end
    end
  end
  d.nwait = d.nwait - nready - (opened and #opened or 0)
  local role = c:role_change()
  if role and d.on_role then d.on_role(role) end
  return ready, nready, opened
end

--- Every coroutine still waiting on driver d, taken out of its lists (the
-- party is closing): calls fn(co) for requests, jobs and iterators (they find
-- ECLOSED when they ask) and fn(co, nil, msg, "ECLOSED") for openers.
function _M.drain(d, fn)
  local tokens, jobs, iters, openers = d.tokens, d.jobs, d.iters, d.openers
  d.tokens, d.jobs, d.iters, d.openers = {}, {}, {}, {}
  d.nwait = 0
  for _, co in pairs(tokens) do fn(co) end
  for _, co in pairs(jobs) do fn(co) end
  for _, co in pairs(iters) do fn(co) end
  for co in pairs(openers) do fn(co, nil, "open: the database was closed", "ECLOSED") end
end

-- ------------------------------------------------------- the host's loop

-- A pollable: what a waiting coroutine hands its scheduler.  One per party
-- (several coroutines may wait on the same one at once).
local Pollable = {}
Pollable.__index = Pollable
Pollable.__name = "levelparty.pollable"

--- pollable:pollfd() -> the descriptor to poll (-1: none, wait for the
-- timeout only: a time slice given back, or a closed party)
function Pollable:pollfd()
  return self.fd
end

--- pollable:events() -> "r": poll for reading
function Pollable.events() return "r" end

--- pollable:timeout() -> seconds to wait at most (0: do not wait), or nil
-- for no limit.  Ask again each time before waiting: it drops to 0 when
-- another coroutine's step found this one's result.
function Pollable:timeout()
  local d = self.driver
  if d == nil then return self.zero end
  if d.nready > 0 or d.kicked then return 0 end
  local c = d.cref[1]
  if c == nil then return 0 end
  local _, ms = c:pollinfo()
  if ms < 0 then return nil end
  return ms / 1000
end

-- The pollable of a coroutine giving back its time slice: no fd, no wait.
local TICK = setmetatable({ fd = -1, zero = 0 }, Pollable)

--- new(backend, name) -> an adaptor (the interface init.lua uses: tick,
-- wait_token, wait_iter, wait_open, watch, kick, release, yieldable,
-- set_error_handler) whose waits go through backend:
--   backend.wait(pollable, d)  required: return once pollable:pollfd() is
--                              readable or pollable:timeout() passed (or
--                              earlier: a spurious return costs a step);
--   backend.wake(d)            optional: a step found results of coroutines
--                              that wait in backend.wait: make them return
--                              (when backend.wait does not ask timeout()
--                              again by itself);
--   backend.yieldable()        optional: true when the running coroutine may
--                              wait (default: coroutine.isyieldable).
-- name names the loop in misuse messages.
function _M.new(backend, name)
  local wait, wake = backend.wait, backend.wake
  if type(wait) ~= "function" then error("loop: backend.wait must be a function", 3) end
  local A = { name = name }
  local drivers = {}                                 -- party lightuserdata -> driver
  local by_core = setmetatable({}, { __mode = "k" }) -- core handle -> driver

  A.yieldable = backend.yieldable or coroutine.isyieldable or function()
    local co, main = coroutine_running()
    return co ~= nil and not main
  end
  function A.set_error_handler() end -- nothing here resumes a coroutine

  local function get_driver(c)
    local d = by_core[c]
    if d ~= nil and d.cref[1] == c then return d end
    local key = c:party()
    d = drivers[key]
    if d == nil then
      d = _M.new_driver { ready = {}, nready = 0 }
      d.pollable = setmetatable({ driver = d }, Pollable)
      drivers[key] = d
    end
    d.cref[1] = c
    d.fd = c:pollinfo()
    d.pollable.fd = d.fd
    c:set_polled(true)
    by_core[c] = d
    return d
  end

  -- Steps the party; the coroutines that can go on are marked ready (with
  -- their results, for openers) for their own wait loops to see.
  local function run(d, co)
    local c = d.cref[1]
    d.kicked = false
    if c == nil then return end
    local ready, nready, opened = _M.collect(d, c)
    local marks = d.ready
    for i = 1, nready do marks[ready[i]] = true end
    if opened then
      for i = 1, #opened do
        local r = opened[i]
        marks[r[1]] = { r[2], r[3], r[4] }
        nready = nready + 1
      end
    end
    d.nready = d.nready + nready
    c:flush()
    -- others than co can go on: wake them
    if wake and d.nready > (marks[co] ~= nil and 1 or 0) then wake(d) end
  end

  -- Waits (through the backend) until run() marked the running coroutine
  -- ready; returns the results run() left for it (openers).
  local function wait_ready(d, co)
    while true do
      local r = d.ready[co]
      if r ~= nil then
        d.ready[co] = nil
        d.nready = d.nready - 1
        if r == true then return end
        return r[1], r[2], r[3]
      end
      if not d.closed then
        local c = d.cref[1]
        if c ~= nil then d.pollable.fd = c:pollinfo() end
      end
      wait(d.pollable, d)
      slice_begin()
      if d.ready[co] == nil and not d.closed then run(d, co) end
    end
  end

  -- Parks the running coroutine under `key` in the driver's `list` (or, with
  -- no list, under the token `key` of a request or worker job of c) and waits.
  local function park(c, key, list)
    local d = get_driver(c)
    local waiting
    if list ~= nil then
      waiting = d[list]
    elseif key < JOB_TOKEN then
      waiting = d.tokens
    elseif c:done(key) then
      return
    else
      waiting = d.jobs
    end
    local co = coroutine_running()
    waiting[key] = co
    d.nwait = d.nwait + 1
    c:flush() -- the request goes out before the coroutine waits
    return wait_ready(d, co)
  end

  --- Gives the scheduler a turn (the coroutine's time slice is over).
  function A.tick()
    wait(TICK, nil)
    slice_begin()
  end

  function A.wait_token(c, token)
    park(c, token, nil)
  end

  function A.wait_iter(c, it)
    park(c, it, "iters")
  end

  function A.wait_open(c)
    return park(c, coroutine_running(), "openers")
  end

  function A.watch(c, on_role)
    local d = get_driver(c)
    if on_role then d.on_role = on_role end
  end

  --- After a blocking call: replies of waiting coroutines may have been read.
  function A.kick(party)
    local d = drivers[party]
    if d and d.nwait > 0 then
      d.kicked = true
      if wake then wake(d) end
    end
  end

  function A.release(party)
    local d = drivers[party]
    if d == nil then return nil end
    drivers[party] = nil
    d.closed = true
    d.pollable.fd = -1
    local c = d.cref[1]
    if c then c:set_polled(false) end
    return function()
      _M.drain(d, function(co, ok, err, code)
        d.ready[co] = ok == nil and err == nil and true or { ok, err, code }
        d.nready = d.nready + 1
      end)
      if wake and d.nready > 0 then wake(d) end
    end
  end

  return A
end

--- The adaptor for a scheduler that resumes coroutines itself: a waiting
-- call yields the pollable (coroutine.yield(pollable)); the scheduler polls
-- it and resumes the coroutine with no values when it is ready or timed out.
function _M.yield_backend()
  return { wait = function(pollable) coroutine_yield(pollable) end }
end

_M.Pollable = Pollable

return _M

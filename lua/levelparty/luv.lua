-- levelparty.luv: the adaptor that waits by yielding, on luv's loop.
--
-- One driver per party (per directory in this process), because libuv allows
-- one poll handle per file descriptor.  The C core says what to wait for
-- (db:pollinfo: an fd to poll for reading, which is the party's own epoll set
-- and stays the same for its life, and a timeout); the driver polls that with
-- uv.new_poll and a timer, calls db:step() when something happens, and
-- resumes the coroutines whose requests, iterators or open completed.
-- The bookkeeping (token parking, the finished log, openers, iterators) is
-- levelparty.loop's, shared with the host-loop adaptors.
--
-- The poll handle stays active while the process is a follower, so a leader's
-- death is noticed (and an election won) while the loop runs; it is unref'd
-- when nobody waits, so it never keeps uv.run() from returning.
--
-- Errors raised by a resumed coroutine never reach luv (whose default is to
-- exit the process): they go to levelparty.on_error.
--
-- A parked coroutine is resumed with RESUMED first: a coroutine someone else
-- resumes while it waits in levelparty (coroutine.resume by hand) raises a
-- misuse error there, and the driver forgets it, so that nothing resumes it
-- later at some other yield of the application's.

local uv = require "luv"
local core = require "levelparty.core"
local shared = require "levelparty.loop"

local coroutine_running, coroutine_yield, coroutine_resume = coroutine.running, coroutine.yield, coroutine.resume
local setmetatable, error = setmetatable, error
local format = string.format
local slice_begin = core.slice_begin
local collect = shared.collect
local JOB_TOKEN = core.JOB_TOKEN -- tokens of worker jobs are >= this

local _M = {}

-- true when the running coroutine may wait (yield): any yieldable coroutine,
-- resumed from luv's loop
_M.yieldable = coroutine.isyieldable or function()
  local co, main = coroutine_running()
  return co ~= nil and not main
end

-- Called with (coroutine, error) when a coroutine we resumed dies of an
-- error: levelparty (init.lua) installs levelparty.on_error here as it loads
-- this module, before anything can be resumed.
local report

function _M.set_error_handler(fn) report = fn end

local RESUMED = {} -- what the driver resumes a parked coroutine with, first

local function resume(co, ...)
  local ok, err = coroutine_resume(co, RESUMED, ...)
  if not ok then report(co, err) end
end

-- A parked coroutine was resumed by someone else: raises there, at the line
-- of the application's that called levelparty (the first frame, from here up,
-- that is Lua and no file of levelparty's).
local function resumed_by_hand(op)
  local level = 2 -- the level of error() and of debug.getinfo() alike
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil then
      level = 0
      break
    end
    if info.what ~= "C" and not info.source:find("levelparty[/\\][%w_]+%.lua$") then break end
    level = level + 1
  end
  error(format("%s: this coroutine was resumed by hand while it waited (a coroutine waiting in levelparty is "
    .. "resumed by levelparty, from luv's loop)", op or "levelparty"), level)
end

local drivers = {}   -- party lightuserdata -> driver

local Driver = {}
Driver.__index = Driver

-- Coroutines that gave up the loop for one turn (time slice over).  An idle
-- handle, not a 0 ms timer: libuv runs a timer re-armed with 0 ms again in the
-- same pass, which would starve every other timer.
local ticking, tick_idle = {}, nil

local function run_ticks()
  local list = ticking
  ticking = {}
  slice_begin()
  for i = 1, #list do resume(list[i]) end
  if #ticking == 0 then tick_idle:stop() end
end

--- Lets the loop run once, then returns (from inside a coroutine); op names
-- the call, for the misuse message.
function _M.tick(op)
  if tick_idle == nil then tick_idle = uv.new_idle() end
  local co = coroutine_running()
  ticking[#ticking + 1] = co
  if #ticking == 1 then tick_idle:start(run_ticks) end
  if coroutine_yield() ~= RESUMED then
    for i = #ticking, 1, -1 do
      if ticking[i] == co then table.remove(ticking, i) end
    end
    if #ticking == 0 then tick_idle:stop() end
    resumed_by_hand(op)
  end
end

-- The core handle the driver uses; held weakly so that a handle the
-- application dropped can be collected (its finalizer releases the driver).
function Driver:core()
  return self.cref[1]
end

function Driver:arm()
  local c = self:core()
  if c == nil then return end
  local fd, timeout = c:pollinfo()
  if fd ~= self.fd then -- at the first arm, or when the party could not make its epoll set
    if self.poll then self.poll:close() self.poll = nil end
    self.fd = fd
    if fd >= 0 then self.poll = assert(uv.new_poll(fd)) end
  end
  -- While nobody waits the handles are unref'd: an idle follower still
  -- notices its leader's death (and may win the election) while the loop
  -- runs, but never keeps uv.run() from returning.
  local waiting = self.nwait > 0
  if self.poll then
    -- started once: restarting a started poll costs libuv two epoll_ctl
    if not self.poll:is_active() then self.poll:start("r", self.on_event) end
    if waiting then self.poll:ref() else self.poll:unref() end
  end
  if timeout >= 0 then
    self.timer:start(timeout, 0, self.on_event)
    if waiting then self.timer:ref() else self.timer:unref() end
  else
    self.timer:stop()
  end
end

-- Something happened: step the party (levelparty.loop's collect) and resume
-- whoever can go on.
function Driver:run()
  local c = self:core()
  if c == nil then return end
  self.running = true
  slice_begin()
  local ready, nready, opened = collect(self, c)
  for i = 1, nready do -- resume(), inlined: once per request
    local co = ready[i]
    local ok, rerr = coroutine_resume(co, RESUMED)
    if not ok then report(co, rerr) end
  end
  if opened then
    for i = 1, #opened do
      local r = opened[i]
      resume(r[1], r[2], r[3], r[4])
    end
  end
  self.running = false
  -- what the resumed coroutines asked for goes out in one write
  c:flush()
  if c:role() ~= "closed" then self:arm() end
end

local by_core = setmetatable({}, { __mode = "k" }) -- core handle -> driver

local function get_driver(c)
  local d = by_core[c]
  if d ~= nil and d.cref[1] == c then return d end
  local key = c:party()
  d = drivers[key]
  if d == nil then
    d = setmetatable(shared.new_driver { timer = uv.new_timer() }, Driver)
    d.on_event = function() d:run() end
    drivers[key] = d
  end
  d.cref[1] = c
  c:set_polled(true)
  by_core[c] = d
  return d
end

-- Parks the running coroutine under `key` in the driver's `list` until run()
-- resumes it; returns what run() resumes it with.  Without a list, key is the
-- token of a request or of a worker job (big batches) of c.  op names the
-- call, for the misuse message when someone else resumes the coroutine.  The
-- core returns a request's token only while it is not done, and nothing steps the party
-- between that return and this call, so a request is parked unasked; a job
-- may finish meanwhile on its thread, so it is asked.  This runs once per
-- request of every coroutine: the driver is looked up here (get_driver()
-- only when it is not c's yet), and wait_token is this function itself, as a
-- wrapper around it cost a follower's request in a coroutine 2-4% more
-- instructions (callgrind).
local function park(c, key, op, list)
  local d = by_core[c]
  if d == nil or d.cref[1] ~= c then d = get_driver(c) end
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
  -- inside run() the driver arms once when it is done
  if not d.running then d:arm() end
  local by, a, b, e = coroutine_yield()
  if by ~= RESUMED then
    if waiting[key] == co then
      waiting[key] = nil
      d.nwait = d.nwait - 1
      if list == nil then d.orphans[key] = true end
    end
    resumed_by_hand(op)
  end
  return a, b, e
end

--- wait_token(c, token, op): waits (yielding) until the request or job
-- `token` of core handle c is done; op names the call.
_M.wait_token = park

--- Waits until iterator it can give its next entry.
function _M.wait_iter(c, it)
  park(c, it, "iterator", "iters")
end

--- Waits until the first election of c ended; returns true or nil, msg, code.
function _M.wait_open(c)
  return park(c, coroutine_running(), "open", "openers")
end

--- Keeps the driver of a follower polling, so that a leader's death is noticed
-- while the loop runs; on_role is called with the new role.
function _M.watch(c, on_role)
  local d = get_driver(c)
  if on_role then d.on_role = on_role end
  d:arm()
end

--- After a blocking call on a party that also has coroutines waiting: their
-- replies may have been read by the blocking call, so look again soon.
function _M.kick(party)
  local d = drivers[party]
  if d and d.nwait > 0 then d.timer:start(0, 0, d.on_event) end
end

--- The last handle of a party is closing: close its driver.  Returns a
-- function that resumes the coroutines still waiting; call it once the core
-- handle is closed, so that they find their requests finished with ECLOSED.
function _M.release(party)
  local d = drivers[party]
  if d == nil then return nil end
  if d.poll then d.poll:close() d.poll = nil end
  if not d.timer:is_closing() then d.timer:close() end
  drivers[party] = nil
  local c = d:core()
  if c then c:set_polled(false) end
  -- Let the close callbacks run now when nobody runs the loop: luv crashes
  -- at exit on handles whose close never completed.
  if uv.loop_mode() == nil then uv.run("nowait") end
  return function() shared.drain(d, resume) end
end

return _M

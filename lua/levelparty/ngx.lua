-- levelparty.ngx: the adaptor for OpenResty / nginx workers (ngx_lua).
--
-- levelparty (init.lua) chooses it whenever it runs under ngx_lua, before it
-- would look at luv.  It hands init.lua a "core handle" of its own (the same
-- methods as levelparty.core's db userdata), so that the public API is
-- unchanged:
--   * a leader worker's calls run LevelDB inline (get, put, del, get_many);
--     iterators and clear give the event loop a turn (ngx.sleep(0)) every
--     time slice; a big batch goes to the party's worker thread, polled with
--     ngx.sleep(0.001);
--   * a follower worker's calls and iterators submit into ONE sans-IO client
--     of the core (core.client) per directory and client settings, and wait
--     on pooled ngx.semaphores; a dispatcher (a zero-delay ngx.timer.at: its
--     entry thread reads and feeds the client, a writer light thread sends
--     all the client has queued in one send) moves the bytes over one
--     cosocket to unix:<dir>/level-party.sock, so that the calls a worker has
--     in flight cost one send and one receive.  It ends when no call waits
--     (at once when the worker exits), and puts a clean connection back to
--     the keepalive pool; the next call starts it again.  Without a timer
--     (lua_max_pending_timers) a waiting call runs the same loop in its own
--     request.  Before anything is sent on a new connection, C checks who
--     serves the socket (db:sock_mark / db:sock_vet: the party's trust rule
--     on SO_PEERCRED), as the other transports do; a refusal fails the calls
--     with EACCES.  Nothing in C waits or yields: C answers, Lua waits in
--     cosocket calls, ngx.sleep and ngx.semaphore;
--   * a lost or refused connection resets the client, elects (db:elect(): one
--     C step that never connects or waits), and replays in submission order;
--     iterators resume after the last entry handed out.  One dispatcher per
--     worker and directory runs the election with its back-off (1 ms, at most
--     2 ms for 0.5 s, then x1.5 up to 10 ms); others wait on a semaphore.
--     When the worker becomes the leader, the client is freed and the calls
--     waiting on it run inline;
--   * every call raises in a phase that has no cosockets.
-- levelparty.open refuses init_by_lua* (init.lua).

local core = require "levelparty.core"
local semaphore = require "ngx.semaphore"

local ngx = rawget(_G, "ngx")
local type, error, pairs, setmetatable, pcall = type, error, pairs, setmetatable, pcall
local min, max, ceil = math.min, math.max, math.ceil
local format = string.format
local PENDING, YIELD = core.PENDING, core.YIELD
local tcp, sleep, get_phase = ngx.socket.tcp, ngx.sleep, ngx.get_phase
local slice_begin = core.slice_begin

local _M = {}

-- Phases in which a cosocket, ngx.sleep and a semaphore wait are allowed.
local WAITABLE = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local CONNECT_MS, SEND_MS = 5000, 60000
local READ_MS = 60000   -- a read timeout without a levelparty timeout just reads again
-- The election's retries (one light thread per worker and directory): a new
-- leader is ready after the dying leader's teardown and LevelDB's reopen, a
-- few to hundreds of ms (docs/BENCHMARKS.md); a try is one fcntl probe and one
-- refused connect (tens of µs).  For the first BACKOFF_FAST_FOR seconds of an
-- election the wait is at most BACKOFF_FAST (500 tries a second cost a few
-- ms of CPU), so that the first try after the leader is ready comes at most
-- 2 ms late, where most failovers end; after that it grows x1.5 to
-- BACKOFF_MAX, so that a LOCK held by a process that serves no socket (or a
-- slow open) is polled 100 times a second, not 500, up to the deadline.
local BACKOFF_MIN, BACKOFF_FAST, BACKOFF_MAX = 0.001, 0.002, 0.010
local BACKOFF_FAST_FOR = 0.5
local LEADER = {}       -- follow(): this process became the leader

local function guard(fname)
  local phase = get_phase()
  if not WAITABLE[phase] then
    error(format("%s: levelparty cannot be called in nginx's '%s' phase, which has no cosockets; "
      .. "call it in rewrite, access or content handlers, or in a timer (ngx.timer.at)", fname, phase), 4)
  end
end

-- Per worker and directory (and allow_other_users): the address of the leader, the election in
-- progress and its waiters.
local shared = {}

local function shared_of(path, opts)
  -- a connection vetted under allow_other_users is not for a handle without it
  local key = (opts.allow_other_users and "any:" or "") .. path
  local sh = shared[key]
  if sh == nil then
    sh = { electing = false, waiters = 0, sema = assert(semaphore.new(0)), muxes = {} }
    shared[key] = sh
  end
  -- the latest open's settings win for the pool
  sh.copts = { pool = "levelparty:" .. key, pool_size = opts.pool_size or 32, backlog = 256 }
  sh.idle_ms = opts.keepalive and opts.keepalive * 1000 or 60000
  return sh
end

local Core = {}   -- what init.lua sees as the core handle
Core.__index = Core

-- Connects sock to the leader (self._sh.addr), and makes sure it is one this
-- process trusts before anything is sent on it (a cosocket cannot read
-- SO_PEERCRED): C marks the socket file (st_dev, st_ino) right before the
-- connect; on a new connection (not one from the pool, vetted when it was
-- made) C connects a socket of its own, reads the leader's credentials,
-- applies the party's trust rule and checks that the file is still the one
-- marked.  true; nil (no connection, or the socket changed meanwhile: elect
-- again); nil, msg, code (refused: EACCES naming the leader's uid and pid).
local function connect(self, sock)
  local c, sh = self._c, self._sh
  -- A pooled connection was vetted when it was made and needs no mark (a
  -- stat of the socket file).  A new one is closed unused and made again
  -- after the mark, so that the mark precedes its connect.
  if not sock:connect(sh.addr, sh.copts) then return nil end
  if sock:getreusedtimes() > 0 then return true end
  sock:close()
  c:sock_mark()
  if not sock:connect(sh.addr, sh.copts) then return nil end
  if sock:getreusedtimes() > 0 then return true end
  local ok, err, code = c:sock_vet()
  if ok then return true end
  sock:close()
  return nil, err, code
end

-- One dispatcher of this worker looks for a leader for self's directory:
-- db:elect() (leads when the LOCK is free), else a connect to the address it
-- names, backing off from 1 ms to 2 ms for 0.5 s, then x1.5 to 10 ms, for at
-- most `wait` seconds.  The others wait for it on the semaphore.  true, or
-- nil, msg, code.
local function recover(self, wait)
  local sh = self._sh
  if sh.electing then
    sh.waiters = sh.waiters + 1
    sh.sema:wait(max(0.001, min(wait, 1)))
    return true
  end
  sh.electing = true
  local start = ngx.now()
  local deadline, fast_until = start + wait, start + BACKOFF_FAST_FOR
  local backoff = BACKOFF_MIN
  local ok, err, code
  while true do
    ngx.update_time()
    local role, addr, holder = self._c:elect()
    if role == "leader" then ok = true break end
    if role == nil then ok, err, code = nil, addr, holder break end
    sh.addr = addr
    local s = tcp()
    s:settimeouts(CONNECT_MS, SEND_MS, READ_MS)
    local c_ok, c_err, c_code = connect(self, s)
    if c_ok then
      if not s:setkeepalive(sh.idle_ms, sh.copts.pool_size) then s:close() end
      ok = true
      break
    end
    if c_code then ok, err, code = nil, c_err, c_code break end
    local rem = deadline - ngx.now()
    if rem <= 0 then
      ok, code = nil, holder > 0 and "ELOCKED" or "ETIMEDOUT"
      err = holder > 0
        and format("leader: %s/LOCK is held by pid %d, which serves no level-party.sock", self._path, holder)
        or format("leader: no leader serves %s", self._path)
      break
    end
    sleep(min(backoff, rem))
    -- x1.5, not x2: below the cap, the first try after the new leader is
    -- ready comes at most half the time waited so far late
    backoff = min(backoff * 1.5, ngx.now() < fast_until and BACKOFF_FAST or BACKOFF_MAX)
  end
  sh.electing = false
  if sh.waiters > 0 then
    sh.sema:post(sh.waiters)
    sh.waiters = 0
  end
  return ok, err, code
end

-- The dispatcher ---------------------------------------------------------------
--
-- One "mux" per worker, directory and client settings (window, max_frame,
-- timeout, retry): ONE sans-IO client (m.cl) that all of the worker's follower
-- calls and iterators submit into, and at most one connection (m.sock) that
-- moves its bytes, owned by the dispatcher: a zero-delay timer (or, when no
-- timer can be made, the waiting request itself) whose entry thread reads
-- (receiveany -> cl:feed -> posts the semaphores of the waiters whose request
-- or iterator is ready) and whose writer light thread sends what cl:out() holds
-- in one send, when a call posts it.  A batch of calls in flight costs one send
-- and one receive.  Invariants:
--   * every connection starts with cl:replay(): whatever is pending, or was sent
--     on a connection lost since, goes again in submission order, and
--     iterators resume after the last entry handed out;
--   * m.running is true while a dispatcher runs (or is about to run) for m;
--     a waiter that finds none starts one;
--   * a connection goes back to the keepalive pool only clean: the client idle
--     (nothing pending, no iterator open), nothing left to send, and no request
--     expired on it (a late reply would reach the connection's next user);
--   * the dispatcher ends when no call waits (at once when the worker exits,
--     else after LINGER without one), so that no timer of ours keeps an
--     exiting worker alive; every wait in it is bounded;
--   * when this process becomes the leader, m.cl is freed and set to nil: its
--     waiters (whose w.cl is no longer m.cl) run their call inline.
local LINGER, LINGER_ITER = 0.1, 1 -- s without a waiter before the dispatcher ends
local WAIT_MAX = 1                 -- s: a waiter without deadline looks again this often

local semas = {}                   -- free semaphores of this worker (count 0)

local function sema_take()
  local n = #semas
  if n == 0 then return assert(semaphore.new(0)) end
  local s = semas[n]
  semas[n] = nil
  return s
end

local function sema_give(s)
  while s:count() > 0 do s:wait(0) end -- a post that came after a timeout
  semas[#semas + 1] = s
end

local function mux_of(self)
  local m = self._mux
  m.db = self -- the latest caller's handle runs elections and trust checks
  if m.cl == nil then m.cl = core.client(m.copts) end
  return m
end

-- A waiter w is ready when its request finished or its iterator can page, or
-- when its client is gone (this process leads now).
local function ready(m, w)
  local cl = w.cl
  if m.cl ~= cl then return true end
  if w.it then return w.it:ready() end
  return cl:done(w.tok)
end

local function wake_ready(m)
  local waiting = m.waiting
  for w in pairs(waiting) do
    if ready(m, w) then
      waiting[w] = nil
      w.sema:post(1)
    end
  end
end

local function wake_all(m)
  local waiting = m.waiting
  for w in pairs(waiting) do
    waiting[w] = nil
    w.sema:post(1)
  end
end

local function kick(m)
  if m.sock and not m.kicked then
    m.kicked = true
    m.wsema:post(1)
  end
end

-- The writer light thread of connection sock: sends everything the client
-- has queued, in one send per wake-up, until m.wstop.
local function writer(m, sock)
  while true do
    m.kicked = false
    local cl, stop = m.cl, m.wstop or m.sock ~= sock
    local out = not stop and cl and cl:out()
    if out then
      if not sock:send(out) then
        m.wfail = true
        return
      end
      m.sent = true
    elseif stop then
      return
    else
      m.wsema:wait(WAIT_MAX)
    end
  end
end

local function stop_writer(m)
  local th = m.writer
  if th == nil then return end
  m.wstop, m.writer = true, nil
  m.wsema:post(1)
  ngx.thread.wait(th)
  m.wstop = false
  while m.wsema:count() > 0 do m.wsema:wait(0) end
end

-- The connection is gone (or broke the protocol): close it, rewind the client.
local function lost(m)
  stop_writer(m)
  local sock = m.sock
  m.sock = nil
  pcall(sock.close, sock)
  local cl = m.cl
  cl:reset()
  if m.sent and not m.retry then
    cl:fail_all("ELEADERLOST", "the leader went away with the request in flight (retry = false)")
    wake_ready(m)
  end
  m.sent = false
end

-- This process leads now: the waiters run their calls inline.
local function to_leader(m)
  local cl = m.cl
  m.cl = nil
  wake_all(m)
  cl:free()
end

-- Connects m to the leader (the address the last election gave), or elects.
local function dial(m)
  local db, cl = m.db, m.cl
  local sh = db._sh
  if sh.addr then
    local s = tcp()
    s:settimeouts(CONNECT_MS, SEND_MS, READ_MS)
    local ok, err, code = connect(db, s)
    if ok then
      m.sock, m.sent, m.dirty, m.wfail, m.kicked = s, false, false, false, false
      cl:replay()
      m.writer = ngx.thread.spawn(writer, m, s)
      return
    end
    if code then -- a leader this process does not trust: nothing was sent
      cl:reset()
      cl:fail_all(code, err)
      wake_ready(m)
      return
    end
  end
  local ok, err, code = recover(db, cl:remaining() or db._open_timeout)
  cl:expire()
  if ok == nil then cl:fail_all(code, err) end
  wake_ready(m)
end

-- Ends m's connection: back to the pool when clean, else closed.
local function hang_up(m)
  local sock = m.sock
  if sock == nil then return end
  stop_writer(m)
  m.sock = nil
  local cl = m.cl
  -- what is still queued (an iterator's end, acks) goes with the connection;
  -- requests pending are framed again by the next connection's replay
  local rest = cl and cl:out()
  if cl and cl:idle() and not rest and not m.dirty and not m.wfail then
    local sh = m.db._sh
    if sock:setkeepalive(sh.idle_ms, sh.copts.pool_size) then return end
  end
  -- (the client is rewound by the next connection's replay: entries an
  -- iterator holds stay readable meanwhile)
  pcall(sock.close, sock)
end

-- The dispatcher's loop, until no call waits (mine: an inline run for
-- waiter mine, which ends when mine is ready).
local function run(m, mine)
  local quiet
  while true do
    local cl = m.cl
    if cl == nil then break end
    if mine then
      if ready(m, mine) then break end
    elseif next(m.waiting) == nil then
      if m.sock == nil or ngx.worker.exiting() then break end
      local now = ngx.now()
      if quiet == nil then
        quiet = now
      elseif now - quiet >= (cl:idle() and LINGER or LINGER_ITER) then
        break
      end
    else
      quiet = nil
    end
    local sock = m.sock
    if sock == nil then
      if m.db._c:is_leader() then
        to_leader(m)
        break
      end
      dial(m)
    else
      local rem = cl:remaining()
      local wait = next(m.waiting) and WAIT_MAX or LINGER
      if rem and rem < wait then wait = rem end
      sock:settimeouts(CONNECT_MS, SEND_MS, max(1, ceil(wait * 1000)))
      local data, err = sock:receiveany(65536)
      if data then
        if cl:feed(data) then wake_ready(m) else lost(m) end -- false: the leader broke the protocol
      elseif err == "timeout" then
        if cl:expire() > 0 then
          m.dirty = true
          wake_ready(m)
        end
      else
        lost(m)
      end
      if m.sock and m.wfail then lost(m) end -- the writer's send failed
    end
  end
  hang_up(m)
end

-- A dispatcher failed (a bug): its calls fail rather than wait for nothing.
local function crashed(m, err)
  ngx.log(ngx.ERR, "levelparty: dispatcher: ", tostring(err))
  local sock = m.sock
  if sock then
    m.sock, m.writer = nil, nil
    m.wsema:post(1) -- the writer sees m.sock change and ends
    pcall(sock.close, sock)
  end
  local cl = m.cl
  if cl then
    cl:reset()
    cl:fail_all("EIO", "levelparty: dispatcher: " .. tostring(err))
  end
  wake_all(m)
end

local start

-- The timer's handler; premature (the worker exits) runs as well: the calls
-- waiting are served, then it ends.
local function dispatch(_, m)
  local ok, err = pcall(run, m)
  if not ok then crashed(m, err) end
  m.running = false
  -- a call came while it hung up: a new dispatcher, or the calls run one
  if next(m.waiting) ~= nil and not start(m) then wake_all(m) end
end

start = function(m)
  m.running = true
  if ngx.timer.at(0, dispatch, m) then return true end
  m.running = false
  return false
end

-- Waits until waiter w is ready; wait: seconds of its deadline (nil: none).
local function await(m, w, wait)
  local deadline = wait and ngx.now() + wait
  while not ready(m, w) do
    m.waiting[w] = true
    if m.running then
      kick(m)
    elseif not start(m) then
      -- no timer (lua_max_pending_timers): this request dispatches itself
      m.running = true
      local ok, err = pcall(run, m, w)
      m.running = false
      if not ok then crashed(m, err) end
      wake_all(m) -- the others take over
    end
    if m.waiting[w] then
      local t = deadline and max(0.001, deadline - ngx.now()) or WAIT_MAX
      local ok = w.sema:wait(min(t, WAIT_MAX))
      if not ok and deadline and ngx.now() >= deadline and m.cl == w.cl and w.cl:expire() > 0 then
        m.dirty = true -- a reply may still come on this connection: never pool it
        wake_ready(m)
      end
    end
    m.waiting[w] = nil
  end
end

local function wait_for(m, cl, tok, it, wait)
  local w = { cl = cl, tok = tok, it = it, sema = sema_take() }
  local ok, err = pcall(await, m, w, wait)
  m.waiting[w] = nil
  sema_give(w.sema)
  if not ok then error(err, 0) end
end

-- A follower's call: submit(cl, ...) queues the request on the worker's
-- client; returns the call's results, or LEADER.
local function follow(self, op, submit, ...)
  local m = mux_of(self)
  local cl = m.cl
  local tok, msg = submit(cl, ...)
  if not tok then return tok, msg end
  wait_for(m, cl, tok, nil, self._copts.timeout)
  if m.cl ~= cl then return LEADER end
  return cl:result(tok, op)
end

-- A leader's call that may answer YIELD (time slice over) or PENDING (a
-- worker job): let the loop turn, poll the job.
local function inline(c, method, ...)
  slice_begin()
  local a, b, e = c[method](c, true, ...)
  while a == YIELD do
    sleep(0)
    slice_begin()
    a, b, e = c[method](c, true, ...)
  end
  if a == PENDING then
    while not c:done(b) do sleep(0.001) end
    return c:result(b, method)
  end
  return a, b, e
end

local function get_cl(cl, k) return cl:get(k) end
local function put_cl(cl, k, v, sync) return cl:put(k, v, sync) end
local function del_cl(cl, k, sync) return cl:del(k, sync) end
local function batch_cl(cl, ops, sync, numbers_ok) return cl:batch(false, ops, sync, numbers_ok) end
local function get_many_cl(cl, keys) return cl:get_many(keys) end
local function clear_cl(cl, r, sync) return cl:clear(r, sync) end

-- A leader's call that answers at once.
local function direct(c, method, ...) return c[method](c, false, ...) end

-- One call of a core handle, after guard(): a follower's goes to the leader
-- (submit(cl, ...) queues it on the worker's shared client); a leader's, or one whose
-- election made this process the leader on the way, runs here as
-- lead(c, op, ...) (direct or inline).  Returns the call's results.
local function call(self, op, submit, lead, ...)
  local c = self._c
  if not c:is_leader() then
    local a, b, e = follow(self, op, submit, ...)
    if a ~= LEADER then return a, b, e end
  end
  return lead(c, op, ...)
end

-- guard() stays in each method: its error level counts from there.
function Core:get(_, k)
  guard("get")
  return call(self, "get", get_cl, direct, k)
end

function Core:put(_, k, v, sync)
  guard("put")
  return call(self, "put", put_cl, direct, k, v, sync)
end

function Core:del(_, k, sync)
  guard("del")
  return call(self, "del", del_cl, direct, k, sync)
end

function Core:batch(_, ops, sync, numbers_ok)
  guard("batch")
  return call(self, "batch", batch_cl, inline, ops, sync, numbers_ok)
end

function Core:get_many(_, keys)
  guard("get_many")
  return call(self, "get_many", get_many_cl, direct, keys)
end

-- init.lua asks is_leader() first and calls clear_begin on a leader.  A
-- follower that wins the election on the way clears through the same path.
function Core:clear(_, r, sync)
  guard("clear")
  local a, b, e = follow(self, "clear", clear_cl, r, sync)
  if a ~= LEADER then return a, b, e end
  local cl
  cl, b, e = self:clear_begin(r)
  if cl == nil then return nil, b, e end
  return cl:step(false, sync)
end

local Clearer = {}
Clearer.__index = Clearer

function Clearer:step(_, sync)
  return inline(self[1], "step", sync)
end

function Core:clear_begin(r)
  guard("clear")
  local cl, err, code = self._c:clear_begin(r)
  if cl == nil then return nil, err, code end
  return setmetatable({ cl }, Clearer)
end

-- Iterators ------------------------------------------------------------------

-- A leader's own iterator: pages from LevelDB, a loop turn every time slice.
local LocalIter = {}
LocalIter.__index = LocalIter

function LocalIter:page(_, t)
  return inline(self[1], "page", t)
end

function LocalIter:close() return self[1]:close() end

-- A follower's iterator: an iterator of the worker's client (m.cl); pages wait
-- for the dispatcher, acks go out through its writer.
local RemoteIter = {}
RemoteIter.__index = RemoteIter

function RemoteIter:close()
  if self.local_it then return self.local_it:close() end
  local cl = self.cl
  if cl then
    self.cl = nil
    if self.m.cl == cl then
      self.ci:close() -- queues the end for the leader, frees the iterator's state
      kick(self.m)
    end
  end
  return true
end

-- This process leads now: the rest of the range comes from its own LevelDB,
-- right after the last entry handed out (as a replay would reopen it).
local function go_local(self)
  local r = {}
  for k, v in pairs(self.r) do r[k] = v end
  local last = self.last
  if last ~= nil then
    if r.reverse then r.lt, r.lte = last, nil else r.gt, r.gte = last, nil end
  end
  if r.limit and r.limit >= 0 then r.limit = max(0, r.limit - self.count) end
  self:close()
  local it, err, code = self.db._c:iter(r)
  if it == nil then return nil, err, code end
  self.local_it = setmetatable({ it }, LocalIter)
  return true
end

function RemoteIter:page(_, t)
  if self.local_it then return self.local_it:page(nil, t) end
  local cl = self.cl
  if cl == nil then return 0 end
  guard("iterator")
  local m, ci, buf = self.m, self.ci, self.buf
  while true do
    if m.cl ~= cl then -- the client is gone: this process leads
      local ok, err, code = go_local(self)
      if not ok then return nil, err, code end
      return self.local_it:page(nil, t)
    end
    local n, err, code = ci:page(buf)
    if n ~= PENDING then
      if n == nil then
        self:close()
        return nil, err, code
      end
      local keys, values, j = self.keys, self.values, 0
      for i = 1, n do
        local k, v = buf[2 * i - 1], buf[2 * i]
        if keys then j = j + 1 t[j] = k end
        if values then j = j + 1 t[j] = v end
        if not keys and not values then j = j + 1 t[j] = true end
      end
      if n > 0 then
        self.last = buf[2 * n - 1]
        self.count = self.count + n
        -- the window's acks for those entries: out now, so that the leader
        -- keeps streaming meanwhile
        kick(m)
      else
        self:close()
      end
      return n
    end
    wait_for(m, cl, nil, ci, self.db._copts.timeout)
  end
end

function Core:iter(r)
  guard("iter")
  local c = self._c
  if c:is_leader() then
    local it, err, code = c:iter(r)
    if it == nil then return nil, err, code end
    return setmetatable({ it }, LocalIter)
  end
  local rr = {}
  for k, v in pairs(r) do rr[k] = v end
  rr.keys = true -- the bookmark needs every key
  local m = mux_of(self)
  local cl = m.cl
  return setmetatable({
    db = self, m = m, cl = cl, ci = cl:iter(rr), r = r, buf = {}, count = 0,
    keys = r.keys ~= false, values = r.values ~= false,
  }, RemoteIter)
end

-- The rest of a core handle --------------------------------------------------

function Core:is_leader() return self._c:is_leader() end
function Core:role() return self._c:role() end
function Core:role_change() return self._c:role_change() end
function Core.opened() return true end
function Core:party() return self._c:party() end
function Core:path() return self._c:path() end
function Core:forked() return self._c:forked() end
function Core:close() return self._c:close() end
function Core:elect() return self._c:elect() end

--- open(dir, opts) -> core handle | nil, msg, code: the election only (never
-- a connect: init_worker_by_lua* has no cosockets).
function _M.open(dir, opts)
  local o = {}
  for k, v in pairs(opts) do
    if type(v) ~= "function" and type(v) ~= "table" then o[k] = v end
  end
  o.external = true
  local c, err, code = core.open(dir, o, false)
  if c == nil then return nil, err, code end
  local role, addr, holder = c:elect()
  if role == nil then
    c:close()
    return nil, addr, holder
  end
  local path = c:path()
  local sh = shared_of(path, opts)
  if role == "follower" then sh.addr = addr end
  local copts = { window = opts.window, max_frame = opts.max_frame, timeout = opts.timeout }
  local retry = opts.retry ~= false
  -- handles that share a client must agree on what the client decides
  local key = format("%s|%s|%s|%s", tostring(copts.window), tostring(copts.max_frame),
    tostring(copts.timeout), tostring(retry))
  local m = sh.muxes[key]
  if m == nil then
    m = { copts = copts, retry = retry, waiting = {}, running = false, wsema = assert(semaphore.new(0)) }
    sh.muxes[key] = m
  end
  return setmetatable({
    _c = c, _sh = sh, _path = path, _mux = m,
    _open_timeout = opts.open_timeout or 10,
    _copts = copts,
  }, Core)
end

--- true when this Lua runs inside ngx_lua (a worker, the master or a helper)
function _M.active()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

return _M

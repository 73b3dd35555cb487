-- levelparty: many processes, one LevelDB directory.
--
-- This module is the public face: it checks arguments, applies encodings, and
-- decides how a call waits:
--   * inside a coroutine while luv's loop runs, a call that must wait yields
--     (levelparty.luv resumes it), and a coroutine that calls in a tight loop
--     gives the loop a turn every time slice (2 ms);
--   * anywhere else the call blocks in C and returns its result.
-- Misuse raises at the caller's line, with a message naming the function:
-- the checks below return that message (or nil when all is well) and the
-- public method raises it with error(msg, 2).  Runtime failures return nil,
-- "op: detail", "ECODE"; a missing key is nil.  The iterators db:iter()
-- returns are in levelparty.iterator.

local core = require "levelparty.core"
local encoding = require "levelparty.encoding"
local iterator = require "levelparty.iterator"
local sublevel = require "levelparty.sublevel"

local type, error, tostring, rawget = type, error, tostring, rawget
local setmetatable, getmetatable = setmetatable, getmetatable
local pairs, ipairs, next = pairs, ipairs, next
local format = string.format
local loaded = package.loaded
local decode = encoding.decode
local PENDING, YIELD = core.PENDING, core.YIELD
-- the core's methods, called directly on the hot paths (set at first open)
local core_get, core_put, core_result

local _M = {
  _VERSION = "levelparty 0.1.0",
  leveldb_version = core.leveldb_version,
}

-- Under ngx_lua (OpenResty/nginx) the nginx adaptor does all the waiting,
-- in cosockets and ngx.sleep, and the luv adaptor is never used: a
-- coroutine yield would hang the request (levelparty/ngx.lua).
local ngx_adaptor = type(rawget(_G, "ngx")) == "table" and type(rawget(_G, "ngx").get_phase) == "function"
  and require "levelparty.ngx" or nil

-- The loop adaptor: the one levelparty.set_loop chose, else the luv adaptor,
-- loaded only once the application itself loaded luv (no application can be
-- running luv's loop without having required it).  adaptor_yieldable is its
-- test of whether the running coroutine may wait (for luv: any yieldable one).
local adaptor, adaptor_yieldable
-- Hands an error nobody else can take (of a coroutine levelparty resumed, or
-- of an application callback) to levelparty.on_error; an error of on_error
-- itself goes to stderr, never to the caller or to luv.
local function report(co, err)
  local ok, e2 = pcall(_M.on_error, co, err)
  if not ok then io.stderr:write("levelparty: levelparty.on_error failed: ", tostring(e2), "\n") end
end

local function luv_adaptor()
  if adaptor == nil and loaded.luv ~= nil and not ngx_adaptor then
    adaptor = require "levelparty.luv"
    adaptor.set_error_handler(report)
    adaptor_yieldable = adaptor.yieldable
  end
  return adaptor
end

-- true when this call should wait through the loop adaptor instead of
-- blocking: in a coroutine the adaptor can wait in (for luv, once the
-- application loaded luv: as with luv's coro-* helpers, the coroutine is
-- resumed from luv's loop, the application runs uv.run()).
local function async_mode()
  if ngx_adaptor then return false end
  if adaptor == nil then
    if loaded.luv == nil then return false end
    luv_adaptor()
  end
  return adaptor_yieldable()
end

-- The adaptors levelparty.set_loop knows by name.
local LOOPS = {
  luv = function() return require "levelparty.luv" end,
  cqueues = function() return require "levelparty.cqueues" end,
  yield = function()
    local loop = require "levelparty.loop"
    return loop.new(loop.yield_backend(), "yield")
  end,
}

local party_handles = {}   -- party -> number of open Lua handles (for the loop adaptor)

--- levelparty.set_loop(loop) -> true: how a call inside a coroutine waits,
-- for the handles opened after it (none may be open).  loop is "luv",
-- "cqueues", "yield" (the call yields a pollable to whoever resumed the
-- coroutine), a backend table { wait = function(pollable, d) ... end [, wake =
-- function(d)] [, yieldable = function() ... end] } (levelparty.loop.new), or
-- nil: back to the default (luv, once loaded).
function _M.set_loop(loop, extra)
  if extra ~= nil then error("set_loop: no more than 1 argument expected", 2) end
  if ngx_adaptor then error("set_loop: under nginx the nginx adaptor waits (levelparty.ngx)", 2) end
  if next(party_handles) ~= nil then error("set_loop: handles are open; close them first", 2) end
  local a
  if loop == nil then
    a = nil
  elseif type(loop) == "string" then
    local make = LOOPS[loop]
    if make == nil then
      error(format("set_loop: bad argument #1 (unknown loop '%s': luv, cqueues, yield or a backend table)", loop), 2)
    end
    a = make()
  elseif type(loop) == "table" then
    if type(loop.wait) ~= "function" then error("set_loop: bad argument #1 (backend.wait must be a function)", 2) end
    a = require("levelparty.loop").new(loop, "custom")
  else
    error(format("set_loop: bad argument #1 (string, table or nil expected, got %s)", type(loop)), 2)
  end
  adaptor, adaptor_yieldable = a, a and a.yieldable
  if a then a.set_error_handler(report) end
  return true
end

--- Errors of the application's coroutines resumed by levelparty go here, and
-- those of its on_role callbacks (co is nil then, and err a traceback).
function _M.on_error(co, err)
  if type(co) == "thread" then
    io.stderr:write("levelparty: uncaught error in a coroutine: ", debug.traceback(co, tostring(err)), "\n")
  else
    io.stderr:write("levelparty: uncaught error in a callback: ", tostring(err), "\n")
  end
end

local function with_traceback(e)
  if type(e) == "string" then return debug.traceback(e, 2) end
  return e
end

-- Calls the application's on_role(role, db): an error it raises goes to
-- levelparty.on_error(nil, err), never to the call that noticed the change
-- (whose result it would lose) nor to luv (which would exit the process).
local function call_on_role(on_role, role, db)
  local ok, err = xpcall(function() return on_role(role, db) end, with_traceback)
  if not ok then report(nil, err) end
end

-- The message of a misuse of function fname.
local function misuse(fname, fmt, ...)
  return format("%s: " .. fmt, fname, ...)
end

local function too_many(fname, max)
  return format("%s: no more than %d arguments expected", fname, max)
end

-- ------------------------------------------------------------------ options

local OPEN_OPTIONS = {
  create_if_missing = "boolean", error_if_exists = "boolean", compression = "boolean", paranoid_checks = "boolean",
  cache_size = "number", write_buffer_size = "number", block_size = "number",
  max_open_files = "number", bloom_bits = "number",
  key_encoding = "encoding", value_encoding = "encoding",
  sync = "boolean", timeout = "number", open_timeout = "number", retry = "boolean",
  allow_other_users = "boolean", on_role = "function", max_frame = "number", window = "number",
  log = "boolean", max_send_buffer = "number", lead = "boolean", pool_size = "number",
  keepalive = "number",
}

-- What each number option must be: an integer from min to max, "seconds"
-- (>= 0; math.huge: no limit) or "limit" (an integer; negative or
-- math.huge: no limit).  The bounds keep every value inside its C type.
local function int_range(min, max) return { min, max, ("an integer from %.0f to %.0f"):format(min, max) } end
local NUMBER_OPTIONS = {
  cache_size = int_range(0, 2 ^ 53), write_buffer_size = int_range(0, 2 ^ 53), block_size = int_range(0, 2 ^ 53),
  max_open_files = int_range(0, 2 ^ 31 - 1), bloom_bits = int_range(0, 100),
  max_frame = int_range(1024, 2 ^ 32 - 1), window = int_range(1, 2 ^ 31 - 1),
  max_send_buffer = int_range(0, 2 ^ 53), pool_size = int_range(1, 2 ^ 31 - 1),
  timeout = "seconds", open_timeout = "seconds", limit = "limit",
}
local huge = math.huge

-- nil when number v suits option k, else the misuse message
local function check_number(fname, k, v)
  local want = NUMBER_OPTIONS[k] or "seconds"
  if want == "seconds" then
    if v >= 0 then return nil end -- NaN is not
    want = "a number of seconds >= 0 (math.huge: no limit)"
  elseif want == "limit" then
    if v == huge or v == -huge or v % 1 == 0 then return nil end
    want = "an integer (negative or math.huge: no limit)"
  else
    if v >= want[1] and v <= want[2] and v % 1 == 0 then return nil end
    want = want[3]
  end
  return misuse(fname, "option '%s' must be %s, got %s", k, want, tostring(v))
end

-- nil when every option of the table opts is in `known` with its type
local function check_options(fname, opts, known)
  if type(opts) ~= "table" then
    return misuse(fname, "bad argument (options must be a table, got %s)", type(opts))
  end
  for k, v in pairs(opts) do
    local want = known[k]
    if want == nil then return misuse(fname, "unknown option '%s'", tostring(k)) end
    if want == "encoding" then
      if type(v) ~= "string" and type(v) ~= "table" then
        return misuse(fname, "option '%s' must be an encoding name or table, got %s", k, type(v))
      end
    elseif want ~= "any" and type(v) ~= want then
      return misuse(fname, "option '%s' must be a %s, got %s", k, want, type(v))
    elseif want == "number" then
      local bad = check_number(fname, k, v)
      if bad then return bad end
    end
  end
end

local WRITE_OPTIONS = { sync = "boolean" }
local READ_OPTIONS = { fill_cache = "boolean" }
local RANGE_OPTIONS = {
  gt = "any", gte = "any", lt = "any", lte = "any", reverse = "boolean", limit = "number",
  keys = "boolean", values = "boolean",
}

-- ------------------------------------------------------------------ the db

local DB = {}
DB.__index = DB
DB.__name = "levelparty.db"

function DB:__tostring()
  return format("levelparty.db{path=%s;role=%s}", tostring(self._path), self._c:role())
end


-- The encoded key (argument #argn of fname), or nil and the misuse message.
local function encode_key(self, fname, key, argn)
  if key == nil then return nil, misuse(fname, "bad argument #%d (key expected, got nil)", argn) end
  local k, want = self._kenc.encode(key)
  if k == nil then return nil, misuse(fname, "bad argument #%d (key must be %s, got %s)", argn, want, type(key)) end
  if k == "" or k == self._prefix then -- (a sublevel's codec prefixes an empty key)
    return nil, misuse(fname, "bad argument #%d (key must not be empty)", argn)
  end
  return k
end

-- The encoded value (argument #argn of fname), or nil and the misuse message.
local function encode_value(self, fname, value, argn)
  if value == nil then return nil, misuse(fname, "bad argument #%d (value expected, got nil)", argn) end
  local v, want = self._venc.encode(value)
  if v == nil then
    return nil, misuse(fname, "bad argument #%d (value must be %s, got %s)", argn, want, type(value))
  end
  return v
end

-- nil when self is a handle, else the message for db.method(...) instead of
-- db:method(...)
local function check_self(self, fname)
  if type(self) ~= "table" or rawget(self, "_c") == nil then
    return format("%s: call it as a method (db:%s(...)), got %s as self", fname, fname, type(self))
  end
end

-- After a follower's blocking call: report a role change the call caused (it
-- may have won an election), and look at coroutines whose replies it read.
-- A leader stays leader until closed, so its calls skip this.  (_leader is
-- set when a change is seen here; a promotion the luv driver reported first
-- leaves it unset, which costs this check, nothing else.)
local function after_blocking(self, async)
  if async or self._leader then return end
  local c = self._c
  local role = c:role_change()
  if role then
    local on_role = self._on_role
    if on_role then call_on_role(on_role, role, self) end
    if c:is_leader() then self._leader = true end
  end
  if adaptor then adaptor.kick(self._party) end
end

iterator.init(async_mode, after_blocking, function() return adaptor end)

-- A core call is c:op(async, ...).  While it answers YIELD (the coroutine's
-- time slice is over) the caller gives the loop a turn (adaptor.tick()) and
-- calls again with async = true; the answer after that ends here:
--   PENDING: a follower's request is in flight (b is its token): wait for it
--     by yielding, then take its result;
--   false, msg: misuse that C found (a batch's operations), nothing was done;
--   anything else is the call's own result.
-- (The YIELD loop stays with each caller: a vararg helper that repeats the
-- call costs about 450 instructions per call on Lua 5.4.)
local function outcome(self, op, async, a, b, e)
  if a == PENDING then
    adaptor.wait_token(self._c, b, op)
    return core_result(self._c, b, op)
  end
  if a ~= false then after_blocking(self, async) end
  return a, b, e
end

-- ---------------------------------------------------- the hot path: get, put
--
-- db:get and db:put take the path of the other methods, written out for the
-- cases that matter:
--   * the checks are plain ifs, self's rawget only when self is no table or
--     has no _c, and a non-empty string key (for put a string value) under
--     identity encodings skips encode_key/encode_value;
--   * async_mode() is inlined: once the luv adaptor is loaded, a yieldable
--     coroutine is all it takes;
--   * the core's get/put are upvalues (core_get, core_put), not looked up;
--   * outcome() is inlined for its two common ends: a leader's answer, which
--     needs nothing more, and a follower's request in flight.  Everything
--     else (YIELD, a follower's blocking answer) goes through outcome().
-- Measured with callgrind: a leader's db:get 8.5k -> 7.8k instructions, a
-- follower's request about 10% cheaper.  No other method does this.

--- db:get(key [, opts]) -> value | nil | nil, msg, code
function DB:get(key, opts, extra)
  if type(self) ~= "table" then error(check_self(self, "get"), 2) end
  if extra ~= nil then error(too_many("get", 2), 2) end
  if opts ~= nil then
    local bad = check_options("get", opts, READ_OPTIONS)
    if bad then error(bad, 2) end
  end
  local c, k = self._c, key
  if c == nil then error(check_self(self, "get"), 2) end
  if type(k) ~= "string" or k == "" or not self._kid then
    local bad
    k, bad = encode_key(self, "get", key, 1)
    if k == nil then error(bad, 2) end
  end
  local async = false
  if adaptor ~= nil then async = adaptor_yieldable() elseif loaded.luv ~= nil then async = async_mode() end
  local v, err, code = core_get(c, async, k)
  if v == PENDING then
    adaptor.wait_token(c, err, "get")
    v, err, code = core_result(c, err, "get")
  elseif v == YIELD or not self._leader then
    while v == YIELD do adaptor.tick("get") v, err, code = core_get(c, true, k) end
    v, err, code = outcome(self, "get", async, v, err, code)
  end
  if v == nil then
    if err == nil then return nil end -- a missing key is one nil
    return nil, err, code
  end
  if self._vid then return v end
  return decode(self._venc, "get", v)
end

--- db:put(key, value [, opts]) -> true | nil, msg, code
function DB:put(key, value, opts, extra)
  if type(self) ~= "table" then error(check_self(self, "put"), 2) end
  if extra ~= nil then error(too_many("put", 3), 2) end
  local sync
  if opts ~= nil then
    local bad = check_options("put", opts, WRITE_OPTIONS)
    if bad then error(bad, 2) end
    sync = opts.sync
  end
  local c, k, v = self._c, key, value
  if c == nil then error(check_self(self, "put"), 2) end
  if type(k) ~= "string" or k == "" or not self._kid then
    local bad
    k, bad = encode_key(self, "put", key, 1)
    if k == nil then error(bad, 2) end
  end
  if type(v) ~= "string" or not self._vid then
    local bad
    v, bad = encode_value(self, "put", value, 2)
    if v == nil then error(bad, 2) end
  end
  local async = false
  if adaptor ~= nil then async = adaptor_yieldable() elseif loaded.luv ~= nil then async = async_mode() end
  local ok, err, code = core_put(c, async, k, v, sync)
  if ok == PENDING then
    adaptor.wait_token(c, err, "put")
    return core_result(c, err, "put")
  elseif ok == YIELD or not self._leader then
    while ok == YIELD do adaptor.tick("put") ok, err, code = core_put(c, true, k, v, sync) end
    return outcome(self, "put", async, ok, err, code)
  end
  return ok, err, code
end

-- ------------------------------------------------------------------ the rest

--- db:del(key [, opts]) -> true | nil, msg, code
function DB:del(key, opts, extra)
  local bad = check_self(self, "del") or (extra ~= nil and too_many("del", 2))
    or (opts ~= nil and check_options("del", opts, WRITE_OPTIONS))
  if bad then error(bad, 2) end
  local c, k, sync = self._c, key, opts and opts.sync
  if type(k) ~= "string" or k == "" or not self._kid then
    k, bad = encode_key(self, "del", key, 1)
    if k == nil then error(bad, 2) end
  end
  local async = async_mode()
  local ok, err, code = c:del(async, k, sync)
  while ok == YIELD do adaptor.tick("del") ok, err, code = c:del(true, k, sync) end
  return outcome(self, "del", async, ok, err, code)
end

local function show_number(n)
  if n % 1 == 0 and n > -2 ^ 53 and n < 2 ^ 53 then return format("%d", n) end
  return tostring(n)
end

-- The length of array t (its field n when present), or nil and what is
-- wrong: a key other than 1, 2, ... and n, an n that is no count or (unless
-- `cut`: elements past n are left out) that leaves elements out, or (without
-- n) a hole.  `one`, `many`: what the elements are, for the message.  A
-- `for i = 1, #t` over an array with holes would silently skip what follows
-- the hole.
local function array_length(t, one, many, cut)
  local max, count, odd = 0, 0, nil
  for k in pairs(t) do
    if type(k) == "number" and k >= 1 and k % 1 == 0 then
      count = count + 1
      if k > max then max = k end
    elseif k ~= "n" then -- name the first in sort order: the message is the same each time
      local name = type(k) == "string" and ("'" .. k .. "'") or tostring(k)
      if odd == nil or name < odd then odd = name end
    end
  end
  if odd then return nil, format("an array of %s expected, got field %s", many, odd) end
  local n = rawget(t, "n")
  if n ~= nil then
    if type(n) ~= "number" or not (n >= 0 and n <= 2 ^ 53) or n % 1 ~= 0 then
      return nil, format("field n must be an integer >= 0, got %s", type(n))
    end
    if max > n and not cut then
      return nil, format("field n is %s, but there are %s up to #%s", show_number(n), many, show_number(max))
    end
    return n
  end
  if count ~= max then
    for i = 1, max do
      if t[i] == nil then return nil, format("%s #%d is nil: the array has a hole", one, i) end
    end
  end
  return max
end

-- ops with their keys and values encoded, or nil and the misuse message.
-- An operation with a `sublevel` field is encoded by that sublevel (of the
-- same db), as in abstract-level.
local function encode_ops(self, fname, ops, n)
  local out = {}
  for i = 1, n do
    local op = ops[i]
    if type(op) ~= "table" then
      return nil, misuse(fname, "bad operation #%d (table expected, got %s)", i, type(op))
    end
    local t = op.type
    if t ~= "put" and t ~= "del" then
      return nil, misuse(fname, "bad operation #%d (type must be \"put\" or \"del\", got %s)", i, tostring(t))
    end
    local db, k, v, bad = self
    if op.sublevel ~= nil then
      db, bad = sublevel.of(self, op.sublevel, fname, i)
      if db == nil then return nil, bad end
    end
    k, bad = encode_key(db, fname, op.key, i)
    if k == nil then return nil, bad end
    if t == "put" then
      v, bad = encode_value(db, fname, op.value, i)
      if v == nil then return nil, bad end
    end
    out[i] = { type = t, key = k, value = v }
  end
  return out
end

-- Writes ops.  With identity encodings the caller's own table goes to C,
-- which validates it: misuse comes back as false, msg, for the public method
-- to raise.
local function write_ops(self, ops, sync)
  local c, async = self._c, async_mode()
  local numbers_ok = self._kenc.name == "utf8" and self._venc.name == "utf8"
  local ok, err, code = c:batch(async, ops, sync, numbers_ok)
  while ok == YIELD do adaptor.tick("batch") ok, err, code = c:batch(true, ops, sync, numbers_ok) end
  return outcome(self, "batch", async, ok, err, code)
end

-- chained batch: db:batch() -> b; b:put(k, v), b:del(k), b:clear(), b:write()
local Batch = {}
Batch.__index = Batch
Batch.__name = "levelparty.batch"

-- nil when self is a chained batch, else the message for b.method(...)
local function check_batch(self, name)
  if getmetatable(self) ~= Batch then
    return format("batch:%s: call it as a method (b:%s(...)), got %s as self", name, name, type(self))
  end
end

function Batch:put(key, value, opts, extra)
  local bad = check_batch(self, "put") or (extra ~= nil and too_many("batch:put", 3))
  if bad then error(bad, 2) end
  local db
  db, bad = sublevel.of_opts(self._db, opts, "batch:put")
  if db == nil then error(bad, 2) end
  local k, v
  k, bad = encode_key(db, "batch:put", key, 1)
  if k == nil then error(bad, 2) end
  v, bad = encode_value(db, "batch:put", value, 2)
  if v == nil then error(bad, 2) end
  self._ops[#self._ops + 1] = { type = "put", key = k, value = v }
  return self
end

function Batch:del(key, opts, extra)
  local bad = check_batch(self, "del") or (extra ~= nil and too_many("batch:del", 2))
  if bad then error(bad, 2) end
  local db, k
  db, bad = sublevel.of_opts(self._db, opts, "batch:del")
  if db == nil then error(bad, 2) end
  k, bad = encode_key(db, "batch:del", key, 1)
  if k == nil then error(bad, 2) end
  self._ops[#self._ops + 1] = { type = "del", key = k }
  return self
end

function Batch:clear()
  local bad = check_batch(self, "clear")
  if bad then error(bad, 2) end
  self._ops = {}
  return self
end

function Batch:length()
  local bad = check_batch(self, "length")
  if bad then error(bad, 2) end
  return #self._ops
end

function Batch:write(opts, extra)
  local bad = check_batch(self, "write") or (extra ~= nil and too_many("batch:write", 1))
    or (self._written and misuse("batch:write", "this batch was already written"))
    or (opts ~= nil and check_options("batch:write", opts, WRITE_OPTIONS))
  if bad then error(bad, 2) end
  self._written = true
  local ok, err, code = write_ops(self._db, self._ops, opts and opts.sync)
  if ok == false then error(err, 2) end
  return ok, err, code
end

--- db:batch(ops [, opts]) -> true | nil, msg, code; db:batch() -> chained batch
function DB:batch(ops, opts, extra)
  local bad = check_self(self, "batch") or (extra ~= nil and too_many("batch", 2))
  if bad then error(bad, 2) end
  if ops == nil then
    if opts ~= nil then error(misuse("batch", "options go to batch:write()"), 2) end
    return setmetatable({ _db = self, _ops = {} }, Batch)
  end
  bad = (type(ops) ~= "table" and misuse("batch", "bad argument #1 (table of operations expected, got %s)", type(ops)))
    or (opts ~= nil and check_options("batch", opts, WRITE_OPTIONS))
  if bad then error(bad, 2) end
  local n, why = array_length(ops, "operation", "operations")
  if n == nil then error(misuse("batch", "bad argument #1 (%s)", why), 2) end
  if rawget(ops, "n") ~= nil then -- n may name operations past the last one
    for i = 1, n do
      if ops[i] == nil then
        error(misuse("batch", "bad argument #1 (field n is %s, but operation #%d is nil)", show_number(n), i), 2)
      end
    end
  end
  if not (self._kenc.identity and self._venc.identity) or sublevel.in_ops(ops) then
    ops, bad = encode_ops(self, "batch", ops, n)
    if ops == nil then error(bad, 2) end
  end
  local ok, err, code = write_ops(self, ops, opts and opts.sync)
  if ok == false then error(err, 2) end
  return ok, err, code
end

--- db:get_many(keys [, opts]) -> { v1, nil, v3, n = 3 } | nil, msg, code
function DB:get_many(keys, opts, extra)
  local bad = check_self(self, "get_many") or (extra ~= nil and too_many("get_many", 2))
    or (type(keys) ~= "table" and misuse("get_many", "bad argument #1 (table of keys expected, got %s)", type(keys)))
    or (opts ~= nil and check_options("get_many", opts, READ_OPTIONS))
  if bad then error(bad, 2) end
  local n, why = array_length(keys, "key", "keys", true)
  if n == nil then error(misuse("get_many", "bad argument #1 (%s)", why), 2) end
  local enc = {}
  for i = 1, n do
    enc[i], bad = encode_key(self, "get_many", keys[i], i)
    if bad then error(bad, 2) end
  end
  local c, async = self._c, async_mode()
  local t, err, code = c:get_many(async, enc)
  while t == YIELD do adaptor.tick("get_many") t, err, code = c:get_many(true, enc) end
  t, err, code = outcome(self, "get_many", async, t, err, code)
  if t == nil then return nil, err, code end
  if not self._venc.identity then
    for i = 1, n do
      local v = t[i]
      if v ~= nil then
        local val, derr, dcode = decode(self._venc, "get_many", v, format("value #%d", i))
        if derr then return nil, derr, dcode end
        t[i] = val
      end
    end
  end
  return t
end

-- The range options opts encoded for the core, or nil and the misuse message.
-- A sublevel's range stays inside its prefix (sublevel.bound).
local function encode_range(self, fname, opts)
  local r = {}
  if opts == nil then return sublevel.bound(self, r) end
  local bad = check_options(fname, opts, RANGE_OPTIONS)
  if bad then return nil, bad end
  for _, b in ipairs { "gt", "gte", "lt", "lte" } do
    local v = opts[b]
    if v ~= nil then
      local k, want = self._kenc.encode(v)
      if k == nil then return nil, misuse(fname, "option '%s' must be %s, got %s", b, want, type(v)) end
      r[b] = k
    end
  end
  r.reverse, r.keys, r.values = opts.reverse, opts.keys, opts.values
  local limit = opts.limit
  if limit ~= nil and limit >= 0 then r.limit = limit end
  return sublevel.bound(self, r)
end

--- db:clear([range [, opts]]) -> true | nil, msg, code
function DB:clear(range, opts, extra)
  local bad = check_self(self, "clear") or (extra ~= nil and too_many("clear", 2))
    or (opts ~= nil and check_options("clear", opts, WRITE_OPTIONS))
  if bad then error(bad, 2) end
  local sync = opts and opts.sync
  local r
  r, bad = encode_range(self, "clear", range)
  if r == nil then error(bad, 2) end
  local c = self._c
  local async = async_mode()
  if c:is_leader() then
    local cl, err, code = c:clear_begin(r)
    if cl == nil then return nil, err, code end
    local ok
    ok, err, code = cl:step(async, sync)
    while ok == YIELD do adaptor.tick("clear") ok, err, code = cl:step(true, sync) end
    return ok, err, code
  end
  return outcome(self, "clear", async, c:clear(async, r, sync))
end

--- for k, v in db:iter{gt=, gte=, lt=, lte=, reverse=, limit=, keys=, values=} do ... end
function DB:iter(opts, extra)
  local bad = check_self(self, "iter") or (extra ~= nil and too_many("iter", 1))
  if bad then error(bad, 2) end
  local r
  r, bad = encode_range(self, "iter", opts)
  if r == nil then error(bad, 2) end
  local c = self._c
  local it, err, code = c:iter(r)
  if it == nil then error(format("%s (%s)", tostring(err), tostring(code)), 2) end
  local iters = self._iters
  if iters == nil then
    iters = setmetatable({}, { __mode = "k" })
    self._iters = iters
  end
  local obj = iterator.new(self, it, r)
  iters[obj] = true
  return obj, nil, nil, obj
end

--- db:sublevel(name [, opts]) -> sublevel: the db's keys under "!name!"
function DB:sublevel(name, opts, extra)
  local bad = check_self(self, "sublevel") or (extra ~= nil and too_many("sublevel", 2))
    or (opts ~= nil and check_options("sublevel", opts, sublevel.OPTIONS))
  if bad then error(bad, 2) end
  local s
  s, bad = sublevel.new(self, name, opts, DB)
  if s == nil then error(bad, 2) end
  return s
end

--- db:property(name) -> LevelDB's property | nil (unknown, or not the leader)
function DB:property(name, extra)
  local bad = check_self(self, "property") or (extra ~= nil and too_many("property", 1))
    or (type(name) ~= "string" and misuse("property", "bad argument #1 (string expected, got %s)", type(name)))
  if bad then error(bad, 2) end
  return self._c:property(name)
end

--- db:approximate_size([start [, limit]]) -> bytes on disk for the keys in
-- [start, limit) (LevelDB's estimate) | nil (not the leader)
function DB:approximate_size(start, limit, extra)
  local bad = check_self(self, "approximate_size") or (extra ~= nil and too_many("approximate_size", 2))
  if bad then error(bad, 2) end
  local r = {}
  for i, key in ipairs { start, limit } do
    if key ~= nil then
      local k, want = self._kenc.encode(key)
      if k == nil then
        error(misuse("approximate_size", "bad argument #%d (key must be %s, got %s)", i, want, type(key)), 2)
      end
      r[i] = k
    end
  end
  local b = sublevel.bound(self, {})
  return self._c:approximate_size(r[1] or b.gte, r[2] or b.lt)
end

--- db:leader_pid() -> the leader's pid (this process's when it leads), 0 when
-- none holds the LOCK, -1 when it cannot be told
function DB:leader_pid()
  local bad = check_self(self, "leader_pid")
  if bad then error(bad, 2) end
  return self._c:leader_pid()
end

--- db:role() -> "leader" | "follower" | "closed"
function DB:role()
  local bad = check_self(self, "role")
  if bad then error(bad, 2) end
  return self._c:role()
end

-- The one close of a handle, for close, __gc, __close and LuaJIT's proxy
-- finalizer.  Entries an iterator holds in its page are not served after
-- close (its next call asks the closed core, which answers ECLOSED).  The luv
-- driver of the party goes with its last handle, before the core closes the
-- fds the driver polls; coroutines still waiting resume after the close.
local function close_handle(self)
  if rawget(self, "_closed") then return end
  self._closed = true
  local iters = rawget(self, "_iters")
  if iters then
    for it in pairs(iters) do iterator.drop_page(it) end
  end
  local c, party = self._c, self._party
  local resume_waiters
  -- a fork's copy of a handle: the luv driver's handles are the parent's too
  if party and c:forked() then party = nil end
  if party then
    local n = (party_handles[party] or 1) - 1
    if n <= 0 then
      party_handles[party] = nil
      if adaptor then resume_waiters = adaptor.release(party) end
    else
      party_handles[party] = n
    end
  end
  c:close()
  if resume_waiters then resume_waiters() end
end

--- db:close() -> true (idempotent; also __gc and __close)
function DB:close()
  local bad = check_self(self, "close")
  if bad then error(bad, 2) end
  close_handle(self)
  return true
end
DB.__close = DB.close
DB.__gc = close_handle

-- Lua 5.1/LuaJIT do not finalize tables: a proxy userdata does it for them.
local newproxy = newproxy
local function attach_finalizer(self)
  if newproxy == nil or _VERSION ~= "Lua 5.1" then return end
  local proxy = newproxy(true)
  getmetatable(proxy).__gc = function() close_handle(self) end
  self._finalizer = proxy
end

-- nil when dir names a directory, else the misuse message
local function check_dir(dir)
  if type(dir) ~= "string" or dir == "" then
    local got = dir == "" and "an empty string" or type(dir)
    return misuse("open", "bad argument #1 (directory path expected, got %s)", got)
  end
  -- C would see the path up to the NUL only: another directory
  if dir:find("\0", 1, true) then
    return misuse("open", "bad argument #1 (directory path must not contain a NUL byte)")
  end
end

-- nginx's init_by_lua* runs in the master before it forks its workers (and
-- before it daemonizes): a handle opened there would be inherited by every
-- worker, and its process goes away.  Handles never cross a fork (the core
-- refuses them in the child); open is refused there outright.
local ngx_init_phase_msg = "open: cannot open in nginx's init_by_lua* (the master process, which "
  .. "forks the workers); open in init_worker_by_lua* or lazily in a request handler"
local function ngx_phase()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function" and ngx.get_phase() or nil
end

--- levelparty.open(dir [, opts]) -> db | nil, msg, code
function _M.open(dir, opts, extra)
  local bad = (extra ~= nil and too_many("open", 2)) or check_dir(dir)
    or (opts ~= nil and check_options("open", opts, OPEN_OPTIONS))
  if bad then error(bad, 2) end
  if ngx_phase() == "init" then error(ngx_init_phase_msg, 2) end
  opts = opts or {}
  local kenc, kerr = encoding.resolve(opts.key_encoding)
  if not kenc then error(misuse("open", "key_encoding: %s", kerr), 2) end
  local venc, verr = encoding.resolve(opts.value_encoding)
  if not venc then error(misuse("open", "value_encoding: %s", verr), 2) end
  local async = async_mode()
  local c, err, code = (ngx_adaptor and ngx_adaptor.open or core.open)(dir, opts, async)
  if c == nil then return nil, err, code end
  if core_get == nil then
    local methods = getmetatable(c).__index
    core_get, core_put, core_result = methods.get, methods.put, methods.result
  end
  if async and not c:opened() then
    local ok
    ok, err, code = adaptor.wait_open(c)
    if not ok then
      c:close()
      return nil, err, code
    end
  end
  local party = c:party()
  local self = setmetatable({
    _c = c, _party = party, _path = c:path(), _kenc = kenc, _venc = venc, _on_role = opts.on_role,
    _kid = kenc.identity, _vid = venc.identity, _leader = c:is_leader(),
  }, DB)
  attach_finalizer(self)
  party_handles[party] = (party_handles[party] or 0) + 1
  local a = luv_adaptor()
  if a then
    local on_role = opts.on_role
    -- the driver must not keep the handle alive: it holds it weakly
    local weak = setmetatable({ self }, { __mode = "v" })
    a.watch(c, on_role and function(role)
      local h = weak[1]
      if h then call_on_role(on_role, role, h) end
    end)
  end
  return self
end

-- the raw core, for tests and tools
_M._core = core

return _M

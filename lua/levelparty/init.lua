-- levelparty: many processes, one LevelDB directory.
--
-- This module is the public face: it checks arguments (misuse raises, naming
-- the function), applies encodings, and decides how a call waits:
--   * inside a coroutine while luv's loop runs, a call that must wait yields
--     (levelparty.luv resumes it), and a coroutine that calls in a tight loop
--     gives the loop a turn every time slice (2 ms);
--   * anywhere else the call blocks in C and returns its result.
-- Runtime failures return nil, "op: detail", "ECODE"; a missing key is nil.

local core = require "levelparty.core"
local encoding = require "levelparty.encoding"

local type, error, tostring, setmetatable, rawget = type, error, tostring, setmetatable, rawget
local pairs, ipairs = pairs, ipairs
local format = string.format
local loaded = package.loaded
local PENDING, YIELD = core.PENDING, core.YIELD
-- the core's methods, called directly on the hot paths (set at first open)
local core_get, core_put, core_result

local isyieldable = coroutine.isyieldable or function()
  local co, main = coroutine.running()
  return co ~= nil and not main
end

local _M = {
  _VERSION = "levelparty scm",
  leveldb_version = core.leveldb_version,
}

-- The luv adaptor, loaded only once the application itself loaded luv: no
-- application can be running luv's loop without having required it.
local adaptor
local function luv_adaptor()
  if adaptor == nil and loaded.luv ~= nil then
    adaptor = require "levelparty.luv"
    adaptor.set_error_handler(function(co, err) return _M.on_error(co, err) end)
  end
  return adaptor
end

-- true when this call should yield instead of blocking: in a coroutine that
-- can yield, once the application loaded luv (as with luv's coro-* helpers,
-- the coroutine is resumed from luv's loop: the application runs uv.run()).
local function async_mode()
  if loaded.luv == nil or not isyieldable() then return false end
  if adaptor == nil then luv_adaptor() end
  return true
end

--- Errors of the application's coroutines resumed by levelparty go here.
function _M.on_error(co, err)
  io.stderr:write("levelparty: uncaught error in a coroutine: ", debug.traceback(co, tostring(err)), "\n")
end

-- Misuse raises at the caller's line: `lvl` counts the frames between the
-- public method and here (3 when a method calls misuse itself).
local function misuse_at(lvl, fname, fmt, ...)
  error(format("%s: " .. fmt, fname, ...), lvl)
end
local function misuse(fname, fmt, ...)
  error(format("%s: " .. fmt, fname, ...), 3)
end

local function too_many(fname, max)
  error(format("%s: no more than %d arguments expected", fname, max), 3)
end

-- ------------------------------------------------------------------ options

local OPEN_OPTIONS = {
  create_if_missing = "boolean", error_if_exists = "boolean", compression = "boolean",
  cache_size = "number", write_buffer_size = "number", block_size = "number",
  max_open_files = "number", bloom_bits = "number",
  key_encoding = "encoding", value_encoding = "encoding",
  sync = "boolean", timeout = "number", open_timeout = "number", retry = "boolean",
  allow_other_users = "boolean", on_role = "function", max_frame = "number", window = "number",
  log = "boolean", max_send_buffer = "number",
}

local function check_options(fname, opts, known, lvl)
  lvl = lvl or 4
  if opts == nil then return {} end
  if type(opts) ~= "table" then misuse_at(lvl, fname, "bad argument (options must be a table, got %s)", type(opts)) end
  for k, v in pairs(opts) do
    local want = known[k]
    if want == nil then misuse_at(lvl, fname, "unknown option '%s'", tostring(k)) end
    if want == "encoding" then
      if type(v) ~= "string" and type(v) ~= "table" then
        misuse_at(lvl, fname, "option '%s' must be an encoding name or table, got %s", k, type(v))
      end
    elseif want ~= "any" and type(v) ~= want then
      misuse_at(lvl, fname, "option '%s' must be a %s, got %s", k, want, type(v))
    end
    -- a negative limit means "no limit", as in Node
    if want == "number" and k ~= "limit" and (v ~= v or v < 0) then
      misuse_at(lvl, fname, "option '%s' must be >= 0", k)
    end
    if v ~= v then misuse_at(lvl, fname, "option '%s' must be a number, got NaN", k) end
  end
  return opts
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

local party_handles = {}   -- party -> number of open Lua handles (for the luv driver)

local function encode_key(self, fname, key, argn, lvl)
  lvl = lvl or 4
  if key == nil then misuse_at(lvl, fname, "bad argument #%d (key expected, got nil)", argn) end
  local k, want = self._kenc.encode(key)
  if k == nil then misuse_at(lvl, fname, "bad argument #%d (key must be %s, got %s)", argn, want, type(key)) end
  if k == "" then misuse_at(lvl, fname, "bad argument #%d (key must not be empty)", argn) end
  return k
end

local function encode_value(self, fname, value, argn, lvl)
  lvl = lvl or 4
  if value == nil then misuse_at(lvl, fname, "bad argument #%d (value expected, got nil)", argn) end
  local v, want = self._venc.encode(value)
  if v == nil then misuse_at(lvl, fname, "bad argument #%d (value must be %s, got %s)", argn, want, type(value)) end
  return v
end

-- db.method(...) instead of db:method(...)
local function check_self(self, fname)
  if type(self) ~= "table" or rawget(self, "_c") == nil then
    error(format("%s: call it as a method (db:%s(...)), got %s as self", fname, fname, type(self)), 3)
  end
end

local function decode_value(self, fname, v)
  local dec = self._venc
  if dec.identity then return v end
  local val, err = dec.decode(v)
  if val == nil and err ~= nil then
    return nil, format("%s: cannot decode the stored value as %s: %s", fname, dec.name, tostring(err)), "EDECODE"
  end
  return val
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
    if on_role then on_role(role, self) end
    if c:is_leader() then self._leader = true end
  end
  if adaptor then adaptor.kick(self._party) end
end

-- Every core call (after its YIELD loop) ends here: a follower's request in
-- flight (PENDING, token) is waited for by yielding; anything else is the
-- call's own result.
local function outcome(self, op, async, a, b, e)
  if a == PENDING then
    adaptor.wait_token(self._c, b)
    return self._c:result(b, op)
  end
  after_blocking(self, async)
  return a, b, e
end

--- db:get(key [, opts]) -> value | nil | nil, msg, code
function DB:get(key, opts, extra)
  if type(self) ~= "table" then check_self(self, "get") end
  if extra ~= nil then too_many("get", 2) end
  if opts ~= nil then check_options("get", opts, READ_OPTIONS) end
  local c, k = self._c, key
  if c == nil then check_self(self, "get") end
  -- fast path: a non-empty string under an identity key encoding
  if type(k) ~= "string" or k == "" or not self._kid then k = encode_key(self, "get", key, 1) end
  -- async_mode(), inlined: once the adaptor is loaded (luv was), a
  -- yieldable coroutine is all it takes
  local async = false
  if adaptor ~= nil then async = isyieldable() elseif loaded.luv ~= nil then async = async_mode() end
  local v, err, code = core_get(c, async, k)
  -- outcome(), inlined for the common cases: a follower's request in
  -- flight, and a leader's answer (after which there is nothing to do)
  if v == PENDING then
    adaptor.wait_token(c, err)
    v, err, code = core_result(c, err, "get")
  elseif v == YIELD or not self._leader then
    if v == YIELD then
      repeat adaptor.tick() v, err, code = core_get(c, true, k) until v ~= YIELD
    end
    v, err, code = outcome(self, "get", async, v, err, code)
  end
  if v == nil then
    if err == nil then return nil end -- a missing key is one nil
    return nil, err, code
  end
  if self._vid then return v end
  return decode_value(self, "get", v)
end

--- db:put(key, value [, opts]) -> true | nil, msg, code
function DB:put(key, value, opts, extra)
  if type(self) ~= "table" then check_self(self, "put") end
  if extra ~= nil then too_many("put", 3) end
  local sync
  if opts ~= nil then sync = check_options("put", opts, WRITE_OPTIONS).sync end
  local c, k, v = self._c, key, value
  if c == nil then check_self(self, "put") end
  if type(k) ~= "string" or k == "" or not self._kid then k = encode_key(self, "put", key, 1) end
  if type(v) ~= "string" or not self._vid then v = encode_value(self, "put", value, 2) end
  local async = false -- as in get
  if adaptor ~= nil then async = isyieldable() elseif loaded.luv ~= nil then async = async_mode() end
  local ok, err, code = core_put(c, async, k, v, sync)
  if ok == PENDING then -- outcome(), inlined for the common cases (as in get)
    adaptor.wait_token(c, err)
    return core_result(c, err, "put")
  elseif ok ~= YIELD and self._leader then
    return ok, err, code
  end
  if ok == YIELD then
    repeat adaptor.tick() ok, err, code = core_put(c, true, k, v, sync) until ok ~= YIELD
  end
  return outcome(self, "put", async, ok, err, code)
end

--- db:del(key [, opts]) -> true | nil, msg, code
function DB:del(key, opts, extra)
  check_self(self, "del")
  if extra ~= nil then too_many("del", 2) end
  local sync
  if opts ~= nil then sync = check_options("del", opts, WRITE_OPTIONS).sync end
  local c, k = self._c, key
  if type(k) ~= "string" or k == "" or not self._kid then k = encode_key(self, "del", key, 1) end
  local async = loaded.luv ~= nil and async_mode()
  local ok, err, code = c:del(async, k, sync)
  while ok == YIELD do adaptor.tick() ok, err, code = c:del(true, k, sync) end
  return outcome(self, "del", async, ok, err, code)
end

local function encode_ops(self, fname, ops)
  local out = {}
  for i = 1, #ops do
    local op = ops[i]
    if type(op) ~= "table" then misuse_at(4, fname, "bad operation #%d (table expected, got %s)", i, type(op)) end
    local t = op.type
    if t == "put" then
      out[i] = { type = "put", key = encode_key(self, fname, op.key, i, 5), value = encode_value(self, fname, op.value, i, 5) }
    elseif t == "del" then
      out[i] = { type = "del", key = encode_key(self, fname, op.key, i, 5) }
    else
      misuse_at(4, fname, "bad operation #%d (type must be \"put\" or \"del\", got %s)", i, tostring(t))
    end
  end
  return out
end

-- Writes ops.  With identity encodings the caller's own table goes to C,
-- which validates it (misuse comes back as false, msg and is raised here).
local function write_ops(self, ops, sync, lvl)
  local c = self._c
  local numbers_ok = self._kenc.name == "utf8" and self._venc.name == "utf8"
  local async = async_mode()
  local ok, err, code = c:batch(async, ops, sync, numbers_ok)
  while ok == YIELD do adaptor.tick() ok, err, code = c:batch(true, ops, sync, numbers_ok) end
  if ok == false then error(err, lvl or 3) end
  return outcome(self, "batch", async, ok, err, code)
end

-- chained batch: db:batch() -> b; b:put(k, v), b:del(k), b:clear(), b:write()
local Batch = {}
Batch.__index = Batch
Batch.__name = "levelparty.batch"

function Batch:put(key, value, extra)
  if extra ~= nil then too_many("batch:put", 2) end
  local db = self._db
  self._ops[#self._ops + 1] = { type = "put", key = encode_key(db, "batch:put", key, 1), value = encode_value(db, "batch:put", value, 2) }
  return self
end

function Batch:del(key, extra)
  if extra ~= nil then too_many("batch:del", 1) end
  self._ops[#self._ops + 1] = { type = "del", key = encode_key(self._db, "batch:del", key, 1) }
  return self
end

function Batch:clear()
  self._ops = {}
  return self
end

function Batch:length() return #self._ops end

function Batch:write(opts, extra)
  if extra ~= nil then too_many("batch:write", 1) end
  if self._written then misuse("batch:write", "this batch was already written") end
  local sync
  if opts ~= nil then sync = check_options("batch:write", opts, WRITE_OPTIONS).sync end
  self._written = true
  return write_ops(self._db, self._ops, sync, 3)
end

--- db:batch(ops [, opts]) -> true | nil, msg, code; db:batch() -> chained batch
function DB:batch(ops, opts, extra)
  check_self(self, "batch")
  if extra ~= nil then too_many("batch", 2) end
  if ops == nil then
    if opts ~= nil then misuse("batch", "options go to batch:write()") end
    return setmetatable({ _db = self, _ops = {} }, Batch)
  end
  if type(ops) ~= "table" then misuse("batch", "bad argument #1 (table of operations expected, got %s)", type(ops)) end
  local sync
  if opts ~= nil then sync = check_options("batch", opts, WRITE_OPTIONS).sync end
  if self._kenc.identity and self._venc.identity then return write_ops(self, ops, sync, 3) end
  return write_ops(self, encode_ops(self, "batch", ops), sync, 3)
end

--- db:get_many(keys [, opts]) -> { v1, nil, v3, n = 3 } | nil, msg, code
function DB:get_many(keys, opts, extra)
  check_self(self, "get_many")
  if extra ~= nil then too_many("get_many", 2) end
  if type(keys) ~= "table" then misuse("get_many", "bad argument #1 (table of keys expected, got %s)", type(keys)) end
  if opts ~= nil then check_options("get_many", opts, READ_OPTIONS) end
  local n = keys.n or #keys
  local enc = {}
  for i = 1, n do enc[i] = encode_key(self, "get_many", keys[i], i) end
  local c = self._c
  local async = async_mode()
  local t, err, code = c:get_many(async, enc)
  while t == YIELD do adaptor.tick() t, err, code = c:get_many(true, enc) end
  t, err, code = outcome(self, "get_many", async, t, err, code)
  if t == nil then return nil, err, code end
  if not self._venc.identity then
    for i = 1, n do
      local v = t[i]
      if v ~= nil then
        local val, derr, dcode = decode_value(self, "get_many", v)
        if derr then return nil, derr, dcode end
        t[i] = val
      end
    end
  end
  return t
end

local function encode_range(self, fname, opts)
  local r = {}
  if opts == nil then return r end
  check_options(fname, opts, RANGE_OPTIONS, 5)
  for _, b in ipairs { "gt", "gte", "lt", "lte" } do
    local v = opts[b]
    if v ~= nil then
      local k, want = self._kenc.encode(v)
      if k == nil then misuse_at(4, fname, "option '%s' must be %s, got %s", b, want, type(v)) end
      r[b] = k
    end
  end
  r.reverse, r.keys, r.values = opts.reverse, opts.keys, opts.values
  local limit = opts.limit
  if limit ~= nil and limit >= 0 then r.limit = limit end
  return r
end

--- db:clear([range [, opts]]) -> true | nil, msg, code
function DB:clear(range, opts, extra)
  check_self(self, "clear")
  if extra ~= nil then too_many("clear", 2) end
  local sync
  if opts ~= nil then sync = check_options("clear", opts, WRITE_OPTIONS).sync end
  local r = encode_range(self, "clear", range)
  local c = self._c
  local async = async_mode()
  if c:is_leader() then
    local cl, err, code = c:clear_begin(r)
    if cl == nil then return nil, err, code end
    local ok
    ok, err, code = cl:step(async, sync)
    while ok == YIELD do adaptor.tick() ok, err, code = cl:step(true, sync) end
    return ok, err, code
  end
  return outcome(self, "clear", async, c:clear(async, r, sync))
end

-- iterators: C hands over a page of entries per call (it:page), and the
-- iterator serves them from that table.
local Iterator = {}
Iterator.__index = Iterator
Iterator.__name = "levelparty.iterator"

-- Calls the core iterator's `method` (page or step) until it has an answer:
-- on YIELD it gives the loop a turn, on PENDING (async only) it waits for
-- entries from the leader.
local function iter_call_core(self, method, async, arg)
  local it = self[1]
  local a, b, e = it[method](it, async, arg)
  while a == PENDING or a == YIELD do
    if a == YIELD then adaptor.tick() else adaptor.wait_iter(self._db._c, it) end
    a, b, e = it[method](it, true, arg)
  end
  after_blocking(self._db, async)
  return a, b, e
end

local function refill(self)
  return iter_call_core(self, "page", async_mode(), self._page)
end

-- Direct iterators (Lua 5.3+, keys and values under identity encodings):
-- the generic for calls C for each entry (core.direct_call), with no Lua
-- frame and no page, from the leader's LevelDB or from the entries a
-- follower has buffered; C hands anything but a ready entry to step_slow,
-- which may yield or wait.
local function step(self, async)
  return iter_call_core(self, "step", async)
end

local function step_slow(self)
  local async = async_mode()
  -- a coroutine with no luv loop to give time back to: C's next slice
  -- check should not send every 64th entry here again
  if not async then core.slice_begin() end
  local k, v, code = step(self, async)
  -- level 3: step_slow, the C step, the function running the for loop
  if k == nil and v ~= nil then error(format("%s (%s)", v, tostring(code)), 3) end
  return k, v
end

--- it:next() -> key, value (or the one side asked for) | nil at the end |
-- nil, msg, code on failure
function Iterator:next()
  if self._direct then
    if self._done then return nil end
    local k, v, code = step(self, async_mode())
    if k == nil then self._done = true end
    return k, v, code
  end
  local i = self._i
  if i > self._n then
    if self._done then return nil end
    local n, err, code = refill(self)
    if n == nil or n == 0 then
      self._done = true
      self._n, self._i = 0, 1
      return nil, err, code
    end
    self._n = n * self._stride
    i = 1
  end
  local page, db = self._page, self._db
  if self._stride == 2 then
    self._i = i + 2
    local k, v = page[i], page[i + 1]
    if self._decode_keys then k = db._kenc.decode(k) end
    if self._decode_values then
      local val, err, code = decode_value(db, "iterator", v)
      if err then return nil, err, code end
      v = val
    end
    return k, v
  end
  self._i = i + 1
  local x = page[i]
  if self._keys then
    if self._decode_keys then x = db._kenc.decode(x) end
  elseif self._values and self._decode_values then
    local val, err, code = decode_value(db, "iterator", x)
    if err then return nil, err, code end
    x = val
  end
  return x
end

-- the generic for calls the iterator: failures raise there
function Iterator:__call()
  local i = self._i
  if i <= self._n and self._plain then -- key and value, no decoding
    self._i = i + 2
    local page = self._page
    return page[i], page[i + 1]
  end
  local a, b, e = self:next()
  if a == nil and b ~= nil then error(format("%s (%s)", b, tostring(e)), 2) end
  return a, b
end

function Iterator:close()
  self._done, self._n = true, 0
  return self[1]:close()
end
Iterator.__close = Iterator.close
Iterator.__gc = Iterator.close

local DirectIterator
if core.direct_call then
  DirectIterator = {}
  for name, f in pairs(Iterator) do DirectIterator[name] = f end
  DirectIterator.__call = core.direct_call(step_slow)
end

--- for k, v in db:iter{gt=, gte=, lt=, lte=, reverse=, limit=, keys=, values=} do ... end
function DB:iter(opts, extra)
  check_self(self, "iter")
  if extra ~= nil then too_many("iter", 1) end
  local r = encode_range(self, "iter", opts)
  local c = self._c
  local it, err, code = c:iter(r)
  if it == nil then error(format("%s (%s)", tostring(err), tostring(code)), 2) end
  local keys, values = r.keys ~= false, r.values ~= false
  local iters = self._iters
  if iters == nil then
    iters = setmetatable({}, { __mode = "k" })
    self._iters = iters
  end
  local plain = keys and values and self._kenc.identity and self._venc.identity
  local direct = plain and DirectIterator ~= nil
  local obj = setmetatable({
    it, -- [1]: the core iterator (where the direct step looks for it)
    _db = self, _page = {}, _n = 0, _i = 1,
    _stride = (keys and values) and 2 or 1, _keys = keys, _values = values,
    _decode_keys = keys and not self._kenc.identity,
    _decode_values = values and not self._venc.identity,
    _plain = plain, _direct = direct,
  }, direct and DirectIterator or Iterator)
  iters[obj] = true
  return obj, nil, nil, obj
end

--- db:role() -> "leader" | "follower" | "closed"
function DB:role()
  check_self(self, "role")
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
    for it in pairs(iters) do it._n, it._i = 0, 1 end
  end
  local c, party = self._c, self._party
  local resume_waiters
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
  check_self(self, "close")
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

--- levelparty.open(dir [, opts]) -> db | nil, msg, code
function _M.open(dir, opts, extra)
  if extra ~= nil then too_many("open", 2) end
  if type(dir) ~= "string" or dir == "" then
    misuse("open", "bad argument #1 (directory path expected, got %s)", dir == "" and "an empty string" or type(dir))
  end
  opts = check_options("open", opts, OPEN_OPTIONS)
  local kenc, kerr = encoding.resolve(opts.key_encoding)
  if not kenc then misuse("open", "key_encoding: %s", kerr) end
  local venc, verr = encoding.resolve(opts.value_encoding)
  if not venc then misuse("open", "value_encoding: %s", verr) end
  local async = async_mode()
  local c, err, code = core.open(dir, opts, async)
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
      if h then on_role(role, h) end
    end)
  end
  return self
end

-- the raw core, for tests and tools
_M._core = core

return _M

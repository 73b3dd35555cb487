-- levelparty.iterator: the iterators db:iter() returns (internal; levelparty
-- checks the arguments and creates them with new()).
--
-- Two classes over one core iterator (obj[1]):
--   * Iterator: C hands over a page of entries per call (it:page), and the
--     iterator serves them from that table;
--   * DirectIterator (Lua 5.3+, keys and values under identity encodings):
--     the generic for calls C for each entry (core.direct_call), with no Lua
--     frame and no page, from the leader's LevelDB or from the entries a
--     follower has buffered; C hands anything but a ready entry to step_slow,
--     which may yield or wait.
-- Both wait as every levelparty call does (levelparty's async_mode and
-- after_blocking, handed over by init()).

local core = require "levelparty.core"
local encoding = require "levelparty.encoding"

local error, tostring, pairs, type = error, tostring, pairs, type
local setmetatable, getmetatable = setmetatable, getmetatable
local format = string.format
local decode = encoding.decode
local PENDING, YIELD = core.PENDING, core.YIELD

local _M = {}

-- from levelparty (init.lua): how a call waits
local async_mode, after_blocking
-- levelparty's loop adaptor, chosen before any call could yield (async_mode
-- loads it)
local get_adaptor

--- Takes levelparty's async_mode(), after_blocking(db, async) and a function
-- that returns its loop adaptor.
function _M.init(mode, after, adaptor_of)
  async_mode, after_blocking, get_adaptor = mode, after, adaptor_of
end

local Iterator = {}
Iterator.__index = Iterator
Iterator.__name = "levelparty.iterator"
local DirectIterator -- Iterator's methods with a C __call (below)

local CLOSED = "iterator: the iterator was closed"

-- it.next() instead of it:next(): the misuse message, raised at the caller
local function check_self(self, name)
  local mt = getmetatable(self)
  if type(self) ~= "table" or (mt ~= Iterator and mt ~= DirectIterator) then
    error(format("iterator:%s: call it as a method (it:%s(...)), got %s as self", name, name, type(self)), 3)
  end
end

-- Calls the core iterator's `method` (page or step) until it has an answer:
-- on YIELD it gives the loop a turn, on PENDING (async only) it waits for
-- entries from the leader.
local function iter_call_core(self, method, async, arg)
  local it = self[1]
  local a, b, e = it[method](it, async, arg)
  while a == PENDING or a == YIELD do
    local adaptor = get_adaptor()
    if a == YIELD then adaptor.tick("iterator") else adaptor.wait_iter(self._db._c, it) end
    a, b, e = it[method](it, true, arg)
  end
  after_blocking(self._db, async)
  return a, b, e
end

local function refill(self)
  return iter_call_core(self, "page", async_mode(), self._page)
end

local function step(self, async)
  return iter_call_core(self, "step", async)
end

local function step_slow(self)
  -- level 3: step_slow, the C step, the function running the for loop
  if self._closed then error(CLOSED .. " (ECLOSED)", 3) end
  local async = async_mode()
  -- a coroutine with no luv loop to give time back to: C's next slice
  -- check should not send every 64th entry here again
  if not async then core.slice_begin() end
  local k, v, code = step(self, async)
  if k == nil and v ~= nil then error(format("%s (%s)", v, tostring(code)), 3) end
  return k, v
end

-- Decodes one side of entry #n: the value, or nil, msg, "EDECODE" (naming
-- the side and n, never the bytes).
local function decode_side(codec, side, n, bytes)
  return decode(codec, "iterator", bytes, format("the %s of entry #%d", side, n))
end

-- it:next() without the check of self (the for loop's __call comes here).
-- An entry that does not decode is reported and skipped: the next call goes on.
local function next_entry(self)
  if self._closed then return nil, CLOSED, "ECLOSED" end
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
  local n = self._count + 1 -- entries served, this one included
  self._count = n
  if self._stride == 2 then
    self._i = i + 2
    local k, v = page[i], page[i + 1]
    if self._decode_keys then
      local key, err, code = decode_side(db._kenc, "key", n, k)
      if err then return nil, err, code end
      k = key
    end
    if self._decode_values then
      local val, err, code = decode_side(db._venc, "value", n, v)
      if err then return nil, err, code end
      v = val
    end
    return k, v
  end
  self._i = i + 1
  local x = page[i]
  if self._keys then
    if self._decode_keys then
      local key, err, code = decode_side(db._kenc, "key", n, x)
      if err then return nil, err, code end
      x = key
    end
  elseif self._values and self._decode_values then
    local val, err, code = decode_side(db._venc, "value", n, x)
    if err then return nil, err, code end
    x = val
  end
  return x
end

--- it:next() -> key, value (or the one side asked for) | nil at the end |
-- nil, msg, code on failure (after it:close(): "iterator: the iterator was
-- closed", ECLOSED)
function Iterator:next()
  check_self(self, "next")
  return next_entry(self)
end

-- the generic for calls the iterator: failures raise there
function Iterator:__call()
  local i = self._i
  if i <= self._n and self._plain then -- key and value, no decoding
    self._i = i + 2
    local page = self._page
    return page[i], page[i + 1]
  end
  local a, b, e = next_entry(self)
  if a == nil and b ~= nil then error(format("%s (%s)", b, tostring(e)), 2) end
  return a, b
end

--- it:seek(key): the next entry is the first of the range >= key (forward)
-- or <= key (reverse).  An iterator that ended or was closed stays so.
function Iterator:seek(key, extra)
  if getmetatable(self) ~= Iterator and getmetatable(self) ~= DirectIterator then
    error(format("iterator:seek: call it as a method (it:seek(key)), got %s as self", type(self)), 2)
  end
  if extra ~= nil then error("iterator:seek: no more than 1 argument expected", 2) end
  if key == nil then error("iterator:seek: bad argument #1 (key expected, got nil)", 2) end
  local k, want = self._db._kenc.encode(key)
  if k == nil then
    error(format("iterator:seek: bad argument #1 (key must be %s, got %s)", want, type(key)), 2)
  end
  if self._done then return true end
  -- the entries left in the page are dropped, and given back to the limit
  local unread = (self._n - self._i + 1) / self._stride
  self._n, self._i = 0, 1
  return self[1]:seek(k, unread)
end

function Iterator:close()
  check_self(self, "close")
  self._done, self._n, self._closed = true, 0, true
  return self[1]:close()
end
Iterator.__close = Iterator.close
Iterator.__gc = Iterator.close

if core.direct_call then
  DirectIterator = {}
  for name, f in pairs(Iterator) do DirectIterator[name] = f end
  DirectIterator.__call = core.direct_call(step_slow)
end

--- The iterator over core iterator `it` of db, for the encoded range r.
function _M.new(db, it, r)
  local keys, values = r.keys ~= false, r.values ~= false
  local plain = keys and values and db._kenc.identity and db._venc.identity
  local direct = plain and DirectIterator ~= nil
  return setmetatable({
    it, -- [1]: the core iterator (where the direct step looks for it)
    _db = db, _page = {}, _n = 0, _i = 1, _count = 0,
    _stride = (keys and values) and 2 or 1, _keys = keys, _values = values,
    _decode_keys = keys and not db._kenc.identity,
    _decode_values = values and not db._venc.identity,
    _plain = plain, _direct = direct,
  }, direct and DirectIterator or Iterator)
end

--- Its db was closed: the entries of its page are not served (its next call
-- asks the closed core, which answers ECLOSED).
function _M.drop_page(obj)
  obj._n, obj._i = 0, 1
end

return _M

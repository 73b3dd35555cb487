-- levelparty.sublevel: the handles db:sublevel(name, opts) returns (internal;
-- levelparty checks self and the options and calls new()).
--
-- A sublevel stores its keys under a prefix in the format of the Level
-- ecosystem (subleveldown 5, abstract-level): "!" .. name .. "!" .. key, and a
-- sublevel of a sublevel "!a!!b!" .. key, so Lua and Node sublevels of one
-- directory read each other's data.  It is a levelparty.db table over its
-- root db's core handle, so every method of the db works on it:
--   * its key codec prefixes what it encodes (keys, range bounds, seek
--     targets) and strips the prefix from what it decodes (iterator keys);
--   * levelparty's encode_range calls bound(), which keeps a range without a
--     lower or upper bound inside the prefix: gte = prefix, lt = the prefix
--     with its last "!" raised to '"' (what subleveldown does);
--   * batch operations may carry `sublevel = s` (of the same root db), as in
--     abstract-level, so one batch writes atomically to several sublevels.
-- A sublevel lives as long as its root db: it keeps the root alive, has no
-- resources of its own (close() does nothing), and after the root's close its
-- calls fail with ECLOSED as the root's do.

local encoding = require "levelparty.encoding"

local type, tostring, format, setmetatable, getmetatable, rawget, pairs =
  type, tostring, string.format, setmetatable, getmetatable, rawget, pairs

local _M = {}

-- The options of db:sublevel.
_M.OPTIONS = { key_encoding = "encoding", value_encoding = "encoding" }

local SEP = "!"
local CEILING = '"' -- the byte after the separator

local Sublevel -- the metatable of sublevels, made from the db's methods on first use

local function make_class(DB)
  local methods = {}
  for name, f in pairs(DB) do
    if type(name) == "string" and name:sub(1, 2) ~= "__" then methods[name] = f end
  end
  methods.close = function() return true end
  local class = {
    __index = methods,
    __name = "levelparty.sublevel",
    __close = function() end,
    __tostring = function(self)
      return format("levelparty.sublevel{path=%s;prefix=%s}", tostring(self._path), self._prefix)
    end,
  }
  return class
end

-- The key codec of a sublevel: inner's encoding, under prefix.
local function prefixed(prefix, inner)
  local encode, decode, from = inner.encode, inner.decode, #prefix + 1
  return {
    name = inner.name,
    identity = false,
    encode = function(v)
      local k, want = encode(v)
      if k == nil then return nil, want end
      return prefix .. k
    end,
    decode = function(bytes) return decode(bytes:sub(from)) end,
  }
end

--- The sublevel `name` of parent (a db or a sublevel), or nil and the
-- misuse message.  DB is levelparty's db class.
function _M.new(parent, name, opts, DB)
  if type(name) ~= "string" or name == "" then
    local got = name == "" and "an empty string" or type(name)
    return nil, format("sublevel: bad argument #1 (name expected, got %s)", got)
  end
  if name:find('[%z\1-"]') then
    -- subleveldown 5's rule: the prefix must sort after the separator's
    -- successor, so that no sublevel's keys fall inside another's range
    return nil, format("sublevel: bad argument #1 (name must not contain '!', '\"', space or control bytes, got %q)",
      name)
  end
  opts = opts or {}
  local kenc, kerr = encoding.resolve(opts.key_encoding)
  if not kenc then return nil, "sublevel: key_encoding: " .. kerr end
  local venc, verr = encoding.resolve(opts.value_encoding)
  if not venc then return nil, "sublevel: value_encoding: " .. verr end
  Sublevel = Sublevel or make_class(DB)
  local root = rawget(parent, "_root") or parent
  local prefix = (rawget(parent, "_prefix") or "") .. SEP .. name .. SEP
  -- a sublevel's iterators are the root's: the root's close drops their pages
  local iters = rawget(root, "_iters")
  if iters == nil then
    iters = setmetatable({}, { __mode = "k" })
    root._iters = iters
  end
  local on_role = rawget(root, "_on_role")
  return setmetatable({
    _c = root._c, _party = root._party, _path = root._path, _root = root, _prefix = prefix,
    _kenc = prefixed(prefix, kenc), _venc = venc, _kid = false, _vid = venc.identity,
    _leader = rawget(root, "_leader"), _iters = iters,
    -- a role change this sublevel's call sees is the root's to report
    _on_role = on_role and function(role) return on_role(role, root) end,
  }, Sublevel)
end

--- The range r (encoded for the core) of db, kept inside db's prefix when
-- db is a sublevel.  Returns r.
function _M.bound(db, r)
  local prefix = rawget(db, "_prefix")
  if prefix then
    if r.gt == nil and r.gte == nil then r.gte = prefix end
    if r.lt == nil and r.lte == nil then r.lt = prefix:sub(1, -2) .. CEILING end
  end
  return r
end

local function root_of(db)
  return rawget(db, "_root") or db
end

--- The sublevel s of a batch operation #i on db (fname's), or nil and the
-- misuse message: s must be a sublevel of db's root db.
function _M.of(db, s, fname, i)
  if type(s) ~= "table" or getmetatable(s) ~= Sublevel or rawget(s, "_root") ~= root_of(db) then
    return nil, format("%s: bad operation #%d (sublevel must be a sublevel of this db, got %s)", fname, i,
      type(s) == "table" and tostring(s) or type(s))
  end
  return s
end

--- The db a chained batch's put/del with options opts writes through: db,
-- or opts.sublevel; or nil and the misuse message.
function _M.of_opts(db, opts, fname)
  if opts == nil then return db end
  if type(opts) ~= "table" then
    return nil, format("%s: bad argument (options must be a table, got %s)", fname, type(opts))
  end
  for k in pairs(opts) do
    if k ~= "sublevel" then return nil, format("%s: unknown option '%s'", fname, tostring(k)) end
  end
  if opts.sublevel == nil then return db end
  local s, bad = _M.of(db, opts.sublevel, fname, 1)
  if s == nil then return nil, (bad:gsub("bad operation #1", "option 'sublevel'")) end
  return s
end

--- true when an operation of ops (a batch's array) names a sublevel
function _M.in_ops(ops)
  for i = 1, #ops do
    local op = ops[i]
    if type(op) == "table" and op.sublevel ~= nil then return true end
  end
  return false
end

return _M

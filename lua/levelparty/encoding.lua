-- levelparty.encoding: key and value encodings.
--
-- An encoding turns a Lua value into the bytes LevelDB stores and back. They
-- apply only on the caller's side: the leader and the wire see raw bytes, as
-- with Node's level-party, so processes may use different encodings on the
-- same data.
--
--   utf8    strings as they are, numbers through tostring (the default)
--   binary  strings only, as they are
--   json    any value lua-cjson can encode; decodes to tables
--   { encode = function(v) return bytes end, decode = function(bytes) return v end }

local type, tostring, pcall = type, tostring, pcall
local format = string.format

local _M = {}

local function identity(s) return s end

local utf8 = {
  name = "utf8",
  encode = function(v)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then return tostring(v) end
    return nil, "a string or a number"
  end,
  decode = identity,
  identity = true,
}

local binary = {
  name = "binary",
  encode = function(v)
    if type(v) == "string" then return v end
    return nil, "a string"
  end,
  decode = identity,
  identity = true,
}

local json_codec
local function json()
  if json_codec then return json_codec end
  local ok, cjson = pcall(require, "cjson.safe")
  if not ok then
    return nil, "value encoding 'json' needs lua-cjson (apt-get install lua-cjson, or luarocks install lua-cjson)"
  end
  json_codec = {
    name = "json",
    encode = function(v)
      local s, err = cjson.encode(v)
      if s == nil then return nil, "a value lua-cjson can encode (" .. tostring(err) .. ")" end
      return s
    end,
    decode = function(s)
      local v, err = cjson.decode(s)
      if v == nil and err ~= nil then return nil, err end
      return v
    end,
  }
  return json_codec
end

--- Resolves an encoding option ("utf8", "binary", "json" or a codec table).
-- Returns the codec, or nil and a message.
function _M.resolve(opt)
  if opt == nil or opt == "utf8" then return utf8 end
  if opt == "binary" then return binary end
  if opt == "json" then return json() end
  if type(opt) == "table" and type(opt.encode) == "function" and type(opt.decode) == "function" then
    local custom_decode = opt.decode
    return {
      name = opt.name or "custom",
      encode = function(v)
        local s = opt.encode(v)
        if type(s) ~= "string" then return nil, "a value the custom encoding turns into a string" end
        return s
      end,
      -- a decoder that raises fails like one that returns nil, err
      decode = function(s)
        local ok, v, err = pcall(custom_decode, s)
        if not ok then return nil, tostring(v) end
        return v, err
      end,
    }
  end
  return nil, "unknown encoding " .. tostring(opt) .. " (utf8, binary, json, or {encode=, decode=})"
end

--- Decodes the stored bytes with codec (as resolve() returns it): the value,
-- or nil, "fname: cannot decode <what> as <codec>: <the decoder's reason>",
-- "EDECODE".  `what` (default "the value") says where the bytes were, as "the
-- key of entry #3"; the message never holds the bytes themselves (lua-cjson's
-- reasons do not quote them either; a custom decoder's are its own).
function _M.decode(codec, fname, bytes, what)
  if codec.identity then return bytes end
  local val, err = codec.decode(bytes)
  if val == nil and err ~= nil then
    return nil, format("%s: cannot decode %s as %s: %s", fname, what or "the value", codec.name, tostring(err)),
      "EDECODE"
  end
  return val
end

return _M

-- levelparty.cli: the `levelparty` command (bin/levelparty runs main()).
--
--   levelparty DIR get KEY | put KEY [VALUE] | del KEY
--   levelparty DIR scan [range] [--keys|--values] | count [range]
--   levelparty DIR dump [range] | load
--   levelparty DIR status
--
-- It opens DIR like any process: a follower while another process leads, the
-- leader otherwise, and then it closes at the end so that a service started
-- later leads.  Keys and values are bytes (the binary encoding).  Exit
-- status: 0 success, 1 a missing key (get), 2 usage, 3 a runtime failure
-- (its code on stderr).  `levelparty --help` and `levelparty help COMMAND`
-- say the rest; README.md, "Command line", has the dump format.
--
-- With luv (optional) the command runs in a coroutine on luv's loop: stdout
-- is flushed whenever the loop is about to wait (entries appear as they
-- arrive, in large writes when they arrive fast) and SIGPIPE ends a scan
-- quietly.  Without luv every call blocks and stdout is flushed every 256
-- entries.  SIGINT and SIGTERM keep their default: the process dies, the
-- kernel releases LevelDB's LOCK, and the next leader replaces the socket
-- file left behind.

local levelparty = require "levelparty"

local type, tostring, tonumber, pairs, ipairs, next, error, pcall =
  type, tostring, tonumber, pairs, ipairs, next, error, pcall
local setmetatable, getmetatable = setmetatable, getmetatable
local byte, char, format, concat = string.byte, string.char, string.format, table.concat
local floor = math.floor

local _M = {}

_M.EXIT = { ok = 0, missing = 1, usage = 2, failure = 3 }

-- ------------------------------------------------------------ bytes as JSON

-- true when s is valid UTF-8 (no overlong forms, no surrogates, <= U+10FFFF)
local function is_utf8(s)
  local i, n = 1, #s
  while true do
    i = s:find("[\128-\255]", i)
    if i == nil then return true end
    local c, lo, hi = byte(s, i), 0x80, 0xBF
    local len
    if c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      return false
    end
    if i + len - 1 > n then return false end
    local c2 = byte(s, i + 1)
    if c2 < lo or c2 > hi then return false end
    for j = i + 2, i + len - 1 do
      local cj = byte(s, j)
      if cj < 0x80 or cj > 0xBF then return false end
    end
    i = i + len
  end
end
_M.is_utf8 = is_utf8

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64enc, b64dec = {}, {}
for i = 1, 64 do
  local c = B64:sub(i, i)
  b64enc[i - 1] = c
  b64dec[byte(c)] = i - 1
end

local function base64(s)
  local out, n = {}, #s
  for i = 1, n - 2, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = b64enc[floor(v / 262144)] .. b64enc[floor(v / 4096) % 64]
      .. b64enc[floor(v / 64) % 64] .. b64enc[v % 64]
  end
  local rest = n % 3
  if rest == 1 then
    local v = byte(s, n) * 65536
    out[#out + 1] = b64enc[floor(v / 262144)] .. b64enc[floor(v / 4096) % 64] .. "=="
  elseif rest == 2 then
    local a, b = byte(s, n - 1, n)
    local v = a * 65536 + b * 256
    out[#out + 1] = b64enc[floor(v / 262144)] .. b64enc[floor(v / 4096) % 64] .. b64enc[floor(v / 64) % 64] .. "="
  end
  return concat(out)
end

-- the bytes of standard base64 text (with its padding), or nil
local function unbase64(t)
  local n = #t
  if n % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, n, 4 do
    local a, b, c, d = byte(t, i, i + 3)
    a, b = b64dec[a], b64dec[b]
    if a == nil or b == nil then return nil end
    local last = i + 3 == n
    if c == 61 and d == 61 and last then
      out[#out + 1] = char(floor((a * 64 + b) / 16))
    else
      c = b64dec[c]
      if c == nil then return nil end
      if d == 61 and last then
        local v = (a * 4096 + b * 64 + c) / 4
        out[#out + 1] = char(floor(v / 256), floor(v) % 256)
      else
        d = b64dec[d]
        if d == nil then return nil end
        local v = a * 262144 + b * 4096 + c * 64 + d
        out[#out + 1] = char(floor(v / 65536), floor(v / 256) % 256, v % 256)
      end
    end
  end
  return concat(out)
end
_M.base64, _M.unbase64 = base64, unbase64

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t" }
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or format("\\u%04x", byte(c)) end) .. '"'
end

-- The dump format's field: a JSON string when the bytes are UTF-8, else
-- {"base64": "..."}.
local function json_bytes(s)
  if is_utf8(s) then return json_string(s) end
  return '{"base64":"' .. base64(s) .. '"}'
end
_M.json_bytes = json_bytes

-- A small strict JSON reader (RFC 8259), so that load needs no JSON library.
-- Returns the value (strings as UTF-8, objects and arrays as tables, null as
-- the json_null sentinel) or nil and a message.
local json_null = setmetatable({}, { __tostring = function() return "null" end })

local function json_decode(text)
  local pos = 1
  local function fail(what) error({ json = format("%s at byte %d", what, pos) }, 0) end
  local function skip() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local value
  local function utf8_char(cp)
    if cp < 0x80 then return char(cp) end
    if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64) end
    return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  local function str()
    local parts = {}
    pos = pos + 1
    while true do
      local s, e = text:find('^[^"\\%z\1-\31]+', pos)
      if s then parts[#parts + 1] = text:sub(s, e); pos = e + 1 end
      local c = text:sub(pos, pos)
      if c == '"' then pos = pos + 1; break end
      if c ~= "\\" then fail(c == "" and "unterminated string" or "control character in a string") end
      local x = text:sub(pos + 1, pos + 1)
      local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" })[x]
      if simple then
        parts[#parts + 1] = simple
        pos = pos + 2
      elseif x == "u" then
        local h = text:match("^%x%x%x%x", pos + 2)
        if not h then fail("bad \\u escape") end
        local cp = tonumber(h, 16)
        pos = pos + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local l = text:match("^\\u(%x%x%x%x)", pos)
          local lo = l and tonumber(l, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then fail("lone surrogate") end
          cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
          pos = pos + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          fail("lone surrogate")
        end
        parts[#parts + 1] = utf8_char(cp)
      else
        fail("bad escape")
      end
    end
    return concat(parts)
  end
  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("object key expected") end
        local k = str()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("':' expected") end
        pos = pos + 1
        t[k] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        if d ~= "," then fail("',' or '}' expected") end
      end
    elseif c == "[" then
      local t, n = {}, 0
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        n = n + 1
        t[n] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        if d ~= "," then fail("',' or ']' expected") end
      end
    elseif c == '"' then
      return str()
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if num and num ~= "" and num ~= "-" then
        pos = pos + #num
        local v = tonumber(num)
        if v == nil then fail("bad number") end
        return v
      end
      for word, v in pairs { ["true"] = true, ["false"] = false, null = json_null } do
        if text:sub(pos, pos + #word - 1) == word then
          pos = pos + #word
          return v
        end
      end
      fail(c == "" and "unexpected end" or "unexpected character")
    end
  end
  local ok, v = pcall(function()
    local r = value()
    skip()
    if pos <= #text then fail("trailing characters") end
    return r
  end)
  if ok then return v end
  if type(v) == "table" and v.json then return nil, v.json end
  error(v, 0)
end
_M.json_decode = json_decode

-- The bytes of a dump field (a string, or {"base64": ...}), or nil and why.
local function field_bytes(v, name)
  if type(v) == "string" then return v end
  if type(v) == "table" and type(v.base64) == "string" and next(v, next(v)) == nil then
    local b = unbase64(v.base64)
    if b then return b end
    return nil, name .. ": bad base64"
  end
  return nil, name .. ': a string or {"base64": "..."} expected'
end

-- ------------------------------------------------------------ command table

-- Options: name -> kind ("flag", "string", "count", "seconds").
local RANGE = {
  gt = "string", gte = "string", lt = "string", lte = "string", prefix = "string",
  reverse = "flag", limit = "count",
}
local function with(base, more)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(more or {}) do t[k] = v end
  return t
end

local RANGE_HELP = [[
Range options (a key must satisfy all that are given):
  --gt K, --gte K     keys after K / from K on
  --lt K, --lte K     keys before K / up to K
  --prefix P          keys that start with P
  --reverse           from the last key to the first
  --limit N           at most N entries
]]

local GLOBAL_HELP = [[
Options of every command:
  --json              output for scripts (JSON, one object per line)
  --timeout S         seconds to wait for the leader (each request) and for open
  --sublevel NAME     work inside the sublevel NAME ("!NAME!" prefix, as
                      subleveldown and abstract-level write it); repeat for a
                      nested sublevel
  --help              this command's help (levelparty --version: the version)
]]

local COMMANDS = {
  get = {
    args = { "KEY" }, opts = { raw = "flag" },
    summary = "print the value of KEY",
    help = [[
Prints the value of KEY followed by a newline (with --raw, exactly its
bytes); with --json, {"key": ..., "value": ...}.  Exit status 1 when KEY is
missing.
  --raw               no newline after the value
]],
  },
  put = {
    args = { "KEY", "[VALUE]" }, opts = {},
    summary = "store VALUE (or standard input) under KEY",
    help = [[
Stores VALUE under KEY; without VALUE, everything standard input holds,
byte for byte (no newline is removed).
]],
  },
  del = {
    args = { "KEY" }, opts = {},
    summary = "delete KEY",
    help = "Deletes KEY (a missing key is not an error).\n",
  },
  scan = {
    args = {}, opts = with(RANGE, { keys = "flag", values = "flag" }),
    summary = "print the entries of a range as they arrive",
    help = [[
Prints one entry per line: KEY<TAB>VALUE, bytes as they are (use --json
for keys or values that hold tabs, newlines or other bytes).  With --json,
one object per line in the dump format.
  --keys              keys only
  --values            values only
]] .. RANGE_HELP,
  },
  count = {
    args = {}, opts = RANGE,
    summary = "count the entries of a range",
    help = "Prints the number of entries in the range.\n" .. RANGE_HELP,
  },
  dump = {
    args = {}, opts = RANGE,
    summary = "write the entries of a range as JSON lines",
    help = [[
Writes one JSON object per line, {"key": K, "value": V}, in key order.
K and V are JSON strings when the bytes are valid UTF-8, else
{"base64": "<standard base64>"}, so that load restores every byte.
]] .. RANGE_HELP,
  },
  load = {
    args = {}, opts = { batch = "count", progress = "flag" },
    summary = "store the JSON lines of a dump read from standard input",
    help = [[
Reads the lines of a dump (see dump --help) from standard input and stores
them in batches, each written atomically.  Empty lines are skipped; load
stops at the first bad line (exit status 3, EDECODE), keeping what it
stored before.  On a terminal, a progress line goes to stderr.
  --batch N           entries per batch (default 1000; at most 4 MiB)
  --progress          the progress line even when stderr is no terminal
]],
  },
  status = {
    args = {}, opts = {},
    summary = "the directory, its leader, this process's role, LevelDB's figures",
    help = [[
Says which directory this is, whether a leader serves it and its pid, and
the role this command took.  When no other process leads, this command leads
for its duration and also shows LevelDB's figures (leveldb.stats, files per
level, the approximate size).
]],
  },
}
local ORDER = { "get", "put", "del", "scan", "count", "dump", "load", "status" }
local GLOBAL = { json = "flag", timeout = "seconds", sublevel = "list", help = "flag", version = "flag" }

local function usage_text(name)
  local c = COMMANDS[name]
  if c then
    return format("usage: levelparty DIR %s%s [options]\n\n%s\n%s", name,
      #c.args > 0 and (" " .. concat(c.args, " ")) or "", c.help, GLOBAL_HELP)
  end
  local lines = { "usage: levelparty DIR COMMAND [ARGS] [options]", "",
    "Opens the LevelDB directory DIR as a process of its party: a follower while",
    "another process (Lua, or Node level-party) leads, else the leader, which it",
    "stays until it exits.", "", "Commands:" }
  for _, n in ipairs(ORDER) do
    local cmd = COMMANDS[n]
    lines[#lines + 1] = format("  %-26s %s", n .. (#cmd.args > 0 and (" " .. concat(cmd.args, " ")) or ""), cmd.summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = GLOBAL_HELP
  lines[#lines + 1] = "Exit status: 0 success, 1 missing key, 2 usage error, 3 runtime failure"
  lines[#lines + 1] = "(stderr names its code).  levelparty help COMMAND (or COMMAND --help) says more."
  return concat(lines, "\n") .. "\n"
end

-- ------------------------------------------------------------ parsing

local Usage = {} -- error objects: usage errors

local function usage(fmt, ...)
  error(setmetatable({ msg = format(fmt, ...) }, Usage), 0)
end

-- argv -> { dir =, command =, args = {...}, opts = {...} }
local function parse(argv)
  local positional, raw = {}, {}
  local i, n = 1, #argv
  while i <= n do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, n do positional[#positional + 1] = argv[j] end
      break
    elseif a == "-h" then
      raw[#raw + 1] = { "help" }
    elseif a:sub(1, 2) == "--" and #a > 2 then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = GLOBAL[name]
      for _, c in pairs(COMMANDS) do kind = kind or c.opts[name] end
      if value == nil and kind and kind ~= "flag" then
        i = i + 1
        value = argv[i]
        if value == nil then usage("option --%s needs a value", name) end
      end
      raw[#raw + 1] = { name, value }
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  local p = { args = {}, opts = { sublevel = {} } }
  -- `levelparty help [COMMAND]`, `levelparty COMMAND --help`
  if positional[1] == "help" then
    p.help, p.command = true, positional[2]
    return p
  end
  if COMMANDS[positional[1]] and not COMMANDS[positional[2]] then
    p.command = positional[1]
  else
    p.dir, p.command = positional[1], positional[2]
  end
  for k = 3, #positional do p.args[#p.args + 1] = positional[k] end
  local cmd = COMMANDS[p.command]
  for _, o in ipairs(raw) do
    local name, value = o[1], o[2]
    local kind = GLOBAL[name] or (cmd and cmd.opts[name])
    if name == "help" then p.help = true
    elseif name == "version" then p.version = true
    elseif kind == nil then
      usage("unknown option --%s%s", name, cmd and (" for " .. p.command) or "")
    elseif kind == "flag" then
      if value ~= nil then usage("option --%s takes no value", name) end
      p.opts[name] = true
    elseif kind == "count" then
      local v = tonumber(value)
      if v == nil or v < 0 or v ~= floor(v) then usage("option --%s needs a whole number >= 0, got %q", name, value) end
      p.opts[name] = v
    elseif kind == "seconds" then
      local v = tonumber(value)
      if v == nil or v <= 0 then usage("option --%s needs a number of seconds > 0, got %q", name, value) end
      p.opts[name] = v
    elseif kind == "list" then
      local l = p.opts[name]
      l[#l + 1] = value
    else
      p.opts[name] = value
    end
  end
  if p.help or p.version then return p end
  if p.dir == nil then usage("no directory given") end
  if p.command == nil then usage("no command given") end
  if cmd == nil then usage("unknown command %q", p.command) end
  local min, max = 0, #cmd.args
  for _, a in ipairs(cmd.args) do
    if a:sub(1, 1) ~= "[" then min = min + 1 end
  end
  if #p.args < min then usage("%s: %s missing", p.command, cmd.args[#p.args + 1]) end
  if #p.args > max then usage("%s: unexpected argument %q", p.command, p.args[max + 1]) end
  if p.opts.keys and p.opts.values then usage("scan: --keys and --values exclude each other") end
  return p
end
_M.parse = parse

-- The range options of a scan/count/dump as db:iter options, with at most one
-- lower and one upper bound (the tightest: a Node leader reads gt and gte, or
-- lt and lte, given together differently).
local function successor(p)
  p = p:gsub("\255+$", "")
  if p == "" then return nil end
  return p:sub(1, -2) .. char(byte(p, -1) + 1)
end

local function range_of(o)
  local lo, lo_excl, hi, hi_excl
  local function lower(k, excl)
    if k == nil then return end
    if lo == nil or k > lo or (k == lo and excl) then lo, lo_excl = k, excl end
  end
  local function upper(k, excl)
    if k == nil then return end
    if hi == nil or k < hi or (k == hi and excl) then hi, hi_excl = k, excl end
  end
  lower(o.gt, true)
  lower(o.gte, false)
  upper(o.lt, true)
  upper(o.lte, false)
  if o.prefix then
    lower(o.prefix, false)
    upper(successor(o.prefix), true)
  end
  local r = { reverse = o.reverse or nil, limit = o.limit }
  if lo ~= nil then r[lo_excl and "gt" or "gte"] = lo end
  if hi ~= nil then r[hi_excl and "lt" or "lte"] = hi end
  return r
end
_M.range_of = range_of

-- ------------------------------------------------------------ running

local Failure = {} -- error objects: runtime failures { msg, code }
local Stop = {}    -- stdout went away (EPIPE): stop quietly

local function fail(msg, code)
  error(setmetatable({ msg = msg, code = code }, Failure), 0)
end

local function check(ok, msg, code, ...)
  if ok == nil and msg ~= nil then fail(msg, code) end
  return ok, msg, code, ...
end

local stdout = io.stdout
local function out(...)
  local ok = stdout:write(...)
  if not ok then error(Stop, 0) end
end
local function flush()
  if not stdout:flush() then error(Stop, 0) end
end

local uv -- luv, when the command runs on its loop
local function now()
  if uv then return uv.hrtime() / 1e9 end
  return os.time()
end

local function is_tty(fd)
  if uv then return uv.guess_handle(fd) == "tty" end
  local r = os.execute("test -t " .. fd)
  return r == true or r == 0
end

local RUN = {}

function RUN.get(db, p)
  local v = check(db:get(p.args[1]))
  if v == nil then
    io.stderr:write("levelparty: get: key not found\n")
    return _M.EXIT.missing
  end
  if p.opts.json then
    out('{"key":', json_bytes(p.args[1]), ',"value":', json_bytes(v), "}\n")
  else
    out(v, p.opts.raw and "" or "\n")
  end
  return 0
end

function RUN.put(db, p)
  local v = p.args[2]
  if v == nil then v = io.stdin:read("a") or "" end
  check(db:put(p.args[1], v))
  if p.opts.json then out('{"ok":true}\n') end
  return 0
end

function RUN.del(db, p)
  check(db:del(p.args[1]))
  if p.opts.json then out('{"ok":true}\n') end
  return 0
end

-- Runs fn(k, v) for each entry of the range of p.
local function each(db, opts, fn)
  local it = db:iter(opts)
  local n = 0
  while true do
    local k, v, code = it:next()
    if k == nil then
      it:close()
      if v ~= nil then fail(v, code) end
      return n
    end
    n = n + 1
    fn(k, v)
    if not uv and n % 256 == 0 then flush() end
  end
end

function RUN.scan(db, p)
  local o = p.opts
  local r = range_of(o)
  r.keys, r.values = not o.values, not o.keys
  local json = o.json
  local line
  if o.keys then
    line = json and function(k) out('{"key":', json_bytes(k), "}\n") end or function(k) out(k, "\n") end
  elseif o.values then
    line = json and function(v) out('{"value":', json_bytes(v), "}\n") end or function(v) out(v, "\n") end
  else
    line = json and function(k, v) out('{"key":', json_bytes(k), ',"value":', json_bytes(v), "}\n") end
      or function(k, v) out(k, "\t", v, "\n") end
  end
  each(db, r, line)
  return 0
end

function RUN.dump(db, p)
  each(db, range_of(p.opts), function(k, v)
    out('{"key":', json_bytes(k), ',"value":', json_bytes(v), "}\n")
  end)
  return 0
end

function RUN.count(db, p)
  local r = range_of(p.opts)
  r.values = false
  local n = each(db, r, function() end)
  out(p.opts.json and format('{"count":%d}\n', n) or format("%d\n", n))
  return 0
end

local function human_bytes(n)
  if n < 1024 then return format("%d B", n) end
  if n < 1048576 then return format("%.1f KiB", n / 1024) end
  if n < 1073741824 then return format("%.1f MiB", n / 1048576) end
  return format("%.2f GiB", n / 1073741824)
end

local BATCH_BYTES = 4 * 1048576

function RUN.load(db, p)
  local per_batch = p.opts.batch or 1000
  if per_batch == 0 then per_batch = 1 end
  local tty = is_tty(2)
  local progress = p.opts.progress or tty
  local start = now()
  local last_shown = start
  local entries, bytes, lineno = 0, 0, 0
  local ops, batch_bytes = {}, 0
  local function show(final)
    if not progress then return end
    local t = now()
    if not final and t - last_shown < 0.2 then return end
    last_shown = t
    local dt = t - start
    local rate = dt > 0 and format(", %d entries/s, %s/s", floor(entries / dt), human_bytes(floor(bytes / dt))) or ""
    local text = format("levelparty: loaded %d entries, %s%s", entries, human_bytes(bytes), rate)
    if tty then io.stderr:write("\r", text, "\27[K", final and "\n" or "")
    else io.stderr:write(text, "\n") end
  end
  local function write_batch()
    if #ops == 0 then return end
    check(db:batch(ops))
    entries = entries + #ops
    bytes = bytes + batch_bytes
    ops, batch_bytes = {}, 0
    show(false)
  end
  for l in io.stdin:lines() do
    lineno = lineno + 1
    if l:find("[^ \t\r]") then
      local e, err = json_decode(l)
      if e ~= nil and type(e) ~= "table" then e, err = nil, "an object expected" end
      local k, v
      if e then
        k, err = field_bytes(e.key, "key")
        if k == "" then k, err = nil, "key: must not be empty" end
        if k then v, err = field_bytes(e.value, "value") end
      end
      if v == nil then
        write_batch()
        show(true)
        fail(format("load: line %d: %s", lineno, err), "EDECODE")
      end
      ops[#ops + 1] = { type = "put", key = k, value = v }
      batch_bytes = batch_bytes + #k + #v
      if #ops >= per_batch or batch_bytes >= BATCH_BYTES then write_batch() end
    end
  end
  write_batch()
  show(true)
  if p.opts.json then out(format('{"entries":%d,"bytes":%d}\n', entries, bytes)) end
  return 0
end

function RUN.status(_, p, ctx)
  local root = ctx.root
  local role = root:role()
  local pid = root:leader_pid()
  local leads = role == "leader"
  local s = {
    directory = root._path, role = role, leader_pid = pid,
    serving = not leads, -- another process served the directory when this one opened it
    leveldb_version = levelparty.leveldb_version,
  }
  if leads then
    s.stats = root:property("leveldb.stats")
    s.approximate_size = root:approximate_size()
    local files = {}
    for level = 0, 6 do files[#files + 1] = tonumber(root:property("leveldb.num-files-at-level" .. level)) end
    s.files_per_level = files
  end
  if p.opts.json then
    local f = {}
    local function add(k, v) f[#f + 1] = json_string(k) .. ":" .. v end
    add("directory", json_string(s.directory))
    add("serving", tostring(s.serving))
    add("leader_pid", pid and pid > 0 and format("%d", pid) or "null")
    add("role", json_string(role))
    add("leveldb_version", json_string(s.leveldb_version))
    add("approximate_size", s.approximate_size and format("%d", s.approximate_size) or "null")
    add("files_per_level", s.files_per_level and ("[" .. concat(s.files_per_level, ",") .. "]") or "null")
    add("stats", s.stats and json_string(s.stats) or "null")
    out("{", concat(f, ","), "}\n")
    return 0
  end
  local who
  if leads then
    who = format("none was serving: this command (pid %d) leads until it exits", pid)
  elseif pid and pid > 0 then
    who = format("serving, pid %d", pid)
  else
    who = "serving (its pid cannot be told from here)"
  end
  out(format("directory         %s\n", s.directory))
  out(format("leader            %s\n", who))
  out(format("this process      %s\n", role))
  out(format("LevelDB           %s\n", s.leveldb_version))
  if leads then
    out(format("approximate size  %s (%d bytes; LevelDB's estimate of its tables)\n",
      human_bytes(s.approximate_size or 0), s.approximate_size or 0))
    out(format("files per level   %s\n", concat(s.files_per_level, " ")))
    out("leveldb.stats\n", s.stats or "", (s.stats or ""):sub(-1) == "\n" and "" or "\n")
  end
  return 0
end

-- What each command opens: read-only commands never create a database.
local CREATES = { put = true, load = true, del = false }

local function errcode_line(json, msg, code)
  if json then
    return format('{"error":%s,"code":%s}\n', json_string(tostring(msg)), json_string(tostring(code)))
  end
  return format("levelparty: %s: %s\n", tostring(code), tostring(msg))
end

-- Runs the parsed command p; returns the exit status.
local function run(p, ctx)
  local o = p.opts
  local db, err, code = levelparty.open(p.dir, {
    create_if_missing = CREATES[p.command] or false,
    key_encoding = "binary", value_encoding = "binary",
    timeout = o.timeout, open_timeout = o.timeout,
  })
  if db == nil then fail(err, code) end
  ctx.db, ctx.root = db, db
  local h = db
  for _, name in ipairs(o.sublevel) do
    local ok, s = pcall(h.sublevel, h, name, { key_encoding = "binary", value_encoding = "binary" })
    if not ok then usage("--sublevel: %s", tostring(s):gsub("^sublevel: ", "")) end
    h = s
  end
  return RUN[p.command](h, p, ctx)
end

--- main(argv) -> exit status.  The command's output goes to stdout, its
-- errors to stderr.
function _M.main(argv)
  local p
  local ok, e = pcall(function() p = parse(argv) end)
  if not ok then
    if getmetatable(e) == Usage then
      io.stderr:write("levelparty: ", e.msg, "\n", "Try 'levelparty --help'.\n")
      return _M.EXIT.usage
    end
    error(e, 0)
  end
  if p.version then
    out(format("%s (%s)\n", levelparty._VERSION, levelparty.leveldb_version))
    flush()
    return 0
  end
  if p.help then
    if p.command and not COMMANDS[p.command] then
      io.stderr:write(format("levelparty: unknown command %q\nTry 'levelparty --help'.\n", p.command))
      return _M.EXIT.usage
    end
    out(usage_text(p.command))
    flush()
    return 0
  end

  local lok, luv = pcall(require, "luv")
  uv = lok and luv or nil
  local ctx = {}
  local status
  local function body()
    local rok, r = pcall(run, p, ctx)
    if ctx.db then ctx.db:close() end
    if rok then
      status = r
    elseif getmetatable(r) == Failure then
      io.stderr:write(errcode_line(p.opts.json, r.msg, r.code))
      status = _M.EXIT.failure
    elseif getmetatable(r) == Usage then
      io.stderr:write("levelparty: ", r.msg, "\n")
      status = _M.EXIT.usage
    elseif r == Stop then
      status = 0 -- the reader went away: nothing more to say
    else
      io.stderr:write("levelparty: internal error: ", tostring(r), "\n")
      status = _M.EXIT.failure
    end
    pcall(flush)
  end

  if not uv then
    stdout:setvbuf(is_tty(1) and "line" or "full")
    body()
    return status
  end

  stdout:setvbuf("full", 65536)
  -- flush whatever is written whenever the loop is about to wait
  local prepare = uv.new_prepare()
  prepare:start(function() pcall(flush) end)
  -- a write to a closed pipe fails (EPIPE) instead of killing the process
  local sigpipe = uv.new_signal()
  sigpipe:start("sigpipe", function() end)
  sigpipe:unref()
  local handles = { prepare, sigpipe }
  local internal
  levelparty.on_error = function(_, err) internal = err end
  local co = coroutine.create(function()
    body()
    for _, h in ipairs(handles) do h:close() end
  end)
  local rok, rerr = coroutine.resume(co)
  if not rok then internal = rerr end
  if not internal then uv.run() end
  if internal then
    io.stderr:write("levelparty: internal error: ", tostring(internal), "\n")
    return _M.EXIT.failure
  end
  return status or _M.EXIT.failure
end

_M._usage_text = usage_text

return _M

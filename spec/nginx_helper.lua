-- spec/nginx_helper.lua: what the nginx specs share (spec/nginx_spec.lua,
-- spec/nginx_lifecycle_spec.lua).
--
--   N.have_nginx                     Debian's nginx and its Lua module are installed
--   N.runnable                       nginx can run here (installed, and no sanitizer's
--                                    LD_PRELOAD): a spec's `N.runnable and describe or pending`
--   N.start(opts)                    nginx under a temporary prefix, 4 workers, on a loopback
--                                    port, from examples/nginx/nginx.conf with
--                                    spec/fixtures/nginx/test.conf's locations; opts: db (the
--                                    directory), extra (more locations), init (code added to
--                                    the example's init_by_lua block), open_opts
--                                    (levelparty.open's options in place of the example's
--                                    "{ timeout = 2 }").  Returns n: prefix, port, db, started, log(),
--                                    master(), stop() (SIGQUIT by its own pid file, bounded)
--   N.http(port, m, path, body, cb)  one HTTP/1.0 request over luv: cb(status, body), or
--                                    cb(nil, err) when the connection failed or was reset
--   N.req(port, m, path, body)       the same, run to completion: status (false when none), body
--   N.load(port, nclients, tag)      nclients concurrent clients of unique-key PUT then GET
--   N.finish(s)                      stops N.load's clients and waits for them
--   N.check_acked(n, s)              how many acknowledged writes are missing (read over HTTP)
--   N.workers_of(n)                  the master's children (a set of pids)
--   N.signal(n, sig)                 `nginx -s sig`, without blocking the loop
--   N.leader_of(n)                   the pid holding the directory's LOCK (waits for one)
--   N.dechunk(s)                     the body of a chunked response
--   N.read(path), N.write(path, s)   whole files
-- Every wait is bounded.
local uv = require "luv"
local P = require "party_helper"
local H = P.helper

local N = {}
local ROOT = H.root

local ok_nginx = os.execute("test -x /usr/sbin/nginx -a -e /usr/lib/nginx/modules/ngx_http_lua_module.so")
N.have_nginx = ok_nginx == true or ok_nginx == 0
-- nginx runs the LuaJIT build; the sanitizer pass (LD_PRELOAD of libasan into lua5.4) would
-- preload ASan into nginx too, which loads an uninstrumented module: not a run that says anything.
N.runnable = N.have_nginx and not os.getenv("LD_PRELOAD")

function N.read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function N.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local read, write = N.read, N.write

local port_seq = 0
local function free_port()
  port_seq = port_seq + 1
  -- luv gives the pid as a float under Lua 5.4: the port must print as an integer
  return math.floor(20000 + (uv.os_getpid() * 7 + port_seq * 13) % 20000)
end

function N.start(opts)
  opts = opts or {}
  local prefix = H.tmpdir("ngx")
  for _, d in ipairs { "conf", "logs", "tmp" } do assert(uv.fs_mkdir(prefix .. "/" .. d, 493)) end
  local port = free_port()
  local db = opts.db or (prefix .. "/db")
  local include = prefix .. "/conf/extra.conf"
  write(include, read(ROOT .. "/spec/fixtures/nginx/test.conf") .. (opts.extra or ""))
  local conf = read(ROOT .. "/examples/nginx/nginx.conf")
  local subst = { ROOT = ROOT, PREFIX = prefix, PORT = tostring(port), DB = db, WORKERS = "4",
    USER = uv.getuid() == 0 and "user root root;" or "", INCLUDE = include }
  conf = conf:gsub("@(%u+)@", function(k) return subst[k] end)
  if opts.open_opts then
    local c
    conf, c = conf:gsub("{ timeout = 2 }", function() return opts.open_opts end)
    assert(c == 1, "examples/nginx/nginx.conf no longer opens with { timeout = 2 }")
  end
  if opts.init then
    local c
    conf, c = conf:gsub('init_by_lua_block { require%("kv"%) }', function()
      return 'init_by_lua_block { require("kv") ' .. opts.init .. " }"
    end)
    assert(c == 1, "examples/nginx/nginx.conf no longer has init_by_lua_block { require(\"kv\") }")
  end
  write(prefix .. "/conf/nginx.conf", conf)
  local ok = os.execute("nginx -p " .. prefix .. " -c conf/nginx.conf >" .. prefix .. "/logs/start.txt 2>&1")
  local n = { prefix = prefix, port = port, db = db, started = ok == true or ok == 0 }
  function n.log() return read(prefix .. "/logs/error.log") .. read(prefix .. "/logs/start.txt") end
  function n.master() return tonumber(read(prefix .. "/logs/nginx.pid")) end
  function n.stop()
    local pid = n.master()
    if pid then
      uv.kill(pid, "sigquit")
      P.wait_until(function() return not P.alive(pid) end, 20, "nginx to stop")
    end
  end
  return n
end

function N.http(port, method, path, body, cb)
  local t = uv.new_tcp()
  t:connect("127.0.0.1", port, function(err)
    if err then t:close() return cb(nil, err) end
    body = body or ""
    t:write(("%s %s HTTP/1.0\r\nHost: lp\r\nContent-Length: %d\r\n\r\n%s"):format(method, path, #body, body))
    local buf = {}
    t:read_start(function(e, data)
      if data and not e then buf[#buf + 1] = data return end
      if not t:is_closing() then t:close() end
      local s = table.concat(buf)
      cb(tonumber(s:match("^HTTP/%d%.%d (%d+)")), s:match("\r\n\r\n(.*)$") or e)
    end)
  end)
end

function N.req(port, method, path, body)
  local st, b
  N.http(port, method, path, body, function(s, r) st, b = s or false, r end)
  P.wait_until(function() return st ~= nil end, 15, method .. " " .. path)
  return st, b
end

-- Each client: PUT a unique key, then GET it back, until s.stop.  The state s: acked
-- (key -> value), nacked, fails (one "at <s since t0>: status body" string each), resets (failures without
-- an HTTP status: the connection was refused or reset, as on a killed worker), answered
-- (failures with a status: a worker that lives answered with an error).
function N.load(port, nclients, tag)
  local s = { acked = {}, nacked = 0, fails = {}, resets = 0, answered = {}, running = nclients, stop = false,
    t0 = P.now() }
  local function failed(what, st, b)
    s.fails[#s.fails + 1] = ("at %.2f s: %s%s %s"):format(P.now() - s.t0, what, tostring(st), tostring(b))
    if st == nil then
      s.resets = s.resets + 1
    else
      s.answered[#s.answered + 1] = s.fails[#s.fails]
    end
  end
  for c = 1, nclients do
    local i = 0
    local function step()
      if s.stop then s.running = s.running - 1 return end
      i = i + 1
      local key, val = ("%s-%d-%d"):format(tag, c, i), ("v%d"):format(i)
      N.http(port, "PUT", "/kv/" .. key, val, function(st, b)
        if st ~= 204 then failed("", st, b) return step() end
        s.acked[key] = val
        s.nacked = s.nacked + 1
        N.http(port, "GET", "/kv/" .. key, nil, function(st2, b2)
          if st2 ~= 200 or b2 ~= val then failed("get ", st2, b2) end
          step()
        end)
      end)
    end
    step()
  end
  return s
end

function N.finish(s)
  s.stop = true
  P.wait_until(function() return s.running == 0 end, 30, "the clients to finish")
end

function N.workers_of(n)
  local set, master = {}, tostring(n.master())
  for _, pid in ipairs(P.ls("/proc")) do
    if pid:match("^%d+$") and read("/proc/" .. pid .. "/stat"):match("^%d+ %b() %a (%d+)") == master then
      set[tonumber(pid)] = true
    end
  end
  return set
end

function N.signal(n, sig)
  local done
  local h = uv.spawn("/usr/sbin/nginx", { args = { "-p", n.prefix, "-c", "conf/nginx.conf", "-s", sig } },
    function(code) done = code end)
  assert(h)
  P.wait_until(function() return done ~= nil end, 10, "nginx -s " .. sig)
  h:close()
  if done ~= 0 then error("nginx -s " .. sig .. " exited " .. tostring(done), 2) end
end

function N.dechunk(s)
  local out, i = {}, 1
  while true do
    local size, j = s:match("^(%x+)[^\r]*\r\n()", i)
    if not size then error("not a chunked body at byte " .. i .. ": " .. s:sub(i, i + 40)) end
    size = tonumber(size, 16)
    if size == 0 then return table.concat(out) end
    out[#out + 1] = s:sub(j, j + size - 1)
    i = j + size + 2
  end
end

function N.leader_of(n)
  local owners
  P.wait_until(function()
    owners = P.lock_owners(n.db)
    return #owners == 1
  end, 10, "one LOCK owner")
  return owners[1]
end

function N.check_acked(n, s)
  local missing = 0
  for k, v in pairs(s.acked) do
    local st, b = N.req(n.port, "GET", "/kv/" .. k)
    if st ~= 200 or b ~= v then missing = missing + 1 end
  end
  return missing
end

return N

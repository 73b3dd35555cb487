-- bench/nginx/floor.lua: the /floor/ location of the nginx bench: kv.lua's GET and PUT of one
-- key, each as one round trip over a pooled cosocket to bench/ngx_floor.c, a C server that
-- does the LevelDB get or put and nothing else.  What any worker that does not hold the
-- LevelDB directory itself must pay at least; levelparty's followers are measured against it.
--
--   GET /floor/<key>                  200 value | 404
--   PUT /floor/<key>  (body: value)   204
local serve = require "serve"

local ngx = rawget(_G, "ngx")

local _M = {}

local addr
local POOL = { pool = "floor", pool_size = 32, backlog = 256 }

--- init_by_lua: the server's socket path.
function _M.init(path) addr = "unix:" .. path end

-- One round trip on a pooled connection: sends msg, reads n bytes; the reply, or nil, message.
local function round_trip(msg, n)
  local sock = ngx.socket.tcp()
  sock:settimeouts(5000, 5000, 5000)
  local ok, err = sock:connect(addr, POOL)
  if not ok then return nil, err end
  local reply
  ok, err = sock:send(msg)
  if ok then reply, err = sock:receive(n) end
  if not reply then
    sock:close()
    return nil, err
  end
  sock:setkeepalive(60000, 32)
  return reply
end

-- (ngx_floor's frames are of fixed size: a 16-byte key, a 100-byte value)
local function get(key)
  if #key ~= 16 then return nil, "floor: keys are 16 bytes" end
  local reply, err = round_trip("G" .. key, 101)
  if reply == nil then return nil, err end
  if reply:sub(1, 1) == "V" then return reply:sub(2) end
  return nil
end

local function put(key, value)
  if #key ~= 16 or #value ~= 100 then return nil, "floor: keys are 16 bytes, values 100" end
  local reply, err = round_trip("P" .. key .. value, 1)
  if reply == nil then return nil, err end
  if reply ~= "K" then return nil, "floor: put refused" end
  return true
end

function _M.handle() return serve.handle("^/floor/(.*)$", get, put) end

return _M

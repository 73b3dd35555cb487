-- bench/nginx/floor.lua: the /floor/ location of the nginx bench: kv.lua's GET and PUT of one
-- key, each as one round trip over a pooled cosocket to bench/ngx_floor.c, a C server that
-- does the LevelDB get or put and nothing else.  What any worker that does not hold the
-- LevelDB directory itself must pay at least; levelparty's followers are measured against it.
--
--   GET /floor/<key>                  200 value | 404
--   PUT /floor/<key>  (body: value)   204
local ngx = rawget(_G, "ngx")

local _M = {}

local addr
local POOL = { pool = "floor", pool_size = 32, backlog = 256 }

--- init_by_lua: the server's socket path.
function _M.init(path) addr = "unix:" .. path end

local function fail(err)
  ngx.status = 503
  ngx.say(tostring(err))
  return ngx.exit(503)
end

function _M.handle()
  local key = ngx.var.uri:match("^/floor/(.*)$") or ""
  local method = ngx.req.get_method()
  if #key ~= 16 then return ngx.exit(400) end
  local sock = ngx.socket.tcp()
  sock:settimeouts(5000, 5000, 5000)
  local ok, err = sock:connect(addr, POOL)
  if not ok then return fail(err) end
  local reply
  if method == "GET" then
    ok, err = sock:send("G" .. key)
    if ok then reply, err = sock:receive(101) end
  elseif method == "PUT" then
    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    if #body ~= 100 then return ngx.exit(400) end
    ok, err = sock:send("P" .. key .. body)
    if ok then reply, err = sock:receive(1) end
  else
    return ngx.exit(405)
  end
  if not reply then
    sock:close()
    return fail(err)
  end
  sock:setkeepalive(60000, 32)
  local tag = reply:sub(1, 1)
  if tag == "V" then
    ngx.print(reply:sub(2))
  elseif tag == "K" then
    return ngx.exit(204)
  else
    return ngx.exit(404)
  end
end

return _M

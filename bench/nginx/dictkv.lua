-- bench/nginx/dictkv.lua: examples/nginx/kv.lua's GET and PUT of one key, backed by
-- ngx.shared.DICT "bench" instead of levelparty: the reference point of the nginx bench.
--
--   GET /dict/<key>                  200 value | 404
--   PUT /dict/<key>  (body: value)   204
local ngx = rawget(_G, "ngx")

local _M = {}

--- init_by_lua (the master): the same n keys and values as bench/nginx/run.lua seeds.
function _M.seed(n)
  local dict = ngx.shared.bench
  for i = 0, n - 1 do
    local k = ("key%013d"):format(i)
    assert(dict:set(k, (k:rep(7)):sub(1, 100)))
  end
end

function _M.handle()
  local dict = ngx.shared.bench
  local key = ngx.unescape_uri(ngx.var.uri:match("^/dict/(.*)$") or "")
  local method = ngx.req.get_method()
  if key == "" then return ngx.exit(405) end
  if method == "GET" then
    local v = dict:get(key)
    if v == nil then return ngx.exit(404) end
    ngx.print(v)
  elseif method == "PUT" then
    ngx.req.read_body()
    local ok, err = dict:set(key, ngx.req.get_body_data() or "")
    if not ok then
      ngx.status = 503
      ngx.say(tostring(err))
      return ngx.exit(503)
    end
    return ngx.exit(204)
  else
    return ngx.exit(405)
  end
end

return _M

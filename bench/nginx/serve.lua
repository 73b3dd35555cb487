-- bench/nginx/serve.lua: the HTTP side that the nginx bench's reference locations share
-- (/dict/, /floor/, /inline/), written as examples/nginx/kv.lua's GET and PUT of one key are,
-- so that the locations differ only in where the value comes from.
--
--   GET <prefix><key>                  200 value | 404 | 503 message
--   PUT <prefix><key>  (body: value)   204 | 503 message
--   anything else                      405
local ngx = rawget(_G, "ngx")

local _M = {}

--- fail(message): a 503 with the message as its body.
function _M.fail(err)
  ngx.status = 503
  ngx.say(tostring(err))
  return ngx.exit(503)
end

--- handle(pattern, get, put): serves the request with the key that pattern (one capture) finds
-- in the URI, unescaped.  get(key) -> value | nil (not found) | nil, message (failed);
-- put(key, body) -> true | nil, message.
function _M.handle(pattern, get, put)
  local key = ngx.unescape_uri(ngx.var.uri:match(pattern) or "")
  local method = ngx.req.get_method()
  if key == "" then return ngx.exit(405) end
  if method == "GET" then
    local v, err = get(key)
    if v == nil then
      if err ~= nil then return _M.fail(err) end
      return ngx.exit(404)
    end
    ngx.print(v)
  elseif method == "PUT" then
    ngx.req.read_body()
    local ok, err = put(key, ngx.req.get_body_data() or "")
    if not ok then return _M.fail(err) end
    return ngx.exit(204)
  else
    return ngx.exit(405)
  end
end

return _M

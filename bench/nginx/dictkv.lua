-- bench/nginx/dictkv.lua: examples/nginx/kv.lua's GET and PUT of one key, backed by
-- ngx.shared.DICT "bench" instead of levelparty: the reference point of the nginx bench.
--
--   GET /dict/<key>                  200 value | 404
--   PUT /dict/<key>  (body: value)   204
local serve = require "serve"

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

local function get(key) return ngx.shared.bench:get(key) end
local function put(key, value) return ngx.shared.bench:set(key, value) end

function _M.handle() return serve.handle("^/dict/(.*)$", get, put) end

return _M

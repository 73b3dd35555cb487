-- examples/nginx/kv.lua: a small HTTP key-value API over levelparty, one
-- handle per nginx worker (see nginx.conf next to it).
--
--   GET    /kv/<key>                    200 value | 404
--   PUT    /kv/<key>    (body: value)   204
--   DELETE /kv/<key>                    204
--   GET    /kv/?gte=a&lt=b&limit=n&reverse=1
--          200, one JSON object {"key":..,"value":..} per line, streamed
-- Failures answer 503 with "message (CODE)".
local levelparty = require "levelparty"
local cjson = require "cjson.safe"

local ngx = rawget(_G, "ngx")

local _M = {}

local db, dir, opts

--- init_worker_by_lua: open (the election runs; a follower connects at its first call).
function _M.init_worker(path, o)
  dir, opts = path, o or {}
  db = assert(levelparty.open(dir, opts))
  ngx.log(ngx.INFO, "levelparty: worker ", ngx.worker.pid(), " opened ", dir, " as ", db:role())
end

--- The worker's handle (opened lazily when init_worker did not).
function _M.db()
  if db == nil then db = assert(levelparty.open(dir, opts)) end
  return db
end

--- exit_worker_by_lua: a leader removes its socket and closes LevelDB; a follower takes over.
function _M.exit_worker()
  if db then db:close() end
  db = nil
end

local function fail(err, code)
  ngx.status = 503
  ngx.say(tostring(err), " (", tostring(code), ")")
  return ngx.exit(503)
end

local function list(args)
  local range = { gte = args.gte, gt = args.gt, lt = args.lt, lte = args.lte,
    limit = tonumber(args.limit), reverse = args.reverse == "1" }
  local it = _M.db():iter(range)
  local n = 0
  while true do
    local k, v, code = it:next()
    if k == nil then
      it:close()
      if v ~= nil then
        -- the status line is gone already: end the stream with the error
        ngx.say(cjson.encode { error = v, code = code })
      end
      return
    end
    ngx.say(cjson.encode { key = k, value = v })
    n = n + 1
    if n % 256 == 0 then ngx.flush(true) end
  end
end

function _M.handle()
  local key = ngx.unescape_uri(ngx.var.uri:match("^/kv/(.*)$") or "")
  local method = ngx.req.get_method()
  if key == "" then
    if method ~= "GET" then return ngx.exit(405) end
    return list(ngx.req.get_uri_args())
  end
  local d = _M.db()
  if method == "GET" then
    local v, err, code = d:get(key)
    if v == nil then
      if err then return fail(err, code) end
      return ngx.exit(404)
    end
    ngx.print(v)
  elseif method == "PUT" then
    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    local ok, err, code = d:put(key, body)
    if not ok then return fail(err, code) end
    return ngx.exit(204)
  elseif method == "DELETE" then
    local ok, err, code = d:del(key)
    if not ok then return fail(err, code) end
    return ngx.exit(204)
  else
    return ngx.exit(405)
  end
end

return _M

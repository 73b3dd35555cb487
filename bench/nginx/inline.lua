-- bench/nginx/inline.lua: the /inline/ location of the nginx bench, a reference point and no
-- levelparty at all: every worker opens ITS OWN copy of the seeded directory with LevelDB's C
-- API through LuaJIT's FFI (levelparty's default options: snappy, a 10-bit bloom filter,
-- LevelDB's 8 MB block cache) and serves kv.lua's GET and PUT of one key from it, inline.
-- It is what the work itself costs when nothing is shared: HTTP, the handler and a LevelDB get
-- or put in the worker's own process, with no hop to another process and no party (a site
-- cannot run it: four copies that drift apart).  /kv/ minus /inline/ is what sharing one
-- directory costs; /inline/ minus /dict/ is what LevelDB costs beside a shared-memory dict.
--
--   GET /inline/<key>                  200 value | 404
--   PUT /inline/<key>  (body: value)   204
local ffi = require "ffi"
local serve = require "serve"

local ngx = rawget(_G, "ngx")

ffi.cdef [[
typedef struct leveldb_t leveldb_t;
typedef struct leveldb_options_t leveldb_options_t;
typedef struct leveldb_readoptions_t leveldb_readoptions_t;
typedef struct leveldb_writeoptions_t leveldb_writeoptions_t;
typedef struct leveldb_filterpolicy_t leveldb_filterpolicy_t;
leveldb_options_t *leveldb_options_create(void);
void leveldb_options_set_create_if_missing(leveldb_options_t *, uint8_t);
void leveldb_options_set_compression(leveldb_options_t *, int);
void leveldb_options_set_filter_policy(leveldb_options_t *, leveldb_filterpolicy_t *);
leveldb_filterpolicy_t *leveldb_filterpolicy_create_bloom(int bits_per_key);
leveldb_t *leveldb_open(const leveldb_options_t *, const char *name, char **errptr);
leveldb_readoptions_t *leveldb_readoptions_create(void);
leveldb_writeoptions_t *leveldb_writeoptions_create(void);
char *leveldb_get(leveldb_t *, const leveldb_readoptions_t *, const char *key, size_t keylen,
                  size_t *vallen, char **errptr);
void leveldb_put(leveldb_t *, const leveldb_writeoptions_t *, const char *key, size_t keylen,
                 const char *val, size_t vallen, char **errptr);
void leveldb_free(void *ptr);
]]

-- libleveldb.so comes with the -dev package (make deps); the runtime's soname otherwise
local ok, lib = pcall(ffi.load, "leveldb")
if not ok then lib = ffi.load("libleveldb.so.1d") end

local _M = {}

-- this worker's database and options (opened in init_worker, never closed: the worker's
-- exit releases them)
local db, ropts, wopts
local vallen, errptr = ffi.new("size_t[1]"), ffi.new("char *[1]")

local function check(op)
  if errptr[0] ~= nil then
    local msg = ffi.string(errptr[0])
    lib.leveldb_free(errptr[0])
    errptr[0] = nil
    return nil, op .. ": " .. msg
  end
  return true
end

--- init_worker_by_lua: opens <base>/w<worker id> (bench/nginx/run.lua makes one copy of the
-- seeded directory per worker).
function _M.init_worker(base)
  if base == "" then return end -- the peak part did not ask for it
  local o = lib.leveldb_options_create()
  lib.leveldb_options_set_create_if_missing(o, 1)
  lib.leveldb_options_set_compression(o, 1) -- snappy
  lib.leveldb_options_set_filter_policy(o, lib.leveldb_filterpolicy_create_bloom(10))
  local path = ("%s/w%d"):format(base, ngx.worker.id())
  local h = lib.leveldb_open(o, path, errptr)
  assert(check("open " .. path))
  db, ropts, wopts = h, lib.leveldb_readoptions_create(), lib.leveldb_writeoptions_create()
end

local function get(key)
  if db == nil then return nil, "inline: no database (bench/nginx/run.lua sets it up)" end
  local v = lib.leveldb_get(db, ropts, key, #key, vallen, errptr)
  local good, err = check("get")
  if not good then return nil, err end
  if v == nil then return nil end
  local s = ffi.string(v, vallen[0])
  lib.leveldb_free(v)
  return s
end

local function put(key, value)
  if db == nil then return nil, "inline: no database (bench/nginx/run.lua sets it up)" end
  lib.leveldb_put(db, wopts, key, #key, value, #value, errptr)
  return check("put")
end

function _M.handle() return serve.handle("^/inline/(.*)$", get, put) end

return _M

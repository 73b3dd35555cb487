---@meta levelparty
-- LuaLS type annotations for levelparty (definitions only: this file is never
-- run).  Point the language server at this directory, e.g. in .luarc.json:
--   { "workspace.library": ["<checkout>/types"] }
-- or, for an installed rock, the `types` directory of
-- `luarocks show --rock-dir levelparty`.

---Stable error codes: the third result of a runtime failure.
---@alias levelparty.code
---| "ECLOSED"     # the handle (or iterator) was closed
---| "ETIMEDOUT"   # the `timeout` expired before the leader answered
---| "EINTR"       # a signal (Ctrl-C) interrupted a blocking call while it waited
---| "ETOOLARGE"   # the request, or its reply, does not fit in a frame (max_frame); never retried
---| "ELEADERLOST" # `retry = false` and the leader went away with the request in flight
---| "ELOCKED"     # open: the LOCK is held by a process that serves no socket
---| "ENOENT"      # open: missing directory (or database, with create_if_missing = false)
---| "EEXIST"      # open: error_if_exists
---| "ENOTDIR"     # open: not a directory
---| "EACCES"      # permission, or a leader this process may not follow or reach
---| "ECORRUPT"    # LevelDB reported corruption, or tables without a CURRENT file
---| "EDECODE"     # a stored key or value does not decode with the handle's encoding
---| "EIO"         # any other storage or system failure
---| "EPROTO"      # the leader broke the protocol
---| "EREMOTE"     # the leader reported an error we cannot classify
---| "ENOMEM"      # out of memory

---@alias levelparty.role "leader"|"follower"|"closed"

---A codec: turns a Lua value into the bytes LevelDB stores and back.
---@class levelparty.codec
---@field encode fun(value: any): string
---@field decode fun(bytes: string): any
---@field name? string

---@alias levelparty.encoding "utf8"|"binary"|"json"|levelparty.codec

---A key or value as the handle's encoding takes it.
---@alias levelparty.key string|number|any
---@alias levelparty.value string|number|table|boolean|any

---@class levelparty.open_options
---@field create_if_missing? boolean create the database when missing (default true)
---@field error_if_exists? boolean fail with EEXIST when it exists (default false)
---@field key_encoding? levelparty.encoding default "utf8"
---@field value_encoding? levelparty.encoding default "utf8"
---@field cache_size? integer bytes, while leader
---@field write_buffer_size? integer bytes, while leader
---@field block_size? integer bytes, while leader
---@field max_open_files? integer while leader
---@field bloom_bits? integer bloom filter bits per key (default 10; 0: none)
---@field compression? boolean snappy (default true)
---@field paranoid_checks? boolean LevelDB's: stop at the first damage it detects (default false)
---@field sync? boolean default for this handle's writes; a follower asks its leader for it (default false)
---@field timeout? number seconds, for requests to the leader (default: none)
---@field open_timeout? number seconds open waits for a leader that serves (default 10)
---@field retry? boolean replay requests across leader changes (default true)
---@field on_role? fun(role: levelparty.role, db: levelparty.db) called when the role changes
---@field allow_other_users? boolean as leader serve, as follower follow, another uid (default false)
---@field log? boolean as leader, log refused peers and broken connections (default true)
---@field max_frame? integer bytes: the largest frame accepted (default 64 MiB)
---@field window? integer most entries a follower's iterator asks for at a time; starts at 32 (default 1024)
---@field max_send_buffer? integer bytes: as leader, unsent replies to all followers together (default 64 MiB)
---@field lead? boolean false: this handle never leads (nginx sites with a dedicated leader; default true)
---@field pool_size? integer nginx: cosockets kept per worker for the leader (default 32)
---@field keepalive? number nginx: seconds an idle pooled cosocket is kept (default 60)

---@class levelparty.write_options
---@field sync? boolean this write is on disk when it returns (a follower asks its leader; a Node leader ignores it)

---@class levelparty.read_options
---@field fill_cache? boolean

---@class levelparty.range
---@field gt? levelparty.key keys after this one
---@field gte? levelparty.key keys from this one on
---@field lt? levelparty.key keys before this one
---@field lte? levelparty.key keys up to this one
---@field reverse? boolean from the last key to the first
---@field limit? integer at most this many entries (negative: no limit)

---@class levelparty.iter_options: levelparty.range
---@field keys? boolean yield keys (default true)
---@field values? boolean yield values (default true)

---@class levelparty.sublevel_options
---@field key_encoding? levelparty.encoding default "utf8"
---@field value_encoding? levelparty.encoding default "utf8"

---A batch operation; `sublevel` writes it through that sublevel (of the same db).
---@class levelparty.operation
---@field type "put"|"del"
---@field key levelparty.key
---@field value? levelparty.value required for "put"
---@field sublevel? levelparty.sublevel

---@class levelparty.chained_options
---@field sublevel? levelparty.sublevel write this operation through that sublevel

---The values of db:get_many: values[i] for keys[i] (nil when missing).
---@class levelparty.values: { [integer]: levelparty.value? }
---@field n integer the number of keys

---An iterator (db:iter).  Use it in a generic for, or call next().
---@class levelparty.iterator
---@overload fun(): levelparty.key?, levelparty.value?
local iterator = {}

---The next entry: key and value (or the one side asked for); nil at the end;
---nil, message, code on failure.
---@return any key_or_side
---@return any value_or_message
---@return levelparty.code? code
function iterator:next() end

---Moves the iterator: its next entry is the first of its range >= key
---(forward) or <= key (reverse).  The limit counts on; an iterator that ended
---stays ended.
---@param key levelparty.key
---@return true
function iterator:seek(key) end

---Releases the iterator (also done at its end, by garbage collection and `<close>`).
---@return true
function iterator:close() end

---A chained batch (db:batch() without operations).
---@class levelparty.batch
local batch = {}

---@param key levelparty.key
---@param value levelparty.value
---@param opts? levelparty.chained_options
---@return levelparty.batch self
function batch:put(key, value, opts) end

---@param key levelparty.key
---@param opts? levelparty.chained_options
---@return levelparty.batch self
function batch:del(key, opts) end

---Forgets the operations added so far.
---@return levelparty.batch self
function batch:clear() end

---@return integer
function batch:length() end

---Writes the operations atomically; a batch is written once.
---@param opts? levelparty.write_options
---@return true? ok
---@return string? message
---@return levelparty.code? code
function batch:write(opts) end

---The methods a db and a sublevel share.
---@class levelparty.store
local store = {}

---The value of key; nil (one value) when it is missing.
---@param key levelparty.key
---@param opts? levelparty.read_options
---@return levelparty.value? value
---@return string? message
---@return levelparty.code? code
function store:get(key, opts) end

---@param key levelparty.key
---@param value levelparty.value
---@param opts? levelparty.write_options
---@return true? ok
---@return string? message
---@return levelparty.code? code
function store:put(key, value, opts) end

---Deleting a missing key succeeds.
---@param key levelparty.key
---@param opts? levelparty.write_options
---@return true? ok
---@return string? message
---@return levelparty.code? code
function store:del(key, opts) end

---Applies the operations atomically; without them, a chained batch.
---@param ops levelparty.operation[]
---@param opts? levelparty.write_options
---@return true? ok
---@return string? message
---@return levelparty.code? code
---@overload fun(self: levelparty.store): levelparty.batch
function store:batch(ops, opts) end

---@param keys levelparty.key[]
---@param opts? levelparty.read_options
---@return levelparty.values? values
---@return string? message
---@return levelparty.code? code
function store:get_many(keys, opts) end

---An iterator over a range.  In a for loop a failure raises.
---@param opts? levelparty.iter_options
---@return levelparty.iterator
function store:iter(opts) end

---Deletes the keys an iterator with the same range would yield.
---@param range? levelparty.range
---@param opts? levelparty.write_options
---@return true? ok
---@return string? message
---@return levelparty.code? code
function store:clear(range, opts) end

---The sublevel `name`: keys stored under "!name!" (nested: "!a!!b!"), as
---subleveldown 5 and abstract-level write them.
---@param name string bytes above '"': no '!', '"', space or control bytes
---@param opts? levelparty.sublevel_options
---@return levelparty.sublevel
function store:sublevel(name, opts) end

---@return levelparty.role
function store:role() end

---LevelDB's property (e.g. "leveldb.stats"); nil on a follower or for an unknown name.
---@param name string
---@return string?
function store:property(name) end

---LevelDB's estimate of the bytes on disk for the keys in [start, limit); nil on a follower.
---@param start? levelparty.key
---@param limit? levelparty.key
---@return integer?
function store:approximate_size(start, limit) end

---The leader's pid (this process's when it leads); 0 when nobody holds the
---LOCK; -1 when it cannot be told.
---@return integer?
function store:leader_pid() end

---A handle from levelparty.open.
---@class levelparty.db: levelparty.store
local db = {}

---Idempotent; also run by garbage collection and `<close>`.
---@return true
function db:close() end

---A view of its db's keys under a prefix (db:sublevel).
---@class levelparty.sublevel: levelparty.store
local sublevel = {}

---A sublevel lives as long as its db: this does nothing.
---@return true
function sublevel:close() end

---What a call waiting in a coroutine hands the scheduler (levelparty.set_loop):
---poll pollfd() for events() at most timeout() seconds, then resume the
---coroutine.  Ask timeout() again before each wait.
---@class levelparty.pollable
local pollable = {}

---The descriptor to poll, or -1: none (wait for the timeout only).
---@return integer
function pollable:pollfd() end

---@return "r"
function pollable:events() end

---Seconds to wait at most; 0: do not wait; nil: no limit.
---@return number?
function pollable:timeout() end

---A scheduler's own loop for levelparty.set_loop.
---@class levelparty.loop_backend
---@field wait fun(pollable: levelparty.pollable, d: table?) returns once the pollable is ready
---@field wake? fun(d: table) make the coroutines waiting with d return
---@field yieldable? fun(): boolean whether the running coroutine may wait

---@alias levelparty.loop "luv"|"cqueues"|"yield"|levelparty.loop_backend

---@class levelparty
---@field _VERSION string
---@field leveldb_version string e.g. "leveldb 1.23"
---@field on_error fun(co: thread, err: any) errors of coroutines levelparty resumed
local levelparty = {}

---Opens dir as a process of its party: the leader when it takes LevelDB's
---LOCK, else a follower of the process that holds it.
---@param dir string
---@param opts? levelparty.open_options
---@return levelparty.db? db
---@return string? message
---@return levelparty.code? code
function levelparty.open(dir, opts) end

---How a call inside a coroutine waits, for the handles opened after it
---(raises while handles are open).  nil: the default (luv, once loaded).
---@param loop? levelparty.loop
---@return true
function levelparty.set_loop(loop) end

return levelparty

-- Lua and Node processes share one directory.
--
-- Node processes run level-party 5.1.1 (spec/fixtures/node/party.js), Lua processes run
-- levelparty (spec/fixtures/lua/interop_worker.lua); both speak the same JSON-lines protocol, so
-- every scenario is written once and run with either runtime in each role. mk/node-deps.sh
-- provides Node; when it cannot, every test here is pending with its reason (never passed).
--
-- Run: make test SPEC=spec/interop_spec.lua
local H = require "interop_helper"

local NODE_OK, NODE_REASON = H.node_available()

-- Wraps a test body: pending without Node, cleanup of processes and directories always.
local function interop(name, body)
  it(name, function()
    if not NODE_OK then
      pending(NODE_REASON)
      return
    end
    finally(H.cleanup)
    body()
  end)
end

local ENCODINGS = { "utf8", "binary", "json" }

local function opts_for(enc)
  -- binary runs use binary keys too, so that both sides of the wire carry arbitrary bytes
  return { value_encoding = enc, key_encoding = enc == "binary" and "binary" or "utf8" }
end

------------------------------------------------------------------------------------------------
-- The API script: the same steps run by a "leader" worker (L) and a "follower" worker (F).
------------------------------------------------------------------------------------------------

local function dataset(enc)
  local keys, values
  if enc == "binary" then
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    keys = { "00", "0001", "01", "7f", "80", "80ff00", "ff", "ff00" }
    values = { "00ff10", "", "deadbeef", H.hex(table.concat(all)), "00", "ff", "0a0d", "c3" }
  else
    keys = { "a", "aa", "ab", "b", "ba", "c", "\u{e9}", "\u{65e5}\u{672c}" }
    if enc == "utf8" then
      values = { "1", "", "hello world", "\u{fc}n\u{ef}c\u{f6}d\u{e9}", ("x"):rep(3000), "0", "a\nb", "\u{1f600}" }
    else
      values = {
        { a = 1, b = { 1, 2, 3 } }, "a string", 42, true,
        { nested = { x = "y", list = { "p", { q = 1.5 } } } }, { 1, "two", { three = 3 } }, -3.25, false,
      }
    end
  end
  local missing = enc == "binary" and "fe" or "zz-missing"
  local newkeys = enc == "binary" and { "10", "20", "30" } or { "n1", "n2", "n3" }
  return keys, values, missing, newkeys
end

-- Returns a list of {who, cmd, label}.
local function api_script(enc)
  local K, V, missing, N = dataset(enc)
  local s = {}
  local function add(who, cmd, label) s[#s + 1] = { who = who, cmd = cmd, label = label or cmd.op } end
  -- writes from both sides, read back from both sides
  for i = 1, 4 do add("F", { op = "put", key = K[i], value = V[i] }) end
  for i = 5, 8 do add("L", { op = "put", key = K[i], value = V[i] }) end
  for i = 1, 8 do
    add("F", { op = "get", key = K[i] }, "F get " .. i)
    add("L", { op = "get", key = K[i] }, "L get " .. i)
  end
  add("F", { op = "get", key = missing }, "F get missing")
  add("L", { op = "get", key = missing }, "L get missing")
  add("F", { op = "getMany", keys = { K[1], missing, K[8], K[2] } })
  add("L", { op = "getMany", keys = { missing, K[3] } })
  -- every iterator shape
  local shapes = {
    {}, { gt = K[2] }, { gte = K[2] }, { lt = K[6] }, { lte = K[6] },
    { gt = K[2], lt = K[6] }, { gte = K[2], lte = K[6] }, { gt = K[1], lte = K[7] }, { gte = K[3], lt = K[8] },
    { reverse = true }, { reverse = true, gt = K[2], lte = K[6] }, { reverse = true, gte = K[3], lt = K[7] },
    { limit = 3 }, { limit = 3, reverse = true }, { gte = K[3], limit = 2 }, { lt = K[7], limit = 2, reverse = true },
    { limit = 100 },
    { keys = false }, { values = false }, { keys = false, reverse = true, limit = 2 },
    { values = false, gt = K[4] }, { keys = true, values = true, lte = K[4] },
    { gt = K[8] }, { lt = K[1] }, { gt = K[6], lt = K[2] }, { gte = K[4], lte = K[4] },
  }
  for i, o in ipairs(shapes) do add("F", { op = "readStream", options = o }, "F readStream shape " .. i) end
  for i = 1, 3 do add("L", { op = "readStream", options = shapes[i] }, "L readStream shape " .. i) end
  -- deletes and batches
  add("F", { op = "del", key = K[1] })
  add("F", { op = "get", key = K[1] }, "F get deleted")
  add("L", { op = "get", key = K[1] }, "L get deleted")
  add("F", { op = "del", key = missing }, "F del missing")
  add("F", { op = "batch", ops = {
    { type = "put", key = N[1], value = V[1] }, { type = "put", key = N[2], value = V[4] },
    { type = "del", key = K[2] }, { type = "put", key = N[3], value = V[6] }, { type = "del", key = N[3] },
  } })
  add("L", { op = "batch", ops = { { type = "put", key = K[1], value = V[8] }, { type = "del", key = K[8] } } })
  add("F", { op = "getMany", keys = { K[1], K[2], N[1], N[2], N[3], K[8] } }, "F getMany after batches")
  add("L", { op = "getMany", keys = { N[1], N[2], N[3] } }, "L getMany after batches")
  add("L", { op = "readStream", options = {} }, "L full read after batches")
  -- clear with ranges, limits and reverse
  add("F", { op = "clear", range = { gte = K[5], lt = K[7] } })
  add("L", { op = "readStream", options = {} }, "L read after clear 1")
  add("F", { op = "clear", range = { limit = 2 } })
  add("F", { op = "readStream", options = {} }, "F read after clear 2")
  add("F", { op = "clear", range = { reverse = true, limit = 1 } })
  add("F", { op = "readStream", options = {} }, "F read after clear 3")
  add("F", { op = "clear", range = { gt = K[3] } })
  add("L", { op = "readStream", options = {} }, "L read after clear 4")
  add("F", { op = "clear", range = {} })
  add("F", { op = "readStream", options = {} }, "F read after clear all")
  add("L", { op = "put", key = K[4], value = V[5] }, "L put after clear")
  add("F", { op = "get", key = K[4] }, "F get after clear")
  return s
end

-- Keeps what must be identical whatever the runtimes: ok, notFound, values, entries.
-- Error texts are kept only when both compared workers are Node (the same client code).
local function normalize(reply, keep_text)
  local r = H.normalize(reply)
  r.id = nil
  r.code = nil
  if not keep_text then
    r.error = nil
    r.name = nil
  end
  return r
end

-- Runs the script on a fresh directory; returns { {label, kind_of_worker, reply}, ... }.
local function run_script(leader_kind, follower_kind, enc)
  local dir = H.mkdtemp(leader_kind .. "-" .. follower_kind .. "-" .. enc)
  local o = opts_for(enc)
  local L = H.start(leader_kind, dir, o)
  assert.are.equal("leader", L:role(), "first process must lead")
  local F = H.start(follower_kind, dir, o)
  assert.are.equal("follower", F:role(), "second process must follow")
  local results = {}
  for _, step in ipairs(api_script(enc)) do
    local w = step.who == "L" and L or F
    local reply = w:call(step.cmd)
    assert(reply.ok or reply.notFound,
      ("step %q on %s failed: %s"):format(step.label, w:describe(), H.json.encode(reply)))
    results[#results + 1] = { label = step.label, kind = w.kind, reply = reply }
  end
  assert.are.equal("leader", L:role())
  assert.are.equal("follower", F:role())
  L:stop()
  F:stop()
  return results
end

local reference = {}
local function node_reference(enc)
  if not reference[enc] then reference[enc] = run_script("node", "node", enc) end
  return reference[enc]
end

local function compare_runs(ref, got)
  assert.are.equal(#ref, #got)
  for i = 1, #ref do
    local keep = ref[i].kind == "node" and got[i].kind == "node"
    assert.are.same(normalize(ref[i].reply, keep), normalize(got[i].reply, keep),
      ("step %d %q differs (reference: Node leader + Node follower)"):format(i, ref[i].label))
  end
end

describe("interop: Node level-party 5.1.1 and levelparty share a directory", function()
  if not NODE_OK then
    print("\n" .. tostring(NODE_REASON))
  end

  describe("Node leader with Lua followers", function()
    for _, enc in ipairs(ENCODINGS) do
      interop(enc .. ": every Lua call answers as a Node follower would, and values cross both ways", function()
        local ref = node_reference(enc)
        local got = run_script("node", "lua", enc)
        compare_runs(ref, got)
      end)
    end

    interop("limit = -1 means no limit for Lua iter and clear, as for Node", function()
      local dir = H.mkdtemp("limit")
      local N = H.start("node", dir)
      local Lf = H.start("lua", dir)
      N:ok({ op = "batch", ops = {
        { type = "put", key = "a", value = "1" }, { type = "put", key = "b", value = "2" },
      } })
      local want = { { key = "a", value = "1" }, { key = "b", value = "2" } }
      assert.are.same(want, N:ok({ op = "readStream", options = { limit = -1 } }).entries)
      local r = Lf:call({ op = "readStream", options = { limit = -1 } })
      assert(r.ok, "Lua iter{limit=-1}: " .. H.json.encode(r))
      assert.are.same(want, r.entries)
      r = Lf:call({ op = "clear", range = { limit = -1 } })
      assert(r.ok, "Lua clear{limit=-1}: " .. H.json.encode(r))
      assert.are.same({}, N:ok({ op = "readStream", options = {} }).entries)
    end)

    interop("sync writes from a Lua follower work: the Node leader skips levelparty's sync field", function()
      local dir = H.mkdtemp("sync")
      local N = H.start("node", dir)
      local Lf = H.start("lua", dir)
      Lf:ok({ op = "put", key = "a", value = "1", sync = true })
      Lf:ok({ op = "put", key = "b", value = "2", sync = true })
      Lf:ok({ op = "del", key = "a", sync = true })
      local ops = { { type = "put", key = "c", value = "3" }, { type = "del", key = "b" } }
      Lf:ok({ op = "batch", sync = true, ops = ops })
      assert.are.same({ { key = "c", value = "3" } }, N:ok({ op = "readStream", options = {} }).entries)
      Lf:ok({ op = "clear", range = {}, sync = true })
      assert.are.same({}, N:ok({ op = "readStream", options = {} }).entries)
      assert.is_true(N:ok({ op = "put", key = "d", value = "4" }).ok)
      assert.are.equal("4", Lf:ok({ op = "get", key = "d" }).value)
    end)

    interop("json values put by Node read back as the same table in Lua, and the other way round", function()
      local dir = H.mkdtemp("json")
      local o = { value_encoding = "json" }
      local N = H.start("node", dir, o)
      local Lf = H.start("lua", dir, o)
      local N2 = H.start("node", dir, o)
      local v1 = { name = "node", list = { 1, 2, { deep = true } }, n = 1.5, s = "\u{e9}\"\\/" }
      local v2 = { name = "lua", map = { a = { b = { c = "d" } } }, arr = { "x", "y" }, i = 7 }
      assert.is_true(N:ok({ op = "put", key = "from-node", value = v1 }).ok)
      assert.are.same(v1, Lf:ok({ op = "get", key = "from-node" }).value)
      assert.is_true(Lf:ok({ op = "put", key = "from-lua", value = v2 }).ok)
      assert.are.same(v2, N:ok({ op = "get", key = "from-lua" }).value)
      assert.are.same(v2, N2:ok({ op = "get", key = "from-lua" }).value)
      local e = Lf:ok({ op = "readStream", options = {} }).entries
      assert.are.same({ { key = "from-lua", value = v2 }, { key = "from-node", value = v1 } }, e)
    end)
  end)

  describe("Lua leader with Node followers", function()
    for _, enc in ipairs(ENCODINGS) do
      interop(enc .. ": every Node call gets the answers a Node leader gives, NotFound included", function()
        local ref = node_reference(enc)
        local got = run_script("lua", "node", enc)
        compare_runs(ref, got)
      end)
    end

    interop("a missing key is a NotFoundError on the Node side", function()
      local dir = H.mkdtemp("notfound")
      local L = H.start("lua", dir)
      assert.are.equal("leader", L:role())
      local N = H.start("node", dir)
      local r = N:call({ op = "get", key = "nope" })
      assert.is_false(r.ok)
      assert.is_true(r.notFound)
      assert.are.equal("NotFoundError", r.name)
      assert.are.equal("Key not found in database [nope]", r.error)
      assert.is_true(H.normalize(N:ok({ op = "getMany", keys = { "nope" } }).values)[1] == nil)
      -- the socket Node found is the one level-party uses
      local rc = os.execute("test -S '" .. dir .. "/level-party.sock'")
      assert.is_true(rc == true or rc == 0) -- 5.4 gives true, 5.1/LuaJIT 0
    end)
  end)

  ----------------------------------------------------------------------------------------------
  -- Failover
  ----------------------------------------------------------------------------------------------

  -- The kill lands mid-stream and mid-writes by construction: each stream is held after
  -- STREAM_HOLD entries and each writer after WRITE_HOLD acknowledged puts (the workers' hold_at)
  -- until the spec releases them, after the kill. A fast stream or writer waits there, a slow
  -- one is still going when the kill lands; either way the rest crosses the failover, and
  -- STREAM_N - STREAM_HOLD is more than any read-ahead window (docs/PROTOCOL.md), so a held
  -- Lua stream still needs a leader for the rest.
  local STREAM_N = 3000
  local STREAM_HOLD = 1000
  local WRITES = 1000   -- per writer, 3 ms apart
  local WRITE_HOLD = 500

  local function preload(w, prefix, n)
    local ops = {}
    for i = 0, n - 1 do
      ops[#ops + 1] = { type = "put", key = H.keyname(prefix, i), value = "v" .. H.keyname(prefix, i) }
      if #ops == 500 or i == n - 1 then
        w:ok({ op = "batch", ops = ops })
        ops = {}
      end
    end
  end

  local function expected_stream(prefix, n, opts)
    local out = {}
    for i = 0, n - 1 do
      local k = H.keyname(prefix, i)
      if opts.keys == false then out[#out + 1] = { value = "v" .. k }
      elseif opts.values == false then out[#out + 1] = { key = k }
      else out[#out + 1] = { key = k, value = "v" .. k } end
    end
    if opts.reverse then
      local r = {}
      for i = #out, 1, -1 do r[#r + 1] = out[i] end
      out = r
    end
    return out
  end

  -- Streams that must be exactly-once (Lua followers): the exact list, in order.
  local function assert_exact_stream(w, id, expect, what)
    local got = w:progress_of(id)
    assert.are.equal(#expect, #got, what .. ": entry count (exactly-once) on " .. w:describe())
    for i = 1, #expect do
      if not (got[i].key == expect[i].key and got[i].value == expect[i].value) then
        error(("%s: entry %d is %s, expected %s (%s)"):format(what, i, H.json.encode(got[i]),
          H.json.encode(expect[i]), w:describe()))
      end
    end
  end

  -- A Node follower that resumes a stream after a failover delivers again the entries it had
  -- received but not yet handed out (multileveldown keeps them when it resends the iterator):
  -- require every key at least once, nothing outside the range, no error.
  local function assert_complete_stream(w, id, prefix, n, what)
    local seen, count = {}, 0
    for _, e in ipairs(w:progress_of(id)) do
      assert(e.key and e.key:sub(1, #prefix) == prefix, what .. ": foreign entry " .. H.json.encode(e))
      if not seen[e.key] then seen[e.key] = true; count = count + 1 end
      assert.are.equal("v" .. e.key, e.value)
    end
    assert.are.equal(n, count, what .. ": distinct keys delivered by " .. w:describe())
  end

  -- Every acknowledged write is present (value == key), read through each reader.
  local function assert_acked_present(acked, readers, prefix)
    for _, r in ipairs(readers) do
      local entries = r:ok({ op = "readStream", options = { gte = prefix, lt = prefix .. "~" } }, 60).entries
      local have = {}
      for _, e in ipairs(entries) do have[e.key] = e.value end
      local missing = {}
      for _, k in ipairs(acked) do
        if have[k] ~= k then missing[#missing + 1] = k end
      end
      assert(#missing == 0, ("%d acknowledged writes missing when read by %s, e.g. %s"):format(
        #missing, r:describe(), table.concat(missing, ",", 1, math.min(5, #missing))))
    end
  end

  local function collect_acked(list, w, id)
    for _, k in ipairs(w:progress_of(id)) do list[#list + 1] = k end
  end

  -- A full failover scenario.
  --   leader_kind: who leads first; writers/streamers: lists of kinds; force: nil (whoever wins),
  --   "node" or "lua" (the other runtime's survivors are SIGSTOPped over the election).
  local function failover(leader_kind, writer_kinds, streamer_specs, force)
    local dir = H.mkdtemp("failover-" .. leader_kind)
    local leader = H.start(leader_kind, dir)
    assert.are.equal("leader", leader:role())
    preload(leader, "s-", STREAM_N)
    local workers, writers, streamers = {}, {}, {}
    for _, kind in ipairs(writer_kinds) do
      local w = H.start(kind, dir)
      workers[#workers + 1] = w
      writers[#writers + 1] = { w = w }
    end
    for _, spec in ipairs(streamer_specs) do
      local w = H.start(spec.kind, dir)
      workers[#workers + 1] = w
      streamers[#streamers + 1] = { w = w, spec = spec }
    end
    -- an idle follower of the forced runtime, to take over while the others are stopped
    local idle
    if force then
      idle = H.start(force, dir)
      workers[#workers + 1] = idle
    end
    for _, w in ipairs(workers) do assert.are.equal("follower", w:role()) end

    for i, wr in ipairs(writers) do
      wr.prefix = ("w-%d-%s-"):format(i, wr.w.kind)
      wr.id = wr.w:send({ op = "write", prefix = wr.prefix, count = WRITES, interval_ms = 3, hold_at = WRITE_HOLD })
    end
    for _, st in ipairs(streamers) do
      st.id = st.w:send({ op = "stream", options = st.spec.options, delay_ms = 1, hold_at = STREAM_HOLD })
    end
    for _, wr in ipairs(writers) do wr.w:wait_progress(wr.id, 30, 60) end
    for _, st in ipairs(streamers) do st.w:wait_progress(st.id, 200, 60) end

    local stopped = {}
    if force then
      for _, w in ipairs(workers) do
        if w.kind ~= force then w:signal("sigstop"); stopped[#stopped + 1] = w end
      end
    end
    local acked_before = {}
    for _, wr in ipairs(writers) do acked_before[wr] = #wr.w:progress_of(wr.id) end
    for _, st in ipairs(streamers) do
      assert(st.w.replies[st.id] == nil, "the kill must land mid-stream: " .. st.w:describe() .. " already ended")
    end
    for _, wr in ipairs(writers) do
      assert(wr.w.replies[wr.id] == nil, "the kill must land mid-writes: " .. wr.w:describe() .. " already ended")
    end
    leader:kill9()
    for _, x in ipairs(writers) do x.w:release(x.id) end
    for _, x in ipairs(streamers) do x.w:release(x.id) end

    if force then
      -- a process of the forced runtime must lead before the stopped ones wake up
      assert.is_true(idle:ok({ op = "get", key = "s-000000" }, 60).ok)
      if force == "node" then
        H.wait_until(function()
          for _, w in ipairs(workers) do
            if w.kind == "node" and w.leader_events > 0 then return true end
          end
          return false
        end, 30, "a Node follower's leader event")
      end
      for _, w in ipairs(stopped) do w:signal("sigcont") end
    end

    for _, wr in ipairs(writers) do
      local r = wr.w:wait_reply(wr.id, 120)
      assert(r.ok, wr.w:describe() .. " writer failed: " .. H.json.encode(r))
      assert.are.equal(WRITES, #wr.w:progress_of(wr.id))
      assert.is_true(#wr.w:progress_of(wr.id) > acked_before[wr], "writer carried on")
    end
    for _, st in ipairs(streamers) do
      local r = st.w:wait_reply(st.id, 120)
      assert(r.ok, st.w:describe() .. " stream failed: " .. H.json.encode(r))
      local what = "stream " .. H.json.encode(st.spec.options)
      if st.w.kind == "lua" then
        assert_exact_stream(st.w, st.id, expected_stream("s-", STREAM_N, st.spec.options), what)
      else
        assert_complete_stream(st.w, st.id, "s-", STREAM_N, what)
      end
    end

    local new_leader = H.wait_single_leader(workers, 30)
    if force then assert.are.equal(force, new_leader.kind, "the forced runtime leads") end

    local acked = {}
    for _, wr in ipairs(writers) do collect_acked(acked, wr.w, wr.id) end
    local readers = {}
    local seen_kind = {}
    for _, w in ipairs(workers) do
      if not seen_kind[w.kind] then seen_kind[w.kind] = true; readers[#readers + 1] = w end
    end
    assert_acked_present(acked, readers, "w-")
    return new_leader
  end

  local FWD = { gte = "s-", lt = "s-~" }
  local REV = { gte = "s-", lt = "s-~", reverse = true }
  local VALS = { gt = "s-", lte = "s-~", keys = false }

  describe("failover", function()
    interop("kill -9 a Node leader while Lua followers write and stream: a survivor takes over", function()
      failover("node", { "lua", "lua", "node" }, {
        { kind = "lua", options = FWD }, { kind = "lua", options = REV }, { kind = "lua", options = VALS },
      })
    end)

    interop("kill -9 a Node leader: a Lua follower's stream resumes exactly-once under a new Node leader", function()
      local nl = failover("node", { "lua", "node" }, {
        { kind = "lua", options = FWD }, { kind = "lua", options = REV }, { kind = "lua", options = VALS },
      }, "node")
      assert.are.equal("node", nl.kind)
    end)

    interop("kill -9 a Node leader: a Lua process takes over for Node and Lua followers", function()
      local nl = failover("node", { "node", "lua" }, {
        { kind = "lua", options = FWD }, { kind = "node", options = { gt = "s-", lt = "s-~" } },
      }, "lua")
      assert.are.equal("lua", nl.kind)
    end)

    interop("kill -9 a Lua leader while Node followers write and stream: the survivors carry on", function()
      failover("lua", { "node", "node", "lua" }, {
        { kind = "node", options = { gt = "s-", lt = "s-~" } }, { kind = "lua", options = FWD },
        { kind = "lua", options = REV },
      })
    end)

    interop("kill -9 a Lua leader: Node takes over and Lua streams resume exactly-once", function()
      local nl = failover("lua", { "node", "lua" }, {
        { kind = "node", options = { gt = "s-", lt = "s-~" } }, { kind = "lua", options = FWD },
        { kind = "lua", options = VALS },
      }, "node")
      assert.are.equal("node", nl.kind)
    end)

    interop("kill -9 a Lua leader: a Lua follower takes over, Node streams (gte + resume gt) stay whole", function()
      -- A Node follower resumes with gt=<last key> next to its gte; a Node leader (leveldown) ends
      -- such a stream at the first key it takes for out of range, a levelparty leader must not.
      local nl = failover("lua", { "node", "lua" }, {
        { kind = "node", options = FWD }, { kind = "lua", options = REV },
      }, "lua")
      assert.are.equal("lua", nl.kind)
    end)
  end)

  ----------------------------------------------------------------------------------------------
  -- Mixed crowds
  ----------------------------------------------------------------------------------------------

  describe("mixed crowds", function()
    interop("2 Node and 2 Lua processes in random order, leader killed 3 times: every acked write stays", function()
      local seed = tonumber(os.getenv("INTEROP_SEED") or "") or os.time()
      math.randomseed(seed)
      local dir = H.mkdtemp("crowd")
      local kinds = { "node", "node", "lua", "lua" }
      for i = #kinds, 2, -1 do
        local j = math.random(i)
        kinds[i], kinds[j] = kinds[j], kinds[i]
      end
      local ctx = ("seed %d, start order %s"):format(seed, table.concat(kinds, ","))
      -- the first one leads; the other three start together and race (Lua starts faster)
      local crowd = { H.start(kinds[1], dir, nil, 60) }
      for i = 2, #kinds do crowd[i] = H.spawn(kinds[i], dir) end
      for _, w in ipairs(crowd) do w:wait_ready(60) end
      assert.are.equal("leader", crowd[1]:role(), ctx)

      local acked = {}
      local leaders = {}
      for round = 1, 3 do
        local leader = H.wait_single_leader(crowd, 30)
        leaders[#leaders + 1] = leader.kind
        local jobs = {}
        for i, w in ipairs(crowd) do
          local prefix = ("w-r%d-%d-%s-"):format(round, i, w.kind)
          jobs[i] = {
            w = w, prefix = prefix,
            write = w:send({ op = "write", prefix = prefix, count = 80, interval_ms = 3 }),
            -- concurrent with the writes on Node, queued after them on Lua
            read = w:send({ op = "readStream", options = { gte = "w-", lt = "w-~" } }),
          }
        end
        for _, j in ipairs(jobs) do j.w:wait_progress(j.write, 20, 60) end
        leader:kill9()
        for _, j in ipairs(jobs) do
          if j.w == leader then
            collect_acked(acked, j.w, j.write)
          else
            local r = j.w:wait_reply(j.write, 120)
            assert(r.ok, ctx .. ": " .. j.w:describe() .. " write failed: " .. H.json.encode(r))
            collect_acked(acked, j.w, j.write)
            local rr = j.w:wait_reply(j.read, 120)
            assert(rr.ok, ctx .. ": " .. j.w:describe() .. " read failed: " .. H.json.encode(rr))
            -- its own writes of this round are all visible to itself
            local mine = j.w:progress_of(j.write)
            local got = H.normalize(j.w:ok({ op = "getMany", keys = mine }, 60).values)
            for i, k in ipairs(mine) do
              assert.are.equal(k, got[i], ctx .. ": read-your-writes on " .. j.w:describe())
            end
          end
        end
        -- replace the dead leader with a process of the same runtime
        for i, w in ipairs(crowd) do
          if w == leader then crowd[i] = H.start(w.kind, dir, nil, 60) end
        end
      end
      leaders[#leaders + 1] = H.wait_single_leader(crowd, 30).kind
      io.stderr:write(("\n[mixed crowd] %s, leaders in turn: %s, %d acknowledged writes\n"):format(
        ctx, table.concat(leaders, ","), #acked))
      assert_acked_present(acked, crowd, "w-")
      assert.is_true(#acked >= 3 * (3 * 80 + 20), ctx .. ": acknowledged writes counted")
    end)
  end)
end)

-- The levelparty command (bin/levelparty, run with the interpreter under test) against directories
-- led by a Lua process, by a Node level-party 5.1.1 process, and by nobody (then it leads, and
-- leaves cleanly): its commands and exit statuses, a leader killed in the middle of a scan and of a
-- load (nothing printed twice, nothing lost), and dump | load of random binary data.
-- nginx leaders are not covered: levelparty has no nginx transport yet (README, Limits).
local uv = require "luv"
local lp = require "levelparty"
local cli = require "levelparty.cli"
local helper = require "helper"
local H = require "interop_helper"

local CLI = helper.root .. "/bin/levelparty"
local NODE_OK, NODE_REASON = H.node_available()

local running = {}

-- Starts the command; returns a process object whose stdout is kept as raw bytes.  setenv
-- replaces variables of the environment.
local function start(args, stdin_data, setenv)
  local env = {}
  for _, k in ipairs { "PATH", "HOME", "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4" } do
    local v = (setenv or {})[k] or os.getenv(k)
    if v then env[#env + 1] = k .. "=" .. v end
  end
  local p = { out = {}, nout = 0, lines = 0, err = {}, stdin = uv.new_pipe(false), stdout = uv.new_pipe(false),
    stderr = uv.new_pipe(false) }
  local argv = { CLI }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local handle, pid = uv.spawn(helper.lua, { args = argv, env = env, stdio = { p.stdin, p.stdout, p.stderr } },
    function(code, signal) p.code, p.signal, p.exited = code, signal, true end)
  assert(handle, pid)
  p.handle, p.pid = handle, pid
  running[#running + 1] = p
  function p.on_out(_, data)
    if data then
      p.out[#p.out + 1] = data
      p.nout = p.nout + #data
      local _, n = data:gsub("\n", "")
      p.lines = p.lines + n
    else
      p.out_eof = true
    end
  end
  p.stdout:read_start(p.on_out)
  p.stderr:read_start(function(_, data)
    if data then p.err[#p.err + 1] = data else p.err_eof = true end
  end)
  if stdin_data then
    p.stdin:write(stdin_data, function() p.stdin:close() end)
  elseif stdin_data == nil then
    p.stdin:close()
  end
  return p
end

local function finish(p, timeout)
  helper.wait_until(function() return p.exited and p.out_eof and p.err_eof end, timeout or 60,
    "levelparty " .. tostring(p.pid) .. " to exit")
  return p.code, table.concat(p.out), table.concat(p.err)
end

-- Runs the command to its end: exit status, stdout, stderr.
local function run(args, stdin_data, setenv)
  return finish(start(args, stdin_data or nil, setenv))
end

local function cleanup()
  for _, p in ipairs(running) do
    if not p.exited then uv.kill(p.pid, "sigkill") end
  end
  pcall(helper.wait_until, function()
    for _, p in ipairs(running) do if not p.exited then return false end end
    return true
  end, 10)
  for _, p in ipairs(running) do
    for _, h in ipairs { p.stdin, p.stdout, p.stderr, p.handle } do
      if not h:is_closing() then h:close() end
    end
  end
  running = {}
  helper.cleanup()
end

local function exists(path) return uv.fs_stat(path) ~= nil end

-- A dump line, as levelparty writes it.
local function line(k, v) return '{"key":' .. cli.json_bytes(k) .. ',"value":' .. cli.json_bytes(v) .. "}\n" end

-- A Lua leader process on a fresh directory holding entries k0001..kNNNN = v0001..
local function lua_led(n)
  local dir = helper.tmpdir("cli")
  local leader = helper.start_leader(dir)
  if n and n > 0 then
    local db = assert(lp.open(dir))
    local ops = {}
    for i = 1, n do ops[#ops + 1] = { type = "put", key = ("k%04d"):format(i), value = ("v%04d"):format(i) } end
    assert(db:batch(ops))
    db:close()
  end
  return dir, leader
end

describe("the levelparty command", function()
  after_each(cleanup)

  describe("the dump format", function()
    it("keeps UTF-8 as JSON strings and anything else as base64, and reads both back", function()
      assert.are.equal('"a\\"\\\\\\n\\u0000\\u007f é😀"', cli.json_bytes('a"\\\n\0\127 é😀'))
      for _, bad in ipairs { "\255", "\192\128", "\237\160\128", "\244\144\128\128", "\226\130", "a\128" } do
        assert.is_false(cli.is_utf8(bad), bad)
        assert.are.equal('{"base64":"' .. cli.base64(bad) .. '"}', cli.json_bytes(bad))
      end
      assert.is_true(cli.is_utf8("\244\143\191\191\239\191\191\u{2028}"))
      for _, s in ipairs { "", "a", "ab", "abc", "abcd", "\0\255\1" } do
        assert.are.equal(s, cli.unbase64(cli.base64(s)))
      end
      assert.are.equal("TWFu", cli.base64("Man"))
      assert.is_nil(cli.unbase64("TWF"))
      assert.are.same({ key = "k\n😀", value = { base64 = "AP8=" } },
        cli.json_decode('{"key":"k\\n\\ud83d\\ude00", "value" : {"base64":"AP8="}}'))
      assert.is_nil(cli.json_decode('{"key":"\\ud83d"}'))
      assert.is_nil(cli.json_decode('{"key":"a"} x'))
    end)
  end)

  describe("on a directory a Lua process leads", function()
    it("gets, puts and deletes, with exit 0, and 1 for a missing key", function()
      local dir, leader = lua_led()
      assert.are.same({ 0, "", "" }, { run { dir, "put", "k", "v 1" } })
      assert.are.same({ 0, "v 1\n", "" }, { run { dir, "get", "k" } })
      assert.are.same({ 0, "v 1", "" }, { run { dir, "get", "k", "--raw" } })
      assert.are.same({ 0, "", "" }, { run({ dir, "put", "bin" }, "\0\255\n") }) -- the value from stdin
      assert.are.same({ 0, '{"key":"bin","value":{"base64":"AP8K"}}\n', "" }, { run { dir, "get", "bin", "--json" } })
      assert.are.same({ 0, '{"ok":true}\n', "" }, { run { dir, "del", "k", "--json" } })
      local code, out, err = run { dir, "get", "k" }
      assert.are.same({ 1, "" }, { code, out })
      assert.matches("not found", err)
      assert.are.same({ 0, "", "" }, { run { dir, "put", "--", "--odd", "-" } })
      assert.are.equal("-\n", select(2, run { dir, "get", "--", "--odd" }))
      -- it was a follower all along: the leader still leads
      assert.is_false(leader.exited)
      local db = assert(lp.open(dir))
      assert.are.equal("follower", db:role())
      assert.are.equal("\0\255\n", db:get("bin"))
      db:close()
    end)

    it("scans and counts ranges, streaming text or JSON lines", function()
      local dir = lua_led(30)
      assert.are.same({ 0, "k0029\tv0029\nk0030\tv0030\n", "" }, { run { dir, "scan", "--gt", "k0028" } })
      assert.are.same({ 0, "k0003\nk0002\n", "" },
        { run { dir, "scan", "--lte", "k0003", "--reverse", "--limit", "2", "--keys" } })
      assert.are.same({ 0, '{"value":"v0010"}\n{"value":"v0011"}\n', "" },
        { run { dir, "scan", "--prefix", "k001", "--gte", "k0010", "--lt=k0012", "--values", "--json" } })
      assert.are.same({ 0, "10\n", "" }, { run { dir, "count", "--prefix", "k002" } })
      assert.are.same({ 0, '{"count":30}\n', "" }, { run { dir, "count", "--json" } })
      assert.are.same({ 0, "0\n", "" }, { run { dir, "count", "--gt", "k0020", "--lt", "k0010" } })
      assert.are.same({ 0, line("k0001", "v0001") .. line("k0002", "v0002"), "" },
        { run { dir, "dump", "--limit", "2" } })
      -- sublevels, in the format subleveldown writes
      assert.are.same({ 0, "", "" }, { run { dir, "put", "--sublevel", "a", "--sublevel", "b", "x", "y" } })
      assert.are.same({ 0, "!b!x\ty\n", "" }, { run { dir, "scan", "--sublevel", "a" } })
      assert.are.same({ 0, "y\n", "" }, { run { dir, "get", "!a!!b!x" } })
    end)

    it("tells who leads: status names the leader's pid and this process as a follower", function()
      local dir, leader = lua_led(3)
      local code, out = run { dir, "status" }
      assert.are.equal(0, code)
      assert.matches("leader%s+serving, pid " .. leader.pid, out)
      assert.matches("this process%s+follower", out)
      code, out = run { dir, "status", "--json" }
      assert.are.equal(0, code)
      local s = cli.json_decode(out)
      assert.are.same({ true, leader.pid, "follower" }, { s.serving, s.leader_pid, s.role })
      assert.are.equal(uv.fs_realpath(dir), s.directory)
    end)

    it("fails with exit 3 and the error's code on stderr; --timeout bounds the wait", function()
      local dir, leader = lua_led(3)
      uv.kill(leader.pid, "sigstop")
      local t0 = uv.hrtime()
      local code, out, err = run { dir, "get", "k0001", "--timeout", "0.5" }
      uv.kill(leader.pid, "sigcont")
      assert.are.same({ 3, "" }, { code, out })
      assert.matches("^levelparty: ETIMEDOUT: ", err)
      assert.is_true((uv.hrtime() - t0) / 1e9 < 10)
      code, out, err = run { dir, "get", "k0001", "--timeout", "0.5" }
      assert.are.same({ 0, "v0001\n", "" }, { code, out, err })
      code, out, err = run { helper.tmpdir("none") .. "/missing", "get", "k", "--json" }
      assert.are.equal("", out)
      assert.are.equal(3, code)
      assert.are.equal("ENOENT", cli.json_decode(err).code)
    end)
  end)

  describe("on a directory nobody leads", function()
    it("leads for its run, shows LevelDB's figures, and leaves cleanly so that a later process leads", function()
      local dir = helper.tmpdir("cli") .. "/db"
      assert.are.same({ 0, "", "" }, { run { dir, "put", "a", "1" } })
      assert.is_false(exists(dir .. "/level-party.sock"))
      local code, out = run { dir, "status" }
      assert.are.equal(0, code)
      assert.matches("none was serving", out)
      assert.matches("this process%s+leader", out)
      assert.matches("leveldb.stats\n%s+Compactions", out)
      local s = cli.json_decode(select(2, run { dir, "status", "--json" }))
      assert.are.same({ false, "leader", 7 }, { s.serving, s.role, #s.files_per_level })
      assert.is_number(s.approximate_size)
      assert.is_string(s.stats)
      assert.is_false(exists(dir .. "/level-party.sock"))
      -- a service started later leads, and sees what the command wrote
      local later = helper.start_leader(dir)
      assert.is_false(later.exited)
      assert.are.same({ 0, "1\n", "" }, { run { dir, "get", "a" } })
    end)

    it("never creates a database to read one", function()
      local dir = helper.tmpdir("cli") .. "/nothing"
      for _, args in ipairs { { "get", "k" }, { "scan" }, { "count" }, { "dump" }, { "status" }, { "del", "k" } } do
        table.insert(args, 1, dir)
        local code, _, err = run(args)
        assert.are.equal(3, code)
        assert.matches("ENOENT", err)
      end
      assert.is_false(exists(dir))
    end)
  end)

  it("load: a progress line on a terminal (or with --progress), quiet otherwise", function()
    local dir = helper.tmpdir("cli") .. "/db"
    local input = line("a", "1") .. line("b", "\255")
    local code, out, err = run({ dir, "load" }, input)
    assert.are.same({ 0, "", "" }, { code, out, err })
    code, out, err = run({ dir, "load", "--progress", "--json" }, input)
    assert.are.same({ 0, '{"entries":2,"bytes":4}\n' }, { code, out })
    assert.matches("^levelparty: loaded 2 entries, 4 B, %d+ entries/s, [%d.]+ [KMG]?i?B/s\n$", err)
    -- a real terminal (script(1) gives the command a pty): one line, rewritten in place
    local f = assert(io.open(dir .. ".jsonl", "w"))
    f:write(input)
    f:close()
    local sh = io.popen(("script -qec \"%s %s %s load < %s.jsonl\" /dev/null"):format(helper.lua, CLI, dir, dir))
    local tty = sh:read("a")
    sh:close()
    assert.matches("^\rlevelparty: loaded 2 entries, 4 B.*\27%[K\r?\n$", tty)
  end)

  it("works without luv: every call blocks", function()
    -- the module paths without the interpreter's defaults, where luv is
    local cpath = helper.root .. "/build/" .. (jit and "luajit" or "5.4") .. "/?.so"
    local noluv = { LUA_CPATH = cpath, LUA_CPATH_5_4 = cpath }
    local code, out, err = run({ "--version" }, nil, noluv)
    assert.are.same({ 0, "" }, { code, err })
    assert.matches("^levelparty ", out)
    local dir, leader = lua_led(600)
    local input = {}
    for i = 1, 600 do input[i] = line(("k%04d"):format(i), ("v%04d"):format(i)) end
    input = table.concat(input)
    assert.are.same({ 0, input, "" }, { run({ dir, "dump" }, nil, noluv) })
    local other = helper.tmpdir("cli") .. "/db"
    assert.are.same({ 0, "", "" }, { run({ other, "load", "--batch", "7" }, input, noluv) })
    leader:kill()
    leader:wait_exit()
    assert.are.same({ 0, input, "" }, { run({ other, "dump" }, nil, noluv) })
    assert.are.same({ 0, "v0600\n", "" }, { run({ dir, "get", "k0600" }, nil, noluv) })
    assert.are.same({ 0, "600\n", "" }, { run({ dir, "count" }, nil, noluv) })
  end)

  it("has --help for every command and exits 2 on usage errors", function()
    local code, overview = run { "--help" }
    assert.are.equal(0, code)
    local out
    for _, c in ipairs { "get", "put", "del", "scan", "count", "dump", "load", "status" } do
      assert.matches("\n  " .. c, overview)
      for _, args in ipairs { { c, "--help" }, { "help", c }, { "/x", c, "--help" } } do
        code, out = run(args)
        assert.are.equal(0, code)
        assert.matches("^usage: levelparty DIR " .. c, out)
      end
    end
    for _, args in ipairs {
      {}, { "/x" }, { "/x", "frob" }, { "/x", "get" }, { "/x", "get", "a", "b" }, { "/x", "scan", "--frob" },
      { "/x", "scan", "--limit", "-1" }, { "/x", "scan", "--limit" }, { "/x", "get", "k", "--timeout", "0" },
      { "/x", "scan", "--keys", "--values" }, { "/x", "get", "k", "--reverse" }, { "help", "frob" },
    } do
      code, out = run(args)
      assert.are.same({ 2, "" }, { code, out }, table.concat(args, " "))
    end
  end)

  -- The scan and load below outlive their leader: SIGKILLed while the command streams (its
  -- output blocked on a full pipe) or while one of its batches waits (the leader SIGSTOPped).
  local N_SCAN = 20000

  local function scan_through_kill(dir, kill, args, expect)
    local p = start(args)
    helper.wait_until(function() return p.lines >= 2000 or p.exited end, 30, "2000 lines")
    p.stdout:read_stop()
    assert.is_nil(p.code, "the scan ended before the kill")
    kill()
    p.stdout:read_start(p.on_out)
    local code, out, err = finish(p, 120)
    assert.are.same({ 0, "" }, { code, err })
    assert.are.equal(select(2, expect:gsub("\n", "")), select(2, out:gsub("\n", "")), "lines")
    assert.are.equal(expect, out, "every entry once, in order")
    return dir
  end

  local function expected_scan(n, reverse, fmt)
    local t = {}
    for i = 1, n do
      local k, v = ("k%06d"):format(i), ("value-%06d-"):format(i) .. ("x"):rep(40)
      t[#t + 1] = fmt(k, v)
    end
    if reverse then
      local r = {}
      for i = #t, 1, -1 do r[#r + 1] = t[i] end
      t = r
    end
    return table.concat(t)
  end

  local function preload(dir, n)
    local lines = {}
    for i = 1, n do lines[#lines + 1] = line(("k%06d"):format(i), ("value-%06d-"):format(i) .. ("x"):rep(40)) end
    local code, _, err = run({ dir, "load" }, table.concat(lines))
    assert.are.same({ 0, "" }, { code, err })
  end

  it("scan: a Lua leader killed mid-scan, nothing printed twice, nothing lost", function()
    local dir, leader = lua_led()
    preload(dir, N_SCAN)
    helper.spawn(helper.fixtures .. "/holder.lua", { dir }):wait_line("^follower")
    scan_through_kill(dir, function()
      leader:kill()
      leader:wait_exit()
    end, { dir, "scan" }, expected_scan(N_SCAN, false, function(k, v) return k .. "\t" .. v .. "\n" end))
  end)

  it("scan --reverse --json: a Node leader killed mid-scan, nothing printed twice, nothing lost", function()
    if not NODE_OK then
      pending(NODE_REASON)
      return
    end
    finally(H.cleanup)
    local dir = helper.tmpdir("cli")
    local node = H.start("node", dir)
    H.start("node", dir) -- a Node standby, racing the command for the lead
    preload(dir, N_SCAN)
    scan_through_kill(dir, function() node:kill9() end, { dir, "scan", "--reverse", "--json" },
      expected_scan(N_SCAN, true, function(k, v) return line(k, v) end))
  end)

  local function random_bytes(n)
    local t = {}
    for i = 1, n do t[i] = string.char(math.random(0, 255)) end
    return table.concat(t)
  end

  local function load_through_kill(dir, stop, kill)
    local n = 20000
    local lines = {}
    for i = 1, n do
      local v = i % 3 == 0 and random_bytes(i % 50) or ("v%06d é"):format(i)
      lines[i] = line(("k%06d"):format(i), v)
    end
    local input = table.concat(lines)
    local p = start({ dir, "load", "--batch", "500" }, input)
    local function queued() return uv.stream_get_write_queue_size(p.stdin) end
    helper.wait_until(function() return p.exited or queued() < #input - 300000 end, 60, "300 KB loaded")
    stop()
    -- the command stops reading once its batch waits on the stopped leader
    local last, since = queued(), uv.hrtime()
    helper.wait_until(function()
      local q = queued()
      if q ~= last then last, since = q, uv.hrtime() end
      return p.exited or uv.hrtime() - since > 5e8
    end, 30, "the load to wait on the stopped leader")
    assert.is_true(queued() > 0, "the kill lands mid-load")
    assert.is_nil(p.code)
    kill()
    local code, _, err = finish(p, 120)
    assert.are.same({ 0, "" }, { code, err })
    local out
    code, out, err = run { dir, "dump" }
    assert.are.same({ 0, "" }, { code, err })
    assert.are.equal(input, out, "every entry loaded once, none lost")
  end

  it("load: a Lua leader killed while a batch waits, nothing lost", function()
    local dir, leader = lua_led()
    helper.spawn(helper.fixtures .. "/holder.lua", { dir }):wait_line("^follower")
    load_through_kill(dir, function() uv.kill(leader.pid, "sigstop") end, function()
      leader:kill()
      leader:wait_exit()
    end)
  end)

  it("load: a Node leader killed while a batch waits, nothing lost", function()
    if not NODE_OK then
      pending(NODE_REASON)
      return
    end
    finally(H.cleanup)
    local dir = helper.tmpdir("cli")
    local node = H.start("node", dir)
    H.start("node", dir)
    load_through_kill(dir, function() node:signal("sigstop") end, function() node:kill9() end)
  end)

  -- dump | load of random bytes: keys and values of every byte value, valid and broken UTF-8
  local function random_entries(n)
    local entries, seen = {}, {}
    local samples = { "é", "😀", "\u{2028}", '"\\/', "\0", "\n\r\t", "\237\160\128", "\192\175", "\255\254" }
    while #entries < n do
      local k = random_bytes(math.random(1, 24))
      if math.random() < 0.3 then k = k .. samples[math.random(#samples)] end
      if not seen[k] then
        seen[k] = true
        local v = random_bytes(math.random(0, 300))
        if math.random() < 0.3 then v = samples[math.random(#samples)] .. v:gsub("[\128-\255]", "") end
        entries[#entries + 1] = { k, v }
      end
    end
    table.sort(entries, function(a, b) return a[1] < b[1] end)
    return entries
  end

  for _, target in ipairs { "lua", "node" } do
    it("dump | load restores random binary data exactly (the loading side led by " .. target .. ")", function()
      if target == "node" and not NODE_OK then
        pending(NODE_REASON)
        return
      end
      finally(H.cleanup)
      local seed = os.time()
      math.randomseed(seed)
      local entries = random_entries(3000)
      local src = helper.tmpdir("cli") .. "/src"
      local db = assert(lp.open(src))
      local ops = {}
      for _, e in ipairs(entries) do ops[#ops + 1] = { type = "put", key = e[1], value = e[2] } end
      assert(db:batch(ops))
      db:close()
      local dst = helper.tmpdir("cli")
      if target == "lua" then helper.start_leader(dst) else H.start("node", dst) end
      local sh = io.popen(("bash -c 'set -o pipefail; %s %s %s dump | %s %s %s load; echo \"rc=$?\"' 2>&1"):format(
        helper.lua, CLI, src, helper.lua, CLI, dst))
      local res = sh:read("a")
      sh:close()
      assert.are.equal("rc=0\n", res, "seed " .. seed)
      local code, out = run { src, "dump" }
      assert.are.equal(0, code)
      local code2, out2 = run { dst, "dump" }
      assert.are.same({ 0, out }, { code2, out2 }, "seed " .. seed)
      -- and the bytes, read without the command
      db = assert(lp.open(dst))
      local i = 0
      for k, v in db:iter() do
        i = i + 1
        assert(k == entries[i][1] and v == entries[i][2], "entry " .. i .. ", seed " .. seed)
      end
      assert.are.equal(#entries, i)
      db:close()
    end)
  end

  it("works with a Node level-party leader: put, get, scan, status", function()
    if not NODE_OK then
      pending(NODE_REASON)
      return
    end
    finally(H.cleanup)
    local dir = helper.tmpdir("cli")
    local node = H.start("node", dir)
    assert.are.same({ 0, "", "" }, { run { dir, "put", "from-cli", "1" } })
    assert.are.equal("1", node:ok({ op = "get", key = "from-cli" }).value)
    node:ok { op = "put", key = "from-node", value = "2" }
    assert.are.same({ 0, "from-cli\t1\nfrom-node\t2\n", "" }, { run { dir, "scan" } })
    local s = cli.json_decode(select(2, run { dir, "status", "--json" }))
    assert.are.same({ true, node.pid, "follower" }, { s.serving, s.leader_pid, s.role })
  end)
end)

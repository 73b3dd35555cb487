-- A long-running follower's memory stays flat: a process that loaded luv but does its
-- database work in blocking calls (the loop never runs), and a luv program mixing blocking
-- calls in callbacks with coroutine calls, each through many requests of every kind.
local helper = require "helper"

-- Requests per kind: a million under Lua 5.4, 100k (no RSS check) under LuaJIT (LEVELPARTY_MEMORY_N
-- overrides; the sanitizer pass uses fewer, and there RSS says nothing).
local N = tonumber(os.getenv("LEVELPARTY_MEMORY_N"))
  or (helper.lua == "lua5.4" and 1000000 or 100000)
local CHECK_RSS = N >= 400000 and os.getenv("LD_PRELOAD") == nil
-- malloc's heap steps up once or twice while a kind settles (a follower iterator's
-- arena, the mmap threshold adapting) and wanders by ~200 KiB, so a kind's RSS is judged
-- by its trend: the highest checkpoint of its second half against the highest of its
-- first half.  A leak of 8 bytes per request moves that by 1.6 MiB or more.
local TREND_SLACK_KIB = 768

local function rss_points(p)
  local by_kind, order = {}, {}
  for _, line in ipairs(p.lines) do
    local kind, done, kib = line:match("^rss (%S+) (%d+) (%d+)")
    if kind then
      if not by_kind[kind] then by_kind[kind], order[#order + 1] = {}, kind end
      table.insert(by_kind[kind], { done = tonumber(done), kib = tonumber(kib) })
    end
  end
  return by_kind, order
end

local function max_kib(points, from, to)
  local m = 0
  for i = from, to do m = math.max(m, points[i].kib) end
  return m
end

local function assert_flat(p, what)
  local by_kind, order = rss_points(p)
  assert.equal(7, #order, what .. ": kinds reported")
  for _, kind in ipairs(order) do
    local points = by_kind[kind]
    assert.equal(math.ceil(N / 100000), #points, what .. ": checkpoints of " .. kind)
    local h = math.floor(#points / 2)
    if CHECK_RSS and h >= 1 then
      local early, late = max_kib(points, 1, h), max_kib(points, h + 1, #points)
      assert(late - early <= TREND_SLACK_KIB, ("%s: RSS of %s grew %d KiB (%d -> %d) over its last %d "
        .. "requests"):format(what, kind, late - early, early, late, N - points[h].done))
    end
  end
end

describe("a follower's memory", function()
  after_each(helper.cleanup)

  it(("stays flat through %d blocking requests of each kind, luv loaded and its loop idle, "
    .. "and in a luv program mixing blocking and coroutine calls"):format(N), function()
    local dir = helper.tmpdir("memory")
    helper.start_leader(dir)
    local script = helper.fixtures .. "/lua/memory_worker.lua"
    local blocking = helper.spawn(script, { dir, "blocking", N })
    local mixed = helper.spawn(script, { dir, "mixed", N })
    assert.equal("ready follower", (blocking:wait_line("^ready", 20)))
    assert.equal("ready follower", (mixed:wait_line("^ready", 20)))
    -- ~30k requests/s for the two together on two cores; generous for a loaded machine
    -- (under ASan, LD_PRELOAD set, each request costs several times as much)
    local budget = 60 + (os.getenv("LD_PRELOAD") and 60 or 14) * N / 10000
    blocking:wait_line("^done$", budget)
    mixed:wait_line("^done$", budget)
    assert.equal(0, (blocking:wait_exit(20)), blocking:stderr_text())
    assert.equal(0, (mixed:wait_exit(20)), mixed:stderr_text())
    assert.equal("", blocking:stderr_text())
    assert.equal("", mixed:stderr_text())
    assert_flat(blocking, "blocking, loop idle")
    assert_flat(mixed, "mixed")
  end)
end)

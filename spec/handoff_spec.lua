-- A leader's coroutine writes go inline or, while LevelDB stalls writers, to the party's worker
-- thread (docs/ARCHITECTURE.md, "The loop never stalls").  Whichever way each write goes, a
-- handle's writes apply in the order they were issued and a read after an acknowledged write sees
-- it.  The core's tuning (core.write_handoff) forces the switch: with slow_ms = 0 every inline
-- write counts as a stall, so the next write goes to the worker and the one after that inline
-- again; with a tiny write buffer, LevelDB's own memtable switches bring the hand-off on.
local helper = require "helper"
local levelparty = require "levelparty"
local core = require "levelparty.core"
local uv = require "luv"

describe("writes switching between inline and the worker", function()
  local saved, dir, db
  before_each(function()
    saved = core.write_handoff()
    dir = helper.tmpdir("handoff")
  end)
  after_each(function()
    core.write_handoff(saved)
    core.set_slice(2)
    if db then db:close() end
    db = nil
    helper.cleanup()
  end)

  -- Several coroutines and a timer's blocking calls write keys k0..k39 with values that are a
  -- global issue number.  Issue order is the order of the core calls (the time slice is made
  -- long, so a call never yields before it is issued), so each key must only ever move forward:
  -- every read of a key (all of them, after each write) gives at least the highest number
  -- acknowledged for it so far, and in the end each key holds the highest number written to it.
  -- Every other write goes to a key that has a write in flight (not yet acknowledged), so that
  -- a write that overtook one in flight would move a key back.
  local NKEYS = 40
  local function interleaved(NCO, NW)
    local seq, issued = 0, 0
    local last, acked, inflight = {}, {}, {} -- key -> highest seq issued, acknowledged; writes
    for i = 0, NKEYS - 1 do acked["k" .. i] = 0 end
    local function next_write()
      seq = seq + 1
      local k = "k" .. seq % NKEYS
      if seq % 2 == 0 and next(inflight) ~= nil then k = next(inflight) end
      last[k] = seq
      issued = issued + 1
      inflight[k] = (inflight[k] or 0) + 1
      return k, tostring(seq), seq
    end
    local function ack(k, s)
      if s > acked[k] then acked[k] = s end
      inflight[k] = inflight[k] > 1 and inflight[k] - 1 or nil
    end
    local function check_reads(how)
      for i = 0, NKEYS - 1 do
        local k = "k" .. i
        local floor, v = acked[k], db:get(k)
        if floor > 0 and (tonumber(v) == nil or tonumber(v) < floor) then
          error(("after a %s: %s = %s, but %d was acknowledged"):format(how, k, tostring(v), floor), 2)
        end
      end
    end
    -- blocking calls from a timer, outside any coroutine, while coroutines' jobs are in flight
    local failed
    local timer = uv.new_timer()
    timer:start(1, 1, function()
      local ok, err = pcall(function()
        local k, v, s = next_write()
        assert(db:put(k, v))
        ack(k, s)
        check_reads("blocking put")
      end)
      failed = failed or (not ok and err) or nil
    end)
    local left = NCO
    for c = 1, NCO do
      coroutine.wrap(function()
        local ok, err = pcall(function()
          for i = 1, NW do
            local r = (i + c) % 5
            if r == 0 then
              local k1, v1, s1 = next_write()
              local k2, v2, s2 = next_write()
              assert(db:batch { { type = "put", key = k1, value = v1 }, { type = "put", key = k2, value = v2 } })
              ack(k1, s1)
              ack(k2, s2)
              check_reads("batch")
            elseif r == 1 then
              local b = db:batch()
              local k, v, s = next_write()
              b:put(k, v)
              assert(b:write())
              ack(k, s)
              check_reads("chained batch")
            else
              local k, v, s = next_write()
              assert(db:put(k, v))
              ack(k, s)
              check_reads("put")
            end
          end
        end)
        failed = failed or (not ok and err) or nil
        left = left - 1
      end)()
    end
    helper.wait_until(function() return left == 0 or failed end, 120, "the writers")
    timer:close()
    assert(not failed, failed)
    for k, s in pairs(last) do assert.equal(tostring(s), db:get(k), "final value of " .. k) end
    return issued, db._c:handed()
  end

  it("keep issue order and read-your-writes when every other write is handed off", function()
    db = assert(levelparty.open(dir))
    assert.equal("leader", db:role())
    core.set_slice(1e6)
    -- (the worker waits 1 ms before each job: an inline write that overtook one would land
    -- first for sure)
    core.write_handoff { slow_ms = 0, fast_ms = 1e9, l0 = 1e9, mem_pct = 1e9, delay_ms = 1 }
    local issued, handed = interleaved(6, 400)
    -- both ways were taken, many times each
    assert.is_true(handed >= issued / 20, ("%d of %d writes handed off"):format(handed, issued))
    assert.is_true(handed <= issued - issued / 20, ("%d of %d writes handed off"):format(handed, issued))
  end)

  it("keep them when LevelDB's memtable switches bring the hand-off on and off", function()
    db = assert(levelparty.open(dir, { write_buffer_size = 64 * 1024 }))
    core.set_slice(1e6)
    -- only the memtable rule: no timing, no level-0 rule
    core.write_handoff { slow_ms = 1e9, fast_ms = 1e9, l0 = 1e9, mem_pct = 50, check_ms = 0 }
    local pad = ("x"):rep(1000)
    local left, handed0 = 3, db._c:handed()
    for c = 1, 3 do
      coroutine.wrap(function()
        for i = 1, 1500 do
          local k = ("c%d-%05d"):format(c, i)
          assert(db:put(k, pad .. i))
          if i % 3 == 0 then
            assert(db:del(("c%d-%05d"):format(c, i - 1)))
            assert(db:get(("c%d-%05d"):format(c, i - 1)) == nil, "a deleted key is back")
          end
          assert(db:get(k) == pad .. i, "read-your-writes")
        end
        left = left - 1
      end)()
    end
    helper.wait_until(function() return left == 0 end, 120, "the writers")
    local handed = db._c:handed() - handed0
    assert.is_true(handed > 0 and handed < 4500, ("%d of 4500 puts handed off"):format(handed))
    for c = 1, 3 do
      for i = 1, 1500 do
        local v = db:get(("c%d-%05d"):format(c, i))
        if i % 3 == 2 then assert(v == nil, "deleted") else assert(v == pad .. i, "value of " .. i) end
      end
    end
  end)
end)

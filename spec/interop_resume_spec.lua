-- Lua followers resume iterators across the kill of a Node level-party 5.1.1 leader, under the
-- next Node leader: forward and reverse, with no bounds and with both bounds of each side, every
-- entry exactly once, in order (docs/PROTOCOL.md, Replay and resume).
--
-- Given gt and gte (or lt and lte), a Node leader (leveldown) starts from the inclusive bound and
-- ends at the first key the exclusive one rejects; the follower must send only the tighter bound
-- of each side, on the first open as on the reopen, or such a stream ends early. The Lua
-- processes are SIGSTOPped over the election so that an idle Node follower takes the lead.
--
-- Run: make test SPEC=spec/interop_resume_spec.lua
local H = require "interop_helper"

local NODE_OK, NODE_REASON = H.node_available()

-- Each entry handed out costs the Lua worker a fork (its delay is os.execute "sleep"), so the
-- streams are short; they only need to be still running at the kill.
local N = 400     -- entries s-000000 .. s-000399
local DELAY = 1   -- ms per entry handed out
local KILL_AT = 60

local function key(i) return H.keyname("s-", i) end

-- The streams: options, and the indexes of the entries expected, in order.
local STREAMS = {
  { what = "forward, no bounds", options = {}, from = 0, to = N - 1 },
  { what = "reverse, no bounds", options = { reverse = true }, from = N - 1, to = 0 },
  -- the side it starts from: gt above gte; the other: lt equal to lte (the exclusive one wins)
  { what = "forward, gt > gte, lt = lte",
    options = { gte = key(20), gt = key(30), lt = key(370), lte = key(370) }, from = 31, to = 369 },
  -- the side it starts from: lt below lte; the other: gte above gt (the inclusive one wins)
  { what = "reverse, lt < lte, gte > gt",
    options = { reverse = true, lte = key(380), lt = key(370), gt = key(10), gte = key(20) },
    from = 369, to = 20 },
}

local function expected(st)
  local out, step = {}, st.from <= st.to and 1 or -1
  for i = st.from, st.to, step do out[#out + 1] = { key = key(i), value = "v" .. key(i) } end
  return out
end

-- Where the stream differs from the entries expected: nil, or the first index that differs.
local function first_difference(got, want)
  for i = 1, math.max(#got, #want) do
    local g, e = got[i], want[i]
    if not (g and e and g.key == e.key and g.value == e.value) then return i end
  end
end

describe("iterator resume against a Node leader", function()
  it("kill -9 the Node leader mid-stream: Lua streams resume exactly once under the next Node leader", function()
    if not NODE_OK then
      pending(NODE_REASON)
      return
    end
    finally(H.cleanup)
    local dir = H.mkdtemp("resume")
    local leader = H.start("node", dir, nil, 120)
    assert.are.equal("leader", leader:role(60))
    local ops = {}
    for i = 0, N - 1 do
      ops[#ops + 1] = { type = "put", key = key(i), value = "v" .. key(i) }
      if #ops == 500 or i == N - 1 then
        leader:ok({ op = "batch", ops = ops }, 60)
        ops = {}
      end
    end
    -- the Node follower that takes over
    local heir = H.start("node", dir, nil, 120)
    local streamers = {}
    for _, st in ipairs(STREAMS) do
      streamers[#streamers + 1] = { st = st, w = H.start("lua", dir, nil, 120) }
    end
    assert.are.equal("follower", heir:role(60))
    for _, s in ipairs(streamers) do assert.are.equal("follower", s.w:role(60)) end

    for _, s in ipairs(streamers) do
      s.id = s.w:send({ op = "stream", options = s.st.options, delay_ms = DELAY })
    end
    for _, s in ipairs(streamers) do s.w:wait_progress(s.id, KILL_AT, 60) end
    for _, s in ipairs(streamers) do s.w:signal("sigstop") end
    H.pause(200) -- read what they wrote before they stopped
    for _, s in ipairs(streamers) do
      local r = s.w.replies[s.id]
      assert(r == nil, ("the kill must land mid-stream: %s ended first, after %d entries: %s"):format(
        s.st.what, #s.w:progress_of(s.id), H.json.encode(r or {})))
    end
    leader:kill9()

    -- the heir leads (it answers, and says so) before the Lua followers wake up
    assert.is_true(heir:ok({ op = "get", key = key(0) }, 60).ok)
    H.wait_until(function() return heir.leader_events > 0 end, 30, "the Node heir's leader event")
    for _, s in ipairs(streamers) do s.w:signal("sigcont") end

    for _, s in ipairs(streamers) do
      local r = s.w:wait_reply(s.id, 300)
      assert(r.ok, s.st.what .. ": stream failed: " .. H.json.encode(r))
      local got, want = s.w:progress_of(s.id), expected(s.st)
      local i = first_difference(got, want)
      assert(i == nil, ("%s: %d entries for %d (exactly once, in order); entry %d is %s, expected %s"):format(
        s.st.what, #got, #want, i or 0, H.json.encode(got[i or 0] or {}), H.json.encode(want[i or 0] or {})))
    end
    local workers = { heir }
    for _, s in ipairs(streamers) do workers[#workers + 1] = s.w end
    local new_leader = H.wait_single_leader(workers, 30)
    assert.are.equal(heir, new_leader, "the Node heir served the resumed streams")
  end)
end)

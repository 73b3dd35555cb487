-- A large batch from a coroutine must not stall luv's loop: on a leader it is
-- written by the party's worker thread, on a follower by the leader's server
-- thread, while the coroutine waits by yielding.
local uv = require "luv"
local helper = require "helper"

describe("a large batch inside a coroutine", function()
  after_each(helper.cleanup)

  it("lets luv timers run while LevelDB writes it, and is applied whole", function()
    local dir = helper.tmpdir("bigbatch")
    helper.run_async(function()
      local db = assert(helper.open(dir))
      local ops = {}
      for i = 1, 200000 do
        ops[i] = { type = "put", key = ("big%07d"):format(i), value = ("v"):rep(100) }
      end
      ops[#ops + 1] = { type = "del", key = "big0000001" }
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(1, 1, function() ticks = ticks + 1 end)
      local t0 = uv.hrtime()
      assert(db:batch(ops))
      local ms = (uv.hrtime() - t0) / 1e6
      timer:close()
      -- the loop ran during the write: a blocked loop gives at most 1 tick
      assert.is_true(ticks >= 3, ("only %d timer ticks during a %.0f ms batch"):format(ticks, ms))
      assert.is_nil(db:get("big0000001"))
      assert.equal(("v"):rep(100), db:get("big0200000"))
      local n = 0
      for _ in db:iter { gte = "big", lt = "bih", values = false } do n = n + 1 end
      assert.equal(199999, n)
      db:close()
    end, 120)
  end)

  it("reports a failure of the worker's write as nil, msg, code", function()
    local dir = helper.tmpdir("bigbatch2")
    helper.run_async(function()
      local db = assert(helper.open(dir))
      local ops = {}
      for i = 1, 3000 do ops[i] = { type = "put", key = ("k%05d"):format(i), value = "x" } end
      assert(db:batch(ops))
      db:close()
      local ok, err, code = db:batch(ops)
      assert.is_nil(ok)
      assert.equal("ECLOSED", code)
      assert.is_string(err)
    end, 60)
  end)
end)

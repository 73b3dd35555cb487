-- The chaos soak's checker (chaos/check.lua, through `chaos/driver.lua --check-only DIR`) fed
-- made-up runs: a consistent history passes with the counts it implies, and each kind of
-- corruption the soak exists to catch fails it with the failure that names it.  The checker
-- runs under lua5.4 whatever the spec's interpreter (docs/RELIABILITY.md, "Chaos soak").
local helper = require "helper"

local root = helper.root

-- A two-process run: a1i1 leads and writes, a2i1 follows and reads; times in µs.
local function base()
  return {
    driver = { "run 7 1 2 1", "slot 1 5.4 sync", "slot 2 5.4 luv", "locks 10 0", "idle a1i1 0.0%",
      "idle a2i1 0.0%" },
    events = { "900 start a1i1 pid 1", "1400 start a2i1 pid 2", "9000 exit a1i1 code nil signal 9",
      "9000 exit a2i1 code nil signal 9" },
    a1i1 = {
      "O 1000 leader 1 900",
      "I 1 2000 1 put k01 a1i1.1", "D 1 2100 ok",
      "I 2 3000 1 put k02 a1i1.2", "D 2 3100 ok",
      "I 3 4000 1 batch p:k03:a1i1.3 p:k04:a1i1.4", "D 3 4100 ok",
      "I 4 5000 1 get k01", "D 4 5100 ok a1i1.1",
      "I 5 6000 1 iter gte k01 lte k04 0 -1 0",
      "E 5 6010 k01 a1i1.1", "E 5 6020 k02 a1i1.2", "E 5 6030 k03 a1i1.3", "E 5 6040 k04 a1i1.4",
      "D 5 6100 ok 4 50",
      "I 6 7000 1 put k05 a1i1.5", "D 6 7100 ok",
      "I 7 7200 1 del k05", "D 7 7300 ok",
    },
    a2i1 = {
      "O 1500 follower 1 1400",
      "I 1 8000 1 getm k01 k02 k05", "D 1 8100 ok a1i1.1 a1i1.2 -",
    },
    final = { "k01 a1i1.1", "k02 a1i1.2", "k03 a1i1.3", "k04 a1i1.4" },
  }
end

local function replace(list, old, new)
  for i, l in ipairs(list) do
    if l == old then
      if new then list[i] = new else table.remove(list, i) end
      return
    end
  end
  error("no line " .. old, 2)
end

local function insert_after(list, old, new)
  for i, l in ipairs(list) do
    if l == old then return table.insert(list, i + 1, new) end
  end
  error("no line " .. old, 2)
end

-- Writes the run into a fresh directory, judges it; returns the exit status and the output.
local function judge(run)
  local dir = helper.tmpdir("chaoscheck")
  local files = { ["driver.log"] = run.driver, ["events.log"] = run.events, ["a1i1.log"] = run.a1i1,
    ["a2i1.log"] = run.a2i1, ["final.log"] = run.final }
  for name, lines in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
  end
  -- the exit status is echoed: LuaJIT's popen does not return it
  local p = assert(io.popen(("cd '%s' && LEVELPARTY_ROOT='%s' lua5.4 chaos/driver.lua --check-only '%s' 2>&1; "
    .. "echo \"exit $?\""):format(root, root, dir)))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("exit (%d+)\n$"))
  return code, out
end

local function fails(run, ...)
  local code, out = judge(run)
  assert.are.equal(1, code, out)
  for _, pat in ipairs { ... } do
    assert.is_truthy(out:find(pat, 1, true), ("no %q in:\n%s"):format(pat, out))
  end
  return out
end

describe("the chaos checker", function()
  after_each(helper.cleanup)

  it("passes a consistent run, with the counts it implies", function()
    local code, out = judge(base())
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("chaos: operations: batch 1, del 1, get 1, getm 1, iter 1, put 3\n", 1, true), out)
    assert.is_truthy(out:find("chaos: checked 4 reads, 1 iterators (4 stably present keys owed), 1 batches, "
      .. "4 final keys", 1, true), out)
    assert.is_truthy(out:find("chaos: PASSED (seed 7, 1 s)", 1, true), out)
  end)

  it("fails a lost acknowledged write", function()
    local r = base()
    replace(r.final, "k02 a1i1.2")
    fails(r, "FAIL final: k02 missing, though an acknowledged write of it could not have been deleted")
    r = base()
    insert_after(r.a1i1, "D 7 7300 ok", "I 8 7400 1 put k01 a1i1.8")
    insert_after(r.a1i1, "I 8 7400 1 put k01 a1i1.8", "D 8 7500 ok")
    fails(r, "FAIL final: k01=a1i1.1 (by a1i1), but a certain write of k01 followed it: acknowledged write lost")
  end)

  it("fails a duplicate, a skipped and an out-of-range iterator entry", function()
    local r = base()
    insert_after(r.a1i1, "E 5 6020 k02 a1i1.2", "E 5 6025 k02 a1i1.2")
    fails(r, "FAIL a1i1 iter #5 (gte k01 lte k04 rev=false limit=-1): entry #3 k02 after k02: a duplicate",
      "counted 4 entries, logged 5")
    r = base()
    replace(r.a1i1, "E 5 6020 k02 a1i1.2")
    replace(r.a1i1, "D 5 6100 ok 4 50", "D 5 6100 ok 3 50")
    fails(r, "FAIL a1i1 iter #5 (gte k01 lte k04 rev=false limit=-1): skipped k02, present for its whole life")
    r = base()
    insert_after(r.a1i1, "E 5 6040 k04 a1i1.4", "E 5 6045 k05 a1i1.5")
    replace(r.a1i1, "D 5 6100 ok 4 50", "D 5 6100 ok 5 50")
    fails(r, "yielded k05 outside its range", "entry k05=a1i1.5: a value whose write began only after the read ended")
  end)

  it("fails a read of a value never written, a stale one, or a missing one", function()
    local r = base()
    replace(r.a1i1, "D 4 5100 ok a1i1.1", "D 4 5100 ok a9i9.9")
    fails(r, "FAIL a1i1 read k01=a9i9.9 over [5000, 5100]: a value no one wrote")
    r = base()
    replace(r.a2i1, "D 1 8100 ok a1i1.1 a1i1.2 -", "D 1 8100 ok a1i1.1 a1i1.2 a1i1.5")
    fails(r, "FAIL a2i1 read k05=a1i1.5 over [8000, 8100]: a stale value")
    r = base()
    replace(r.a2i1, "D 1 8100 ok a1i1.1 a1i1.2 -", "D 1 8100 ok a1i1.1 - -")
    fails(r, "FAIL a2i1 read k02=- over [8000, 8100]: missing, though a certain write completed")
    r = base()
    replace(r.a2i1, "D 1 8100 ok a1i1.1 a1i1.2 -", "D 1 8100 ok a1i1.2 a1i1.2 -")
    fails(r, "FAIL a2i1 read k01=a1i1.2 over [8000, 8100]: a value written to k02")
  end)

  it("fails a batch applied in part", function()
    -- the batch's outcome unknown: only all-or-nothing judges its final state
    local r = base()
    replace(r.a1i1, "D 3 4100 ok", "D 3 4100 err ETIMEDOUT")
    replace(r.final, "k04 a1i1.4")
    local out = fails(r, "FAIL final: batch of a1i1 applied in part: k04 missing")
    assert.are.equal(1, select(2, out:gsub("chaos: FAIL ", "")), out)
    -- and the same final state passes when the batch was never applied
    r = base()
    replace(r.a1i1, "D 3 4100 ok", "D 3 4100 err ETIMEDOUT")
    replace(r.final, "k04 a1i1.4")
    replace(r.final, "k03 a1i1.3")
    local code, out2 = judge(r)
    assert.are.equal(0, code, out2)
  end)

  it("fails two leaders, a call over its bound and a handle's writes out of order", function()
    local r = base()
    replace(r.a2i1, "O 1500 follower 1 1400", "O 1500 leader 1 1400")
    fails(r, "FAIL two leaders: a2i1 from 1500 while a1i1 led until")
    r = base()
    replace(r.a2i1, "D 1 8100 ok a1i1.1 a1i1.2 -", "D 1 4008100 ok a1i1.1 a1i1.2 -")
    fails(r, "FAIL a2i1: getm took 4000 ms (bound 3000 ms)")
    r = base()
    -- k01 put twice by one handle, both acknowledged, the later issued one not last
    insert_after(r.a1i1, "D 1 2100 ok", "I 9 2050 1 put k01 a1i1.9")
    insert_after(r.a1i1, "I 9 2050 1 put k01 a1i1.9", "D 9 2090 ok")
    replace(r.a1i1, "D 4 5100 ok a1i1.1", "D 4 5100 ok a1i1.9")
    replace(r.a1i1, "E 5 6010 k01 a1i1.1", "E 5 6010 k01 a1i1.9")
    replace(r.a2i1, "D 1 8100 ok a1i1.1 a1i1.2 -", "D 1 8100 ok a1i1.9 a1i1.2 -")
    fails(r, "FAIL final: k01=a1i1.1, but its handle a1i1g1 issued a later acknowledged write of k01: order broken")
  end)
end)

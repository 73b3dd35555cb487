-- chaos/common.lua: what the chaos driver and its Lua actors share (chaos/README in
-- docs/RELIABILITY.md, "Chaos soak").
--
--   C.rng(seed)      a Park-Miller generator: the same sequence under Lua 5.4, LuaJIT and
--                    chaos/actor.js (every product stays below 2^53)
--   C.NKEYS, C.key(i)  the key space: k00 .. k79 (small, so processes collide)
--   C.now_us()       CLOCK_MONOTONIC in microseconds (luv's hrtime; Node's hrtime is the same)
local uv = require "luv"

local C = {}

C.NKEYS = 80

function C.key(i) return ("k%02d"):format(i) end

function C.now_us() return math.floor(uv.hrtime() / 1000) end

local M = 2147483647

--- A generator: r() a float in [0, 1), r(n) an integer in 1..n, r(a, b) in a..b.
function C.rng(seed)
  local x = math.floor(seed) % M
  if x == 0 then x = 1 end
  return function(a, b)
    x = (x * 48271) % M
    local f = (x - 1) / (M - 1)
    if a == nil then return f end
    if b == nil then a, b = 1, a end
    return a + math.floor(f * (b - a + 1))
  end
end

--- A seed for actor `slot`'s incarnation `inc` of the run `seed` (also in actor.js).
function C.actor_seed(seed, slot, inc)
  return (seed * 31 + slot * 1009 + inc * 7919) % M
end

return C

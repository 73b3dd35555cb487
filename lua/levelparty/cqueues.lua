-- levelparty.cqueues: the loop adaptor for cqueues (and lua-http, built on
-- it).  levelparty.set_loop("cqueues") chooses it: then a call that must wait,
-- inside a coroutine a cqueues controller runs (cq:wrap), waits in
-- cqueues.poll on the party's pollable (levelparty.loop), so the controller
-- runs its other coroutines meanwhile.  Anywhere else (the main chunk, a
-- coroutine of the application's own) the call blocks, as without an adaptor.
--
-- cqueues asks a pollable's timeout() once, when the coroutine polls: a step
-- one coroutine makes can find the results of others that wait meanwhile, so
-- each party also has a cqueues.condition that the step signals (wake), and
-- every waiter polls it with the pollable.

local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local loop = require "levelparty.loop"

local poll, running = cqueues.poll, cqueues.running

local function cond_of(d)
  local cond = d.cq_cond
  if cond == nil then
    cond = condition.new()
    d.cq_cond = cond
  end
  return cond
end

local backend = {}

-- Waits in cqueues.poll for the pollable (fd readable or its timeout) or a
-- step's signal; a giving back of the time slice (no driver) polls nothing,
-- which lets the controller run once.
function backend.wait(pollable, d)
  if d == nil then
    poll()
  elseif pollable:pollfd() < 0 then
    poll(cond_of(d), pollable:timeout() or 0)
  else
    poll(pollable, cond_of(d))
  end
end

function backend.wake(d)
  local cond = d.cq_cond
  if cond then cond:signal() end
end

-- Only a coroutine a controller runs may wait: a poll elsewhere would go to
-- a resumer that knows nothing of it.
function backend.yieldable()
  local _, managed = running()
  return managed == true
end

return loop.new(backend, "cqueues")

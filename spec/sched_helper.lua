-- spec/sched_helper.lua: how long this thread has waited for a CPU, for timings taken on a
-- shared machine, where a gap can say more about the scheduler than about levelparty.
--
--   sched.runq_wait_ns()   this (Lua) thread's run-queue wait so far, in ns: the second field
--                          of /proc/thread-self/schedstat (0 where the kernel does not keep it).
--                          The time between two readings that the thread spent runnable but
--                          not running; what remains of an interval is the time it ran or
--                          blocked.
--
-- Shared by spec/coroutine_spec.lua and bench/loopgap.lua; both run under mk/luaenv.sh, which
-- puts spec/ on the module path (require "sched_helper").

local sched = {}

function sched.runq_wait_ns()
  -- opened each time: stdio would not read the file again after a seek back
  local f = io.open("/proc/thread-self/schedstat")
  if not f then return 0 end
  local w = f:read("l"):match("^%d+ (%d+)")
  f:close()
  return tonumber(w) or 0
end

return sched

-- bench/failover_worker.lua DIR leader|follower
-- The leader opens DIR, prints "ready" and serves until killed.  A follower
-- opens DIR, prints "ready", then does one get after another forever and
-- prints "ok <started> <finished>" (uv.hrtime(), CLOCK_MONOTONIC, comparable
-- across processes) after each success, so the bench can see when a survivor
-- is served again by a request it made after the leader was killed.
local uv = require "luv"
local levelparty = require "levelparty"
local dir, want = arg[1], arg[2]
local db = assert(levelparty.open(dir, { timeout = 10 }))
io.stdout:write("ready ", db:role(), "\n")
io.stdout:flush()
if want == "leader" then
  io.stdin:read("a")
  os.exit(0)
end
local i = 0
while true do
  i = i % 20000 + 1
  local started = uv.hrtime()
  local v = db:get(("key%013d"):format(i))
  if v then
    io.stdout:write("ok ", ("%d %d"):format(started, uv.hrtime()), "\n")
    io.stdout:flush()
  end
end

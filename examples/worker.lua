-- examples/worker.lua DIR NAME MODE
-- One process of the demo.  MODE "put": writes NAME:1, NAME:2, ... every 20 ms
-- and prints each acknowledged write.  MODE "get": reads the other workers'
-- latest counters every 200 ms.  Both print their role when it changes.
local levelparty = require "levelparty"
local dir, name, mode = arg[1], arg[2], arg[3]

local function say(...)
  io.stdout:write(name, " ", table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

local db = assert(levelparty.open(dir, {
  value_encoding = "json",
  timeout = 5,
  on_role = function(role) say("is now", role) end,
}))
say("opened as", db:role())

local function sleep(ms)
  os.execute("sleep " .. ms / 1000)
end

if mode == "put" then
  for i = 1, math.huge do
    local key = ("%s:%06d"):format(name, i)
    local ok, err, code = db:put(key, { n = i, by = name })
    if ok then say("ack", key) else say("failed", err, code) end
    if ok and i % 50 == 0 then say("has written", i, "as", db:role()) end
    sleep(20)
  end
else
  while true do
    local latest = {}
    for k, v in db:iter { gte = "w", lt = "x", reverse = true } do
      local who = k:match("^(w%d+):")
      if who and not latest[who] then latest[who] = ("%d"):format(v.n) end
    end
    local parts = {}
    for who, n in pairs(latest) do parts[#parts + 1] = who .. "=" .. n end
    table.sort(parts)
    say("sees", table.concat(parts, " "))
    sleep(200)
  end
end

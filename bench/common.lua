-- bench/common.lua: what the bench scripts share (bench/run.lua, bench/nginx/run.lua).  Both
-- run under mk/luaenv.sh, which puts the checkout's root on the module path:
-- require "bench.common".
--
--   B.sh(cmd)       everything cmd writes to stdout (io.popen)
--   B.tmpdir(tag)   a fresh path under /tmp, nothing there yet: the caller creates it, and
--                   removes it when done
--   B.key(i)        the benches' key i, "key%013d": 16 bytes, as bench/raw_leveldb.c's
--   B.value_of(k)   its 100-byte value, k repeated and cut, as bench/raw_leveldb.c's (also
--                   spelt out in bench/nginx/wrk.lua and dictkv.lua, which run inside wrk and
--                   nginx)
local B = {}

function B.sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  f:close()
  return out
end

function B.tmpdir(tag)
  local d = os.tmpname()
  os.remove(d)
  d = d .. "-bench-" .. tag
  os.execute("rm -rf '" .. d .. "'")
  return d
end

function B.key(i) return ("key%013d"):format(i) end
function B.value_of(k) return (k:rep(7)):sub(1, 100) end

return B

-- chaos/check.lua: the chaos soak's checker.  Pure Lua 5.4, no I/O of its own.
--
--   local K = dofile("chaos/check.lua")
--   local h = K.new(nkeys, keyname)
--   h:scan(who, lines, info)      pass 1, per incarnation: its writes, leader claims, closes
--   h:build(final)                final: key -> value as read from the directory at the end
--   h:verify(who, lines, info, on_call)   pass 2, per incarnation: reads, iterators, batches
--   h:finish()                    the final contents
--   -> h.nerrors, h:first_errors() (at most 40, by category), h.stats, h.leaders, h.closes
--
-- lines: a list of one incarnation's log lines or an iterator over them (io.lines(path)); info:
-- { node = bool, timeout = s }.  on_call(who, kind, inv, resp, lat, bound, ok) is called for each
-- completed call (and each open) in log order, for the driver's latency bounds.
--
-- Memory: the logs are read twice, line by line, and nothing is kept per operation but its
-- writes, a 25-byte record each packed per key into strings (flags, invocation, completion,
-- handle and sub-id), and each written value's write id (a value a<slot>i<inc>.<seq>, as every
-- actor writes, is keyed by one integer).  The per-key indexes built from the writes are packed
-- doubles too.  Reads, iterators and batches are judged in the second pass against them
-- and dropped; so is every call once on_call saw it.  (An hour's soak: see docs/RELIABILITY.md.)
--
-- The model: a write happened at some instant inside [invocation, completion]; one whose
-- outcome is unknown (an error, a timeout, a killed process) may also never have happened,
-- or have happened at any time after its invocation (completion = +inf).  A write is
-- "certain" when it was acknowledged.  A clear is a delete of every key of its range.  For a
-- key, a write w' certainly follows w when w' is certain and w'.inv > w.resp, or (both
-- certain, one handle) w' was issued after w.
local K = {}
K.__index = K

local INF = math.huge
local HS = 4294967296 -- a write's hs = handle * HS + sub (the call's id in its incarnation)
local unpack = string.unpack
-- The writes are kept per key.  A write's record: flags (certain and 2 or 0) + (put and 1 or
-- 0), inv, resp (+inf when not certain), hs; CHUNK records of a key to a string.  A write's id
-- is key index * WID + its number among the key's writes.
local WREC = "<Bddd"
local WSIZE = string.packsize(WREC)
local CHUNK = 512
local WID = 4294967296

-- failures are reported by category, in this order, at most 40 of each kept
local ORDER = { "parse", "read", "iter", "final", "batch", "leader", "call", "resource", "problem" }
local IS_CAT = {}
for _, c in ipairs(ORDER) do IS_CAT[c] = true end

function K.new(nkeys, keyname)
  local h = setmetatable({}, K)
  h.nkeys, h.keyname = nkeys, keyname
  h.keys, h.kidx = {}, {}
  for i = 0, nkeys - 1 do
    h.keys[#h.keys + 1] = keyname(i)
    h.kidx[h.keys[#h.keys]] = #h.keys
  end
  -- the writes: per key index, full chunks, the records of the last one, their count
  h.wchunks, h.wbuf, h.wn = {}, {}, {}
  for i = 1, nkeys do h.wchunks[i], h.wbuf[i], h.wn[i] = {}, {}, 0 end
  h.puts = {}                    -- vcode(value) -> write id
  h.hname, h.hwho = {}, {}       -- handle id -> "a1i2g1", "a1i2"
  h.leaders = {}                 -- { who, from } leader role claims (ends filled by the driver)
  h.closes = {}                  -- { who, t }
  h.nerrors, h.buckets = 0, {}
  h.stats = { kinds = {}, outcomes = {}, reads = 0, iters = 0, batches = 0 }
  return h
end

function K:fail(cat, fmt, ...)
  if not IS_CAT[cat] then error("check: unknown failure category " .. tostring(cat), 2) end
  self.nerrors = self.nerrors + 1
  local b = self.buckets[cat]
  if not b then
    b = {}
    self.buckets[cat] = b
  end
  if #b < 40 then b[#b + 1] = fmt:format(...) end
end

--- The first 40 failures, category by category (ORDER), each in the order found.
function K:first_errors()
  local out = {}
  for _, c in ipairs(ORDER) do
    for _, e in ipairs(self.buckets[c] or {}) do
      if #out < 40 then out[#out + 1] = e end
    end
  end
  return out
end

local function words(line)
  local t = {}
  for w in line:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function each(lines)
  if type(lines) == "table" then
    local i = 0
    return function()
      i = i + 1
      return lines[i]
    end
  end
  return lines
end

-- A value's key in h.puts: an integer for the actors' values a<slot>i<inc>.<seq> (no leading
-- zeros, so that distinct strings never share one), the string itself for anything else.
local function canon(d) return #d == 1 or d:sub(1, 1) ~= "0" end
local function vcode(v)
  local s, i, q = v:match("^a(%d%d?%d?)i(%d%d?%d?%d?)%.(%d+)$")
  if s and #q <= 9 and canon(s) and canon(i) and canon(q) then
    return (tonumber(s) * 16384 + tonumber(i)) * 1073741824 + tonumber(q)
  end
  return v
end

-- Pass 1 -------------------------------------------------------------------------------------

local function batch_list(args)
  local out = {}
  for _, a in ipairs(args) do
    local t, k, v = a:match("^(%a):([^:]+):?(.*)$")
    out[#out + 1] = { put = t == "p", k = k, v = t == "p" and v or false }
  end
  return out
end

-- one write of k (v: the value, false or nil for a delete) by a call
function K:add_write(who, k, v, inv, resp, certain, hs)
  local ki = self.kidx[k]
  if not ki then return self:fail("parse", "%s wrote key %s outside the key space", who, k) end
  local n = self.wn[ki] + 1
  self.wn[ki] = n
  local buf = self.wbuf[ki]
  buf[#buf + 1] = string.pack(WREC, (certain and 2 or 0) + (v and 1 or 0), inv, resp, hs)
  if #buf == CHUNK then
    local cs = self.wchunks[ki]
    cs[#cs + 1] = table.concat(buf)
    self.wbuf[ki] = {}
  end
  if v then
    local c = vcode(v)
    if self.puts[c] then self:fail("parse", "value %s written twice", v) end
    self.puts[c] = ki * WID + n
  end
end

-- a call's writes, once its outcome is known (resp nil: it never completed)
function K:record_writes(who, op, resp, status)
  local st = self.stats
  local key = op.kind .. " " .. status
  st.outcomes[key] = (st.outcomes[key] or 0) + 1
  local kind = op.kind
  if kind ~= "put" and kind ~= "del" and kind ~= "batch" and kind ~= "chain" and kind ~= "clear" then return end
  local ok = status == "ok"
  local r = ok and resp or INF
  local a = words(op.rest)
  local hs = op.hid * HS + op.sub
  if kind == "put" then
    self:add_write(who, a[1], a[2], op.inv, r, ok, hs)
  elseif kind == "del" then
    self:add_write(who, a[1], false, op.inv, r, ok, hs)
  elseif kind == "batch" or kind == "chain" then
    for _, o in ipairs(batch_list(a)) do self:add_write(who, o.k, o.v, op.inv, r, ok, hs) end
  else
    for _, k in ipairs(self.keys) do
      if k >= a[1] and k < a[2] then self:add_write(who, k, false, op.inv, r, ok, hs) end
    end
  end
end

--- Pass 1 over one incarnation's log (who: its name, a3i2): its writes, claims and closes.
function K:scan(who, lines, info)
  local _ = info
  local open = {} -- id -> { kind, inv, hid, sub, rest }
  local hids = {} -- gen -> handle id
  local st = self.stats
  for line in each(lines) do
    local tag = line:match("%S+")
    if tag == "I" then
      local id, t, gen, kind, rest = line:match("^%s*I%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s*(.*)$")
      if kind then
        local hid = hids[gen]
        if not hid then
          hid = #self.hname + 1
          self.hname[hid], self.hwho[hid] = who .. "g" .. gen, who
          hids[gen] = hid
        end
        open[id] = { kind = kind, inv = tonumber(t), hid = hid, sub = tonumber(id), rest = rest }
        st.kinds[kind] = (st.kinds[kind] or 0) + 1
      end
    elseif tag == "D" then
      local w = words(line)
      local op = open[w[2]]
      if op then
        open[w[2]] = nil
        self:record_writes(who, op, tonumber(w[3]), w[4])
      else
        self:fail("parse", "%s: completion of unknown call %s", who, w[2])
      end
    elseif tag == "O" or tag == "R" then
      local w = words(line)
      if w[3] == "leader" then self.leaders[#self.leaders + 1] = { who = who, from = tonumber(w[2]) } end
    elseif tag == "C" then
      self.closes[#self.closes + 1] = { who = who, t = tonumber(line:match("^%s*C%s+(%S+)")) }
    elseif tag == "F" then
      self:fail("parse", "%s: open failed: %s", who, table.concat(words(line), " ", 3))
    elseif tag == "X" then
      self:fail("parse", "%s: levelparty.on_error: %s", who, table.concat(words(line), " ", 3))
    end
  end
  -- calls that never completed (killed, or still waiting at the end): writes of unknown outcome
  for _, op in pairs(open) do self:record_writes(who, op, nil, "lost") end
end

-- Per key indexes: certain writes by completion with the running max of invocations
-- (M(t): the latest invocation of a certain write completed before t), certain puts the
-- same way, deletes by invocation with the running max of completions.  Each is two strings
-- of packed doubles: the sorted order keys and the running maxes.
local function pack_doubles(a)
  local parts = {}
  for i = 1, #a, 256 do
    local j = math.min(#a, i + 255)
    parts[#parts + 1] = string.pack("<" .. ("d"):rep(j - i + 1), table.unpack(a, i, j))
  end
  return table.concat(parts)
end

local function index(list, order, field)
  table.sort(list, function(x, y) return order[x] < order[y] end)
  local keys, maxes, m = {}, {}, -INF
  for i, w in ipairs(list) do
    keys[i] = order[w]
    if field[w] > m then m = field[w] end
    maxes[i] = m
  end
  return { n = #keys, keys = pack_doubles(keys), maxes = pack_doubles(maxes) }
end

-- the running max over entries whose order key is < t (or <= t when incl)
local function upto(ix, t, incl)
  local keys = ix.keys
  local lo, hi = 1, ix.n
  local best = 0
  while lo <= hi do
    local mid = (lo + hi) // 2
    local kv = unpack("<d", keys, mid * 8 - 7)
    if kv < t or (incl and kv == t) then best, lo = mid, mid + 1 else hi = mid - 1 end
  end
  if best == 0 then return -INF end
  return (unpack("<d", ix.maxes, best * 8 - 7))
end

--- Write id's record: flags, inv, resp, hs (after build).
function K:wget(id)
  local n = id % WID - 1
  local c = n // CHUNK
  local f, inv, resp, hs = unpack(WREC, self.wchunks[id // WID][c + 1], (n - c * CHUNK) * WSIZE + 1)
  return f, inv, resp, hs
end

--- Builds the per key indexes from every write; final: the directory's contents at the end.
function K:build(final)
  self.final = final
  self.ix = {}
  for ki, k in ipairs(self.keys) do
    local cs = self.wchunks[ki]
    if #self.wbuf[ki] > 0 then
      cs[#cs + 1] = table.concat(self.wbuf[ki])
      self.wbuf[ki] = {}
    end
    -- the handle of the write of k's final value: its latest certain write of k (order)
    local fw = final[k] and self.puts[vcode(final[k])]
    local fh = fw and self:wkey(fw) == k and select(4, self:wget(fw)) // HS
    local fhmax = -1
    local inv, resp = {}, {}
    local certain, cputs, dels = {}, {}, {}
    local j = 0
    for _, chunk in ipairs(cs) do
      for off = 1, #chunk, WSIZE do
        local f, wi, wr, hs = unpack(WREC, chunk, off)
        j = j + 1
        inv[j], resp[j] = wi, wr
        if f & 2 ~= 0 then
          certain[#certain + 1] = j
          if f & 1 ~= 0 then cputs[#cputs + 1] = j end
          if fh and hs // HS == fh and hs % HS > fhmax then fhmax = hs % HS end
        end
        if f & 1 == 0 then dels[#dels + 1] = j end
      end
    end
    self.ix[k] = {
      M = index(certain, resp, inv),
      D = index(dels, inv, resp),
      CP = index(cputs, resp, inv),
      fhmax = fhmax,
      ncertain = #certain,
    }
  end
end

-- M(k, t): latest invocation of a certain write of k completed before t.
function K:M(k, t) return upto(self.ix[k].M, t) end
-- DR(k, t): latest completion of a delete of k invoked before t (at or before with incl).
function K:DR(k, t, incl) return upto(self.ix[k].D, t, incl) end

-- write id's key, writer, handle, sub-id, certainty, invocation and completion
function K:wkey(id) return self.keys[id // WID] end
function K:wwho(id) return self.hwho[select(4, self:wget(id)) // HS] end
function K:whandle(id) return self.hname[select(4, self:wget(id)) // HS] end
function K:wsub(id) return select(4, self:wget(id)) % HS end
function K:wcertain(id) return self:wget(id) & 2 ~= 0 end
function K:winv(id) return select(2, self:wget(id)) end
function K:wresp(id) return select(3, self:wget(id)) end

--- Could a read of k over [inv, resp] return v (nil/"-" for missing)?  Returns nil or why not.
function K:readable(k, v, inv, resp)
  if not self.ix[k] then return "key outside the key space" end
  local m = self:M(k, inv)
  if v and v ~= "-" then
    local w = self.puts[vcode(v)]
    if not w then return "a value no one wrote" end
    if self:wkey(w) ~= k then return "a value written to " .. self:wkey(w) end
    if self:winv(w) > resp then return "a value whose write began only after the read ended" end
    if m > self:wresp(w) then return "a stale value: a write certainly after it completed before the read began" end
    return nil
  end
  if m == -INF then return nil end
  if self:DR(k, resp) >= m then return nil end
  return "missing, though a certain write completed before the read began and no delete could follow it"
end

-- Was k certainly present during the whole of [t0, t1]?  (a certain put completed before t0,
-- and no delete invoked by t1 could have completed after its invocation)
function K:stable(k, t0, t1)
  local pinv = upto(self.ix[k].CP, t0)
  if pinv == -INF then return false end
  return self:DR(k, t1, true) < pinv
end

-- Pass 2 -------------------------------------------------------------------------------------

local function in_range(k, a)
  local loop, lo, hiop, hi = a[1], a[2], a[3], a[4]
  if loop == "gt" and k <= lo then return false end
  if loop == "gte" and k < lo then return false end
  if hiop == "lt" and k >= hi then return false end
  if hiop == "lte" and k > hi then return false end
  return true
end

function K:check_iter(op)
  local a = op.args
  local rev, limit = a[5] == "1", tonumber(a[6])
  local es = op.entries
  local tag = ("%s iter #%d (%s %s %s %s rev=%s limit=%d)"):format(op.who, op.sub, a[1], a[2], a[3], a[4],
    tostring(rev), limit)
  local seen = {}
  for i, e in ipairs(es) do
    if not in_range(e.k, a) then self:fail("iter", "%s: yielded %s outside its range", tag, e.k) end
    if i > 1 then
      local p = es[i - 1].k
      if (not rev and e.k <= p) or (rev and e.k >= p) then
        self:fail("iter", "%s: entry #%d %s after %s: %s", tag, i, e.k, p,
          seen[e.k] and "a duplicate" or "out of order")
      end
    end
    seen[e.k] = true
    local why = self:readable(e.k, e.v, op.inv, e.t)
    if why then self:fail("iter", "%s: entry %s=%s: %s", tag, e.k, e.v, why) end
  end
  if limit >= 0 and #es > limit then self:fail("iter", "%s: %d entries over its limit", tag, #es) end
  if op.status == "ok" and op.res[1] and tonumber(op.res[1]) ~= #es then
    self:fail("iter", "%s: counted %s entries, logged %d", tag, op.res[1], #es)
  end
  -- the part of the range the iterator covered: all of it when it ran to its end
  local whole = op.status == "ok" and (limit < 0 or #es < limit)
  local last = es[#es] and es[#es].k
  if not whole and not last then return end
  local t1 = op.resp or (es[#es] and es[#es].t)
  if not t1 then return end
  for _, k in ipairs(self.keys) do
    local covered = in_range(k, a) and (whole or (not rev and k <= last) or (rev and k >= last))
    if covered and self:stable(k, op.inv, t1) then
      self.stats.stable = (self.stats.stable or 0) + 1
      if not seen[k] then self:fail("iter", "%s: skipped %s, present for its whole life", tag, k) end
    end
  end
end

-- a batch visible in part must be visible in whole
function K:check_batch(who, inv, args)
  local final = self.final
  local ops = batch_list(args)
  local applied = false
  for _, o in ipairs(ops) do
    if o.v and final[o.k] == o.v then applied = true end
  end
  if not applied then return end
  for _, o in ipairs(ops) do
    local fv = final[o.k]
    local fw = fv and self.puts[vcode(fv)]
    if fv ~= (o.v or nil) then
      if fw and self:wresp(fw) < inv then
        self:fail("batch", "final: batch of %s applied in part: %s=%s predates it", who, o.k, fv)
      elseif not fv and o.v and self.ix[o.k] and self:DR(o.k, INF) < inv then
        self:fail("batch", "final: batch of %s applied in part: %s missing", who, o.k)
      end
    end
  end
end

-- a call whose outcome is known (op.resp nil: never completed)
function K:judge_call(who, op, info, on_call)
  local ok = op.status == "ok"
  if op.resp then
    local bound = info.timeout * 1e6 + 2e6
    if info.node then bound = 3 * info.timeout * 1e6 + 2e6 end
    local lat = op.resp - op.inv
    if op.kind == "iter" then lat = tonumber(op.res[op.status == "err" and 3 or 2]) or 0 end
    on_call(who, op.kind, op.inv, op.resp, lat, bound, ok)
  end
  local st, a = self.stats, op.args
  if op.kind == "batch" or op.kind == "chain" then
    st.batches = st.batches + 1
    self:check_batch(who, op.inv, a)
  elseif op.kind == "get" and ok then
    st.reads = st.reads + 1
    local why = self:readable(a[1], op.res[1], op.inv, op.resp)
    if why then self:fail("read", "%s read %s=%s over [%d, %d]: %s", who, a[1], op.res[1], op.inv, op.resp, why) end
  elseif op.kind == "getm" and ok then
    for i, k in ipairs(a) do
      st.reads = st.reads + 1
      local why = self:readable(k, op.res[i], op.inv, op.resp)
      if why then self:fail("read", "%s read %s=%s over [%d, %d]: %s", who, k, op.res[i], op.inv, op.resp, why) end
    end
  elseif op.kind == "iter" then
    st.iters = st.iters + 1
    op.who = who
    self:check_iter(op)
  end
end

local function no_call() end

--- Pass 2 over one incarnation's log: its reads, iterators and batches, and its calls to on_call.
function K:verify(who, lines, info, on_call)
  on_call = on_call or no_call
  local open = {} -- id -> invocation
  for line in each(lines) do
    local tag = line:match("%S+")
    if tag == "E" then
      local w = words(line)
      local op = open[w[2]]
      if op then op.entries[#op.entries + 1] = { k = w[4], v = w[5], t = tonumber(w[3]) } end
    elseif tag == "I" then
      local w = words(line)
      if w[5] then
        open[w[2]] = { kind = w[5], inv = tonumber(w[3]), args = { table.unpack(w, 6) }, sub = tonumber(w[2]),
          entries = {} }
      end
    elseif tag == "D" then
      local w = words(line)
      local op = open[w[2]]
      if op then
        op.resp, op.status = tonumber(w[3]), w[4]
        op.res = { table.unpack(w, 5) }
        open[w[2]] = nil
        self:judge_call(who, op, info, on_call)
      end
    elseif tag == "O" then
      local w = words(line)
      on_call(who, "open", tonumber(w[5]), tonumber(w[2]), nil, 12e6, nil)
    end
  end
  for _, op in pairs(open) do
    op.resp, op.status = nil, "lost"
    self:judge_call(who, op, info, on_call)
  end
end

--- The final contents: every value written to its key, by a write no certain write followed.
function K:finish()
  local final = self.final
  for k, v in pairs(final) do
    if not self.ix[k] then self:fail("final", "final: key %s outside the key space", k) end
    local w = self.puts[vcode(v)]
    if not w or self:wkey(w) ~= k then self:fail("final", "final: %s=%s, never written to that key", k, v) end
  end
  for _, k in ipairs(self.keys) do
    local ix, fv = self.ix[k], final[k]
    local mall = self:M(k, INF)
    if fv then
      local w = self.puts[vcode(fv)]
      if w and self:wkey(w) == k then
        if mall > self:wresp(w) then
          self:fail("final", "final: %s=%s (by %s), but a certain write of %s followed it: acknowledged write lost",
            k, fv, self:wwho(w), k)
        elseif self:wcertain(w) and ix.fhmax > self:wsub(w) then
          self:fail("final", "final: %s=%s, but its handle %s issued a later acknowledged write of %s: order broken",
            k, fv, self:whandle(w), k)
        end
      end
    elseif ix.ncertain > 0 and self:DR(k, INF) < mall then
      self:fail("final", "final: %s missing, though an acknowledged write of it could not have been deleted", k)
    end
  end
end

return K

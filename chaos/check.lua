-- chaos/check.lua: the chaos soak's checker.  Pure Lua, no I/O of its own.
--
--   local K = dofile("chaos/check.lua")
--   local h = K.new(nkeys, keyname)
--   h:parse(name, lines, info)   one incarnation's log lines (info: { node = bool, stop = {...} })
--   h:check(final)               final: key -> value as read from the directory at the end
--   -> h.errors (list of strings), h.stats
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

function K.new(nkeys, keyname)
  local h = setmetatable({}, K)
  h.nkeys, h.keyname = nkeys, keyname
  h.keys = {}
  for i = 0, nkeys - 1 do h.keys[#h.keys + 1] = keyname(i) end
  h.writes, h.puts = {}, {}      -- key -> list of writes; value -> put
  for _, k in ipairs(h.keys) do h.writes[k] = {} end
  h.reads, h.iters, h.batches = {}, {}, {}
  h.errors, h.nerrors = {}, 0
  h.calls = {}                   -- every completed call: { who, kind, inv, resp, bound }
  h.leaders = {}                 -- { who, from } leader role claims (ends filled by the driver)
  h.closes = {}                  -- { who, t }
  h.stats = { kinds = {}, outcomes = {} }
  return h
end

function K:fail(fmt, ...)
  self.nerrors = self.nerrors + 1
  if #self.errors < 40 then self.errors[#self.errors + 1] = fmt:format(...) end
end

local function words(line)
  local t = {}
  for w in line:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function add_write(h, k, w)
  local list = h.writes[k]
  if not list then return h:fail("%s wrote key %s outside the key space", w.who, k) end
  w.key = k
  list[#list + 1] = w
  if w.v then
    if h.puts[w.v] then h:fail("value %s written twice", w.v) end
    h.puts[w.v] = w
  end
end

--- Parses one incarnation's log.  who: its name (a3i2); info.node: a Node actor.
function K:parse(who, lines, info)
  local open = {}   -- id -> invocation
  local st = self.stats
  for _, line in ipairs(lines) do
    local w = words(line)
    local tag = w[1]
    if tag == "I" then
      local id, t, gen, kind = w[2], tonumber(w[3]), w[4], w[5]
      open[id] = { kind = kind, inv = t, args = { table.unpack(w, 6) }, handle = who .. "g" .. gen,
        sub = tonumber(id), entries = {} }
      st.kinds[kind] = (st.kinds[kind] or 0) + 1
    elseif tag == "E" then
      local op = open[w[2]]
      if op then op.entries[#op.entries + 1] = { k = w[4], v = w[5], t = tonumber(w[3]) } end
    elseif tag == "D" then
      local op = open[w[2]]
      if op then
        op.resp, op.status = tonumber(w[3]), w[4]
        op.res = { table.unpack(w, 5) }
        open[w[2]] = nil
        self:record(who, op, info)
      else
        self:fail("%s: completion of unknown call %s", who, w[2])
      end
    elseif tag == "O" then
      if w[3] == "leader" then self.leaders[#self.leaders + 1] = { who = who, from = tonumber(w[2]) } end
      self.calls[#self.calls + 1] = { who = who, kind = "open", inv = tonumber(w[5]), resp = tonumber(w[2]),
        bound = 12e6 }
    elseif tag == "R" then
      if w[3] == "leader" then self.leaders[#self.leaders + 1] = { who = who, from = tonumber(w[2]) } end
    elseif tag == "C" then
      self.closes[#self.closes + 1] = { who = who, t = tonumber(w[2]) }
    elseif tag == "F" then
      self:fail("%s: open failed: %s", who, table.concat(w, " ", 3))
    elseif tag == "X" then
      self:fail("%s: levelparty.on_error: %s", who, table.concat(w, " ", 3))
    end
  end
  -- calls that never completed (killed, or still waiting at the end): writes of unknown outcome
  for _, op in pairs(open) do
    op.resp, op.status = nil, "lost"
    self:record(who, op, info)
  end
end

local function batch_list(args)
  local out = {}
  for _, a in ipairs(args) do
    local t, k, v = a:match("^(%a):([^:]+):?(.*)$")
    out[#out + 1] = { put = t == "p", k = k, v = t == "p" and v or false }
  end
  return out
end

function K:record(who, op, info)
  local st = self.stats
  local key = op.kind .. " " .. op.status
  st.outcomes[key] = (st.outcomes[key] or 0) + 1
  local ok = op.status == "ok"
  local certain = ok
  local resp = ok and op.resp or INF
  if op.resp then
    local bound = info.timeout * 1e6 + 2e6
    if info.node then bound = 3 * info.timeout * 1e6 + 2e6 end
    local lat = op.resp - op.inv
    if op.kind == "iter" then lat = tonumber(op.res[op.status == "err" and 3 or 2]) or 0 end
    self.calls[#self.calls + 1] = { who = who, kind = op.kind, inv = op.inv, resp = op.resp, lat = lat,
      bound = bound, ok = ok }
  end
  local base = { who = who, inv = op.inv, resp = resp, certain = certain, handle = op.handle, sub = op.sub }
  local function write(k, v)
    local w = {}
    for f, x in pairs(base) do w[f] = x end
    w.v = v
    add_write(self, k, w)
    return w
  end
  local a = op.args
  if op.kind == "put" then
    write(a[1], a[2])
  elseif op.kind == "del" then
    write(a[1], false)
  elseif op.kind == "batch" or op.kind == "chain" then
    local b = { inv = op.inv, resp = resp, who = who, ops = batch_list(a) }
    for _, o in ipairs(b.ops) do write(o.k, o.v).batch = b end
    self.batches[#self.batches + 1] = b
  elseif op.kind == "clear" then
    for _, k in ipairs(self.keys) do
      if k >= a[1] and k < a[2] then write(k, false) end
    end
  elseif op.kind == "get" and ok then
    self.reads[#self.reads + 1] = { who = who, k = a[1], v = op.res[1], inv = op.inv, resp = op.resp }
  elseif op.kind == "getm" and ok then
    for i, k in ipairs(a) do
      self.reads[#self.reads + 1] = { who = who, k = k, v = op.res[i], inv = op.inv, resp = op.resp }
    end
  elseif op.kind == "iter" then
    op.who = who
    self.iters[#self.iters + 1] = op
  end
end

-- Per key indexes: certain writes by completion with the running max of invocations
-- (M(t): the latest invocation of a certain write completed before t), certain puts the
-- same way, deletes by invocation with the running max of completions.
local function index(list, order, field, acc)
  table.sort(list, function(x, y) return x[order] < y[order] end)
  local keys, maxes, m = {}, {}, -INF
  for i, w in ipairs(list) do
    keys[i] = w[order]
    if w[field] > m then m = w[field] end
    maxes[i] = m
  end
  return { keys = keys, maxes = maxes, acc = acc }
end

-- the running max over entries whose order key is < t (or <= t when incl)
local function upto(ix, t, incl)
  local lo, hi = 1, #ix.keys
  local best = 0
  while lo <= hi do
    local mid = (lo + hi) // 2
    local kv = ix.keys[mid]
    if kv < t or (incl and kv == t) then best, lo = mid, mid + 1 else hi = mid - 1 end
  end
  if best == 0 then return -INF end
  return ix.maxes[best]
end

function K:build()
  self.ix = {}
  for _, k in ipairs(self.keys) do
    local certain, cputs, dels = {}, {}, {}
    local handle_max = {}
    for _, w in ipairs(self.writes[k]) do
      if w.certain then
        certain[#certain + 1] = w
        if w.v then cputs[#cputs + 1] = w end
        if (handle_max[w.handle] or -1) < w.sub then handle_max[w.handle] = w.sub end
      end
      if not w.v then dels[#dels + 1] = w end
    end
    local cputs_max = {}
    table.sort(cputs, function(x, y) return x.resp < y.resp end)
    local m, best = -INF, nil
    for i, w in ipairs(cputs) do
      if w.inv > m then m, best = w.inv, w end
      cputs_max[i] = best
    end
    local cp = { keys = {}, best = cputs_max }
    for i, w in ipairs(cputs) do cp.keys[i] = w.resp end
    self.ix[k] = {
      M = index(certain, "resp", "inv"),
      D = index(dels, "inv", "resp"),
      CP = cp,
      handle_max = handle_max,
      ncertain = #certain,
    }
  end
end

-- M(k, t): latest invocation of a certain write of k completed before t.
function K:M(k, t) return upto(self.ix[k].M, t) end
-- DR(k, t): latest completion of a delete of k invoked before t (at or before with incl).
function K:DR(k, t, incl) return upto(self.ix[k].D, t, incl) end

--- Could a read of k over [inv, resp] return v (nil/"-" for missing)?  Returns nil or why not.
function K:readable(k, v, inv, resp)
  if not self.ix[k] then return "key outside the key space" end
  local m = self:M(k, inv)
  if v and v ~= "-" then
    local w = self.puts[v]
    if not w then return "a value no one wrote" end
    if w.key ~= k then return "a value written to " .. w.key end
    if w.inv > resp then return "a value whose write began only after the read ended" end
    if m > w.resp then return "a stale value: a write certainly after it completed before the read began" end
    return nil
  end
  if m == -INF then return nil end
  if self:DR(k, resp) >= m then return nil end
  return "missing, though a certain write completed before the read began and no delete could follow it"
end

-- Was k certainly present during the whole of [t0, t1]?
function K:stable(k, t0, t1)
  local cp = self.ix[k].CP
  local lo, hi, best = 1, #cp.keys, 0
  while lo <= hi do
    local mid = (lo + hi) // 2
    if cp.keys[mid] < t0 then best, lo = mid, mid + 1 else hi = mid - 1 end
  end
  if best == 0 then return false end
  local p = cp.best[best]
  return self:DR(k, t1, true) < p.inv
end

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
    if not in_range(e.k, a) then self:fail("%s: yielded %s outside its range", tag, e.k) end
    if i > 1 then
      local p = es[i - 1].k
      if (not rev and e.k <= p) or (rev and e.k >= p) then
        self:fail("%s: entry #%d %s after %s: %s", tag, i, e.k, p, seen[e.k] and "a duplicate" or "out of order")
      end
    end
    seen[e.k] = true
    local why = self:readable(e.k, e.v, op.inv, e.t)
    if why then self:fail("%s: entry %s=%s: %s", tag, e.k, e.v, why) end
  end
  if limit >= 0 and #es > limit then self:fail("%s: %d entries over its limit", tag, #es) end
  if op.status == "ok" and op.res[1] and tonumber(op.res[1]) ~= #es then
    self:fail("%s: counted %s entries, logged %d", tag, op.res[1], #es)
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
      if not seen[k] then self:fail("%s: skipped %s, present for its whole life", tag, k) end
    end
  end
end

--- Runs every check against the logs and the final contents.
function K:check(final)
  self:build()
  local st = self.stats
  st.reads, st.iters, st.batches = #self.reads, #self.iters, #self.batches
  for _, r in ipairs(self.reads) do
    local why = self:readable(r.k, r.v, r.inv, r.resp)
    if why then self:fail("%s read %s=%s over [%d, %d]: %s", r.who, r.k, r.v, r.inv, r.resp, why) end
  end
  for _, op in ipairs(self.iters) do self:check_iter(op) end
  -- the final contents
  for k, v in pairs(final) do
    if not self.ix[k] then self:fail("final: key %s outside the key space", k) end
    local w = self.puts[v]
    if not w or w.key ~= k then self:fail("final: %s=%s, never written to that key", k, v) end
  end
  for _, k in ipairs(self.keys) do
    local ix, fv = self.ix[k], final[k]
    local mall = self:M(k, INF)
    if fv then
      local w = self.puts[fv]
      if w and w.key == k then
        if mall > w.resp then
          self:fail("final: %s=%s (by %s), but a certain write of %s followed it: acknowledged write lost",
            k, fv, w.who, k)
        elseif w.certain and (ix.handle_max[w.handle] or -1) > w.sub then
          self:fail("final: %s=%s, but its handle %s issued a later acknowledged write of %s: order broken",
            k, fv, w.handle, k)
        end
      end
    elseif ix.ncertain > 0 and self:DR(k, INF) < mall then
      self:fail("final: %s missing, though an acknowledged write of it could not have been deleted", k)
    end
  end
  -- batches: all or nothing
  for _, b in ipairs(self.batches) do
    local applied = false
    for _, o in ipairs(b.ops) do
      if o.v and final[o.k] == o.v then applied = true end
    end
    if applied then
      for _, o in ipairs(b.ops) do
        local fv = final[o.k]
        local fw = fv and self.puts[fv]
        if fv ~= (o.v or nil) then
          if fw and fw.resp < b.inv then
            self:fail("final: batch of %s applied in part: %s=%s predates it", b.who, o.k, fv)
          elseif not fv and o.v and self:DR(o.k, INF) < b.inv then
            self:fail("final: batch of %s applied in part: %s missing", b.who, o.k)
          end
        end
      end
    end
  end
end

return K

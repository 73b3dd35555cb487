-- mk/reliability_table.lua: the table of docs/RELIABILITY.md, "Bad input and
-- faults", generated from spec/fixtures/badinput_cases.lua (the cases
-- spec/badinput_spec.lua runs), so that the doc and the tests cannot drift.
--
--   lua5.4 mk/reliability_table.lua           prints the generated block
--   lua5.4 mk/reliability_table.lua --write   rewrites it in docs/RELIABILITY.md
--                                             (`make reliability`)
--   loadfile("mk/reliability_table.lua")("--lib")  -> { render = fn, replace = fn,
--                                                      BEGIN = s, END = s }
-- badinput_spec compares the block in the doc with render() and fails with
-- the difference.  Plain Lua 5.1-5.4; loads no levelparty module.

local M = {}

M.BEGIN = "<!-- BEGIN badinput table: generated from spec/fixtures/badinput_cases.lua "
  .. "by `make reliability`; do not edit by hand -->"
M.END = "<!-- END badinput table -->"

local ROLES = { both = "leader, follower", leader = "leader", follower = "follower" }

-- A Lua value as the case file writes it (the values cases compare with).
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for i = 1, #v do parts[#parts + 1] = show(v[i]) end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. " = " .. show(v[k]) end
  if #parts == 0 then return "{}" end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- Inline code, safe in a Markdown table cell.
local function code(s)
  s = tostring(s):gsub("|", "\\|")
  if s:find("`", 1, true) then return "`` " .. s .. " ``" end
  return "`" .. s .. "`"
end

local function cell(s) return (tostring(s):gsub("|", "\\|"):gsub("\n", " ")) end

local function input_of(c)
  local parts = {}
  if c.before then parts[#parts + 1] = "after " .. code(c.before) .. ": " end
  if c.scenario then
    parts[#parts + 1] = cell(c.input)
  else
    parts[#parts + 1] = code(c.call or c.run)
  end
  return table.concat(parts)
end

local function result_of(c)
  local r
  if c.scenario then
    r = cell(c.result)
  elseif c.raises then
    r = "raises " .. code(c.raises .. "…")
  elseif c.fails then
    r = code(('nil, "%s…", "%s"'):format(c.msg, c.fails))
  else
    r = "returns " .. (c.result and cell(c.result) or code(show(c.value)))
  end
  if c.also then r = r .. "; the message holds " .. code(c.also) end
  if c.nodata then r = r .. "; no stored bytes in it" end
  if c.check then r = r .. "; then " .. code(c.check) end
  return r
end

--- The generated block (markers included) for the list of cases.
function M.render(cases)
  local out = { M.BEGIN, "", "| # | input | role of the handle | asserted result |", "|---|---|---|---|" }
  local group
  local n = { leader = 0, follower = 0 }
  for i, c in ipairs(cases) do
    if c.group ~= group then
      group = c.group
      out[#out + 1] = ("| | **%s** | | |"):format(cell(group))
    end
    local roles = c.roles or "both"
    if roles ~= "follower" then n.leader = n.leader + 1 end
    if roles ~= "leader" then n.follower = n.follower + 1 end
    out[#out + 1] = ("| %d | %s | %s | %s |"):format(i, input_of(c), ROLES[roles] or cell(roles), result_of(c))
  end
  out[#out + 1] = ""
  out[#out + 1] = ("%d rows: %d with the handle under test a leader, %d a follower; each runs under Lua 5.4 "
    .. "and under LuaJIT (`make test`).")
    :format(#cases, n.leader, n.follower)
  out[#out + 1] = ""
  out[#out + 1] = M.END
  return table.concat(out, "\n") .. "\n"
end

--- doc with its block replaced by block; nil, msg when doc has no block.
function M.replace(doc, block)
  local b = doc:find(M.BEGIN, 1, true)
  local _, e = doc:find(M.END, 1, true)
  if not b or not e then return nil, "no generated block (" .. M.BEGIN .. " ... " .. M.END .. ")" end
  local after = doc:sub(e + 1):gsub("^\n", "")
  return doc:sub(1, b - 1) .. block .. after
end

--- The block as the doc has it now, or nil.
function M.current(doc)
  local b = doc:find(M.BEGIN, 1, true)
  local _, e = doc:find(M.END, 1, true)
  if not b or not e then return nil end
  return doc:sub(b, e) .. "\n"
end

if ... == "--lib" then return M end

local root = (arg and arg[0] or ""):match("^(.*)/mk/[^/]*$") or "."
local cases = assert(dofile(root .. "/spec/fixtures/badinput_cases.lua"))
local block = M.render(cases)
if arg[1] == "--write" then
  local path = root .. "/docs/RELIABILITY.md"
  local f = assert(io.open(path, "rb"))
  local doc = f:read("*a")
  f:close()
  local new = assert(M.replace(doc, block))
  if new ~= doc then
    f = assert(io.open(path, "wb"))
    f:write(new)
    f:close()
    print("reliability_table: " .. path .. " updated (" .. #cases .. " rows)")
  else
    print("reliability_table: " .. path .. " is up to date (" .. #cases .. " rows)")
  end
else
  io.write(block)
end

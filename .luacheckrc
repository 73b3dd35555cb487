-- levelparty's Lua lint (`make lint`).  The module runs on Lua 5.1 (LuaJIT)
-- through 5.4, so "max" allows what any of them has; specs add busted.
std = "max"
max_line_length = 120
codes = true
exclude_files = { "node_modules/**", "build/**", ".luarocks/**" }
files["spec/**/*_spec.lua"] = { std = "+busted" }
files["spec/*_helper.lua"] = { std = "+busted" }
files["spec/helper.lua"] = { std = "+busted" }
-- LuaLS definition files: stubs whose arguments only carry annotations
files["types/*.lua"] = { ignore = { "212", "241" } }

rockspec_format = "3.0"
package = "levelparty"
version = "0.1.0-1"

-- `make rock` packs this with the working tree as v0.1.0.tar.gz (mk/pack.sh),
-- so that `luarocks install ./levelparty-0.1.0-1.src.rock` needs no network.
source = {
  url = "https://github.com/levelparty/levelparty/archive/v0.1.0.tar.gz",
  dir = "levelparty-0.1.0",
}

description = {
  summary = "Several processes share one LevelDB directory (level-party for Lua)",
  detailed = [[
levelparty lets several processes open the same LevelDB directory. The process
that holds LevelDB's LOCK becomes the leader and serves the others over a unix
socket in the directory, speaking the wire protocol of Node's level-party 5.1.1
(multileveldown 5.0.1). When the leader dies a follower takes over; pending
requests are replayed and iterators resume where they stopped. Tested with
Lua 5.4 and LuaJIT 2.1, with or without luv, and in nginx workers (the Lua
module, LuaJIT); other Lua versions are not tested.
]],
  license = "MIT",
  homepage = "https://github.com/levelparty/levelparty",
  labels = { "leveldb", "database", "ipc", "libuv" },
}

-- Only lua itself: luarocks.org may be unreachable, and luv/busted are optional
-- at run time (the Debian packages lua-luv and lua-busted do for tests).
-- "lua 5.1" is how LuaJIT shows to luarocks; plain Lua 5.1 to 5.3 may build but
-- are not tested.
dependencies = {
  "lua >= 5.1, < 5.5",
}

external_dependencies = {
  LEVELDB = { header = "leveldb/c.h", library = "leveldb" },
  LIBUV = { header = "uv.h", library = "uv" },
}

build = {
  type = "builtin",
  modules = {
    levelparty = "lua/levelparty/init.lua",
    ["levelparty.encoding"] = "lua/levelparty/encoding.lua",
    ["levelparty.iterator"] = "lua/levelparty/iterator.lua",
    ["levelparty.cqueues"] = "lua/levelparty/cqueues.lua",
    ["levelparty.loop"] = "lua/levelparty/loop.lua",
    ["levelparty.luv"] = "lua/levelparty/luv.lua",
    ["levelparty.ngx"] = "lua/levelparty/ngx.lua",
    ["levelparty.sublevel"] = "lua/levelparty/sublevel.lua",
    ["levelparty.cli"] = "lua/levelparty/cli.lua",
    ["levelparty.core"] = {
      sources = {
        "src/buf.c",
        "src/wire.c",
        "src/engine.c",
        "src/session.c",
        "src/server.c",
        "src/client.c",
        "src/sockfile.c",
        "src/worker.c",
        "src/party.c",
        "src/lua_core.c",
      },
      libraries = { "leveldb", "uv", "pthread" },
      incdirs = { "$(LEVELDB_INCDIR)", "$(LIBUV_INCDIR)" },
      libdirs = { "$(LEVELDB_LIBDIR)", "$(LIBUV_LIBDIR)" },
      defines = { "_GNU_SOURCE" },
    },
  },
  install = {
    bin = { levelparty = "bin/levelparty" },
  },
  -- LuaLS type annotations (types/levelparty.lua) and the docs, in the rock's
  -- directory: `luarocks show --rock-dir levelparty`
  copy_directories = { "docs", "types" },
}

-- `luarocks test` in a checkout: busted under the interpreter luarocks runs
-- (mk/rocktest.lua builds the core for it first); arguments pick spec files.
test = {
  type = "command",
  script = "mk/rocktest.lua",
}

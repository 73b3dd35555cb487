# levelparty: build, tests, benchmarks.  GNU make.
#
#   make build      build/5.4/levelparty/core.so and build/luajit/levelparty/core.so,
#                   build/5.4/liblevelparty.a and build/luajit/liblevelparty.a
#                   (include/levelparty.h; the Lua modules embedded)
#   make test       C tests, fuzz smoke, short chaos soak, busted (lua5.4 + luajit),
#                   luarocks check (make test SPEC=spec/foo_spec.lua, make test
#                   SPEC=chaos for the chaos soak alone, make test LUA=5.4|luajit)
#   make sanitize   the same C tests and the lua5.4 specs under ASan+UBSan, then
#                   the C tests and the multi-process specs under TSan, then the
#                   C tests under valgrind memcheck (a developer pass; CI runs
#                   `make test`)
#   make rock       levelparty-X.Y.Z-N.src.rock (mk/pack.sh), then the luarocks
#                   install check alone (mk/rockcheck.sh)
#   make lint       C format (clang-format 14), luacheck, no tab-indented Lua
#                   (mk/lint.sh; `make test` runs it too)
#   make reliability  regenerate the bad-input table of docs/RELIABILITY.md from
#                   spec/fixtures/badinput_cases.lua (badinput_spec checks it)
#   make fuzz       each libFuzzer target (fuzz/*.c) for FUZZ_SECONDS
#   make demo | bench | chaos | deps | clean
#
# Every knob uses ?= so it can be overridden: make OPT=-O0 WERROR= CC=clang.
# CFLAGS/CPPFLAGS/LDFLAGS are never set here, only appended when given.

CC            ?= cc
CLANG         ?= clang
LUA54_INCDIR  ?= /usr/include/lua5.4
LUAJIT_INCDIR ?= /usr/include/luajit-2.1
OPT           ?= -O2 -g
WERROR        ?= -Werror
WARN          ?= -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
                 -Wpointer-arith -Wcast-qual -Wwrite-strings -Wundef
SAN           ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
TSAN          ?= -fsanitize=thread
LIBS          ?= -lleveldb -luv -lpthread
FUZZ_ITERS    ?= 100000
FUZZ_SESSION_ITERS ?= 4000
FUZZ_CLIENT_ITERS  ?= 10000
FUZZ_SECONDS  ?= 60
SPEC          ?=
LUA           ?= all

BASE = -std=gnu99 -D_GNU_SOURCE -fPIC -pthread $(OPT) $(WARN) $(WERROR) $(CPPFLAGS) $(CFLAGS)

# src/lua_embed.c (levelparty_openlibs and the embedded Lua sources) is in
# liblevelparty.a only, never in core.so.
EMBEDSRCS := src/lua_embed.c
SRCS  := $(filter-out $(EMBEDSRCS),$(wildcard src/*.c))
LUAMODS := $(sort $(wildcard lua/levelparty/*.lua))
LUA54   ?= lua5.4
HDRS  := $(wildcard src/*.h)
# Files that see a lua_State: lua_*.c and anything including a Lua header.
# The rest (buf, wire, engine, ...) is what C tests and the fuzzer link.
LUASRCS := $(sort $(filter src/lua_%.c,$(SRCS)) \
  $(shell grep -lE '[<"](lua|lauxlib|lualib|luajit|compat)\.h[>"]' $(SRCS) /dev/null))
CSRCS := $(filter-out $(LUASRCS),$(SRCS))

# Object files per variant.  Only Lua files get the Lua headers; LuaJIT is
# announced both by -DLP_LUAJIT and by force-including luajit.h.
VARIANTS := 5.4 luajit asan tsan
VFLAGS_5.4      :=
VFLAGS_luajit   := -DLP_LUAJIT=1
VFLAGS_asan     := -O1 $(SAN)
VFLAGS_tsan     := -O1 $(TSAN)
LUAFLAGS_5.4    := -isystem $(LUA54_INCDIR)
LUAFLAGS_luajit := -isystem $(LUAJIT_INCDIR) -include luajit.h
LUAFLAGS_asan   := -isystem $(LUA54_INCDIR)
LUAFLAGS_tsan   := -isystem $(LUA54_INCDIR)
objs  = $(patsubst src/%.c,build/$(1)/obj/%.o,$(2))
variant = $(word 2,$(subst /, ,$@))

.PHONY: all build deps test sanitize rock lint reliability demo bench fuzz clean chaos
.DELETE_ON_ERROR:
.SECONDEXPANSION:

all: build

deps:
	@sh mk/deps.sh

build: build/5.4/levelparty/core.so build/luajit/levelparty/core.so \
  build/5.4/liblevelparty.a build/luajit/liblevelparty.a

$(foreach v,$(VARIANTS),$(call objs,$(v),$(SRCS))): build/%.o: \
    src/$$(notdir $$*).c $(HDRS) Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) $(VFLAGS_$(variant)) \
	  $(if $(filter $<,$(LUASRCS)),$(LUAFLAGS_$(variant))) -c $< -o $@

# The module exports luaopen_levelparty_core only (mk/exports.map).
build/%/levelparty/core.so: $$(call objs,$$*,$(SRCS)) mk/exports.map
	@mkdir -p $(@D)
	$(CC) -shared -pthread $(VFLAGS_$*) -o $@ $(filter %.o,$^) \
	  -Wl,--version-script=mk/exports.map $(LDFLAGS) $(LIBS)

# The static library for hosts that link levelparty in (include/levelparty.h):
# every object of core.so plus levelparty_openlibs, which preloads the core
# and the Lua modules, embedded by mk/embed_lua.lua.
build/embed/lp_embed_lua.h: mk/embed_lua.lua $(LUAMODS)
	@mkdir -p $(@D)
	$(LUA54) mk/embed_lua.lua $@ $(LUAMODS)

build/%/obj/lua_embed.o: src/lua_embed.c build/embed/lp_embed_lua.h include/levelparty.h \
    src/compat.h Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) $(VFLAGS_$*) $(LUAFLAGS_$*) -Iinclude -Ibuild/embed -c $< -o $@

build/%/liblevelparty.a: $$(call objs,$$*,$(SRCS)) build/%/obj/lua_embed.o
	@rm -f $@
	ar rcs $@ $^

# examples/embed: a C host with Lua 5.4 and liblevelparty.a linked in
# statically, and no -Wl,-E (`make test` runs it; README.md, "Embedding
# levelparty in a C program").
LUA54_STATIC ?= $(shell $(CC) -print-file-name=liblua5.4.a)
build/5.4/examples/embed_host: examples/embed/host.c build/5.4/liblevelparty.a include/levelparty.h
	@mkdir -p $(@D)
	$(CC) $(BASE) -Iinclude -isystem $(LUA54_INCDIR) -o $@ $< build/5.4/liblevelparty.a \
	  $(LUA54_STATIC) $(LDFLAGS) $(LIBS) -lm -ldl

# A test-only Lua module for spec/fork_spec.lua (fork, waitpid, _exit).
build/%/lptest_fork.so: test/lua/lptest_fork.c src/compat.h Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) -shared $(VFLAGS_$*) $(LUAFLAGS_$*) -Isrc -o $@ $<

# C unit tests and the standalone fuzz driver link the Lua-free sources only.
build/test/%: test/%.c $(call objs,5.4,$(CSRCS)) $(wildcard test/*.h)
	@mkdir -p $(@D)
	$(CC) $(BASE) -Isrc -o $@ $(filter-out %.h,$^) $(LDFLAGS) $(LIBS)

build/asan/test/%: test/%.c $(call objs,asan,$(CSRCS)) $(wildcard test/*.h)
	@mkdir -p $(@D)
	$(CC) $(BASE) -O1 $(SAN) -Isrc -o $@ $(filter-out %.h,$^) $(LDFLAGS) $(LIBS)

build/tsan/test/%: test/%.c $(call objs,tsan,$(CSRCS)) $(wildcard test/*.h)
	@mkdir -p $(@D)
	$(CC) $(BASE) -O1 $(TSAN) -Isrc -o $@ $(filter-out %.h,$^) $(LDFLAGS) $(LIBS)

# The threads test host (test/threads_test.c) embeds Lua 5.4 and requires
# levelparty from build/VARIANT, as an application would: it links liblua5.4
# and needs that variant's core.so, not the Lua-free objects above.
LUA54_LIB ?= -llua5.4
THREADS_DEPS = test/threads_test.c test/tap.h src/private.h Makefile
threads_host = $(CC) $(BASE) $(1) -isystem $(LUA54_INCDIR) -Isrc -DLP_ROOT='"$(CURDIR)"' \
  -DLP_VARIANT='"$(2)"' -o $@ $< $(LDFLAGS) $(LUA54_LIB) -lpthread

build/test/threads_test: $(THREADS_DEPS) build/5.4/levelparty/core.so
	@mkdir -p $(@D)
	$(call threads_host,,5.4)

build/asan/test/threads_test: $(THREADS_DEPS) build/asan/levelparty/core.so
	@mkdir -p $(@D)
	$(call threads_host,-O1 $(SAN),asan)

build/tsan/test/threads_test: $(THREADS_DEPS) build/tsan/levelparty/core.so
	@mkdir -p $(@D)
	$(call threads_host,-O1 $(TSAN),tsan)

# The fuzz targets (fuzz/fuzz_NAME.c): the codec, the leader's session over
# LevelDB, the follower's client core.  Each has a standalone driver (gcc,
# ASan+UBSan, -DLP_FUZZ_STANDALONE: generated inputs, `make test` runs it
# briefly) and a libFuzzer build (clang; `make fuzz`).
FUZZERS := wire session client

$(FUZZERS:%=build/fuzz/fuzz_%_standalone): build/fuzz/fuzz_%_standalone: fuzz/fuzz_%.c \
    $(call objs,asan,$(CSRCS)) test/tap.h fuzz/standalone.h
	@mkdir -p $(@D)
	$(CC) $(BASE) -O1 $(SAN) -DLP_FUZZ_STANDALONE -Isrc -o $@ $(filter-out %.h,$^) $(LDFLAGS) $(LIBS)

# libFuzzer: clang instruments every Lua-free source for coverage.
$(FUZZERS:%=build/fuzz/fuzz_%): build/fuzz/fuzz_%: fuzz/fuzz_%.c $(CSRCS) $(HDRS)
	@mkdir -p $(@D)
	$(CLANG) -std=gnu99 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -Isrc -o $@ $(filter %.c,$^) $(LDFLAGS) $(LIBS)

# The C benches that open LevelDB themselves take levelparty's default options
# from bench/bench.h, which reads LP_DEFAULT_BLOOM_BITS from src/private.h.
BENCH_HDRS := bench/bench.h src/private.h

build/bench/embed_get: bench/embed_get.c build/5.4/liblevelparty.a include/levelparty.h \
    $(BENCH_HDRS) Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) -Iinclude -Isrc -isystem $(LUA54_INCDIR) -o $@ $< build/5.4/liblevelparty.a \
	  $(LUA54_STATIC) $(LDFLAGS) $(LIBS) -lm -ldl

build/bench/%: bench/%.c $(BENCH_HDRS) Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) -Isrc -o $@ $< $(LDFLAGS) $(LIBS)

# The runner builds what it runs and turns build failures into counted failures.
test: deps
	@SPEC="$(SPEC)" LUA="$(LUA)" MAKE="$(MAKE)" FUZZ_ITERS="$(FUZZ_ITERS)" \
	  FUZZ_SESSION_ITERS="$(FUZZ_SESSION_ITERS)" FUZZ_CLIENT_ITERS="$(FUZZ_CLIENT_ITERS)" \
	  bash mk/runtests.sh test

sanitize: deps
	@SPEC="$(SPEC)" LUA=5.4 MAKE="$(MAKE)" bash mk/runtests.sh sanitize

rock: deps
	bash mk/pack.sh
	bash mk/rockcheck.sh $(LUA)

lint: deps
	@bash mk/lint.sh

reliability:
	lua5.4 mk/reliability_table.lua --write

demo: deps build
	sh mk/luaenv.sh 5.4 lua5.4 examples/demo.lua

bench: deps build $(addprefix build/bench/,raw_leveldb sock_floor embed_get reopen_leveldb ngx_floor failover_watch)
	sh mk/luaenv.sh 5.4 lua5.4 bench/run.lua

# Each target for FUZZ_SECONDS: new inputs go to build/fuzz/corpus/NAME, the
# seeds and regressions of fuzz/corpus/NAME are read too, a crash is saved as
# build/fuzz/NAME-crash-*.
fuzz: deps $(FUZZERS:%=build/fuzz/fuzz_%)
	@set -e; for f in $(FUZZERS); do \
	  mkdir -p build/fuzz/corpus/$$f; \
	  echo "fuzz_$$f: $(FUZZ_SECONDS) s"; \
	  build/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/$$f- build/fuzz/corpus/$$f \
	    $$(test -d fuzz/corpus/$$f && echo fuzz/corpus/$$f); \
	done

# Also removes what `luarocks make` leaves in the source tree.
clean:
	rm -rf build
	rm -f src/*.o levelparty/core.so *.rock
	-@rmdir levelparty 2>/dev/null || true

# The chaos soak (docs/RELIABILITY.md, "Chaos soak"): SIGKILL/SIGSTOP/close against PROCS
# processes for DURATION seconds; SEED replays a schedule.  `make test` runs a short one
# (mk/runtests.sh, chaos_pass: CHAOS_SECONDS per seed of CHAOS_SEEDS).
DURATION ?= 60
PROCS    ?= 6
SEED     ?=
chaos: deps build
	@sh mk/luaenv.sh 5.4 lua5.4 chaos/driver.lua --duration $(DURATION) --procs $(PROCS) \
	  $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

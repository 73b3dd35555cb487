# levelparty: build, tests, benchmarks.  GNU make.
#
#   make build      build/5.4/levelparty/core.so and build/luajit/levelparty/core.so
#   make test       C tests, fuzz smoke, busted (lua5.4 + luajit), luarocks check
#                   (make test SPEC=spec/foo_spec.lua, make test LUA=5.4|luajit)
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
SAN           ?= -fsanitize=address,undefined -fno-omit-frame-pointer
TSAN          ?= -fsanitize=thread
LIBS          ?= -lleveldb -luv -lpthread
FUZZ_ITERS    ?= 100000
FUZZ_SESSION_ITERS ?= 4000
FUZZ_CLIENT_ITERS  ?= 10000
FUZZ_SECONDS  ?= 60
SPEC          ?=
LUA           ?= all

BASE = -std=gnu99 -D_GNU_SOURCE -fPIC -pthread $(OPT) $(WARN) $(WERROR) $(CPPFLAGS) $(CFLAGS)

SRCS  := $(wildcard src/*.c)
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

build: build/5.4/levelparty/core.so build/luajit/levelparty/core.so

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

# The fuzz targets (fuzz/fuzz_NAME.c): the codec, the leader's session over
# LevelDB, the follower's client core.  Each has a standalone driver (gcc,
# ASan+UBSan, -DLP_FUZZ_STANDALONE: generated inputs, `make test` runs it
# briefly) and a libFuzzer build (clang; `make fuzz`).
FUZZERS := wire session client

$(FUZZERS:%=build/fuzz/fuzz_%_standalone): build/fuzz/fuzz_%_standalone: fuzz/fuzz_%.c \
    $(call objs,asan,$(CSRCS)) test/tap.h
	@mkdir -p $(@D)
	$(CC) $(BASE) -O1 $(SAN) -DLP_FUZZ_STANDALONE -Isrc -o $@ $(filter-out %.h,$^) $(LDFLAGS) $(LIBS)

# libFuzzer: clang instruments every Lua-free source for coverage.
$(FUZZERS:%=build/fuzz/fuzz_%): build/fuzz/fuzz_%: fuzz/fuzz_%.c $(CSRCS) $(HDRS)
	@mkdir -p $(@D)
	$(CLANG) -std=gnu99 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined \
	  -Isrc -o $@ $(filter %.c,$^) $(LDFLAGS) $(LIBS)

build/bench/%: bench/%.c Makefile
	@mkdir -p $(@D)
	$(CC) $(BASE) -o $@ $< $(LDFLAGS) $(LIBS)

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

bench: deps build $(addprefix build/bench/,raw_leveldb sock_floor reopen_leveldb ngx_floor)
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
# processes for DURATION seconds; SEED replays a schedule.  Not part of `make test`.
DURATION ?= 60
PROCS    ?= 6
SEED     ?=
chaos: deps build
	@sh mk/luaenv.sh 5.4 lua5.4 chaos/driver.lua --duration $(DURATION) --procs $(PROCS) \
	  $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

#!/usr/bin/env bash
# mk/runtests.sh MODE   (called by `make test` / `make sanitize`)
#
# MODE test:     lint, build, then test/*_test.c, the standalone fuzz passes,
#                the short chaos soak, busted under lua5.4 and luajit, the
#                luarocks install check.  SPEC=chaos: the chaos soak alone.
# MODE sanitize: the same C tests and the lua5.4 specs, ASan+UBSan builds;
#                then the C tests and the multi-process specs under
#                ThreadSanitizer; then the C tests and two API specs under
#                valgrind memcheck.
# Environment: SPEC (spec files to run; skips lint, the C tests, fuzz, chaos
# and the luarocks check), LUA (all | 5.4 | luajit), MAKE, FUZZ_ITERS (fuzz_wire),
# FUZZ_SESSION_ITERS, FUZZ_CLIENT_ITERS, TEST_TIMEOUT (seconds per C test),
# VALGRIND_TIMEOUT (the same under valgrind), BUSTED_TIMEOUT (seconds per busted
# run), TSAN_SPECS and VALGRIND_SPECS (the specs of those passes),
# CHAOS_SECONDS, CHAOS_SEEDS, CHAOS_TIMEOUT and CHAOS_ARGS (the chaos soak, see
# chaos_pass), and for MODE sanitize SANITIZE_PASSES (any of asan tsan
# valgrind; all three unless set), e.g. `SANITIZE_PASSES=asan make sanitize
# SPEC=spec/interop_spec.lua` runs that one spec file under ASan only.
#
# Counting: every `ok -` / `not ok -` line of a C test, every busted test
# (TAP), each lint check (mk/lint.sh), each fuzz target, the chaos soak and
# the luarocks check as one test each.  A program
# that crashes, times out or exits non-zero without a `not ok` line counts as
# one more failure.  The last line is always "N passed, N failed" (plus
# ", N skipped" when busted reported pending tests); exit 1 on any failure.
set -u
cd "$(dirname "$0")/.."
MODE=${1:-test}
SPEC=${SPEC:-}
LUA=${LUA:-all}
MAKE=${MAKE:-make}
FUZZ_ITERS=${FUZZ_ITERS:-100000}
FUZZ_SESSION_ITERS=${FUZZ_SESSION_ITERS:-4000}
FUZZ_CLIENT_ITERS=${FUZZ_CLIENT_ITERS:-10000}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
VALGRIND_TIMEOUT=${VALGRIND_TIMEOUT:-1200}
BUSTED_TIMEOUT=${BUSTED_TIMEOUT:-1200}
LOGS=build/logs/$MODE
mkdir -p "$LOGS"

pass=0 fail=0 skip=0
failed=()

finish() {
  echo
  if [ ${#failed[@]} -gt 0 ]; then
    echo "failures:"
    printf '  %s\n' "${failed[@]}"
  fi
  if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
  else
    echo "$pass passed, $fail failed"
  fi
  [ "$fail" -eq 0 ]
  exit $?
}

# bad NAME: count one failure.
bad() { fail=$((fail + 1)); failed+=("$1"); }

# build TARGET...: make quietly; on failure show the compiler output.
build() {
  local log="$LOGS/make.log"
  if ! $MAKE --no-print-directory -s "$@" >"$log" 2>&1; then
    tail -n 60 "$log"
    return 1
  fi
}

# run_c NAME BIN [ENV...]: one C test program; counts its ok/not ok lines.
# C_TAG names the pass (in the test's name and log), C_RUNNER (an array) is
# a command to run BIN under, C_TIMEOUT overrides TEST_TIMEOUT, C_ARGS (an
# array) are BIN's arguments.
C_TAG= C_RUNNER=() C_TIMEOUT= C_ARGS=()
run_c() {
  local name="$1${C_TAG:+ ($C_TAG)}" log="$LOGS/${C_TAG:+$C_TAG-}$1.log" bin=$2; shift 2
  local rc ok nok limit=${C_TIMEOUT:-$TEST_TIMEOUT}
  env "$@" timeout "$limit" ${C_RUNNER[@]+"${C_RUNNER[@]}"} "$bin" ${C_ARGS[@]+"${C_ARGS[@]}"} >"$log" 2>&1
  rc=$?
  ok=$(grep -c '^ok - ' "$log")
  nok=$(grep -c '^not ok - ' "$log")
  pass=$((pass + ok))
  fail=$((fail + nok))
  while IFS= read -r line; do failed+=("$name: ${line#not ok - }"); done \
    < <(grep '^not ok - ' "$log")
  echo "$name: $ok ok, $nok not ok (exit $rc)"
  if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
    [ "$rc" -eq 124 ] && bad "$name: timed out after ${limit}s" \
                      || bad "$name: exit status $rc"
  elif [ "$rc" -eq 0 ] && [ "$ok" -eq 0 ] && [ "$nok" -eq 0 ]; then
    bad "$name: printed no ok lines"
  fi
  if [ "$rc" -ne 0 ] || [ "$nok" -gt 0 ]; then
    grep -v '^ok - ' "$log" | tail -n 40 | sed 's/^/  | /'
  fi
}

c_tests() {
  local prefix=$1; shift   # build/test or build/asan/test
  local t
  echo "== C tests ($MODE${C_TAG:+, $C_TAG}) =="
  for t in test/*_test.c; do
    [ -e "$t" ] || { echo "(no test/*_test.c)"; return; }
    t=$(basename "$t" .c)
    if build "$prefix/$t"; then run_c "$t" "$prefix/$t" "$@"
    else bad "$t: does not compile"; fi
  done
}

# examples/embed (README.md, "Embedding levelparty in a C program"): the host
# with Lua 5.4 and liblevelparty.a linked in statically (it must export no Lua
# symbol), EMBED_THREADS threads (a lua_State each) of 4 coroutines each on
# its own epoll loop: as the leader; as a follower of a leader in another
# process (the calls wait, the host's ticker runs meanwhile); and while that
# leader is killed half way (every thread is half way at a barrier before the
# kill and goes on after it: each must end as a leader).  Each run prints one
# TAP line per thread.
EMBED_THREADS=${EMBED_THREADS:-4}
embed_example() {
  local bin=build/5.4/examples/embed_host dir hpid i
  echo "== examples/embed =="
  if ! build "$bin"; then bad "embed_host: does not compile"; return; fi
  if nm -D "$bin" 2>/dev/null | grep -q ' lua_'; then
    bad "embed_host: exports Lua symbols (not a static host)"
  else
    pass=$((pass + 1)); echo "embed_host: no Lua symbol exported"
  fi
  dir=$(mktemp -d /tmp/levelparty-embed.XXXXXX)
  C_ARGS=("$dir/alone" "$EMBED_THREADS" 4 300)
  run_c embed_leader "$bin"
  # a leader in another process, until its stdin (a fifo whose one writer is
  # fd 3 here: opened read-write, it does not block) closes; started from a
  # subshell, so that its SIGKILL is no job of this shell's
  mkfifo "$dir/db.in"
  exec 3<>"$dir/db.in"
  hpid=$(sh -c 'sh mk/luaenv.sh 5.4 lua5.4 spec/fixtures/holder.lua "$1" >"$1.out" 2>&1 <"$1.in" 3>&- &
    echo $!' sh "$dir/db")
  for i in $(seq 200); do grep -q '^leader' "$dir/db.out" && break; sleep 0.1; done
  if ! grep -q '^leader' "$dir/db.out"; then
    bad "embed: the leader process did not start"; cat "$dir/db.out"
  else
    C_ARGS=("$dir/db" "$EMBED_THREADS" 4 300)
    run_c embed_follower "$bin"
    C_ARGS=("$dir/db" "$EMBED_THREADS" 4 600 "$hpid")
    run_c embed_failover "$bin"
  fi
  C_ARGS=()
  exec 3>&-
  kill -9 "$hpid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$dir"
}

# lint: each check of mk/lint.sh is one test; a failure shows its output.
lint() {
  local check log
  echo "== lint =="
  for check in clang-format luacheck indentation; do
    log="$LOGS/lint-$check.log"
    if bash mk/lint.sh "$check" >"$log" 2>&1; then
      pass=$((pass + 1)); cat "$log"
    else
      bad "lint: $check"; head -n 60 "$log"
    fi
  done
}

# fuzz_one NAME ARGS...: one standalone fuzz driver (fuzz/fuzz_NAME.c), one test.
fuzz_one() {
  local name=fuzz_$1 log="$LOGS/fuzz_$1.log"; shift
  [ -e "fuzz/$name.c" ] || { echo "(no fuzz/$name.c)"; return; }
  if ! build "build/fuzz/${name}_standalone"; then bad "$name: does not compile"; return; fi
  if timeout "$TEST_TIMEOUT" "build/fuzz/${name}_standalone" "$@" >"$log" 2>&1; then
    pass=$((pass + 1)); echo "$name: ok ($(grep -m1 '^ok - ' "$log" | sed 's/^ok - [^:]*: //'))"
  else
    bad "$name: exit status $?"; tail -n 40 "$log" | sed 's/^/  | /'
  fi
}

# Each driver replays its regression corpus (fuzz/corpus/NAME), then runs
# generated inputs (fuzz/standalone.h); a few seconds of CPU each.
fuzz_pass() {
  echo "== fuzz (standalone, ASan+UBSan) =="
  fuzz_one wire "$FUZZ_ITERS"
  fuzz_one session "$FUZZ_SESSION_ITERS" 1 fuzz/corpus/session
  fuzz_one client "$FUZZ_CLIENT_ITERS" 1 fuzz/corpus/client
}

# The short chaos soak (chaos/driver.lua; docs/RELIABILITY.md, "Chaos soak"),
# one test: a run of CHAOS_SECONDS per seed of CHAOS_SEEDS ("random" draws
# one), with the actors' call timeout CHAOS_TIMEOUT (the driver's bounds
# scale with it), and CHAOS_ARGS (more driver arguments: --lie must fail).
# Each run prints its seed; a failed one shows the driver's
# report (its FAIL lines and summary) and how to replay it.  Logs stay in
# build/chaos/SEED/.
CHAOS_SECONDS=${CHAOS_SECONDS:-30}
CHAOS_SEEDS=${CHAOS_SEEDS:-101 random}
CHAOS_TIMEOUT=${CHAOS_TIMEOUT:-1}
chaos_pass() {
  local seed log rc bad_seeds=()
  echo "== chaos (${CHAOS_SECONDS} s per seed: $CHAOS_SEEDS) =="
  if ! build build/5.4/levelparty/core.so build/luajit/levelparty/core.so; then
    bad "chaos: core.so does not build"
    return
  fi
  for seed in $CHAOS_SEEDS; do
    [ "$seed" = random ] && seed=$(((RANDOM << 15 | RANDOM) % 1000000 + 1))
    log="$LOGS/chaos-$seed.log"
    echo "chaos: seed $seed"
    timeout $((CHAOS_SECONDS * 4 + 300)) sh mk/luaenv.sh 5.4 lua5.4 chaos/driver.lua \
      --duration "$CHAOS_SECONDS" --seed "$seed" --timeout "$CHAOS_TIMEOUT" ${CHAOS_ARGS:-} \
      </dev/null >"$log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
      grep -E '^chaos: (kills|failovers|PASSED)' "$log" | sed 's/^/  /'
    else
      bad_seeds+=("$seed")
      [ "$rc" -eq 124 ] && echo "  timed out after $((CHAOS_SECONDS * 4 + 300)) s"
      echo "  FAILED (exit $rc), seed $seed: make chaos SEED=$seed DURATION=$CHAOS_SECONDS" \
        "CHAOS_ARGS='--timeout $CHAOS_TIMEOUT${CHAOS_ARGS:+ $CHAOS_ARGS}'; logs in build/chaos/$seed/" \
        "(events.log: the driver's kills, stops, exits, LOCK holders), $log"
      grep -vE '^chaos: (seed|all open|chaos over)' "$log" | head -n 80 | sed 's/^/  | /'
    fi
  done
  if [ ${#bad_seeds[@]} -eq 0 ]; then
    pass=$((pass + 1))
  else
    bad "chaos: seed ${bad_seeds[*]} failed (make chaos SEED=...)"
  fi
}

# busted_suite VARIANT INTERP [ENV...]
# BUSTED_TAG names the run (its log and failures); BUSTED_FILES overrides
# the spec files (SPEC, when given, still wins); BUSTED_ARG is one more
# argument for busted.
busted_suite() {
  local v=$1 interp=$2; shift 2
  local tag=${BUSTED_TAG:-$v}
  local log="$LOGS/busted-$tag.tap" rc ok nok sk files
  echo "== busted ($interp, build/$v${BUSTED_TAG:+, $BUSTED_TAG}) =="
  if [ -n "$SPEC" ]; then files=($SPEC)
  elif [ -n "${BUSTED_FILES:-}" ]; then files=($BUSTED_FILES)
  else files=(spec/*_spec.lua); fi
  [ -e "${files[0]}" ] || { echo "(no spec files)"; return; }
  if ! build "build/$v/levelparty/core.so"; then bad "busted $v: core.so does not build"; return; fi
  timeout "$BUSTED_TIMEOUT" sh mk/luaenv.sh "$v" env "$@" "$interp" /usr/bin/busted \
    -o TAP ${BUSTED_ARG:+"$BUSTED_ARG"} "${files[@]}" </dev/null >"$log" 2>&1
  rc=$?
  sk=$(grep -cE '^ok [0-9]+ - # SKIP' "$log")
  ok=$(($(grep -cE '^ok [0-9]+ ' "$log") - sk))
  nok=$(grep -cE '^not ok [0-9]+ ' "$log")
  pass=$((pass + ok)); fail=$((fail + nok)); skip=$((skip + sk))
  echo "busted $tag: $ok ok, $nok not ok, $sk pending (exit $rc)"
  while IFS= read -r line; do failed+=("busted $tag: ${line#not ok }"); done \
    < <(grep -E '^not ok [0-9]+ ' "$log")
  # Show each failure with its diagnostics (at most 25 lines each).
  awk '/^not ok [0-9]+ /{n=25} /^ok [0-9]+ /{n=0} n>0{print "  | " $0; n--}' "$log"
  if ! grep -qE '^1\.\.[0-9]+' "$log"; then
    bad "busted $tag: did not finish (exit $rc)"; tail -n 30 "$log" | sed 's/^/  | /'
  elif [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
    bad "busted $tag: exit status $rc"; tail -n 30 "$log" | sed 's/^/  | /'
  fi
}

rock_check() {
  echo "== luarocks install check ($LUA) =="
  if timeout 900 bash mk/rockcheck.sh "$LUA" >"$LOGS/rock.log" 2>&1; then
    pass=$((pass + 1)); grep '^rockcheck:' "$LOGS/rock.log"
  else
    bad "luarocks install check"; tail -n 40 "$LOGS/rock.log" | sed 's/^/  | /'
  fi
}

want() { [ "$LUA" = all ] || [ "$LUA" = "$1" ]; }

# ThreadSanitizer: the C tests (the test thread, the server's and the
# worker's threads and LevelDB's share the engine; threads_test runs eight
# lua_States on eight threads against one directory, its host built with
# TSan and loading build/tsan's core.so) and the multi-process
# specs with build/tsan's core.so.  libtsan must be loaded first, but
# LD_PRELOAD would reach the shells and python3 the specs start, which
# crash under it: build/tsan/bin/lua5.4 loads it with the dynamic loader's
# --preload instead, and is the interpreter the specs start too
# (LEVELPARTY_LUA).  The specs' helper passes children a fixed environment,
# so the wrapper sets TSAN_OPTIONS itself; every process writes its reports
# to a file of $LOGS/tsan-reports, counted after the run.  One test is left
# out: coroutine_spec's bound on the loop's latency (p99 under 50 ms while a
# coroutine writes), which measures speed, not synchronisation, and fails
# under TSan's slowdown.
TSAN_SPECS=${TSAN_SPECS:-spec/party_spec.lua spec/failover_spec.lua spec/coroutine_spec.lua spec/iter_failover_spec.lua}
tsan_pass() {
  local lib ldso lua wrap reports n opts="halt_on_error=0 second_deadlock_stack=1 suppressions=$PWD/mk/tsan.supp"
  echo "== build (tsan) =="
  if ! build build/tsan/levelparty/core.so; then bad "build tsan"; return; fi
  if [ -z "$SPEC" ]; then
    C_TAG=tsan c_tests build/tsan/test TSAN_OPTIONS="$opts exitcode=66"
  fi
  lib=$(readlink -f "$(${CC:-gcc} -print-file-name=libtsan.so)")
  lua=$(command -v lua5.4)
  ldso=$(ldd "$lua" | awk '$1 ~ /^\/.*ld-linux/ {print $1; exit}')
  wrap=$PWD/build/tsan/bin/lua5.4
  reports=$PWD/$LOGS/tsan-reports
  if [ ! -e "$lib" ] || [ -z "$ldso" ]; then bad "tsan: no libtsan or dynamic loader"; return; fi
  mkdir -p "${wrap%/*}"
  rm -rf "$reports"; mkdir -p "$reports"
  cat >"$wrap" <<EOF
#!/bin/sh
# Written by mk/runtests.sh: lua5.4 with libtsan loaded first (see tsan_pass).
TSAN_OPTIONS="$opts log_path=$reports/report"; export TSAN_OPTIONS
exec $ldso --preload $lib $lua "\$@"
EOF
  chmod +x "$wrap"
  BUSTED_TAG=tsan BUSTED_FILES="$TSAN_SPECS" BUSTED_ARG="--filter-out=the loop keeps running while" \
    busted_suite tsan "$wrap" LEVELPARTY_LUA="$wrap"
  n=$(cat "$reports"/report.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer')
  echo "tsan reports: $n (from $(ls "$reports" | wc -l) processes)"
  if [ "$n" -gt 0 ]; then
    bad "busted tsan: $n ThreadSanitizer reports ($reports)"
    cat "$reports"/report.* | head -n 60 | sed 's/^/  | /'
  fi
}

# valgrind memcheck over the plain builds (-O2 -g, as `make test` builds
# them): the C tests, then the single-process API specs in lua5.4 (through
# build/valgrind/bin/lua5.4; processes the specs start run natively).
# Uninitialised reads, invalid accesses and frees, bad system call arguments
# fail the test (C) or the busted run (exit status 99).  Leaks are the ASan
# pass's (LSan): valgrind would count the allocations of every forked child
# that _exit()s by design.
VALGRIND_SPECS=${VALGRIND_SPECS:-spec/api_spec.lua spec/iterator_spec.lua}
valgrind_pass() {
  local vg=(valgrind -q --error-exitcode=99 --leak-check=no --track-origins=yes
    --num-callers=30 --suppressions="$PWD/mk/valgrind.supp")
  local wrap=$PWD/build/valgrind/bin/lua5.4
  [ -z "$SPEC" ] || return 0
  C_RUNNER=("${vg[@]}")
  TAP_VALGRIND=1 TAP_TIME_SCALE=10 C_TAG=valgrind C_TIMEOUT=$VALGRIND_TIMEOUT c_tests build/test
  C_RUNNER=()
  mkdir -p "${wrap%/*}"
  printf '#!/bin/sh\n# Written by mk/runtests.sh: lua5.4 under memcheck (see valgrind_pass).\nexec %s %s "$@"\n' \
    "${vg[*]}" "$(command -v lua5.4)" >"$wrap"
  chmod +x "$wrap"
  BUSTED_TAG=valgrind BUSTED_FILES="$VALGRIND_SPECS" busted_suite 5.4 "$wrap"
}

# The specs of the single-process API (they open the db under test with
# helper.open, so they also run as a follower).
API_SPECS="spec/api_spec.lua spec/iterator_spec.lua spec/encoding_spec.lua spec/errors_spec.lua spec/coroutine_spec.lua spec/open_spec.lua spec/badargs_spec.lua spec/badinput_spec.lua"

case $MODE in
  test)
    if [ "$SPEC" = chaos ]; then
      chaos_pass
      finish
    fi
    [ -z "$SPEC" ] && lint
    targets=()
    want 5.4 && targets+=(build/5.4/levelparty/core.so build/5.4/lptest_fork.so)
    want luajit && targets+=(build/luajit/levelparty/core.so build/luajit/lptest_fork.so)
    echo "== build =="
    if ! build "${targets[@]}"; then bad "build"; finish; fi
    if [ -z "$SPEC" ]; then c_tests build/test; embed_example; fuzz_pass; chaos_pass; fi
    want 5.4 && busted_suite 5.4 lua5.4
    # The single-process API suite once more, the handle under test being a
    # follower of a leader in another process (spec/helper.lua's open).
    if want 5.4 && [ -z "$SPEC" ]; then
      BUSTED_TAG=5.4-follower BUSTED_FILES="$API_SPECS" busted_suite 5.4 lua5.4 LEVELPARTY_SPEC_ROLE=follower
    fi
    want luajit && busted_suite luajit luajit
    # The bad-input table promises every row in both roles under both
    # interpreters (docs/RELIABILITY.md): its spec as a follower under LuaJIT.
    if want luajit && [ -z "$SPEC" ]; then
      BUSTED_TAG=luajit-follower BUSTED_FILES="spec/badinput_spec.lua" busted_suite luajit luajit LEVELPARTY_SPEC_ROLE=follower
    fi
    [ -z "$SPEC" ] && rock_check
    ;;
  sanitize)
    passes=" ${SANITIZE_PASSES:-asan tsan valgrind} "
    for p in $passes; do
      case $p in asan|tsan|valgrind) ;; *) echo "runtests: unknown sanitize pass $p" >&2; exit 2 ;; esac
    done
    asan=$(${CC:-gcc} -print-file-name=libasan.so)
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    if [[ $passes == *" asan "* ]]; then
      echo "== build (asan) =="
      if ! build build/asan/levelparty/core.so build/asan/lptest_fork.so; then bad "build asan"; finish; fi
      [ -z "$SPEC" ] && c_tests build/asan/test ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
      busted_suite asan lua5.4 LEVELPARTY_MEMORY_N=5000 LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
    fi
    if [[ $passes == *" tsan "* ]]; then tsan_pass; fi
    if [[ $passes == *" valgrind "* ]]; then valgrind_pass; fi
    ;;
  *) echo "runtests: unknown mode $MODE" >&2; exit 2 ;;
esac
finish

/*
 * threads_test.c: many lua_States on many threads of one process, one
 * directory (docs/ARCHITECTURE.md, "Threads and ownership").
 *
 * A C host, as an embedding application is: NTHREADS threads, each with a
 * lua_State of its own that requires levelparty from this build tree
 * (build/LP_VARIANT/levelparty/core.so) and opens the same directory, then
 * runs rounds of puts, batches (puts and dels), verified gets and iterators
 * over its own keys (each key exactly once, in order, with its value),
 * against a model kept in Lua.
 *
 *   1. Another process (lua5.4) leads; once every thread is past a quarter
 *      of its rounds it is killed with SIGKILL: every state must go on
 *      (replay, iterator resume), and this process then leads, every
 *      state's party attached to its one lead (the last thread's, opened
 *      with lead = false, follows it through the socket instead).
 *   2. This process leads: thread 0 opens first and leads, the others open
 *      the directory it leads and must be leaders too (but the last, which
 *      opens with lead = false and follows through the socket); a follower process
 *      works against them meanwhile (the leader's server thread serves it),
 *      and thread 0 lua_close()s its state midway while the others go on.
 *      When all are gone the LOCK is free: a new process leads.
 *
 * Every thread runs at least POST_ROUNDS rounds after the event (kill or
 * close) and the event is only let happen while every thread still runs, so
 * the test cannot pass without exercising what it names.  Built for 5.4,
 * asan and tsan (Makefile); the tsan build is make sanitize's TSan pass.
 */
#include "tap.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LP_ROOT
#error "LP_ROOT: the source tree (the Makefile defines it)"
#endif
#ifndef LP_VARIANT
#define LP_VARIANT "5.4"
#endif

extern char **environ;

#define NTHREADS    8
#define POST_ROUNDS 20

static int rounds = 120; /* fewer under valgrind (main) */

/* What the main thread and the workers share; all under mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int round_of[NTHREADS];    /* the round each thread reached */
static int event_done;            /* the kill or the close happened */
static int event_round[NTHREADS]; /* each thread's round when it first saw it */
static int opened_count;          /* threads whose open returned */
static int lead_first;            /* scenario 2: thread 0 opens before the others */

typedef struct worker {
  int id;
  const char *dir;
  int close_at; /* > 0: return at this round and let the host lua_close */
  int nolead;   /* opens with lead = false: follows even its own process */
  pthread_t thread;
  char result[1024]; /* "ok ..." or the error */
  char role_open[16], role_end[16];
  int rounds_done, post_rounds;
} worker;

/* tick(r) -> stop: records the thread's round; true once it has done its
 * rounds and POST_ROUNDS more since the event (when one is expected). */
static int l_tick(lua_State *L) {
  worker *w = lua_touserdata(L, lua_upvalueindex(1));
  int r = (int)luaL_checkinteger(L, 1), stop;
  pthread_mutex_lock(&mu);
  round_of[w->id] = r;
  if (event_done && event_round[w->id] == 0) event_round[w->id] = r;
  stop = r >= rounds && event_done && r - event_round[w->id] >= POST_ROUNDS;
  w->rounds_done = r;
  w->post_rounds = event_round[w->id] ? r - event_round[w->id] : 0;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  lua_pushboolean(L, stop);
  return 1;
}

/* opened(role): the thread's open returned; in scenario 2 the others wait
 * for thread 0's open to return before they open. */
static int l_opened(lua_State *L) {
  worker *w = lua_touserdata(L, lua_upvalueindex(1));
  snprintf(w->role_open, sizeof w->role_open, "%s", luaL_checkstring(L, 1));
  pthread_mutex_lock(&mu);
  opened_count++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return 0;
}

static int l_may_open(lua_State *L) {
  worker *w = lua_touserdata(L, lua_upvalueindex(1));
  (void)L;
  pthread_mutex_lock(&mu);
  while (lead_first && w->id != 0 && opened_count == 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return 0;
}

/* before_close(): the states that lead wait for the one that never leads
 * (NOLEAD) to end first: once the last of them closes, it would have no
 * leader left and may not lead itself. */
#define NOLEAD (NTHREADS - 1)
static int l_before_close(lua_State *L) {
  worker *w = lua_touserdata(L, lua_upvalueindex(1));
  (void)L;
  pthread_mutex_lock(&mu);
  while (w->id != NOLEAD && round_of[NOLEAD] != INT_MAX)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return 0;
}

/* The globals the workload calls back into, each a closure over its worker. */
static const struct {
  const char *name;
  lua_CFunction fn;
} hooks[] = {
    {"tick", l_tick},
    {"opened", l_opened},
    {"may_open", l_may_open},
    {"before_close", l_before_close},
};

/* The workload, one chunk per state: (id, dir, close_at, nolead).  Raises with the
 * reason on any failure; returns the role at the end. */
static const char workload[] =
    "local id, dir, close_at, nolead = ...\n"
    "local lp = require 'levelparty'\n"
    "may_open()\n"
    "local db, err, code = lp.open(dir, { open_timeout = 60, lead = not nolead })\n"
    "if not db then error('open: ' .. tostring(err) .. ' ' .. tostring(code)) end\n"
    "opened(db:role())\n"
    "local prefix = ('t%02d:'):format(id)\n"
    "local function key(i) return prefix .. ('%06d'):format(i) end\n"
    "local model, n = {}, 0\n"
    "local function must(what, ok, e, c)\n"
    "  if ok == nil or ok == false then\n"
    "    error(('%s: %s %s'):format(what, tostring(e), tostring(c)), 2)\n"
    "  end\n"
    "  return ok\n"
    "end\n"
    "local function verify_get(k)\n"
    "  local v, e, c = db:get(k)\n"
    "  if e then error(('get %s: %s %s'):format(k, e, tostring(c))) end\n"
    "  if v ~= model[k] then\n"
    "    error(('get %s: %s, want %s'):format(k, tostring(v), tostring(model[k])))\n"
    "  end\n"
    "end\n"
    "local function verify_iter(reverse)\n"
    "  local want = {}\n"
    "  for k in pairs(model) do want[#want + 1] = k end\n"
    "  table.sort(want)\n"
    "  local i, step = reverse and #want or 1, reverse and -1 or 1\n"
    "  local seen = 0\n"
    "  for k, v in db:iter { gte = prefix, lt = prefix .. '~', reverse = reverse } do\n"
    "    seen = seen + 1\n"
    "    if k ~= want[i] then\n"
    "      error(('iter #%d: key %s, want %s'):format(seen, k, tostring(want[i])))\n"
    "    end\n"
    "    if v ~= model[k] then error(('iter %s: value %s'):format(k, v)) end\n"
    "    i = i + step\n"
    "  end\n"
    "  if seen ~= #want then error(('iter: %d entries, want %d'):format(seen, #want)) end\n"
    "end\n"
    "local snapshot_checked = false\n"
    "local r = 0\n"
    "repeat\n"
    "  r = r + 1\n"
    "  n = n + 1\n"
    "  local k, v = key(n), ('%s-v%d-%s'):format(prefix, r, ('x'):rep(r % 50))\n"
    "  must('put', db:put(k, v))\n"
    "  model[k] = v\n"
    "  local ops, nm = {}, {}\n"
    "  for j = 1, 10 do\n"
    "    n = n + 1\n"
    "    local bk = key(n)\n"
    "    ops[#ops + 1] = { type = 'put', key = bk, value = bk .. '=' .. r }\n"
    "    nm[bk] = bk .. '=' .. r\n"
    "  end\n"
    "  if r % 3 == 0 then\n"
    "    local dk = key(n - 15)\n"
    "    ops[#ops + 1] = { type = 'del', key = dk }\n"
    "    nm[dk] = false\n"
    "  end\n"
    "  must('batch', db:batch(ops))\n"
    "  for bk, bv in pairs(nm) do model[bk] = bv or nil end\n"
    "  verify_get(k)\n"
    "  verify_get(key(n))\n"
    "  verify_get(key(1 + (r * 7) % n))\n"
    "  if r % 5 == 0 then verify_iter(r % 10 == 0) end\n"
    "  if not snapshot_checked and db:role() == 'leader' then\n"
    "    -- a leader's iterator is a snapshot: a write after it opened is unseen\n"
    "    local it = db:iter { gte = prefix .. 'snap', lt = prefix .. 'snaq' }\n"
    "    must('put snap', db:put(prefix .. 'snap', 'x'))\n"
    "    local sk = it:next()\n"
    "    it:close()\n"
    "    if sk ~= nil then error('leader iterator is no snapshot: saw ' .. sk) end\n"
    "    must('del snap', db:del(prefix .. 'snap'))\n"
    "    snapshot_checked = true\n"
    "  end\n"
    "  if close_at > 0 and r == close_at then return 'closing' end\n"
    "until tick(r)\n"
    "verify_iter(false)\n"
    "for k in pairs(model) do verify_get(k) end\n"
    "local role = db:role()\n"
    "before_close()\n"
    "must('close', db:close())\n"
    "return role\n";

static void *worker_main(void *arg) {
  worker *w = arg;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    snprintf(w->result, sizeof w->result, "luaL_newstate failed");
    return NULL;
  }
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, LP_ROOT "/lua/?.lua;" LP_ROOT "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pushstring(L, LP_ROOT "/build/" LP_VARIANT "/?.so");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  for (size_t h = 0; h < sizeof hooks / sizeof hooks[0]; h++) {
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, hooks[h].fn, 1);
    lua_setglobal(L, hooks[h].name);
  }
  if (luaL_loadbuffer(L, workload, sizeof workload - 1, "=workload") != LUA_OK) {
    snprintf(w->result, sizeof w->result, "load: %s", lua_tostring(L, -1));
  } else {
    lua_pushinteger(L, w->id);
    lua_pushstring(L, w->dir);
    lua_pushinteger(L, w->close_at);
    lua_pushboolean(L, w->nolead);
    if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
      snprintf(w->result, sizeof w->result, "%s", lua_tostring(L, -1));
    } else {
      snprintf(w->role_end, sizeof w->role_end, "%s", lua_tostring(L, -1));
      snprintf(w->result, sizeof w->result, "ok");
    }
  }
  /* the db (if the chunk left it open: close_at) goes with the state */
  lua_close(L);
  pthread_mutex_lock(&mu);
  if (w->close_at > 0) event_done = 1;
  round_of[w->id] = INT_MAX; /* ended: nobody waits for it */
  if (w->role_open[0] == '\0') opened_count++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* A lua5.4 process on this build tree running script with LPT_DIR = dir;
 * its stdout is *out_r, its stdin *in_w.  The pid, or -1. */
static pid_t spawn_lua(const char *script, const char *dir, int *out_r, int *in_w) {
  int out[2], in[2];
  pid_t pid;
  posix_spawn_file_actions_t fa;
  char dirvar[4200], **envp;
  size_t n;
  static char a0[] = "sh", a1[] = LP_ROOT "/mk/luaenv.sh", a2[] = "5.4", a3[] = "lua5.4",
              a4[] = "-e";
  char *code = strdup(script);
  char *argv[] = {a0, a1, a2, a3, a4, code, NULL};
  if (code == NULL || pipe2(out, O_CLOEXEC) != 0) return -1;
  if (pipe2(in, O_CLOEXEC) != 0) return -1;
  /* LPT_DIR goes in the child's environment only: setenv here would race
   * with the worker threads' getenv */
  for (n = 0; environ[n] != NULL; n++) {
  }
  if ((envp = calloc(n + 2, sizeof *envp)) == NULL) return -1;
  memcpy(envp, environ, n * sizeof *envp);
  snprintf(dirvar, sizeof dirvar, "LPT_DIR=%s", dir);
  envp[n] = dirvar;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  if (posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, envp) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  free(code);
  free(envp);
  close(out[1]);
  close(in[0]);
  *out_r = out[0];
  *in_w = in[1];
  return pid;
}

/* Reads what the child writes until EOF or a newline: its first line. */
static void read_line(int fd, char *buf, size_t n) {
  size_t len = 0;
  while (len + 1 < n) {
    ssize_t r = read(fd, buf + len, 1);
    if (r <= 0 || buf[len] == '\n') break;
    len++;
  }
  buf[len] = '\0';
}

static int wait_exit(pid_t pid, int *status) {
  int i;
  for (i = 0; i < 6000; i++) { /* 60 s */
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 0;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  (void)waitpid(pid, status, 0);
  return -1;
}

static const char leader_script[] =
    "local db = assert(require('levelparty').open(os.getenv('LPT_DIR')))\n"
    "io.write(db:role(), '\\n') io.flush()\n"
    "io.read('a')\n"
    "db:close()\n";

static const char follower_script[] =
    "local db = assert(require('levelparty').open(os.getenv('LPT_DIR')))\n"
    "assert(db:role() == 'follower', 'role ' .. db:role())\n"
    "for i = 1, 300 do\n"
    "  local k = ('ext:%05d'):format(i)\n"
    "  assert(db:put(k, 'v' .. i))\n"
    "  assert(db:get(k) == 'v' .. i)\n"
    "end\n"
    "local seen = 0\n"
    "for k, v in db:iter { gte = 'ext:', lt = 'ext;' } do\n"
    "  seen = seen + 1\n"
    "  assert(k == ('ext:%05d'):format(seen) and v == 'v' .. seen, k)\n"
    "end\n"
    "assert(seen == 300, seen)\n"
    "assert(db:close())\n"
    "io.write('ok\\n')\n";

/* A scenario that hangs (as four states on one shared party did) fails
 * with a line of its own rather than the runner's timeout. */
#define WATCHDOG_S 240
static const char *scenario_now = "start";
static void on_alarm(int sig) {
  char line[160];
  int n = snprintf(line, sizeof line, "not ok - %s: finished within %d s: hung\n", scenario_now,
                   WATCHDOG_S);
  (void)sig;
  if (write(1, line, (size_t)n) < 0) _exit(2);
  _exit(1);
}

static double t0;
static double secs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - t0;
}

static void note(const char *what) {
  printf("# %.2f s: %s\n", secs(), what);
  fflush(stdout);
}

static void reset_shared(const char *scenario) {
  note(scenario);
  scenario_now = scenario;
  alarm(WATCHDOG_S);
  memset(round_of, 0, sizeof round_of);
  memset(event_round, 0, sizeof event_round);
  event_done = 0;
  opened_count = 0;
  lead_first = 0;
}

static void start_workers(worker *ws, const char *dir, int closer, int close_at) {
  int i;
  for (i = 0; i < NTHREADS; i++) {
    memset(&ws[i], 0, sizeof ws[i]);
    ws[i].id = i;
    ws[i].dir = dir;
    ws[i].close_at = i == closer ? close_at : 0;
    ws[i].nolead = i == NOLEAD;
    snprintf(ws[i].result, sizeof ws[i].result, "did not run");
    if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0)
      snprintf(ws[i].result, sizeof ws[i].result, "pthread_create failed");
  }
}

/* Waits until every thread but skip has reached round r (or ended). */
static void wait_rounds(int r, int skip) {
  int i, all;
  pthread_mutex_lock(&mu);
  for (;;) {
    all = 1;
    for (i = 0; i < NTHREADS; i++)
      if (i != skip && round_of[i] < r) all = 0;
    if (all) break;
    pthread_cond_wait(&cv, &mu);
  }
  pthread_mutex_unlock(&mu);
}

static void join_and_report(worker *ws, const char *scenario, const char *want_role) {
  int i;
  char what[128];
  for (i = 0; i < NTHREADS; i++) {
    pthread_join(ws[i].thread, NULL);
    snprintf(what, sizeof what, "%s: thread %d: every round checked out", scenario, i);
    check(strcmp(ws[i].result, "ok") == 0, what, "%s (round %d)", ws[i].result, ws[i].rounds_done);
    snprintf(what, sizeof what, "%s: thread %d: %d rounds after the event", scenario, i,
             POST_ROUNDS);
    check(ws[i].post_rounds >= POST_ROUNDS, what, "%d", ws[i].post_rounds);
    if (i == NOLEAD) want_role = "follower"; /* of this process, through the socket */
    snprintf(what, sizeof what, "%s: thread %d ends as %s", scenario, i, want_role);
    check(strcmp(ws[i].role_end, want_role) == 0, what, "role %s", ws[i].role_end);
  }
}

static void scenario_remote_leader(const char *root) {
  char dir[4096], line[64];
  worker ws[NTHREADS];
  int out_r, in_w, status, i;
  pid_t leader;
  snprintf(dir, sizeof dir, "%s/remote", root);
  reset_shared("remote");
  leader = spawn_lua(leader_script, dir, &out_r, &in_w);
  if (!check(leader > 0, "remote: the leader process starts", "posix_spawn failed")) return;
  read_line(out_r, line, sizeof line);
  check(strcmp(line, "leader") == 0, "remote: the other process leads", "it says '%s'", line);
  start_workers(ws, dir, -1, 0);
  /* no thread can end before the event (tick), so all run through it */
  wait_rounds(rounds / 4, -1);
  note("remote: SIGKILL to the leader");
  kill(leader, SIGKILL);
  (void)waitpid(leader, &status, 0);
  pthread_mutex_lock(&mu);
  event_done = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  close(in_w);
  close(out_r);
  join_and_report(ws, "remote", "leader");
  note("remote: every thread done");
  for (i = 0; i < NTHREADS; i++) {
    char what[96];
    snprintf(what, sizeof what, "remote: thread %d opened as a follower", i);
    check(strcmp(ws[i].role_open, "follower") == 0, what, "role %s", ws[i].role_open);
  }
}

static void scenario_local_leader(const char *root) {
  char dir[4096], line[64];
  worker ws[NTHREADS];
  int out_r, in_w, status, i;
  pid_t follower, after;
  snprintf(dir, sizeof dir, "%s/local", root);
  reset_shared("local");
  lead_first = 1;
  start_workers(ws, dir, 0, rounds / 3);
  wait_rounds(2, 0); /* every state has opened */
  note("local: every state opened");
  follower = spawn_lua(follower_script, dir, &out_r, &in_w);
  check(follower > 0, "local: a follower process starts", "posix_spawn failed");
  for (i = 0; i < NTHREADS; i++) {
    char what[96];
    const char *want = i == NOLEAD ? "follower" : "leader";
    snprintf(what, sizeof what, "local: thread %d opened as the %s", i, want);
    check(strcmp(ws[i].role_open, want) == 0, what, "role %s", ws[i].role_open);
  }
  if (follower > 0) {
    read_line(out_r, line, sizeof line);
    check(wait_exit(follower, &status) == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
              strcmp(line, "ok") == 0,
          "local: the other process follows this one and works", "status %#x, says '%s'", status,
          line);
    close(in_w);
    close(out_r);
  }
  pthread_join(ws[0].thread, NULL);
  note("local: thread 0 closed its state");
  check(strcmp(ws[0].result, "ok") == 0, "local: thread 0 (the first leader) ran to its close",
        "%s", ws[0].result);
  for (i = 1; i < NTHREADS; i++) {
    char what[128];
    const char *want = i == NOLEAD ? "follower" : "leader";
    pthread_join(ws[i].thread, NULL);
    snprintf(what, sizeof what, "local: thread %d: every round checked out", i);
    check(strcmp(ws[i].result, "ok") == 0, what, "%s (round %d)", ws[i].result, ws[i].rounds_done);
    snprintf(what, sizeof what, "local: thread %d: %d rounds after thread 0's lua_close", i,
             POST_ROUNDS);
    check(ws[i].post_rounds >= POST_ROUNDS, what, "%d", ws[i].post_rounds);
    snprintf(what, sizeof what, "local: thread %d ends as %s", i, want);
    check(strcmp(ws[i].role_end, want) == 0, what, "role %s", ws[i].role_end);
  }
  note("local: every thread done");
  /* the last state closed the lead: the LOCK and the socket are free */
  after = spawn_lua(leader_script, dir, &out_r, &in_w);
  if (after > 0) {
    read_line(out_r, line, sizeof line);
    close(in_w);
    (void)wait_exit(after, &status);
    close(out_r);
  }
  note("local: the next process has led");
  check(after > 0 && strcmp(line, "leader") == 0,
        "local: once every state closed, another process leads", "it says '%s'", line);
}

int main(void) {
  char root[] = "/tmp/lp-threads-XXXXXX";
  const char *pre = getenv("LD_PRELOAD");
  signal(SIGPIPE, SIG_IGN);
  if (pre != NULL && strstr(pre, "vgpreload") != NULL) rounds = 30; /* valgrind */
  signal(SIGALRM, on_alarm);
  t0 = secs();
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  scenario_remote_leader(root);
  scenario_local_leader(root);
  alarm(0);
  rm_rf(root);
  note("end");
  return tap_done();
}

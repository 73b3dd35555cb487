/* examples/embed/host.c: a C program with levelparty linked in.
 *
 * Lua 5.4 and liblevelparty.a are linked statically (no -Wl,-E, nothing
 * loaded from disk: package.path and package.cpath are emptied).  Each of N
 * threads owns one lua_State and runs its own epoll loop; in it, C coroutines
 * of Lua code call levelparty through the host-loop interface
 * (levelparty.set_loop("yield")): a call that must wait yields a pollable
 * (pollfd/events/timeout), the loop polls it and resumes the coroutine when
 * the fd is readable or the timeout passed.  A ticker coroutine of the same
 * loop sleeps 1 ms at a time (its own pollable, no fd) and counts, which
 * shows the loop runs while calls wait.
 *
 *   host DIR [THREADS [COROUTINES [OPS [KILL_PID]]]]
 *
 * Each thread opens DIR, its coroutines write, read, batch and iterate keys of
 * their own.  With KILL_PID (the leader, another process), every coroutine of
 * every thread stops half way at a barrier; once all have arrived, thread 1's
 * first coroutine SIGKILLs that process and waits until it is gone, and only
 * then do all go on with their second half.  So every thread's state is a
 * follower when the leader dies, and each makes OPS/2 calls after: they can
 * only be served by the new leader, this process (one lead per process and
 * directory: every state attached to it is a leader), and each thread must
 * end as a leader.  Prints one TAP line per thread ("ok - ..." or
 * "not ok - ..."); exits 0 when all passed.  A thread that fails prints its
 * Lua error. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "levelparty.h"

/* The Lua side: returns a table of coroutine bodies for run_loop. */
static const char script[] =
    "local dir, thread, nthreads, ncos, nops, kill_pid = ...\n"
    "package.path, package.cpath = '', '' -- nothing from disk\n"
    "local lp = require 'levelparty'\n"
    "lp.set_loop('yield')\n"
    "local db = assert(lp.open(dir))\n"
    "local st = { ticks = 0, running = ncos, calls = 0, spanned = 0, role0 = db:role() }\n"
    "-- a pollable of the host's own: no fd, a deadline (host_now: CLOCK_MONOTONIC)\n"
    "local Sleep = { pollfd = function() return -1 end, events = function() return 'r' end,\n"
    "  timeout = function(s) return math.max(0, s.deadline - host_now()) end }\n"
    "Sleep.__index = Sleep\n"
    "local function sleep(s) coroutine.yield(setmetatable({ deadline = host_now() + s }, Sleep)) "
    "end\n"
    "local HALF, KILLED = 1, 2 -- host_add's counters, shared by all threads\n"
    "local function wait_for(counter, n, what)\n"
    "  local deadline = host_now() + 60\n"
    "  while host_add(counter, 0) < n do\n"
    "    assert(host_now() < deadline, string.format('waited 60 s for %s: %d of %d', what,\n"
    "      host_add(counter, 0), n))\n"
    "    sleep(0.001)\n"
    "  end\n"
    "end\n"
    "local function call(f, ...)\n"
    "  local t0 = st.ticks\n"
    "  local a, b, c = f(...)\n"
    "  st.calls = st.calls + 1\n"
    "  if st.ticks > t0 then st.spanned = st.spanned + 1 end\n"
    "  return a, b, c\n"
    "end\n"
    "local bodies = {}\n"
    "for i = 1, ncos do\n"
    "  bodies[i] = function()\n"
    "    local pre = string.format('t%d:c%d:', thread, i)\n"
    "    for j = 1, nops do\n"
    "      local k = pre .. string.format('%05d', j)\n"
    "      assert(call(db.put, db, k, 'v' .. j))\n"
    "      local v, err = call(db.get, db, k)\n"
    "      assert(v == 'v' .. j, tostring(v) .. ' ' .. tostring(err))\n"
    "      if kill_pid and j == nops // 2 then\n"
    "        -- every coroutine of every thread is half way, idle, before the kill\n"
    "        host_add(HALF, 1)\n"
    "        wait_for(HALF, nthreads * ncos, 'half way')\n"
    "        if thread == 1 and i == 1 then\n"
    "          assert(host_kill(kill_pid), 'kill ' .. kill_pid)\n"
    "          -- gone: its descriptors (LOCK, the socket) are closed\n"
    "          local deadline = host_now() + 30\n"
    "          while not host_gone(kill_pid) do\n"
    "            assert(host_now() < deadline, 'the leader did not die in 30 s')\n"
    "            sleep(0.001)\n"
    "          end\n"
    "          host_add(KILLED, 1)\n"
    "        end\n"
    "        wait_for(KILLED, 1, 'the leader killed')\n"
    "      end\n"
    "    end\n"
    "    assert(call(db.batch, db, { { type = 'put', key = pre .. 'b', value = 'x' },\n"
    "      { type = 'del', key = pre .. '00001' } }))\n"
    "    local n = 0\n"
    "    for k in db:iter { gt = pre, lt = pre .. '~' } do\n"
    "      assert(k:sub(1, #pre) == pre, k)\n"
    "      n = n + 1\n"
    "    end\n"
    "    assert(n == nops, 'iterated ' .. n .. ' of ' .. nops)\n"
    "    st.running = st.running - 1\n"
    "  end\n"
    "end\n"
    "bodies[ncos + 1] = function()\n"
    "  while st.running > 0 do\n"
    "    sleep(0.001)\n"
    "    st.ticks = st.ticks + 1\n"
    "  end\n"
    "end\n"
    "local function report()\n"
    "  local role = db:role()\n"
    "  db:close()\n"
    "  return string.format('thread %d: %d calls, %d ticks, %d calls spanned a tick, %s -> %s',\n"
    "    thread, st.calls, st.ticks, st.spanned, st.role0, role), st.role0, st.spanned, role\n"
    "end\n"
    "return bodies, report\n";

typedef struct {
  lua_State *co;  /* the coroutine (a Lua thread, anchored in the registry) */
  int ref;        /* its registry reference */
  int pollable;   /* registry reference of the pollable it waits on, or LUA_NOREF */
  int fd;         /* the pollable's fd while it waits (-1: none) */
  double timeout; /* seconds, INFINITY for none, asked again before each wait */
  int done;
} task_t;

typedef struct {
  int id, nthreads;
  const char *dir;
  int ncos, nops;
  long kill_pid;
  int ok;
  char msg[512];
} thread_arg;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int host_now(lua_State *L) {
  lua_pushnumber(L, now_s());
  return 1;
}

static int host_kill(lua_State *L) {
  lua_pushboolean(L, kill((pid_t)luaL_checkinteger(L, 1), SIGKILL) == 0);
  return 1;
}

/* host_gone(pid): true once the process has exited (no /proc entry, or a
 * zombie: either way its descriptors are closed, its fcntl locks released). */
static int host_gone(lua_State *L) {
  char path[64], buf[256], *paren;
  FILE *f;
  size_t n;
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)luaL_checkinteger(L, 1));
  f = fopen(path, "r");
  if (f == NULL) {
    lua_pushboolean(L, 1);
    return 1;
  }
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  paren = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold anything */
  lua_pushboolean(
      L, n == 0 || (paren != NULL && paren[1] != '\0' && (paren[2] == 'Z' || paren[2] == 'X')));
  return 1;
}

/* Counters shared by every thread (the barrier around the kill); only
 * host_add touches them, under counters_lock. */
#define NCOUNTERS 4
static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static long counters[NCOUNTERS];

/* host_add(i, n): adds n to counter i (1..NCOUNTERS), returns its value. */
static int host_add(lua_State *L) {
  lua_Integer i = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2);
  long v;
  luaL_argcheck(L, i >= 1 && i <= NCOUNTERS, 1, "no such counter");
  pthread_mutex_lock(&counters_lock);
  v = counters[i - 1] += (long)n;
  pthread_mutex_unlock(&counters_lock);
  lua_pushinteger(L, v);
  return 1;
}

/* Calls pollable:NAME() (the pollable at registry ref); leaves its result on
 * L's stack.  Returns 0, or -1 with the error message on the stack. */
static int pollable_call(lua_State *L, int ref, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_getfield(L, -1, name);
  lua_insert(L, -2);
  return lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : -1;
}

/* Asks the waiting task's pollable for its fd and timeout. */
static int ask_pollable(lua_State *L, task_t *t, char *err, size_t errlen) {
  if (pollable_call(L, t->pollable, "pollfd") != 0) goto fail;
  t->fd = (int)luaL_optinteger(L, -1, -1);
  lua_pop(L, 1);
  if (pollable_call(L, t->pollable, "timeout") != 0) goto fail;
  t->timeout = lua_isnil(L, -1) ? INFINITY : lua_tonumber(L, -1);
  lua_pop(L, 1);
  return 0;
fail:
  snprintf(err, errlen, "pollable: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
  return -1;
}

/* Resumes task t; on a yield, keeps the pollable it yielded.  Returns 0, or
 * -1 with err set (the coroutine failed). */
static int resume(lua_State *L, task_t *t, char *err, size_t errlen) {
  int nres, rc;
  if (t->pollable != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, t->pollable);
  t->pollable = LUA_NOREF;
  rc = lua_resume(t->co, L, 0, &nres);
  if (rc == LUA_OK) {
    t->done = 1;
    lua_pop(t->co, nres);
    return 0;
  }
  if (rc != LUA_YIELD) {
    luaL_traceback(L, t->co, lua_tostring(t->co, -1), 0);
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  if (nres < 1 || (!lua_istable(t->co, -nres) && !lua_isuserdata(t->co, -nres))) {
    snprintf(err, errlen, "a coroutine yielded no pollable");
    return -1;
  }
  lua_pushvalue(t->co, -nres);
  lua_xmove(t->co, L, 1);
  t->pollable = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(t->co, nres);
  return 0;
}

#define MAXFDS 16

/* The thread's loop: resume every task, then until all are done, poll the
 * fds their pollables name (each fd once, level-triggered) with the smallest
 * timeout, and resume the tasks whose fd is readable or whose timeout
 * passed.  Timeouts are asked again before each wait (the interface's rule:
 * one coroutine's step can make another's wait 0). */
static int run_loop(lua_State *L, task_t *tasks, int n, char *err, size_t errlen) {
  int ep = epoll_create1(EPOLL_CLOEXEC), i, live = n, rc = -1;
  int regd[MAXFDS], nregd = 0;
  double since = now_s();
  if (ep < 0) {
    snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
    return -1;
  }
  for (i = 0; i < n; i++)
    if (resume(L, &tasks[i], err, errlen) != 0) goto out;
  while (1) {
    struct epoll_event evs[MAXFDS];
    int want[MAXFDS], nwant = 0, nev, j, k, ms;
    double wait = INFINITY, t0;
    live = 0;
    for (i = 0; i < n; i++) {
      task_t *t = &tasks[i];
      if (t->done) continue;
      live++;
      if (ask_pollable(L, t, err, errlen) != 0) goto out;
      if (t->timeout < wait) wait = t->timeout;
      for (j = 0; j < nwant && want[j] != t->fd; j++) {
      }
      if (t->fd >= 0 && j == nwant && nwant < MAXFDS) want[nwant++] = t->fd;
    }
    if (live == 0) break;
    /* the epoll set holds exactly the fds someone waits on: an fd nobody
     * waits on (an idle follower's) would wake this loop for nothing */
    for (j = 0; j < nregd; j++) {
      for (k = 0; k < nwant && want[k] != regd[j]; k++) {
      }
      if (k == nwant) (void)epoll_ctl(ep, EPOLL_CTL_DEL, regd[j], NULL); /* may be closed */
    }
    for (k = 0; k < nwant; k++) {
      struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = want[k]}};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, want[k], &ev) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        goto out;
      }
      regd[k] = want[k];
    }
    nregd = nwant;
    ms = isinf(wait) ? -1 : (int)ceil(wait * 1000);
    t0 = now_s();
    nev = epoll_wait(ep, evs, MAXFDS, ms);
    if (nev < 0 && errno != EINTR) {
      snprintf(err, errlen, "epoll_wait: %s", strerror(errno));
      goto out;
    }
    for (i = 0; i < n; i++) {
      task_t *t = &tasks[i];
      int ready = !t->done && now_s() - t0 >= t->timeout;
      for (j = 0; !t->done && j < nev && !ready; j++)
        ready = evs[j].data.fd == t->fd;
      if (ready && resume(L, t, err, errlen) != 0) goto out;
    }
    if (now_s() - since > 120) {
      snprintf(err, errlen, "the coroutines did not finish in 120 s");
      goto out;
    }
  }
  rc = 0;
out:
  close(ep);
  return rc;
}

static void *thread_main(void *p) {
  thread_arg *a = p;
  lua_State *L = luaL_newstate();
  task_t tasks[64];
  int n = 0, i;
  char err[400] = "";
  luaL_openlibs(L);
  levelparty_openlibs(L);
  lua_register(L, "host_kill", host_kill);
  lua_register(L, "host_now", host_now);
  lua_register(L, "host_gone", host_gone);
  lua_register(L, "host_add", host_add);
  if (luaL_loadbuffer(L, script, sizeof script - 1, "=host") != LUA_OK) goto lua_fail;
  lua_pushstring(L, a->dir);
  lua_pushinteger(L, a->id);
  lua_pushinteger(L, a->nthreads);
  lua_pushinteger(L, a->ncos);
  lua_pushinteger(L, a->nops);
  if (a->kill_pid > 0)
    lua_pushinteger(L, a->kill_pid);
  else
    lua_pushnil(L);
  if (lua_pcall(L, 6, 2, 0) != LUA_OK) goto lua_fail;
  /* stack: bodies, report */
  n = (int)luaL_len(L, 1);
  for (i = 0; i < n && i < 64; i++) {
    task_t *t = &tasks[i];
    t->co = lua_newthread(L);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, 1, i + 1);
    lua_xmove(L, t->co, 1);
    t->pollable = LUA_NOREF;
    t->fd = -1;
    t->done = 0;
  }
  if (run_loop(L, tasks, n, err, sizeof err) != 0) {
    snprintf(a->msg, sizeof a->msg, "thread %d: %s", a->id, err);
    goto done;
  }
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 0, 4, 0) != LUA_OK) goto lua_fail;
  snprintf(a->msg, sizeof a->msg, "%s", lua_tostring(L, -4));
  /* a follower's calls wait: the ticker must have run while some did; with a
   * leader to kill, each state starts as its follower and, having made calls
   * after its death (the barrier), ends as a leader */
  a->ok = (strcmp(lua_tostring(L, -3), "follower") != 0 || lua_tointeger(L, -2) > 0) &&
          (a->kill_pid == 0 || (strcmp(lua_tostring(L, -3), "follower") == 0 &&
                                strcmp(lua_tostring(L, -1), "leader") == 0));
  goto done;
lua_fail:
  snprintf(a->msg, sizeof a->msg, "thread %d: %s", a->id, lua_tostring(L, -1));
done:
  lua_close(L); /* closes the handle if still open: the last state out closes the party */
  return NULL;
}

int main(int argc, char **argv) {
  int nthreads = argc > 2 ? atoi(argv[2]) : 1, i, failed = 0;
  thread_arg *args;
  pthread_t *tids;
  if (argc < 2 || nthreads < 1) {
    fprintf(stderr, "usage: %s DIR [THREADS [COROUTINES [OPS [KILL_PID]]]]\n", argv[0]);
    return 2;
  }
  args = calloc((size_t)nthreads, sizeof *args);
  tids = calloc((size_t)nthreads, sizeof *tids);
  if (args == NULL || tids == NULL) return 1;
  for (i = 0; i < nthreads; i++) {
    args[i].id = i + 1;
    args[i].nthreads = nthreads;
    args[i].dir = argv[1];
    args[i].ncos = argc > 3 ? atoi(argv[3]) : 4;
    args[i].nops = argc > 4 ? atoi(argv[4]) : 200;
    args[i].kill_pid = argc > 5 ? atol(argv[5]) : 0;
    if (args[i].ncos < 1 || args[i].ncos > 60) args[i].ncos = 4;
    if (pthread_create(&tids[i], NULL, thread_main, &args[i]) != 0) return 1;
  }
  printf("1..%d\n", nthreads);
  for (i = 0; i < nthreads; i++) {
    pthread_join(tids[i], NULL);
    printf("%s - %s\n", args[i].ok ? "ok" : "not ok", args[i].msg);
    failed += !args[i].ok;
  }
  free(args);
  free(tids);
  return failed ? 1 : 0;
}

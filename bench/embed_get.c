/*
 * bench/embed_get.c: the leader's own get from several threads at once, each
 * with its own lua_State (levelparty linked in: liblevelparty.a, static Lua
 * 5.4), against raw LevelDB gets (leveldb/c.h) from as many threads, in the
 * same run (bench/run.lua reports the ratios; the goal is 0.6x each).
 *
 * usage: embed_get DIR [-n N] [THREADS...]     (default threads: 1 2 4)
 *
 * DIR must not exist; DIR/lp and DIR/raw are created (the caller removes
 * DIR).  Both hold N entries (key i: sprintf("key%013d", i), 100-byte value,
 * as bench/raw_leveldb.c; DIR/raw opened with levelparty's default options,
 * bench/bench.h), written before any timing.  For each thread count
 * T: T threads each make N/T gets of uniformly random existing keys (a
 * xorshift of their own), started together at a barrier; the rate is all gets
 * over the wall time from the barrier to the last thread's end.  Each thread
 * count runs three rounds, levelparty and raw in turn, and prints the median
 * of each side.  levelparty's
 * threads each create a lua_State, levelparty_openlibs, and open DIR/lp: this
 * process leads (a first state keeps the party open throughout), so their
 * gets go to LevelDB directly.
 *
 * Output on stdout, one line per thread count and side:
 *   "embed get <T> <ops_per_sec>" and "raw get <T> <ops_per_sec>".
 * Exit status 1 on any failure (a Lua error is printed on stderr).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "bench.h"
#include "levelparty.h"

#define KEY_LEN 16
#define VAL_LEN 100

static void make_value(const char *key, char *val) {
  int i;
  for (i = 0; i < VAL_LEN; i++)
    val[i] = key[i % KEY_LEN];
}

/* The Lua side of one thread: (dir, n, seed, total) -> a function making n
 * gets, which returns how many found a value.  Its keys (uniformly random,
 * math.random seeded) are made before the barrier, as bench/run.lua's leader
 * workload makes them before its clock: the figure is the get's, not Lua's
 * string.format (the C side's snprintf costs it far less). */
static const char lp_script[] = "local dir, n, seed, total = ...\n"
                                "package.path, package.cpath = '', ''\n"
                                "local db = assert(require('levelparty').open(dir))\n"
                                "assert(db:role() == 'leader', db:role())\n"
                                "math.randomseed(seed)\n"
                                "local keys = {}\n"
                                "for i = 1, n do\n"
                                "  keys[i] = string.format('key%013d', math.random(0, total - 1))\n"
                                "end\n"
                                "collectgarbage()\n"
                                "local get = db.get\n"
                                "return function()\n"
                                "  local found = 0\n"
                                "  for i = 1, n do\n"
                                "    if get(db, keys[i]) then found = found + 1 end\n"
                                "  end\n"
                                "  return found -- lua_close closes db, after the clock\n"
                                "end\n";

typedef struct {
  const char *dir;
  const bench_ldb *raw; /* NULL: the levelparty side */
  long n, total;
  uint64_t seed;
  pthread_barrier_t *barrier;
  long found;
  int failed;
} worker_t;

static void *embed_worker(void *p) {
  worker_t *w = p;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  levelparty_openlibs(L);
  if (luaL_loadbuffer(L, lp_script, sizeof lp_script - 1, "=embed_get") != LUA_OK) goto fail;
  lua_pushstring(L, w->dir);
  lua_pushinteger(L, w->n);
  lua_pushinteger(L, (lua_Integer)(w->seed & 0x7fffffff));
  lua_pushinteger(L, w->total);
  if (lua_pcall(L, 4, 1, 0) != LUA_OK) goto fail;
  pthread_barrier_wait(w->barrier);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) goto fail;
  w->found = (long)lua_tointeger(L, -1);
  lua_close(L);
  return NULL;
fail:
  fprintf(stderr, "embed_get: %s\n", lua_tostring(L, -1));
  w->failed = 1;
  lua_close(L);
  return NULL;
}

static void *raw_worker(void *p) {
  worker_t *w = p;
  char key[KEY_LEN + 1];
  long i;
  pthread_barrier_wait(w->barrier);
  for (i = 0; i < w->n; i++) {
    size_t vlen;
    char *err = NULL, *v;
    snprintf(key, sizeof key, "key%013ld", (long)(bench_xorshift64(&w->seed) % (uint64_t)w->total));
    v = leveldb_get(w->raw->db, w->raw->ro, key, KEY_LEN, &vlen, &err);
    if (err != NULL) {
      fprintf(stderr, "embed_get: raw get: %s\n", err);
      leveldb_free(err);
      w->failed = 1;
      break;
    }
    if (v != NULL) {
      w->found++;
      leveldb_free(v);
    }
  }
  return NULL;
}

/* T threads of fn; returns gets per second, or -1 on a failure. */
static double run(int t, void *(*fn)(void *), const char *dir, const bench_ldb *raw, long n,
                  long total) {
  pthread_t tids[64];
  worker_t ws[64];
  pthread_barrier_t barrier;
  double t0;
  int i, failed = 0;
  long found = 0;
  pthread_barrier_init(&barrier, NULL, (unsigned)t + 1);
  for (i = 0; i < t; i++) {
    ws[i] = (worker_t){.dir = dir,
                       .raw = raw,
                       .n = n / t,
                       .total = total,
                       .seed = 0x9e3779b97f4a7c15ull + (uint64_t)i * 7919,
                       .barrier = &barrier};
    if (pthread_create(&tids[i], NULL, fn, &ws[i]) != 0) return -1;
  }
  pthread_barrier_wait(&barrier);
  t0 = bench_now_sec();
  for (i = 0; i < t; i++) {
    pthread_join(tids[i], NULL);
    failed |= ws[i].failed;
    found += ws[i].found;
  }
  pthread_barrier_destroy(&barrier);
  if (failed || found != (n / t) * t) return -1; /* every key exists */
  return (double)((n / t) * t) / (bench_now_sec() - t0);
}

#define ROUNDS 3

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of ROUNDS rates (sorts v). */
static double median(double *v) {
  qsort(v, ROUNDS, sizeof *v, cmp_double);
  return v[ROUNDS / 2];
}

/* Opens a raw LevelDB at path into l (levelparty's default options) and
 * fills it with total entries; 0, or -1 (said on stderr).  l stays open. */
static int fill_raw(bench_ldb *l, const char *path, long total) {
  char *err = NULL, key[KEY_LEN + 1], val[VAL_LEN];
  long i;
  bench_ldb_init(l, 1);
  if (bench_ldb_open(l, "embed_get", path) != 0) return -1;
  for (i = 0; i < total; i++) {
    snprintf(key, sizeof key, "key%013ld", i);
    make_value(key, val);
    leveldb_put(l->db, l->wo, key, KEY_LEN, val, VAL_LEN, &err);
    if (err != NULL) {
      fprintf(stderr, "embed_get: put: %s\n", err);
      return -1;
    }
  }
  return 0;
}

/* A state that keeps DIR/lp open (the leader) after filling it. */
static lua_State *fill_lp(const char *path, long total) {
  static const char fill[] =
      "local dir, total = ...\n"
      "local db = assert(require('levelparty').open(dir))\n"
      "local ops = {}\n"
      "for i = 0, total - 1 do\n"
      "  local k = string.format('key%013d', i)\n"
      "  ops[#ops + 1] = { type = 'put', key = k, value = k:rep(7):sub(1, 100) }\n"
      "  if #ops == 1000 or i == total - 1 then assert(db:batch(ops)) ops = {} end\n"
      "end\n"
      "return db\n";
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  levelparty_openlibs(L);
  if (luaL_loadbuffer(L, fill, sizeof fill - 1, "=fill") != LUA_OK) goto fail;
  lua_pushstring(L, path);
  lua_pushinteger(L, total);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) goto fail;
  return L; /* the handle stays on the stack: the party stays open */
fail:
  fprintf(stderr, "embed_get: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return NULL;
}

int main(int argc, char **argv) {
  long n = 200000, total = 100000;
  int threads[16], nthreads = 0, i;
  char lp_dir[4096], raw_dir[4096];
  bench_ldb raw;
  lua_State *keeper;
  if (argc < 2) {
    fprintf(stderr, "usage: embed_get DIR [-n N] [THREADS...]\n");
    return 2;
  }
  for (i = 2; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      n = atol(argv[++i]);
    else if (nthreads < 16 && atoi(argv[i]) > 0 && atoi(argv[i]) <= 64)
      threads[nthreads++] = atoi(argv[i]);
  }
  if (nthreads == 0) {
    threads[0] = 1, threads[1] = 2, threads[2] = 4;
    nthreads = 3;
  }
  if (mkdir(argv[1], 0700) != 0) {
    perror("embed_get: mkdir");
    return 1;
  }
  snprintf(lp_dir, sizeof lp_dir, "%s/lp", argv[1]);
  snprintf(raw_dir, sizeof raw_dir, "%s/raw", argv[1]);
  if (fill_raw(&raw, raw_dir, total) != 0) return 1;
  if ((keeper = fill_lp(lp_dir, total)) == NULL) return 1;
  fprintf(stderr, "embed_get: %ld entries, %ld gets per run\n", total, n);
  for (i = 0; i < nthreads; i++) {
    double lp[ROUNDS], rw[ROUNDS];
    int r;
    /* the sides take turns, the VM's speed drifts within minutes */
    for (r = 0; r < ROUNDS; r++) {
      lp[r] = run(threads[i], embed_worker, lp_dir, NULL, n, total);
      rw[r] = run(threads[i], raw_worker, NULL, &raw, n, total);
      if (lp[r] < 0 || rw[r] < 0) return 1;
    }
    printf("embed get %d %.0f\nraw get %d %.0f\n", threads[i], median(lp), threads[i], median(rw));
    fflush(stdout);
  }
  lua_close(keeper);
  bench_ldb_close(&raw);
  return 0;
}

/*
 * bench/raw_leveldb.c: the C reference workload on raw LevelDB (leveldb/c.h
 * only), the ceiling the Lua leader is compared with in bench/run.lua.
 *
 * usage: raw_leveldb DIR [-n N] [--shuffle] [--no-bloom]
 *
 * DIR must not hold a LevelDB yet (it is created when missing; the caller
 * removes it afterwards).  Workloads, in this order, on one database:
 *   put    N puts, one at a time (no batch, sync off), keys in ascending order
 *          (with --shuffle: a fixed-seed random permutation of the same keys)
 *   get    N gets of uniformly random existing keys (fixed-seed xorshift)
 *   iter   full forward iterations over every entry (keys and values read),
 *          ITER_RUNS of them; the median rate is reported
 *   batch  100 write batches of 1000 puts each, fresh keys; counted per put
 *
 * Key i is sprintf("key%013d", i): exactly 16 bytes.  Its value is 100 bytes:
 * the key repeated and cut to 100 bytes (snappy compresses it, as it would
 * compress the Lua side's identical values).  Options are the ones levelparty
 * uses by default (bench/bench.h): create_if_missing, snappy
 * compression on, LevelDB's default block cache, a 10-bit bloom filter
 * (--no-bloom: none); and error_if_exists, this bench's own guard.
 *
 * Output, one line per workload on stdout: "raw <name> <ops_per_sec>".  The
 * configuration goes to stderr.  Exit status 1 on any LevelDB error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

#define KEY_LEN    16
#define VAL_LEN    100
#define BATCHES    100
#define BATCH_SIZE 1000
#define ITER_RUNS  5

/* the keys' xorshift64* (bench/bench.h), fixed seed: the same keys every run */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void) { return bench_xorshift64(&rng_state); }

/* key holds KEY_BUF bytes; i < 10^13 always fits in KEY_LEN. */
#define KEY_BUF 32
static void make_key(char key[KEY_BUF], long i) { snprintf(key, KEY_BUF, "key%013ld", i); }

static void make_value(char val[VAL_LEN], const char key[KEY_LEN]) {
  for (size_t j = 0; j < VAL_LEN; j++)
    val[j] = key[j % KEY_LEN];
}

static void check(char *err, const char *what) {
  if (err != NULL) {
    fprintf(stderr, "raw_leveldb: %s: %s\n", what, err);
    leveldb_free(err);
    exit(1);
  }
}

static void report(const char *name, long ops, double secs) {
  printf("raw %s %.1f\n", name, secs > 0 ? (double)ops / secs : 0.0);
  fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void usage(void) {
  fprintf(stderr, "usage: raw_leveldb DIR [-n N] [--shuffle] [--no-bloom]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *dir = NULL;
  long n = 100000;
  int shuffle = 0, bloom = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      n = strtol(argv[++i], NULL, 10);
      if (n <= 0 || n > 1000000000) usage();
    } else if (strcmp(argv[i], "--shuffle") == 0) {
      shuffle = 1;
    } else if (strcmp(argv[i], "--no-bloom") == 0) {
      bloom = 0;
    } else if (argv[i][0] != '-' && dir == NULL) {
      dir = argv[i];
    } else {
      usage();
    }
  }
  if (dir == NULL) usage();
  mkdir(dir, 0755); /* EEXIST is fine; LevelDB reports anything worse */

  bench_ldb l;
  bench_ldb_init(&l, bloom);
  leveldb_options_set_error_if_exists(l.options, 1); /* DIR must be new (above) */
  if (bench_ldb_open(&l, "raw_leveldb", dir) != 0) return 1;
  leveldb_t *db = l.db;
  leveldb_readoptions_t *ro = l.ro;
  leveldb_writeoptions_t *wo = l.wo;
  char *err = NULL;
  fprintf(stderr,
          "raw_leveldb: leveldb %d.%d, n=%ld, puts %s, key 16 B, value 100 B, "
          "snappy, default cache, bloom %s\n",
          leveldb_major_version(), leveldb_minor_version(), n, shuffle ? "shuffled" : "ascending",
          bloom ? "10 bits" : "off");

  long *order = malloc((size_t)n * sizeof *order);
  if (order == NULL) {
    fprintf(stderr, "raw_leveldb: out of memory\n");
    return 1;
  }
  for (long i = 0; i < n; i++)
    order[i] = i;
  if (shuffle) {
    for (long i = n - 1; i > 0; i--) {
      long j = (long)(rng_next() % (uint64_t)(i + 1));
      long t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
  }

  char key[KEY_BUF], val[VAL_LEN];
  double t0 = bench_now_sec();
  for (long i = 0; i < n; i++) {
    make_key(key, order[i]);
    make_value(val, key);
    leveldb_put(db, wo, key, KEY_LEN, val, VAL_LEN, &err);
    check(err, "put");
  }
  report("put", n, bench_now_sec() - t0);
  free(order);

  long found = 0;
  t0 = bench_now_sec();
  for (long i = 0; i < n; i++) {
    make_key(key, (long)(rng_next() % (uint64_t)n));
    size_t vlen;
    char *v = leveldb_get(db, ro, key, KEY_LEN, &vlen, &err);
    check(err, "get");
    if (v != NULL && vlen == VAL_LEN) found++;
    leveldb_free(v);
  }
  report("get", n, bench_now_sec() - t0);
  if (found != n) {
    fprintf(stderr, "raw_leveldb: get found %ld of %ld\n", found, n);
    return 1;
  }

  /* The iteration is short (tens of ms) and this machine noisy: it runs
   * ITER_RUNS times and the median rate is reported (bench/run.lua does the
   * same on the Lua side). */
  double rates[ITER_RUNS];
  for (int run = 0; run < ITER_RUNS; run++) {
    long seen = 0;
    size_t bytes = 0;
    t0 = bench_now_sec();
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
      size_t kl, vl;
      const char *k = leveldb_iter_key(it, &kl);
      const char *v = leveldb_iter_value(it, &vl);
      bytes += kl + vl + (size_t)(k[0] ^ v[0]); /* touch both sides */
      seen++;
    }
    leveldb_iter_get_error(it, &err);
    check(err, "iterate");
    leveldb_iter_destroy(it);
    rates[run] = (double)seen / (bench_now_sec() - t0);
    if (seen != n || bytes == 0) {
      fprintf(stderr, "raw_leveldb: iterated %ld of %ld\n", seen, n);
      return 1;
    }
  }
  for (int run = 0; run < ITER_RUNS; run++)
    fprintf(stderr, "iter run %d: %.0f\n", run, rates[run]);
  qsort(rates, ITER_RUNS, sizeof rates[0], cmp_double);
  report("iter", 1, 1.0 / rates[ITER_RUNS / 2]);

  leveldb_writebatch_t *b = leveldb_writebatch_create();
  t0 = bench_now_sec();
  for (long bi = 0; bi < BATCHES; bi++) {
    leveldb_writebatch_clear(b);
    for (long j = 0; j < BATCH_SIZE; j++) {
      make_key(key, n + bi * BATCH_SIZE + j);
      make_value(val, key);
      leveldb_writebatch_put(b, key, KEY_LEN, val, VAL_LEN);
    }
    leveldb_write(db, wo, b, &err);
    check(err, "batch");
  }
  report("batch", (long)BATCHES * BATCH_SIZE, bench_now_sec() - t0);
  leveldb_writebatch_destroy(b);

  bench_ldb_close(&l);
  return 0;
}

/*
 * bench/bench.h: what the C benches share (raw_leveldb, embed_get, sock_floor,
 * ngx_floor, reopen_leveldb, failover_watch): levelparty's default LevelDB
 * options, a monotonic clock, and the xorshift64* that picks their keys.
 *
 * LevelDB options.  A bench that opens LevelDB itself is compared with
 * levelparty, so it must open LevelDB as the library does.  What the library
 * uses for a party opened with no options (lp_party_opts_init in
 * src/party.c, then lp_engine_open in src/engine.c):
 *   create_if_missing on, error_if_exists off, paranoid_checks off,
 *   snappy compression,
 *   LevelDB's default block cache (8 MiB: cache_size 0 sets none),
 *   a bloom filter of LP_DEFAULT_BLOOM_BITS (10) bits per key (src/private.h),
 *   LevelDB's default write buffer, block size and max_open_files;
 *   reads with default read options (fill_cache, no snapshot), writes with
 *   sync off.
 * The bloom bits come from src/private.h itself (the Makefile builds the
 * benches with -Isrc), so the two cannot drift; the rest is mirrored here by
 * hand: a change of lp_engine_opts_init or lp_party_opts_init belongs here too.
 * A bench that wants something else (raw_leveldb's error_if_exists guard, a
 * directory that must exist already) changes the options object after
 * bench_ldb_init and says so.  What lp_engine_open does besides the options
 * is not done here: its check of CURRENT before the open, and, at a process's
 * first open, a compaction of the empty key's range that starts LevelDB's
 * background thread under a full signal mask.
 *
 * Everything is static inline: a bench uses what it needs, and the rest costs
 * nothing and warns about nothing.
 */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <leveldb/c.h>

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "private.h" /* LP_DEFAULT_BLOOM_BITS */

/* Seconds on the monotonic clock. */
static inline double bench_now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64* on *state (never 0): deterministic, cheap, good enough for
 * picking keys; the same state gives the same sequence in every bench. */
static inline uint64_t bench_xorshift64(uint64_t *state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545f4914f6cdd1dull;
}

/* One LevelDB opened as levelparty opens it.  bench_ldb_init creates every
 * object but db; bench_ldb_open sets db; bench_ldb_close closes db first (it
 * uses the filter until then) and destroys the rest.  The read and write
 * options are shared by every call, threads included, as the engine's are. */
typedef struct bench_ldb {
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_filterpolicy_t *filter; /* NULL: no bloom filter */
  leveldb_readoptions_t *ro;      /* defaults */
  leveldb_writeoptions_t *wo;     /* sync = 0 */
} bench_ldb;

/* levelparty's defaults; bloom 0 leaves the filter out (raw_leveldb's
 * --no-bloom), anything else uses LP_DEFAULT_BLOOM_BITS. */
static inline void bench_ldb_init(bench_ldb *l, int bloom) {
  l->db = NULL;
  l->options = leveldb_options_create();
  leveldb_options_set_create_if_missing(l->options, 1);
  leveldb_options_set_error_if_exists(l->options, 0);
  leveldb_options_set_paranoid_checks(l->options, 0);
  leveldb_options_set_compression(l->options, leveldb_snappy_compression);
  l->filter = bloom ? leveldb_filterpolicy_create_bloom(LP_DEFAULT_BLOOM_BITS) : NULL;
  if (l->filter != NULL) leveldb_options_set_filter_policy(l->options, l->filter);
  l->ro = leveldb_readoptions_create();
  l->wo = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(l->wo, 0);
}

/* Opens dir into l->db; 0, or -1 after "PROG: leveldb_open DIR: error" on
 * stderr. */
static inline int bench_ldb_open(bench_ldb *l, const char *prog, const char *dir) {
  char *err = NULL;
  l->db = leveldb_open(l->options, dir, &err);
  if (err != NULL || l->db == NULL) {
    fprintf(stderr, "%s: leveldb_open %s: %s\n", prog, dir, err ? err : "?");
    leveldb_free(err);
    if (l->db != NULL) leveldb_close(l->db);
    l->db = NULL;
    return -1;
  }
  return 0;
}

static inline void bench_ldb_close(bench_ldb *l) {
  if (l->db != NULL) leveldb_close(l->db);
  l->db = NULL;
  leveldb_options_destroy(l->options);
  if (l->filter != NULL) leveldb_filterpolicy_destroy(l->filter);
  leveldb_readoptions_destroy(l->ro);
  leveldb_writeoptions_destroy(l->wo);
}

#endif

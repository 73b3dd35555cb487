/*
 * bench/reopen_leveldb.c: how long LevelDB itself takes to open a directory,
 * the reference for a failover's stall in bench/run.lua.
 *
 * usage: reopen_leveldb DIR
 *
 * DIR is a LevelDB that a killed process left behind (its log not yet turned
 * into a table).  One leveldb_open with the options levelparty uses by default
 * (bench/bench.h: snappy on, LevelDB's default block cache, a 10-bit
 * bloom filter; but a missing database is an error, not a new one), then one
 * leveldb_get of a key so that the figure includes reading the first table, as
 * a new leader's first answer does.  Only the first open after a kill says
 * anything: it replays the log and writes it out as a table; a second open
 * finds nothing to replay.
 *
 * Output on stdout: "reopen open_ms <ms> first_get_ms <ms>" (the second figure
 * includes the first).  Exit status 1 on any LevelDB error.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: reopen_leveldb DIR\n");
    return 2;
  }
  char *err = NULL;
  bench_ldb l;
  bench_ldb_init(&l, 1);
  leveldb_options_set_create_if_missing(l.options, 0); /* DIR is what a kill left */

  double t0 = 1e3 * bench_now_sec();
  int opened = bench_ldb_open(&l, "reopen_leveldb", argv[1]);
  double t1 = 1e3 * bench_now_sec();
  if (opened != 0) return 1;
  size_t vlen = 0;
  /* the value itself does not matter; it is freed at once (NULL when absent) */
  char *v = leveldb_get(l.db, l.ro, "key0000000000000", 16, &vlen, &err);
  double t2 = 1e3 * bench_now_sec();
  if (err != NULL) {
    fprintf(stderr, "reopen_leveldb: leveldb_get: %s\n", err);
    return 1;
  }
  leveldb_free(v);
  printf("reopen open_ms %.3f first_get_ms %.3f\n", t1 - t0, t2 - t0);
  bench_ldb_close(&l);
  return 0;
}

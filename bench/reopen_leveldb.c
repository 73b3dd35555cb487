/*
 * bench/reopen_leveldb.c: how long LevelDB itself takes to open a directory,
 * the reference for a failover's stall in bench/run.lua.
 *
 * usage: reopen_leveldb DIR
 *
 * DIR is a LevelDB that a killed process left behind (its log not yet turned
 * into a table).  One leveldb_open with the options levelparty uses by default
 * (snappy on, LevelDB's default block cache, a 10-bit bloom filter), then one
 * leveldb_get of a key so that the figure includes reading the first table, as
 * a new leader's first answer does.  Only the first open after a kill says
 * anything: it replays the log and writes it out as a table; a second open
 * finds nothing to replay.
 *
 * Output on stdout: "reopen open_ms <ms> first_get_ms <ms>" (the second figure
 * includes the first).  Exit status 1 on any LevelDB error.
 */
#include <leveldb/c.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: reopen_leveldb DIR\n");
    return 2;
  }
  char *err = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_filterpolicy_t *bloom = leveldb_filterpolicy_create_bloom(10);
  leveldb_options_set_filter_policy(o, bloom);
  leveldb_options_set_compression(o, leveldb_snappy_compression);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();

  double t0 = now_ms();
  leveldb_t *db = leveldb_open(o, argv[1], &err);
  double t1 = now_ms();
  if (db == NULL) {
    fprintf(stderr, "reopen_leveldb: leveldb_open %s: %s\n", argv[1], err ? err : "?");
    return 1;
  }
  size_t vlen = 0;
  /* the value itself does not matter; it is freed at once (NULL when absent) */
  char *v = leveldb_get(db, ro, "key0000000000000", 16, &vlen, &err);
  double t2 = now_ms();
  if (err != NULL) {
    fprintf(stderr, "reopen_leveldb: leveldb_get: %s\n", err);
    return 1;
  }
  leveldb_free(v);
  printf("reopen open_ms %.3f first_get_ms %.3f\n", t1 - t0, t2 - t0);
  leveldb_close(db);
  leveldb_readoptions_destroy(ro);
  leveldb_options_destroy(o);
  leveldb_filterpolicy_destroy(bloom);
  return 0;
}

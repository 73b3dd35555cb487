/*
 * bench/reopen_leveldb.c: how long LevelDB itself takes to open a directory,
 * the reference for a failover's stall in bench/run.lua.
 *
 * usage: reopen_leveldb [--wait] DIR
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
 * With --wait, DIR's LOCK is still held by a live process: the tool prints
 * "waiting" and blocks on the LOCK (F_SETLKW, the kernel wakes it when the
 * holder's last descriptor of the file closes), then opens at once.  The
 * bench starts it, kills the holder, and learns from the times it prints how
 * long the kernel took to release the LOCK and what the whole failover costs
 * with nothing but LevelDB in it: a failover's floor.
 *
 * Output on stdout: "reopen open_ms <ms> first_get_ms <ms>" (the second figure
 * includes the first), with --wait followed by " lock_ns <t> open_ns <t>"
 * (CLOCK_MONOTONIC, ns: when the LOCK was granted, when leveldb_open
 * returned).  Exit status 1 on any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* Blocks until this process holds DIR/LOCK (a POSIX write lock, as
 * LevelDB's).  The descriptor stays open until exit: POSIX locks belong to
 * the process, so LevelDB's own F_SETLK on its descriptor then succeeds, and
 * closing either descriptor would drop both.  0, or -1 after a message. */
static int wait_lock(const char *dir) {
  char path[4096];
  struct flock fl;
  int fd;
  if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path) {
    fprintf(stderr, "reopen_leveldb: path too long\n");
    return -1;
  }
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror("reopen_leveldb: open LOCK");
    return -1;
  }
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  printf("waiting\n");
  fflush(stdout);
  while (fcntl(fd, F_SETLKW, &fl) != 0) {
    if (errno == EINTR) continue;
    perror("reopen_leveldb: F_SETLKW");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  int wait = argc == 3 && strcmp(argv[1], "--wait") == 0;
  if (argc != 2 && !wait) {
    fprintf(stderr, "usage: reopen_leveldb [--wait] DIR\n");
    return 2;
  }
  const char *dir = argv[argc - 1];
  char *err = NULL;
  bench_ldb l;
  bench_ldb_init(&l, 1);
  leveldb_options_set_create_if_missing(l.options, 0); /* DIR is what a kill left */
  if (wait && wait_lock(dir) != 0) return 1;

  double t0 = 1e3 * bench_now_sec();
  int opened = bench_ldb_open(&l, "reopen_leveldb", dir);
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
  printf("reopen open_ms %.3f first_get_ms %.3f", t1 - t0, t2 - t0);
  if (wait) printf(" lock_ns %.0f open_ns %.0f", t0 * 1e6, t1 * 1e6);
  printf("\n");
  bench_ldb_close(&l);
  return 0;
}

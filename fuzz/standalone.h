/*
 * standalone.h: what the standalone fuzz drivers share (-DLP_FUZZ_STANDALONE:
 * gcc with ASan+UBSan, no libFuzzer; `make test` runs them briefly).
 *
 * Included at the end of a fuzz target, which defines before it
 *   int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
 *   static void fail(const char *why);   (reports and abort()s)
 * and then its generator and main, which calls standalone_main.
 *
 * The command line of every driver:
 *   build/fuzz/fuzz_NAME_standalone [N] [seed] [file or directory...]
 * replays each file given (a directory: each regular file in it; the
 * regression corpus fuzz/corpus/NAME), then runs N generated inputs from the
 * tests' rng (test/tap.h) seeded with seed, and prints one TAP line.  A failed
 * invariant abort()s, which the runner counts as a failure.
 */
#ifndef LEVELPARTY_FUZZ_STANDALONE_H
#define LEVELPARTY_FUZZ_STANDALONE_H

#include "../test/tap.h" /* the tests' rng and TAP line */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* A number in [0, n) from the tests' rng; 0 when n is 0. */
static inline size_t below(size_t n) { return n ? (size_t)(tap_rng() % n) : 0; }

/* Runs one file as an input.  0, or -1 when it cannot be opened. */
static int standalone_replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  lp_buf b = {0};
  char chunk[4096];
  size_t n;
  if (!f) return -1;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (lp_buf_append(&b, chunk, n) != 0) fail("ENOMEM");
  fclose(f);
  LLVMFuzzerTestOneInput((const uint8_t *)b.ptr, b.len);
  lp_buf_free(&b);
  return 0;
}

/* Runs a file, or every regular file of a directory; returns how many. */
static long standalone_replay_path(const char *path) {
  DIR *d = opendir(path);
  struct dirent *de;
  long n = 0;
  if (!d) return standalone_replay_file(path) == 0 ? 1 : 0;
  while ((de = readdir(d)) != NULL) {
    char sub[4096];
    struct stat st;
    snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
    if (stat(sub, &st) == 0 && S_ISREG(st.st_mode) && standalone_replay_file(sub) == 0) n++;
  }
  closedir(d);
  return n;
}

/* The driver: parses the command line, replays the files, then calls
 * one(in) iters times with an emptied buffer (one generates an input in it
 * and runs it), then report() (statistics as a `#` line, may be NULL), and
 * prints "ok - NAME: F corpus files and N generated inputs, CLAIM".  Returns
 * the exit status. */
static int standalone_main(int argc, char **argv, const char *name, long default_iters,
                           void (*one)(lp_buf *in), void (*report)(void), const char *claim) {
  long iters = argc > 1 ? strtol(argv[1], NULL, 10) : default_iters, i, replayed = 0;
  lp_buf in = {0};
  char what[200];
  int a;
  if (iters <= 0) iters = default_iters;
  if (argc > 2) tap_rng_seed(strtoull(argv[2], NULL, 0));
  for (a = 3; a < argc; a++)
    replayed += standalone_replay_path(argv[a]);
  for (i = 0; i < iters; i++) {
    in.len = 0;
    one(&in);
  }
  lp_buf_free(&in);
  if (report) report();
  snprintf(what, sizeof what, "%s: %ld corpus files and %ld generated inputs, %s", name, replayed,
           iters, claim);
  check(1, what, "-");
  return tap_done();
}

#endif

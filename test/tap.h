/*
 * tap.h: the harness every C test (and the standalone fuzzer) shares, as
 * libuv's test/task.h.  Header only: each test is one translation unit.
 *
 * Output is TAP-like, one line per check: "ok - <what>" or
 * "not ok - <what>: <why>".  mk/runtests.sh counts the lines that start
 * with "ok - " and "not ok - "; anything else a test prints starts with "#".
 * Every line is flushed at once, so that a forked child never prints a
 * parent's buffered lines again.
 */
#ifndef LEVELPARTY_TAP_H
#define LEVELPARTY_TAP_H

#include "../src/private.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int tap_checks, tap_failures;
/* Failures qcheck printed since the caller last set this to 0. */
static int tap_quiet_failures;
#define TAP_QUIET_MAX 20

static inline void tap_vline(int cond, const char *what, const char *fmt, va_list ap) {
  if (cond) {
    printf("ok - %s\n", what);
  } else {
    printf("not ok - %s: ", what);
    vprintf(fmt, ap);
    printf("\n");
  }
  fflush(stdout);
}

/* One check: "ok - what", or "not ok - what: " and fmt's text.  Returns cond. */
static inline int check(int cond, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int check(int cond, const char *what, const char *fmt, ...) {
  va_list ap;
  tap_checks++;
  if (!cond) tap_failures++;
  va_start(ap, fmt);
  tap_vline(cond, what, fmt, ap);
  va_end(ap);
  return cond;
}

/* A check inside a loop: prints nothing when it holds, and only the first
 * TAP_QUIET_MAX failures since tap_quiet_failures was last zeroed (each one
 * printed counts as a failure).  A summary check() after the loop then says
 * what the loop did.  Returns cond. */
static inline int qcheck(int cond, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int qcheck(int cond, const char *what, const char *fmt, ...) {
  va_list ap;
  if (cond || tap_quiet_failures > TAP_QUIET_MAX) return cond;
  tap_quiet_failures++;
  tap_failures++;
  va_start(ap, fmt);
  tap_vline(0, what, fmt, ap);
  va_end(ap);
  return cond;
}

/* A check that cannot run here: counts as passed. */
static inline void skip(const char *what, const char *why) {
  tap_checks++;
  printf("ok - %s # SKIP %s\n", what, why);
  fflush(stdout);
}

/* The exit status of a test: 0 when every check held.  Prints a summary. */
static inline int tap_done(void) {
  printf("# %d checks, %d failed\n", tap_checks, tap_failures);
  fflush(stdout);
  return tap_failures ? 1 : 0;
}

/* A bound on waiting for something to happen, in ms, times TAP_TIME_SCALE
 * (an integer, 1 unless set): under valgrind (mk/runtests.sh sets 10) the
 * same work takes many times longer.  Bounds on silence (nothing must
 * happen within ms) are not scaled. */
static inline int tap_ms(int ms) {
  const char *s = getenv("TAP_TIME_SCALE");
  int k = s ? atoi(s) : 1;
  return k > 1 ? ms * k : ms;
}

/* A C string as a present slice (not copied). */
static inline lp_slice S(const char *s) {
  lp_slice r;
  r.ptr = s;
  r.len = strlen(s);
  return r;
}

/* Makes a fresh directory /tmp/lp-<name>-XXXXXX in buf (64 bytes are plenty
 * for a short name).  Returns buf, or NULL after a "not ok" line. */
static inline char *tap_tmpdir(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "/tmp/lp-%s-XXXXXX", name);
  if (mkdtemp(buf) != NULL) return buf;
  check(0, "mkdtemp", "%s: %s", buf, strerror(errno));
  return NULL;
}

static inline int tap_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  (void)remove(p);
  return 0;
}

/* Removes a tree without following symlinks; errors are ignored. */
static inline void rm_rf(const char *path) { nftw(path, tap_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* xorshift64*: deterministic, seedable (tests print their seed), not for
 * anything but choosing test cases. */
static uint64_t tap_rng_state = 0x9e3779b97f4a7c15ull;

static inline void tap_rng_seed(uint64_t seed) { tap_rng_state = seed ? seed : 1; }

static inline uint64_t tap_rng(void) {
  tap_rng_state ^= tap_rng_state >> 12;
  tap_rng_state ^= tap_rng_state << 25;
  tap_rng_state ^= tap_rng_state >> 27;
  return tap_rng_state * 0x2545f4914f6cdd1dull;
}

#endif

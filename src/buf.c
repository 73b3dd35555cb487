/*
 * buf.c: growable byte buffers, slices, error records, the clock, and the
 * range predicate shared by every side.
 *
 * Ownership: an lp_buf owns ptr[0..cap); bytes [0..len) are meaningful.  A
 * slice is borrowed unless it came from lp_slice_dup, in which case its owner
 * releases it with lp_slice_free.  Nothing here keeps global state.
 */
#include "private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Buffers                                                                    */
/* ------------------------------------------------------------------------ */

#define LP_BUF_MIN_CAP 64u

int lp_buf_reserve(lp_buf *b, size_t extra) {
  size_t need, cap;
  char *p;

  if (extra > SIZE_MAX - b->len) return -1;
  need = b->len + extra;
  if (need <= b->cap) return 0;
  if (need > (size_t)PTRDIFF_MAX) /* no allocator can satisfy it */
    return -1;
  cap = b->cap ? b->cap : LP_BUF_MIN_CAP;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  p = realloc(b->ptr, cap);
  if (p == NULL) return -1;
  b->ptr = p;
  b->cap = cap;
  return 0;
}

int lp_buf_append(lp_buf *b, const void *p, size_t n) {
  if (n == 0) return 0;
  if (lp_buf_reserve(b, n) != 0) return -1;
  memcpy(b->ptr + b->len, p, n);
  b->len += n;
  return 0;
}

void lp_buf_consume(lp_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->ptr, b->ptr + n, b->len - n);
  b->len -= n;
}

void lp_buf_free(lp_buf *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = b->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* Slices                                                                     */
/* ------------------------------------------------------------------------ */

/* A present empty slice gets a 1-byte block so that its ptr stays non-NULL
 * (presence is carried by ptr, see private.h). */
int lp_slice_dup(lp_slice s, lp_slice *out) {
  char *p;

  if (s.ptr == NULL) {
    *out = LP_SLICE_NONE;
    return 0;
  }
  p = malloc(s.len ? s.len : 1);
  if (p == NULL) {
    *out = LP_SLICE_NONE;
    return -1;
  }
  if (s.len) memcpy(p, s.ptr, s.len);
  out->ptr = p;
  out->len = s.len;
  return 0;
}

void lp_slice_free(lp_slice *s) {
  /* The slice came from lp_slice_dup; the const only protects readers. */
  free((void *)(uintptr_t)s->ptr);
  *s = LP_SLICE_NONE;
}

/* memcmp on the common prefix, then the shorter sorts first: LevelDB's
 * BytewiseComparator.  An absent slice compares like an empty one. */
int lp_slice_cmp(lp_slice a, lp_slice b) {
  size_t n = a.len < b.len ? a.len : b.len;
  int c = n ? memcmp(a.ptr, b.ptr, n) : 0;

  if (c != 0) return c < 0 ? -1 : 1;
  if (a.len == b.len) return 0;
  return a.len < b.len ? -1 : 1;
}

/* ------------------------------------------------------------------------ */
/* Error codes                                                                */
/* ------------------------------------------------------------------------ */

static const char *const code_names[LP_CODE_MAX] = {
    [LP_OK] = "OK",
    [LP_EIO] = "EIO",
    [LP_ECORRUPT] = "ECORRUPT",
    [LP_ENOENT] = "ENOENT",
    [LP_EEXIST] = "EEXIST",
    [LP_EACCES] = "EACCES",
    [LP_ENOTDIR] = "ENOTDIR",
    [LP_ELOCKED] = "ELOCKED",
    [LP_ECLOSED] = "ECLOSED",
    [LP_ETIMEDOUT] = "ETIMEDOUT",
    [LP_EINTR] = "EINTR",
    [LP_ELEADERLOST] = "ELEADERLOST",
    [LP_EPROTO] = "EPROTO",
    [LP_ENOMEM] = "ENOMEM",
    [LP_EINVAL] = "EINVAL",
    [LP_EREMOTE] = "EREMOTE",
    [LP_ETOOLARGE] = "ETOOLARGE",
};

/* Out-of-range codes are reported as "EIO" rather than a NULL the caller
 * would have to check. */
const char *lp_code_name(lp_code code) {
  if ((int)code < 0 || (int)code >= LP_CODE_MAX || code_names[code] == NULL) return "EIO";
  return code_names[code];
}

lp_code lp_code_from_name(const char *name, size_t len) {
  int i;

  if (name == NULL) return LP_OK;
  for (i = 0; i < LP_CODE_MAX; i++) {
    const char *n = code_names[i];
    if (n != NULL && strlen(n) == len && memcmp(n, name, len) == 0) return (lp_code)i;
  }
  return LP_OK;
}

void lp_err_set(lp_err *e, lp_code code, const char *fmt, ...) {
  va_list ap;
  char tmp[sizeof e->msg];

  if (e == NULL) return;
  e->code = code;
  tmp[0] = '\0';
  if (fmt != NULL) {
    /* Formatted through a copy so that an argument may be e->msg itself
     * (prefixing an earlier message); vsnprintf truncates and terminates. */
    va_start(ap, fmt);
    if (vsnprintf(tmp, sizeof tmp, fmt, ap) < 0) tmp[0] = '\0';
    va_end(ap);
  }
  memcpy(e->msg, tmp, sizeof tmp);
}

static int has_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* LevelDB's Status::ToString() is "<kind>: <msg>[: <msg2>]".  The texts
 * matched here are the ones LevelDB 1.23 produces (its lock failures:
 * docs/ARCHITECTURE.md, "The election"); the strerror parts are the C
 * locale's.  Order matters: a lock failure is ELOCKED whatever errno text
 * follows it. */
lp_code lp_code_from_leveldb(const char *status) {
  if (status == NULL) return LP_EIO;
  if (has_prefix(status, "IO error: lock ")) return LP_ELOCKED;
  if (strstr(status, "Permission denied") != NULL) return LP_EACCES;
  if (strstr(status, "Not a directory") != NULL) return LP_ENOTDIR;
  if (has_prefix(status, "Invalid argument:")) {
    if (strstr(status, "exists (error_if_exists is true)") != NULL) return LP_EEXIST;
    if (strstr(status, "does not exist (create_if_missing is false)") != NULL) return LP_ENOENT;
    return LP_EINVAL;
  }
  if (has_prefix(status, "NotFound:")) return LP_ENOENT;
  if (has_prefix(status, "Corruption:")) return LP_ECORRUPT;
  return LP_EIO;
}

uint64_t lp_now_ns(void) {
  struct timespec ts;

  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lp_sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------ */
/* Ranges                                                                     */
/* ------------------------------------------------------------------------ */

void lp_range_init(lp_range *r) {
  memset(r, 0, sizeof *r);
  r->gt = r->gte = r->lt = r->lte = LP_SLICE_NONE;
  r->limit = -1;
  r->reverse = 0;
  r->keys = r->values = 1;
}

/* Conjunction of the bounds that are present (ptr != NULL); a present empty
 * bound is a real bound (gt "" excludes only the empty key, lt "" excludes
 * everything). */
int lp_range_contains(const lp_range *r, lp_slice key) {
  if (r->gt.ptr != NULL && lp_slice_cmp(key, r->gt) <= 0) return 0;
  if (r->gte.ptr != NULL && lp_slice_cmp(key, r->gte) < 0) return 0;
  if (r->lt.ptr != NULL && lp_slice_cmp(key, r->lt) >= 0) return 0;
  if (r->lte.ptr != NULL && lp_slice_cmp(key, r->lte) > 0) return 0;
  return 1;
}

/* Keeps only the tighter of one side's two bounds (excl: gt or lt, incl: gte
 * or lte; upper: the lt/lte side); on a tie the exclusive one. */
static void one_bound(lp_slice *excl, lp_slice *incl, int upper) {
  int c;
  if (!excl->ptr || !incl->ptr) return;
  c = lp_slice_cmp(*excl, *incl);
  if (upper ? c <= 0 : c >= 0)
    *incl = LP_SLICE_NONE;
  else
    *excl = LP_SLICE_NONE;
}

void lp_range_one_bound(lp_range *r) {
  one_bound(&r->gt, &r->gte, 0);
  one_bound(&r->lt, &r->lte, 1);
}

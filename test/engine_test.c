/*
 * engine_test.c: the LevelDB engine (src/engine.c) against real LevelDB in a
 * temporary directory.
 *
 * Iterators and clear are checked against a brute-force model (filter a
 * fixed key set by the conjunction of bounds, sort, reverse, limit) written
 * here independently of the engine and of lp_range_contains.
 */
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char base[64]; /* the test's temporary directory; everything lives below it */

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", base, name);
}

/* ------------------------------------------------------------------------ */
/* The fixed key set and the brute-force model                                */
/* ------------------------------------------------------------------------ */

typedef struct bytes {
  const char *p;
  size_t n;
} bytes;

#define B(lit)                                                                                     \
  { lit, sizeof(lit) - 1 }

/* Deliberately not sorted; different lengths, NUL and 0xff bytes, the empty key. */
static const bytes KEYS[] = {
    B("ba"),   B("a"),     B("aa"),   B("aab"),      B("ab"), B("b"),      B("c"),
    B("\x00"), B("a\x00"), B("\xff"), B("\xff\xff"), B(""),   B("a\x00z"),
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

/* Bound candidates: keys of the set and values between them. */
static const bytes CANDS[] = {
    B(""), B("\x00"), B("a"), B("a\x00"), B("aab"), B("abc"), B("b"), B("c\xff"), B("\xff"),
};
#define NCANDS (sizeof CANDS / sizeof CANDS[0])

/* Independent bytewise comparison (not lp_slice_cmp). */
static int ref_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t i;

  for (i = 0; i < an && i < bn; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x != y) return x < y ? -1 : 1;
  }
  return an == bn ? 0 : (an < bn ? -1 : 1);
}

static int ref_sorted[NKEYS]; /* indexes into KEYS in ascending order */

static void ref_sort(void) {
  size_t i, j;

  for (i = 0; i < NKEYS; i++)
    ref_sorted[i] = (int)i;
  for (i = 1; i < NKEYS; i++)
    for (j = i; j > 0; j--) {
      const bytes *a = &KEYS[ref_sorted[j - 1]], *b = &KEYS[ref_sorted[j]];
      if (ref_cmp(a->p, a->n, b->p, b->n) <= 0) break;
      int t = ref_sorted[j];
      ref_sorted[j] = ref_sorted[j - 1];
      ref_sorted[j - 1] = t;
    }
}

static int ref_in(const lp_range *r, const bytes *k) {
  if (r->gt.ptr && ref_cmp(k->p, k->n, r->gt.ptr, r->gt.len) <= 0) return 0;
  if (r->gte.ptr && ref_cmp(k->p, k->n, r->gte.ptr, r->gte.len) < 0) return 0;
  if (r->lt.ptr && ref_cmp(k->p, k->n, r->lt.ptr, r->lt.len) >= 0) return 0;
  if (r->lte.ptr && ref_cmp(k->p, k->n, r->lte.ptr, r->lte.len) > 0) return 0;
  return 1;
}

/* Fills out[] with the KEYS indexes the range yields, in order; returns count. */
static size_t ref_yield(const lp_range *r, int *out) {
  size_t i, n = 0;

  for (i = 0; i < NKEYS; i++) {
    int idx = ref_sorted[r->reverse ? NKEYS - 1 - i : i];
    if (r->limit >= 0 && (int64_t)n >= r->limit) break;
    if (ref_in(r, &KEYS[idx])) out[n++] = idx;
  }
  return n;
}

static void value_of(int idx, char *out, size_t *n) {
  out[0] = 'v';
  memcpy(out + 1, KEYS[idx].p, KEYS[idx].n);
  out[1 + KEYS[idx].n] = '#';
  *n = KEYS[idx].n + 2;
}

static int key_index(lp_slice k) {
  size_t i;

  for (i = 0; i < NKEYS; i++)
    if (KEYS[i].n == k.len && memcmp(KEYS[i].p, k.ptr, k.len) == 0) return (int)i;
  return -1;
}

static int put_all(lp_engine *e) {
  lp_batch *b = lp_batch_new();
  lp_err err;
  size_t i;
  int rc;

  for (i = 0; i < NKEYS; i++) {
    char v[16];
    size_t vn;
    value_of((int)i, v, &vn);
    lp_batch_put(b, (lp_slice){KEYS[i].p, KEYS[i].n}, (lp_slice){v, vn});
  }
  rc = lp_engine_write(e, b, 0, &err);
  lp_batch_free(b);
  return rc;
}

static void describe(const lp_range *r, char *out, size_t n) {
  const lp_slice *b[4] = {&r->gt, &r->gte, &r->lt, &r->lte};
  const char *names[4] = {"gt", "gte", "lt", "lte"};
  size_t used = 0;
  int i;

  out[0] = '\0';
  for (i = 0; i < 4; i++) {
    size_t j;
    if (!b[i]->ptr) continue;
    used += (size_t)snprintf(out + used, n - used, "%s=\"", names[i]);
    for (j = 0; j < b[i]->len && used + 8 < n; j++)
      used += (size_t)snprintf(out + used, n - used, "\\x%02x", (unsigned char)b[i]->ptr[j]);
    used += (size_t)snprintf(out + used, n - used, "\" ");
    if (used >= n) return;
  }
  snprintf(out + used, n - used, "limit=%lld reverse=%d", (long long)r->limit, r->reverse);
}

/* Runs the engine iterator and compares with the model.  Returns 0 when
 * equal, else fills why. */
static int iter_matches(lp_engine *e, const lp_range *r, char *why, size_t wn) {
  int want[NKEYS + 1];
  size_t nwant = ref_yield(r, want), got = 0;
  lp_engine_iter *it;
  lp_slice k, v;
  lp_err err;
  int rc;
  char d[256];

  describe(r, d, sizeof d);
  it = lp_engine_iter_open(e, r, &err);
  if (!it) {
    snprintf(why, wn, "%s: open failed: %.200s", d, err.msg);
    return -1;
  }
  while ((rc = lp_engine_iter_next(it, &k, &v, &err)) == 1) {
    int idx;
    if (got >= nwant) {
      snprintf(why, wn, "%s: more than %zu entries", d, nwant);
      goto bad;
    }
    if (r->keys) {
      idx = key_index(k);
      if (idx != want[got]) {
        snprintf(why, wn, "%s: entry %zu is key #%d, expected #%d", d, got, idx, want[got]);
        goto bad;
      }
    } else if (k.ptr != NULL) {
      snprintf(why, wn, "%s: key present though keys=0", d);
      goto bad;
    }
    if (r->values) {
      char ev[16];
      size_t en;
      value_of(want[got], ev, &en);
      if (!v.ptr || v.len != en || memcmp(v.ptr, ev, en) != 0) {
        snprintf(why, wn, "%s: entry %zu has a wrong value", d, got);
        goto bad;
      }
    } else if (v.ptr != NULL) {
      snprintf(why, wn, "%s: value present though values=0", d);
      goto bad;
    }
    got++;
  }
  if (rc < 0) {
    snprintf(why, wn, "%s: error %.200s", d, err.msg);
    goto bad;
  }
  if (got != nwant) {
    snprintf(why, wn, "%s: %zu entries, expected %zu", d, got, nwant);
    goto bad;
  }
  /* The end is sticky. */
  if (lp_engine_iter_next(it, &k, &v, &err) != 0) {
    snprintf(why, wn, "%s: next after the end is not 0", d);
    goto bad;
  }
  lp_engine_iter_close(it);
  return 0;
bad:
  lp_engine_iter_close(it);
  return -1;
}

/* Sets bound slot b (0 gt, 1 gte, 2 lt, 3 lte) of r. */
static void set_bound(lp_range *r, int b, const bytes *v) {
  lp_slice s = {v->p, v->n};
  switch (b) {
    case 0: r->gt = s; break;
    case 1: r->gte = s; break;
    case 2: r->lt = s; break;
    default: r->lte = s; break;
  }
}

static const int64_t LIMITS[] = {-1, 0, 1, 3, 100};
#define NLIMITS (sizeof LIMITS / sizeof LIMITS[0])

static lp_engine *open_db(const char *name, lp_err *err) {
  char p[256];
  lp_engine_opts o;

  path_of(p, sizeof p, name);
  lp_engine_opts_init(&o);
  return lp_engine_open(p, &o, err);
}

/* ------------------------------------------------------------------------ */
/* Open, close, errors                                                        */
/* ------------------------------------------------------------------------ */

static void test_opts(void) {
  lp_engine_opts o;

  memset(&o, 0x55, sizeof o);
  lp_engine_opts_init(&o);
  check(o.create_if_missing == 1 && o.error_if_exists == 0 && o.compression == 1 &&
            o.cache_size == 0 && o.write_buffer_size == 0 && o.block_size == 0 &&
            o.max_open_files == 0 && o.bloom_bits == 0,
        "opts_init defaults", "unexpected defaults");
}

/* Threads of this process, and whether every one but the main thread blocks
 * the signals a host relies on getting (SigBlk of /proc/self/task/N/status);
 * *main_blocked: whether the main thread blocks any. */
static int threads_blocked(int *nthreads, int *main_blocked) {
  static const int MUST[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGUSR1,  SIGUSR2, SIGPIPE,
                             SIGALRM, SIGTERM, SIGCHLD, SIGWINCH, SIGIO};
  DIR *d = opendir("/proc/self/task");
  struct dirent *de;
  int ok = 1;
  *nthreads = 0;
  *main_blocked = 0;
  if (!d) return 0;
  while ((de = readdir(d)) != NULL) {
    char path[300], line[256];
    unsigned long long blk = 0;
    FILE *f;
    size_t i;
    if (de->d_name[0] == '.') continue;
    (*nthreads)++;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", de->d_name);
    if ((f = fopen(path, "r")) == NULL) continue; /* gone meanwhile */
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "SigBlk: %llx", &blk) == 1) break;
    fclose(f);
    if (atoi(de->d_name) == (int)getpid()) {
      *main_blocked = blk != 0;
      continue;
    }
    for (i = 0; i < sizeof MUST / sizeof MUST[0]; i++)
      if (!(blk & (1ull << (MUST[i] - 1)))) ok = 0;
  }
  closedir(d);
  return ok;
}

/* LevelDB's background thread takes the signal mask of the thread that
 * schedules its first compaction.  The first open of a process has a thread
 * of its own start it (with every signal blocked) after the open returns;
 * until then every engine call that may schedule a compaction runs with every
 * signal blocked.  Here that thread is held back and puts from the main
 * thread, whose mask is empty, fill 64 KiB memtables until LevelDB starts its
 * thread: it must block every signal all the same, and the main thread's mask
 * must come back empty.  Must be the process's first lp_engine_open. */
static void test_bg_thread_signals(void) {
  char p[256], val[4096];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  sigset_t none;
  int n0, n, i, main_blocked, ok, appeared = 0;

  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL);
  (void)threads_blocked(&n0, &main_blocked);
  /* 1.5 s, longer than the puts take (atomic: the starter reads it) */
  __atomic_store_n(&lp_engine_starter_delay_ns, 1500000000u, __ATOMIC_RELAXED);
  lp_engine_opts_init(&o);
  o.write_buffer_size = 64 * 1024;
  path_of(p, sizeof p, "bgsignals");
  e = lp_engine_open(p, &o, &err);
  check(e != NULL, "bg thread: open", "%s", err.msg);
  if (!e) return;
  memset(val, 'v', sizeof val);
  for (i = 0; i < 400 && !appeared; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%06d", i);
    if (lp_engine_put(e, (lp_slice){key, strlen(key)}, (lp_slice){val, sizeof val}, 0, &err) < 0)
      break;
    (void)threads_blocked(&n, &main_blocked);
    appeared = n >= n0 + 2; /* the waiting starter and LevelDB's thread */
  }
  check(appeared, "bg thread: a put started LevelDB's thread while the starter waited",
        "threads %d (before the open %d) after %d puts of 4 KiB", n, n0, i);
  ok = threads_blocked(&n, &main_blocked);
  check(ok, "bg thread: every thread but the main one blocks the host's signals",
        "a thread of %d does not", n);
  check(!main_blocked, "bg thread: the main thread's signal mask is back to empty",
        "the main thread blocks signals after the puts");
  __atomic_store_n(&lp_engine_starter_delay_ns, 0, __ATOMIC_RELAXED);
  lp_engine_close(e); /* waits for the starter */
}

static void test_persistence(void) {
  char p[256];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  char *v = NULL;
  size_t vn = 0;
  int rc;

  path_of(p, sizeof p, "persist");
  lp_engine_opts_init(&o);
  /* Exercise every option path. */
  o.cache_size = 1 << 20;
  o.bloom_bits = 10;
  o.write_buffer_size = 1 << 16;
  o.block_size = 1024;
  o.max_open_files = 100;
  o.compression = 0;
  e = lp_engine_open(p, &o, &err);
  check(e != NULL, "open with every option set", "%s", err.msg);
  if (!e) return;
  rc = lp_engine_put(e, S("hello"), S("world"), 1, &err);
  check(rc == 0, "sync put", "%s", err.msg);
  rc = lp_engine_put(e, S("nosync"), S("x"), 0, &err);
  check(rc == 0, "non-sync put", "%s", err.msg);
  lp_engine_close(e);

  e = lp_engine_open(p, NULL, &err);
  check(e != NULL, "reopen with default options (NULL opts)", "%s", err.msg);
  if (!e) return;
  rc = lp_engine_get(e, S("hello"), &v, &vn, &err);
  check(rc == 1 && vn == 5 && memcmp(v, "world", 5) == 0, "data persists across close/reopen",
        "rc=%d", rc);
  free(v);
  rc = lp_engine_get(e, S("nosync"), &v, &vn, &err);
  check(rc == 1 && vn == 1 && v[0] == 'x', "non-sync data persists across a clean close", "rc=%d",
        rc);
  free(v);
  {
    char *s = lp_engine_property(e, "leveldb.stats");
    check(s != NULL && strstr(s, "Compactions") != NULL, "property leveldb.stats", "got %s",
          s ? s : "NULL");
    free(s);
    s = lp_engine_property(e, "leveldb.no-such-property");
    check(s == NULL, "unknown property gives NULL", "got %s", s);
    free(s);
  }
  lp_engine_close(e);
}

static void test_open_errors(void) {
  char p[256], q[300];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  int fd;

  lp_engine_opts_init(&o);
  o.create_if_missing = 0;
  path_of(p, sizeof p, "missing");
  memset(&err, 0, sizeof err);
  e = lp_engine_open(p, &o, &err);
  check(e == NULL && err.code == LP_ENOENT && strncmp(err.msg, "open: ", 6) == 0,
        "create_if_missing=0 on a missing dir gives ENOENT", "code %s msg %s",
        lp_code_name(err.code), err.msg);
  lp_engine_close(e);

  lp_engine_opts_init(&o);
  path_of(p, sizeof p, "exists");
  e = lp_engine_open(p, &o, &err);
  lp_engine_close(e);
  o.error_if_exists = 1;
  memset(&err, 0, sizeof err);
  e = lp_engine_open(p, &o, &err);
  check(e == NULL && err.code == LP_EEXIST && strncmp(err.msg, "open: ", 6) == 0,
        "error_if_exists on an existing db gives EEXIST", "code %s msg %s", lp_code_name(err.code),
        err.msg);
  lp_engine_close(e);

  lp_engine_opts_init(&o);
  path_of(p, sizeof p, "afile");
  fd = open(p, O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) close(fd);
  memset(&err, 0, sizeof err);
  e = lp_engine_open(p, &o, &err);
  check(e == NULL && err.code == LP_ENOTDIR, "a path that is a file gives ENOTDIR",
        "code %s msg %s", lp_code_name(err.code), err.msg);
  lp_engine_close(e);

  snprintf(q, sizeof q, "%s/db", p);
  memset(&err, 0, sizeof err);
  e = lp_engine_open(q, &o, &err);
  check(e == NULL && err.code == LP_ENOTDIR, "a path under a file gives ENOTDIR", "code %s msg %s",
        lp_code_name(err.code), err.msg);
  lp_engine_close(e);

  path_of(p, sizeof p, "no/such/parent");
  memset(&err, 0, sizeof err);
  e = lp_engine_open(p, &o, &err);
  check(e == NULL && err.code == LP_ENOENT, "a missing parent gives ENOENT", "code %s msg %s",
        lp_code_name(err.code), err.msg);
  lp_engine_close(e);
}

/* Opens path in a child process (optionally as user nobody) and reports the
 * child's lp_err through a pipe.  Returns 0 when the child reported. */
static int child_open(const char *path, int as_nobody, lp_err *out) {
  int fds[2];
  pid_t pid;
  ssize_t n;
  int status;

  memset(out, 0, sizeof *out);
  if (pipe(fds) != 0) return -1;
  pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    lp_err err;
    lp_engine_opts o;
    lp_engine *e;

    close(fds[0]);
    memset(&err, 0, sizeof err);
    if (as_nobody && geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
      err.code = LP_CODE_MAX; /* cannot drop privileges */
    } else {
      lp_engine_opts_init(&o);
      e = lp_engine_open(path, &o, &err);
      if (e) {
        err.code = LP_OK;
        snprintf(err.msg, sizeof err.msg, "opened");
        lp_engine_close(e);
      }
    }
    {
      /* Only defined bytes go through the pipe (msg's tail is not). */
      lp_err rep;
      memset(&rep, 0, sizeof rep);
      rep.code = err.code;
      snprintf(rep.msg, sizeof rep.msg, "%.*s", (int)strnlen(err.msg, sizeof err.msg), err.msg);
      n = write(fds[1], &rep, sizeof rep);
    }
    _exit(n == (ssize_t)sizeof err ? 0 : 1);
  }
  close(fds[1]);
  n = read(fds[0], out, sizeof *out);
  close(fds[0]);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return n == (ssize_t)sizeof *out ? 0 : -1;
}

static void test_unwritable(void) {
  char p[256];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  int rc;

  path_of(p, sizeof p, "readonly");
  if (mkdir(p, 0555) != 0 || chmod(p, 0555) != 0) {
    check(0, "unwritable dir gives EACCES", "mkdir: %s", strerror(errno));
    return;
  }
  if (geteuid() != 0) {
    lp_engine_opts_init(&o);
    e = lp_engine_open(p, &o, &err);
    check(e == NULL && err.code == LP_EACCES, "unwritable dir gives EACCES", "code %s msg %s",
          lp_code_name(err.code), err.msg);
    lp_engine_close(e);
    return;
  }
  /* Root ignores permissions: try as nobody in a child process. */
  chmod(base, 0755);
  rc = child_open(p, 1, &err);
  chmod(base, 0700);
  if (rc == 0 && err.code == LP_CODE_MAX) {
    printf("ok - skipped unwritable dir: cannot drop root privileges here\n");
    return;
  }
  check(rc == 0 && err.code == LP_EACCES && strstr(err.msg, "open: ") == err.msg,
        "unwritable dir gives EACCES (as nobody)", "rc %d code %s msg %s", rc,
        lp_code_name(err.code), err.msg);
}

static void test_lock(void) {
  char p[256];
  lp_engine *e;
  lp_err err, cerr;
  int rc;

  path_of(p, sizeof p, "locked");
  e = open_db("locked", &err);
  check(e != NULL, "open for the lock test", "%s", err.msg);
  if (!e) return;
  lp_engine_put(e, S("k"), S("v"), 0, &err);
  rc = child_open(p, 0, &cerr);
  check(rc == 0 && cerr.code == LP_ELOCKED && strncmp(cerr.msg, "open: IO error: lock ", 21) == 0,
        "second open from another process gives ELOCKED", "rc %d code %s msg %s", rc,
        lp_code_name(cerr.code), cerr.msg);
  rc = child_open(p, 0, &cerr);
  check(rc == 0 && cerr.code == LP_ELOCKED, "the lock is still held after a failed open elsewhere",
        "rc %d code %s msg %s", rc, lp_code_name(cerr.code), cerr.msg);
  lp_engine_close(e);
  rc = child_open(p, 0, &cerr);
  check(rc == 0 && cerr.code == LP_OK, "another process opens it after close",
        "rc %d code %s msg %s", rc, lp_code_name(cerr.code), cerr.msg);
}

/* ------------------------------------------------------------------------ */
/* get / put / del / batch                                                    */
/* ------------------------------------------------------------------------ */

static void test_kv(lp_engine *e) {
  static const char k1[] = "k\0ey\0";
  static const char v1[] = "v\0\0al\0ue";
  lp_slice key = {k1, sizeof k1 - 1}, val = {v1, sizeof v1 - 1};
  lp_slice key_prefix = {k1, 1};
  char *v = NULL;
  size_t vn = 99;
  lp_err err;
  int rc;

  rc = lp_engine_get(e, key, &v, &vn, &err);
  check(rc == 0 && v == NULL, "get of a missing key gives 0", "rc=%d", rc);
  rc = lp_engine_put(e, key, val, 0, &err);
  check(rc == 0, "put binary key and value", "%s", err.msg);
  rc = lp_engine_get(e, key, &v, &vn, &err);
  check(rc == 1 && vn == val.len && memcmp(v, val.ptr, vn) == 0,
        "get returns binary value with NUL bytes", "rc=%d len=%zu", rc, vn);
  free(v);
  rc = lp_engine_get(e, key_prefix, &v, &vn, &err);
  check(rc == 0, "a key is not found by its prefix before a NUL", "rc=%d", rc);
  free(v);

  rc = lp_engine_put(e, S("empty"), (lp_slice){"", 0}, 0, &err);
  check(rc == 0, "put an empty value", "%s", err.msg);
  v = NULL;
  rc = lp_engine_get(e, S("empty"), &v, &vn, &err);
  check(rc == 1 && vn == 0 && v != NULL, "get an empty value gives found, len 0, non-NULL",
        "rc=%d len=%zu", rc, vn);
  free(v);
  rc = lp_engine_put(e, S("absent"), LP_SLICE_NONE, 0, &err);
  rc = rc == 0 ? lp_engine_get(e, S("absent"), &v, &vn, &err) : -1;
  check(rc == 1 && vn == 0, "an absent value slice is stored as empty", "rc=%d", rc);
  free(v);

  rc = lp_engine_put(e, (lp_slice){"", 0}, S("ek"), 0, &err);
  rc = rc == 0 ? lp_engine_get(e, (lp_slice){"", 0}, &v, &vn, &err) : -1;
  check(rc == 1 && vn == 2 && memcmp(v, "ek", 2) == 0, "empty key allowed at this layer", "rc=%d",
        rc);
  free(v);

  rc = lp_engine_put(e, key, S("second"), 1, &err);
  rc = rc == 0 ? lp_engine_get(e, key, &v, &vn, &err) : -1;
  check(rc == 1 && vn == 6 && memcmp(v, "second", 6) == 0, "overwrite with sync put", "rc=%d", rc);
  free(v);

  rc = lp_engine_del(e, key, 0, &err);
  check(rc == 0, "del", "%s", err.msg);
  rc = lp_engine_get(e, key, &v, &vn, &err);
  check(rc == 0, "get after del gives 0", "rc=%d", rc);
  rc = lp_engine_del(e, S("never-existed"), 1, &err);
  check(rc == 0, "sync del of a missing key is fine", "%s", err.msg);

  lp_engine_del(e, S("empty"), 0, &err);
  lp_engine_del(e, S("absent"), 0, &err);
  lp_engine_del(e, (lp_slice){"", 0}, 0, &err);
}

static void test_batch(lp_engine *e) {
  lp_batch *b = lp_batch_new();
  lp_engine_iter *it;
  lp_range r;
  lp_slice k, v;
  lp_err err;
  char *val;
  size_t vn;
  int rc, n;

  check(b != NULL && lp_batch_count(b) == 0 && lp_batch_bytes(b) == 0, "new batch is empty",
        "count %zu", b ? lp_batch_count(b) : 0);
  lp_engine_put(e, S("b-old"), S("1"), 0, &err);
  lp_batch_put(b, S("b-1"), (lp_slice){"x\0y", 3});
  lp_batch_put(b, S("b-2"), S("22"));
  lp_batch_del(b, S("b-old"));
  lp_batch_del(b, S("b-1")); /* later ops in a batch win */
  lp_batch_put(b, S("b-1"), S("one"));
  check(lp_batch_count(b) == 5, "batch counts operations", "count %zu", lp_batch_count(b));
  check(lp_batch_bytes(b) == (3 + 3) + (3 + 2) + 5 + 3 + (3 + 3), "batch counts bytes", "bytes %zu",
        lp_batch_bytes(b));

  /* An iterator opened before the write must see none of it (snapshot),
   * and after the write all of it is there at once. */
  lp_range_init(&r);
  r.gte = S("b-");
  r.lt = S("b.");
  it = lp_engine_iter_open(e, &r, &err);
  rc = lp_engine_write(e, b, 1, &err);
  check(rc == 0, "batch write", "%s", err.msg);
  n = 0;
  while (lp_engine_iter_next(it, &k, &v, &err) == 1)
    n++;
  lp_engine_iter_close(it);
  check(n == 1, "an iterator opened before the batch sees the old state only", "saw %d", n);

  rc = lp_engine_get(e, S("b-1"), &val, &vn, &err);
  check(rc == 1 && vn == 3 && memcmp(val, "one", 3) == 0, "batch: last op on a key wins", "rc=%d",
        rc);
  free(val);
  rc = lp_engine_get(e, S("b-2"), &val, &vn, &err);
  check(rc == 1 && vn == 2, "batch put applied", "rc=%d", rc);
  free(val);
  rc = lp_engine_get(e, S("b-old"), &val, &vn, &err);
  check(rc == 0, "batch del applied", "rc=%d", rc);

  check(lp_batch_count(b) == 5, "a batch written is left as it was", "count %zu",
        lp_batch_count(b));
  lp_batch_free(b);
  b = lp_batch_new();
  rc = lp_engine_write(e, b, 0, &err);
  check(rc == 0, "writing an empty batch is fine", "%s", err.msg);
  lp_batch_del(b, S("b-1"));
  lp_batch_del(b, S("b-2"));
  lp_engine_write(e, b, 0, &err);
  lp_batch_free(b);
  lp_batch_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* Iterators                                                                  */
/* ------------------------------------------------------------------------ */

static void test_iter_combos(lp_engine *e) {
  int mask, rev;

  for (mask = 0; mask < 16; mask++)
    for (rev = 0; rev < 2; rev++) {
      int nb = 0, slots[4], b;
      size_t combos = 1, c, li, cases = 0;
      char why[512] = "";
      int bad = 0;

      for (b = 0; b < 4; b++)
        if (mask & (1 << b)) {
          slots[nb++] = b;
          combos *= NCANDS;
        }
      for (c = 0; c < combos && !bad; c++) {
        lp_range r;
        size_t rest = c;
        lp_range_init(&r);
        r.reverse = rev;
        for (b = 0; b < nb; b++) {
          set_bound(&r, slots[b], &CANDS[rest % NCANDS]);
          rest /= NCANDS;
        }
        for (li = 0; li < NLIMITS && !bad; li++) {
          r.limit = LIMITS[li];
          cases++;
          if (iter_matches(e, &r, why, sizeof why) != 0) bad = 1;
        }
      }
      {
        char what[128];
        snprintf(what, sizeof what, "iterator %s%s%s%s%s%s (%zu cases)", mask & 1 ? "gt " : "",
                 mask & 2 ? "gte " : "", mask & 4 ? "lt " : "", mask & 8 ? "lte " : "",
                 mask ? "" : "unbounded ", rev ? "reverse" : "forward", cases);
        check(!bad, what, "%s", why);
      }
    }
}

static void test_iter_specific(lp_engine *e) {
  struct {
    const char *name;
    lp_range r;
  } cases[6];
  char why[512];
  int i, rev;

  /* gt together with gte, each one the tighter, and equal. */
  for (i = 0; i < 6; i++)
    lp_range_init(&cases[i].r);
  cases[0].name = "gt=b with gte=a (gt tighter)";
  cases[0].r.gt = S("b"), cases[0].r.gte = S("a");
  cases[1].name = "gt=a with gte=b (gte tighter)";
  cases[1].r.gt = S("a"), cases[1].r.gte = S("b");
  cases[2].name = "gt=aa with gte=aa (gt wins)";
  cases[2].r.gt = S("aa"), cases[2].r.gte = S("aa");
  cases[3].name = "lt=b with lte=ba (lt tighter)";
  cases[3].r.lt = S("b"), cases[3].r.lte = S("ba");
  cases[4].name = "lt=c with lte=b (lte tighter)";
  cases[4].r.lt = S("c"), cases[4].r.lte = S("b");
  cases[5].name = "lt=b with lte=b (lt wins)";
  cases[5].r.lt = S("b"), cases[5].r.lte = S("b");
  for (i = 0; i < 6; i++)
    for (rev = 0; rev < 2; rev++) {
      char what[128];
      int want[NKEYS + 1];
      size_t n;
      cases[i].r.reverse = rev;
      n = ref_yield(&cases[i].r, want);
      snprintf(what, sizeof what, "%s %s (%zu keys)", cases[i].name, rev ? "reverse" : "forward",
               n);
      check(n > 0 && iter_matches(e, &cases[i].r, why, sizeof why) == 0, what, "%s",
            n ? why : "the model yields nothing");
    }

  for (rev = 0; rev < 2; rev++) {
    lp_range r;
    lp_range_init(&r);
    r.reverse = rev;
    r.keys = 0;
    check(iter_matches(e, &r, why, sizeof why) == 0,
          rev ? "values-only reverse" : "values-only forward", "%s", why);
    r.keys = 1;
    r.values = 0;
    r.gt = S("a");
    r.limit = 4;
    check(iter_matches(e, &r, why, sizeof why) == 0,
          rev ? "keys-only reverse with gt and limit" : "keys-only forward with gt and limit", "%s",
          why);
    r.keys = 0;
    check(iter_matches(e, &r, why, sizeof why) == 0,
          rev ? "neither keys nor values reverse" : "neither keys nor values forward", "%s", why);
  }
}

static void test_iter_snapshot(lp_engine *e) {
  lp_range r;
  lp_engine_iter *fw, *rv;
  lp_slice k, v;
  lp_err err;
  size_t i;
  int ok = 1, ok2 = 1, n = 0;

  lp_range_init(&r);
  fw = lp_engine_iter_open(e, &r, &err);
  r.reverse = 1;
  rv = lp_engine_iter_open(e, &r, &err);
  /* Take the first entry of each, then disturb the db. */
  lp_engine_iter_next(fw, &k, &v, &err);
  lp_engine_iter_next(rv, &k, &v, &err);
  lp_engine_put(e, S("aa0"), S("new"), 0, &err);
  lp_engine_put(e, S("b"), S("changed"), 0, &err);
  lp_engine_del(e, S("ab"), 0, &err);
  lp_engine_put(e, S("\xff\xff\xff"), S("new"), 0, &err);
  for (i = 1; i < NKEYS; i++) {
    char ev[16];
    size_t en;
    int want = ref_sorted[i];
    if (lp_engine_iter_next(fw, &k, &v, &err) != 1 || key_index(k) != want) {
      ok = 0;
      break;
    }
    value_of(want, ev, &en);
    if (v.len != en || memcmp(v.ptr, ev, en) != 0) ok = 0;
    n++;
  }
  if (ok && lp_engine_iter_next(fw, &k, &v, &err) != 0) ok = 0;
  for (i = 1; i < NKEYS; i++)
    if (lp_engine_iter_next(rv, &k, &v, &err) != 1 || key_index(k) != ref_sorted[NKEYS - 1 - i]) {
      ok2 = 0;
      break;
    }
  if (ok2 && lp_engine_iter_next(rv, &k, &v, &err) != 0) ok2 = 0;
  lp_engine_iter_close(fw);
  lp_engine_iter_close(rv);
  check(ok, "forward iterator ignores writes made during iteration", "after %d entries", n);
  check(ok2, "reverse iterator ignores writes made during iteration", "mismatch");
  lp_engine_del(e, S("aa0"), 0, &err);
  lp_engine_del(e, S("\xff\xff\xff"), 0, &err);
  put_all(e);
}

static void test_iter_empty(void) {
  lp_engine *e;
  lp_err err;
  int rev, ok = 1;

  e = open_db("emptydb", &err);
  check(e != NULL, "open an empty db", "%s", err.msg);
  if (!e) return;
  for (rev = 0; rev < 2; rev++) {
    int mask;
    for (mask = 0; mask < 16; mask++) {
      lp_range r;
      lp_engine_iter *it;
      lp_slice k, v;
      lp_range_init(&r);
      r.reverse = rev;
      if (mask & 1) r.gt = S("a");
      if (mask & 2) r.gte = S("");
      if (mask & 4) r.lt = S("z");
      if (mask & 8) r.lte = S("\xff");
      it = lp_engine_iter_open(e, &r, &err);
      if (!it || lp_engine_iter_next(it, &k, &v, &err) != 0 ||
          lp_engine_iter_next(it, &k, &v, &err) != 0)
        ok = 0;
      lp_engine_iter_close(it);
    }
  }
  check(ok, "every range on an empty db yields nothing", "an entry or error");
  {
    lp_range r;
    lp_clear_state st;
    int rc;
    lp_range_init(&r);
    memset(&st, 0, sizeof st);
    rc = lp_engine_clear_step(e, &r, &st, 10, 0, &err);
    check(rc == 0 && st.deleted == 0, "clear on an empty db", "rc=%d", rc);
    lp_clear_state_free(&st);
  }
  lp_engine_close(e);
}

/* Many keys in SST files (small write buffer), so seeks cross blocks and files. */
static void test_iter_large(void) {
  char p[256];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  int i, rev, ok = 1;
  char why[128] = "";
  const int N = 5000;

  path_of(p, sizeof p, "large");
  lp_engine_opts_init(&o);
  o.write_buffer_size = 64 * 1024;
  o.block_size = 512;
  e = lp_engine_open(p, &o, &err);
  check(e != NULL, "open the large db", "%s", err.msg);
  if (!e) return;
  for (i = 0; i < N && ok; i++) {
    char k[32], v[64];
    int kn = snprintf(k, sizeof k, "k%06d", i * 2); /* even numbers only */
    memset(v, 'a' + i % 26, sizeof v);
    if (lp_engine_put(e, (lp_slice){k, (size_t)kn}, (lp_slice){v, sizeof v}, 0, &err) != 0) ok = 0;
  }
  lp_engine_close(e); /* flush the memtable to tables */
  e = lp_engine_open(p, &o, &err);
  check(ok && e != NULL, "write and reopen 5000 keys", "%s", err.msg);
  if (!e) return;
  {
    char *files = lp_engine_property(e, "leveldb.num-files-at-level0");
    char *stats = lp_engine_property(e, "leveldb.sstables");
    check(stats != NULL && strstr(stats, "k000000") != NULL, "data lives in table files",
          "sstables: %s", stats ? stats : "NULL");
    free(files);
    free(stats);
  }
  for (rev = 0; rev < 2; rev++) {
    int t;
    for (t = 0; t < 200 && ok; t++) {
      /* Bounds are odd (absent) or even (present) numbers, inclusive or not. */
      int a = (t * 37) % (2 * N + 4) - 2, bnd = a + (t * 53) % 400;
      char lo[32], hi[32];
      lp_range r;
      lp_engine_iter *it;
      lp_slice k, v;
      int lo_incl = t & 1, hi_incl = (t >> 1) & 1, lim = (t % 3 == 0) ? 7 : -1;
      int first, last, cur, got = 0, want;
      snprintf(lo, sizeof lo, "k%06d", a < 0 ? 0 : a);
      snprintf(hi, sizeof hi, "k%06d", bnd);
      lp_range_init(&r);
      r.reverse = rev;
      r.limit = lim;
      if (lo_incl)
        r.gte = S(lo);
      else
        r.gt = S(lo);
      if (hi_incl)
        r.lte = S(hi);
      else
        r.lt = S(hi);
      if (a < 0) a = 0;
      /* smallest even >= a (> a when exclusive), largest even <= bnd (< when exclusive) */
      first = lo_incl ? a : a + 1;
      if (first % 2) first++;
      last = hi_incl ? bnd : bnd - 1;
      if (last % 2) last--;
      if (last > 2 * (N - 1)) last = 2 * (N - 1);
      want = last >= first ? (last - first) / 2 + 1 : 0;
      if (lim >= 0 && want > lim) want = lim;
      cur = rev ? last : first;
      it = lp_engine_iter_open(e, &r, &err);
      while (lp_engine_iter_next(it, &k, &v, &err) == 1) {
        char ek[32];
        snprintf(ek, sizeof ek, "k%06d", cur);
        if (k.len != strlen(ek) || memcmp(k.ptr, ek, k.len) != 0 || v.len != 64) {
          snprintf(why, sizeof why, "t=%d rev=%d: got %.*s, want %s", t, rev, (int)k.len, k.ptr,
                   ek);
          ok = 0;
          break;
        }
        cur += rev ? -2 : 2;
        got++;
      }
      if (ok && got != want) {
        snprintf(why, sizeof why, "t=%d rev=%d: %d entries, want %d", t, rev, got, want);
        ok = 0;
      }
      lp_engine_iter_close(it);
    }
  }
  check(ok, "ranges over 5000 keys in table files, both directions", "%s", why);
  {
    lp_range r;
    lp_clear_state st;
    int rc, calls = 0;
    char *v = NULL;
    size_t vn;
    lp_range_init(&r);
    r.gte = S("k001000");
    r.lt = S("k009000");
    memset(&st, 0, sizeof st);
    while ((rc = lp_engine_clear_step(e, &r, &st, 500, 0, &err)) == 1)
      calls++;
    calls++;
    check(rc == 0 && st.deleted == 4000 && calls == 8, "clear 4000 keys in slices of 500",
          "rc=%d deleted=%lld calls=%d", rc, (long long)st.deleted, calls);
    lp_clear_state_free(&st);
    rc = lp_engine_get(e, S("k000998"), &v, &vn, &err);
    free(v);
    rc += lp_engine_get(e, S("k009000"), &v, &vn, &err);
    free(v);
    rc += lp_engine_get(e, S("k001000"), &v, &vn, &err);
    check(rc == 2, "clear kept the keys outside the range", "rc sum %d", rc);
  }
  lp_engine_close(e);
}

/* ------------------------------------------------------------------------ */
/* Clear                                                                      */
/* ------------------------------------------------------------------------ */

/* Runs one clear case; 0 when it matches the model. */
static int clear_case(lp_engine *e, const lp_range *r, size_t slice, char *why, size_t wn) {
  int want[NKEYS + 1], gone[NKEYS];
  size_t nwant = ref_yield(r, want), i, expect_calls;
  lp_clear_state st;
  lp_err err;
  int rc, calls = 0;
  char d[256];

  describe(r, d, sizeof d);
  if (put_all(e) != 0) {
    snprintf(why, wn, "%s: put_all failed", d);
    return -1;
  }
  memset(&st, 0, sizeof st);
  for (;;) {
    rc = lp_engine_clear_step(e, r, &st, slice, 0, &err);
    calls++;
    if (rc != 1 || calls > 100) break;
  }
  lp_clear_state_free(&st);
  if (rc != 0) {
    snprintf(why, wn, "%s slice %zu: rc %d %.200s", d, slice, rc, rc < 0 ? err.msg : "");
    return -1;
  }
  expect_calls = nwant == 0 ? 1 : (nwant + slice - 1) / slice;
  if ((size_t)calls != expect_calls) {
    snprintf(why, wn, "%s slice %zu: %d calls, expected %zu", d, slice, calls, expect_calls);
    return -1;
  }
  memset(gone, 0, sizeof gone);
  for (i = 0; i < nwant; i++)
    gone[want[i]] = 1;
  for (i = 0; i < NKEYS; i++) {
    char *v = NULL;
    size_t vn;
    rc = lp_engine_get(e, (lp_slice){KEYS[i].p, KEYS[i].n}, &v, &vn, &err);
    free(v);
    if (rc != !gone[i]) {
      snprintf(why, wn, "%s slice %zu: key #%zu %s", d, slice, i,
               gone[i] ? "survived" : "was deleted");
      return -1;
    }
  }
  return 0;
}

static void test_clear(lp_engine *e) {
  static const size_t SLICES[] = {1, 2, 1000};
  size_t si;
  int rev;

  for (si = 0; si < 3; si++)
    for (rev = 0; rev < 2; rev++) {
      int mask, bad = 0, cases = 0;
      char why[512] = "", what[128];
      for (mask = 0; mask < 16 && !bad; mask++) {
        int t;
        for (t = 0; t < 4 && !bad; t++) {
          size_t li;
          lp_range r;
          int b;
          lp_range_init(&r);
          r.reverse = rev;
          for (b = 0; b < 4; b++)
            if (mask & (1 << b)) set_bound(&r, b, &CANDS[tap_rng() % NCANDS]);
          for (li = 0; li < NLIMITS && !bad; li++) {
            r.limit = LIMITS[li];
            cases++;
            if (clear_case(e, &r, SLICES[si], why, sizeof why) != 0) bad = 1;
          }
        }
      }
      snprintf(what, sizeof what, "clear %s in slices of %zu (%d cases)",
               rev ? "reverse" : "forward", SLICES[si], cases);
      check(!bad, what, "%s", why);
    }

  /* Calls after the end keep returning 0 and delete nothing new. */
  {
    lp_range r;
    lp_clear_state st;
    lp_err err;
    int rc1, rc2;
    char *v = NULL;
    size_t vn;
    put_all(e);
    lp_range_init(&r);
    r.lt = S("b");
    memset(&st, 0, sizeof st);
    while ((rc1 = lp_engine_clear_step(e, &r, &st, 0, 0, &err)) == 1) {
    }
    lp_engine_put(e, S("a"), S("back"), 0, &err);
    rc2 = lp_engine_clear_step(e, &r, &st, 0, 0, &err);
    check(rc1 == 0 && rc2 == 0 && lp_engine_get(e, S("a"), &v, &vn, &err) == 1,
          "clear: max_ops 0 means one call; done state is sticky", "rc1=%d rc2=%d", rc1, rc2);
    free(v);
    lp_clear_state_free(&st);
    put_all(e);
  }
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct worker {
  lp_engine *e;
  int id, errors;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  lp_err err;
  int i;

  for (i = 0; i < 300; i++) {
    char k[32], *v = NULL;
    size_t vn;
    int kn = snprintf(k, sizeof k, "t%d-%04d", w->id, i);
    lp_slice key = {k, (size_t)kn};
    if (lp_engine_put(w->e, key, key, i % 50 == 0, &err) != 0) w->errors++;
    if (lp_engine_get(w->e, key, &v, &vn, &err) != 1 || vn != (size_t)kn || memcmp(v, k, vn) != 0)
      w->errors++;
    free(v);
    if (i % 3 == 0 && lp_engine_del(w->e, key, 0, &err) != 0) w->errors++;
    if (i % 50 == 0) {
      lp_range r;
      lp_engine_iter *it;
      lp_slice ik, iv;
      int n = 0;
      lp_range_init(&r);
      r.gte = S("a");
      r.lt = S("c");
      it = lp_engine_iter_open(w->e, &r, &err);
      while (lp_engine_iter_next(it, &ik, &iv, &err) == 1)
        n++;
      lp_engine_iter_close(it);
      if (n == 0) w->errors++;
    }
  }
  return NULL;
}

static void test_threads(lp_engine *e) {
  pthread_t th[4];
  worker w[4];
  int i, errors = 0, started = 0;

  for (i = 0; i < 4; i++) {
    w[i].e = e;
    w[i].id = i;
    w[i].errors = 0;
    if (pthread_create(&th[i], NULL, worker_main, &w[i]) == 0)
      started++;
    else
      break;
  }
  for (i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    errors += w[i].errors;
  }
  check(started == 4 && errors == 0, "4 threads put/get/del/iterate on one engine",
        "%d started, %d errors", started, errors);
}

/* The leader's worker (worker.c): jobs run in order, each signals the
 * eventfd, outcomes are taken once, and stop runs what is still queued. */
static void test_worker(lp_engine *e) {
  lp_worker *w = lp_worker_start(e);
  lp_batch *b[3];
  uint64_t t[3];
  lp_err err;
  char *v = NULL;
  size_t vn;
  int i, done = 0, rc[3];

  check(w != NULL, "worker: starts", "lp_worker_start failed");
  if (w == NULL) return;
  for (i = 0; i < 3; i++) {
    char key[16];
    snprintf(key, sizeof key, "job%d", i);
    b[i] = lp_batch_new();
    lp_batch_put(b[i], S(key), S("v"));
    t[i] = lp_worker_submit(w, b[i], 0);
  }
  check(t[0] != 0 && (t[0] & LP_JOB_TOKEN) && t[1] > t[0] && t[2] > t[1],
        "worker: job tokens carry LP_JOB_TOKEN and grow", "%llx %llx %llx",
        (unsigned long long)t[0], (unsigned long long)t[1], (unsigned long long)t[2]);
  for (i = 0; i < 2000 && !done; i++) {
    struct pollfd pf = {lp_worker_fd(w), POLLIN, 0};
    (void)poll(&pf, 1, 10);
    (void)lp_worker_collect(w);
    done = lp_worker_done(w, t[0]) && lp_worker_done(w, t[1]);
  }
  check(done, "worker: jobs finish and signal the eventfd", "not done after 20 s");
  rc[0] = lp_worker_take(w, t[0], &err);
  rc[1] = lp_worker_take(w, t[0], &err);
  rc[2] = lp_worker_take(w, LP_JOB_TOKEN | 999, &err);
  check(rc[0] == 0 && rc[1] == -2 && rc[2] == -2, "worker: an outcome is taken once", "%d %d %d",
        rc[0], rc[1], rc[2]);
  lp_worker_stop(w); /* job 1 was not taken; job 2 may still be queued */
  rc[0] = lp_engine_get(e, S("job2"), &v, &vn, &err);
  free(v);
  check(rc[0] == 1, "worker: stop runs the jobs still queued", "get: %d", rc[0]);
  lp_worker_stop(NULL);
}

/* Truncated table files: iterators and get must report errors, not crash. */
/* Counts the entries of dir whose name ends with suffix. */
static int count_suffix(const char *dir, const char *suffix) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;
  size_t m = strlen(suffix);
  if (d == NULL) return -1;
  while ((de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (l >= m && strcmp(de->d_name + l - m, suffix) == 0) n++;
  }
  closedir(d);
  return n;
}

/* Without CURRENT, leveldb_open would start a new database and delete every
 * table: lp_engine_open refuses with ECORRUPT and leaves the files alone. */
static void test_current_missing(void) {
  char p[256], f[300], cur[64];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  char *v = NULL;
  size_t vn = 0;
  int i, fd, tables, rc;
  ssize_t n;

  path_of(p, sizeof p, "nocurrent");
  lp_engine_opts_init(&o);
  o.write_buffer_size = 64 * 1024;
  e = lp_engine_open(p, &o, &err);
  if (!e) {
    check(0, "open the db to lose CURRENT from", "%s", err.msg);
    return;
  }
  for (i = 0; i < 3000; i++) {
    char k[32], val[64];
    int kn = snprintf(k, sizeof k, "c%06d", i);
    memset(val, 'z', sizeof val);
    lp_engine_put(e, (lp_slice){k, (size_t)kn}, (lp_slice){val, sizeof val}, 0, &err);
  }
  lp_engine_close(e);
  tables = count_suffix(p, ".ldb");
  snprintf(f, sizeof f, "%s/CURRENT", p);
  fd = open(f, O_RDONLY);
  n = fd >= 0 ? read(fd, cur, sizeof cur) : -1;
  if (fd >= 0) close(fd);
  check(tables > 0 && n > 0 && unlink(f) == 0, "a db with tables, its CURRENT removed",
        "%d tables, CURRENT %zd bytes", tables, n);
  memset(&err, 0, sizeof err);
  e = lp_engine_open(p, &o, &err);
  check(e == NULL && err.code == LP_ECORRUPT && strstr(err.msg, "no CURRENT") != NULL,
        "no CURRENT but tables gives ECORRUPT", "code %s msg %s", lp_code_name(err.code), err.msg);
  lp_engine_close(e);
  check(count_suffix(p, ".ldb") == tables, "the tables are left alone", "%d tables, was %d",
        count_suffix(p, ".ldb"), tables);
  fd = open(f, O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) {
    check(write(fd, cur, (size_t)n) == n, "CURRENT restored", "write failed");
    close(fd);
  }
  e = lp_engine_open(p, &o, &err);
  check(e != NULL, "with CURRENT back the db opens", "%s", err.msg);
  if (!e) return;
  rc = lp_engine_get(e, S("c002999"), &v, &vn, &err);
  check(rc == 1 && vn == 64, "and holds its data", "rc=%d", rc);
  free(v);
  lp_engine_close(e);
}

static void test_corrupt(void) {
  char p[256], f[600];
  lp_engine_opts o;
  lp_engine *e;
  lp_err err;
  int i, rc, truncated = 0;

  path_of(p, sizeof p, "corrupt");
  lp_engine_opts_init(&o);
  o.write_buffer_size = 64 * 1024;
  e = lp_engine_open(p, &o, &err);
  if (!e) {
    check(0, "open the db to corrupt", "%s", err.msg);
    return;
  }
  for (i = 0; i < 3000; i++) {
    char k[32], v[64];
    int kn = snprintf(k, sizeof k, "c%06d", i);
    memset(v, 'z', sizeof v);
    lp_engine_put(e, (lp_slice){k, (size_t)kn}, (lp_slice){v, sizeof v}, 0, &err);
  }
  lp_engine_close(e);
  for (i = 0; i < 100; i++) {
    struct stat sb;
    snprintf(f, sizeof f, "%s/%06d.ldb", p, i);
    if (stat(f, &sb) == 0 && truncate(f, sb.st_size / 2) == 0) truncated++;
  }
  e = lp_engine_open(p, &o, &err);
  if (!e) {
    check(truncated > 0 && err.code == LP_ECORRUPT, "open of a corrupt db reports ECORRUPT",
          "%d files, code %s msg %s", truncated, lp_code_name(err.code), err.msg);
    return;
  }
  {
    lp_range r;
    lp_engine_iter *it;
    lp_slice k, v;
    int n = 0;
    lp_range_init(&r);
    it = lp_engine_iter_open(e, &r, &err);
    memset(&err, 0, sizeof err);
    while ((rc = lp_engine_iter_next(it, &k, &v, &err)) == 1)
      n++;
    /* LevelDB reports a short table as "IO error: ...: Invalid argument" (the
     * footer read) or as a corruption, depending on where it is cut. */
    check(truncated > 0 && rc == -1 && strncmp(err.msg, "iterator: ", 10) == 0 &&
              (err.code == LP_ECORRUPT || err.code == LP_EIO),
          "iterator over truncated tables fails with \"iterator: <leveldb error>\"",
          "%d files truncated, %d entries, rc %d, code %s msg %s", truncated, n, rc,
          lp_code_name(err.code), err.msg);
    rc = lp_engine_iter_next(it, &k, &v, &err);
    check(rc == -1, "the iterator error is sticky", "rc %d", rc);
    lp_engine_iter_close(it);
  }
  {
    char *v = NULL;
    size_t vn;
    memset(&err, 0, sizeof err);
    rc = lp_engine_get(e, S("c000001"), &v, &vn, &err);
    check(rc == -1 && v == NULL && strncmp(err.msg, "get: ", 5) == 0,
          "get from a truncated table fails with \"get: ...\"", "rc %d code %s msg %s", rc,
          lp_code_name(err.code), err.msg);
    free(v);
  }
  lp_engine_close(e);
}

static void test_null_range(lp_engine *e) {
  lp_engine_iter *it;
  lp_slice k, v;
  lp_err err;
  size_t n = 0;

  it = lp_engine_iter_open(e, NULL, &err);
  while (it && lp_engine_iter_next(it, &k, &v, &err) == 1)
    n++;
  lp_engine_iter_close(it);
  check(n == NKEYS, "a NULL range iterates everything", "%zu entries", n);
}

int main(void) {
  lp_engine *e;
  lp_err err;

  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!tap_tmpdir(base, sizeof base, "engine")) return tap_done();
  ref_sort();

  test_opts();
  test_bg_thread_signals(); /* the first open of this process */
  test_persistence();
  test_open_errors();
  test_unwritable();
  test_lock();

  e = open_db("main", &err);
  check(e != NULL, "open the main db", "%s", err.msg);
  if (e) {
    test_kv(e);
    test_batch(e);
    check(put_all(e) == 0, "load the fixed key set", "write failed");
    test_iter_combos(e);
    test_iter_specific(e);
    test_iter_snapshot(e);
    test_null_range(e);
    test_clear(e);
    test_threads(e);
    test_worker(e);
    lp_engine_close(e);
  }
  test_iter_empty();
  test_iter_large();
  test_corrupt();
  test_current_missing();

  rm_rf(base);
  return tap_done();
}

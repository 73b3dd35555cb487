/*
 * engine.c: LevelDB access for the leader (and for a promoted follower).
 *
 * An lp_engine owns one open leveldb_t and every LevelDB object it was opened
 * with (options, block cache, filter policy), plus one read-options object and
 * two write-options objects (sync / not sync) created once and shared by every
 * call.  After lp_engine_open returns, none of these is modified again until
 * lp_engine_close, so any number of threads may call get/put/del/write,
 * iter_open, clear_step and property on one engine at the same time: LevelDB
 * serialises what it must.  Iterators and batches are single-threaded objects.
 *
 * Ranges are a plain conjunction of their bounds (docs/PROTOCOL.md,
 * "Differences from level-party 5.1.1"): the iterator reduces gt/gte to the
 * tighter lower bound and lt/lte to the tighter upper bound, and never treats
 * "first key out of range" as the end on the side it seeks from.
 */
#include "private.h"

#include <dirent.h>
#include <leveldb/c.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct lp_engine {
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_cache_t *cache;             /* NULL: LevelDB's default 8 MiB cache */
  leveldb_filterpolicy_t *filter;     /* NULL: no bloom filter */
  leveldb_readoptions_t *ropts;       /* defaults: fill_cache, no snapshot */
  leveldb_writeoptions_t *wopts;      /* sync = 0 */
  leveldb_writeoptions_t *wopts_sync; /* sync = 1 */
  int has_starter;                    /* its open started the starter: see bg_ready */
};

static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_cond = PTHREAD_COND_INITIALIZER;
static int bg_ready; /* see bg_started */

/* LevelDB reads a Slice(NULL, 0) as empty, but passing NULL to memcpy even
 * with a zero length is undefined: give it a real address instead. */
static const char *bytes_of(lp_slice s) { return s.ptr ? s.ptr : ""; }

/* Reports a LevelDB error string (malloc'd by LevelDB) as "op: text" and frees
 * it. */
static void fail_leveldb(lp_err *err, const char *op, char *status) {
  if (err) lp_err_set(err, lp_code_from_leveldb(status), "%s: %s", op, status);
  leveldb_free(status);
}

static void fail_nomem(lp_err *err, const char *op) {
  if (err) lp_err_set(err, LP_ENOMEM, "%s: out of memory", op);
}

void lp_engine_opts_init(lp_engine_opts *o) {
  memset(o, 0, sizeof *o);
  o->create_if_missing = 1;
  o->error_if_exists = 0;
  o->compression = 1;
  o->bloom_bits = 0;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* LevelDB opens a directory without a CURRENT file as a new database: it
 * writes a fresh MANIFEST, then deletes as obsolete every table that MANIFEST
 * does not list, which is all of them.  A directory whose CURRENT was lost (a
 * careless rm, a partial copy or restore) would come up empty and lose its
 * tables for good.  So, before leveldb_open and touching nothing: tables
 * (*.ldb, *.sst), or a MANIFEST with a log, and no CURRENT is ECORRUPT.  A
 * MANIFEST alone is what LevelDB itself leaves for an instant while another
 * process creates the database (it writes CURRENT next), and holds no data:
 * that is left to leveldb_open, which then fails on the other's LOCK. */
static int check_current(const char *path, lp_err *err) {
  DIR *d = opendir(path);
  struct dirent *de;
  int current = 0, manifest = 0, log = 0;
  size_t tables = 0;
  char table[64] = "";
  if (d == NULL) return 0; /* leveldb_open says why */
  while ((de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    if (strcmp(n, "CURRENT") == 0) {
      current = 1;
    } else if (strncmp(n, "MANIFEST-", 9) == 0) {
      manifest = 1;
    } else if (has_suffix(n, ".ldb") || has_suffix(n, ".sst")) {
      if (tables++ == 0) snprintf(table, sizeof table, "%.63s", n); /* names are short */
    } else if (has_suffix(n, ".log")) {
      log = 1;
    }
  }
  closedir(d);
  if (current || (tables == 0 && !(manifest && log))) return 0;
  if (tables > 0)
    lp_err_set(err, LP_ECORRUPT,
               "open: %s has no CURRENT file but holds %zu table file%s (%s%s): LevelDB would "
               "open it as a new, empty database and delete them; nothing was touched. Restore "
               "CURRENT (one line naming the newest MANIFEST-* file) and open again",
               path, tables, tables > 1 ? "s" : "", table, tables > 1 ? ", ..." : "");
  else
    lp_err_set(err, LP_ECORRUPT,
               "open: %s has no CURRENT file but holds a MANIFEST and a log: LevelDB would open "
               "it as a new database; nothing was touched. Restore CURRENT (one line naming the "
               "newest MANIFEST-* file) and open again",
               path);
  return -1;
}

/* Frees whatever part of e has been created; e->db is closed first so that
 * LevelDB stops using the cache and filter before they go. */
static void engine_free(lp_engine *e) {
  if (e->has_starter) { /* the starter uses e->db until it is done */
    pthread_mutex_lock(&bg_lock);
    while (!__atomic_load_n(&bg_ready, __ATOMIC_ACQUIRE))
      pthread_cond_wait(&bg_cond, &bg_lock);
    pthread_mutex_unlock(&bg_lock);
  }
  if (e->db) leveldb_close(e->db);
  if (e->options) leveldb_options_destroy(e->options);
  if (e->filter) leveldb_filterpolicy_destroy(e->filter);
  if (e->cache) leveldb_cache_destroy(e->cache);
  if (e->ropts) leveldb_readoptions_destroy(e->ropts);
  if (e->wopts) leveldb_writeoptions_destroy(e->wopts);
  if (e->wopts_sync) leveldb_writeoptions_destroy(e->wopts_sync);
  free(e);
}

/* LevelDB's background thread (one per process, its default Env's) starts
 * at the first compaction, from whichever thread asks for it, with that
 * thread's signal mask: in an nginx worker the main thread, whose signals
 * nginx relies on getting.  So the first open of this process has a thread
 * of its own, every signal blocked, start it (the starter): a compaction of
 * a range that holds the empty key only (levelparty never stores one)
 * flushes the memtable and finds nothing to compact, but schedules the
 * thread.  That costs a log switch and a MANIFEST write (about 1 ms), which
 * a new leader does not wait for before it serves: the starter runs beside
 * the first calls, and until it is done (bg_ready) every call that may
 * schedule a compaction (a get, an iterator's step, a write) runs with every
 * signal blocked, so that whichever thread starts LevelDB's, it starts
 * blocked.  bg_started: an open took the job; bg_ready: the job is done
 * (set under bg_lock, with bg_cond broadcast, for the close of that open's
 * engine; the starter is detached, so that a process that exits without
 * closing leaves no thread unjoined). */
static int bg_started;
uint64_t lp_engine_starter_delay_ns;

typedef struct {
  sigset_t old;
  int on;
} bg_guard;

static void guard_enter(bg_guard *g) {
  sigset_t all;
  g->on = !__atomic_load_n(&bg_ready, __ATOMIC_ACQUIRE);
  if (!g->on) return;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &g->old);
}

static void guard_leave(const bg_guard *g) {
  if (g->on) pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static void start_bg_thread(lp_engine *e) {
  leveldb_compact_range(e->db, "", 0, "", 0);
  pthread_mutex_lock(&bg_lock);
  __atomic_store_n(&bg_ready, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&bg_cond);
  pthread_mutex_unlock(&bg_lock);
}

static void *starter_main(void *arg) {
  uint64_t delay = __atomic_load_n(&lp_engine_starter_delay_ns, __ATOMIC_RELAXED);
  if (delay > 0) lp_sleep_ns(delay); /* tests: the window in which the guard must hold */
  start_bg_thread(arg);
  return NULL;
}

lp_engine *lp_engine_open(const char *path, const lp_engine_opts *o, lp_err *err) {
  lp_engine_opts defaults;
  lp_engine *e;
  char *status = NULL;
  sigset_t all, old;

  if (!path) {
    if (err) lp_err_set(err, LP_EINVAL, "open: no path");
    return NULL;
  }
  if (!o) {
    lp_engine_opts_init(&defaults);
    o = &defaults;
  }
  if (check_current(path, err) != 0) return NULL;
  e = calloc(1, sizeof *e);
  if (!e) {
    fail_nomem(err, "open");
    return NULL;
  }
  e->options = leveldb_options_create();
  e->ropts = leveldb_readoptions_create();
  e->wopts = leveldb_writeoptions_create();
  e->wopts_sync = leveldb_writeoptions_create();
  if (!e->options || !e->ropts || !e->wopts || !e->wopts_sync) goto nomem;
  leveldb_writeoptions_set_sync(e->wopts, 0);
  leveldb_writeoptions_set_sync(e->wopts_sync, 1);

  leveldb_options_set_create_if_missing(e->options, o->create_if_missing ? 1 : 0);
  leveldb_options_set_error_if_exists(e->options, o->error_if_exists ? 1 : 0);
  leveldb_options_set_paranoid_checks(e->options, o->paranoid_checks ? 1 : 0);
  leveldb_options_set_compression(e->options, o->compression ? leveldb_snappy_compression
                                                             : leveldb_no_compression);
  if (o->cache_size > 0) {
    e->cache = leveldb_cache_create_lru(o->cache_size);
    if (!e->cache) goto nomem;
    leveldb_options_set_cache(e->options, e->cache);
  }
  if (o->bloom_bits > 0) {
    e->filter = leveldb_filterpolicy_create_bloom(o->bloom_bits);
    if (!e->filter) goto nomem;
    leveldb_options_set_filter_policy(e->options, e->filter);
  }
  if (o->write_buffer_size > 0)
    leveldb_options_set_write_buffer_size(e->options, o->write_buffer_size);
  if (o->block_size > 0) leveldb_options_set_block_size(e->options, o->block_size);
  if (o->max_open_files > 0) leveldb_options_set_max_open_files(e->options, o->max_open_files);

  /* leveldb_open may start LevelDB's background thread (recovery), and the
   * starter inherits this mask (see bg_ready) */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  e->db = leveldb_open(e->options, path, &status);
  if (!status && e->db && !__atomic_exchange_n(&bg_started, 1, __ATOMIC_ACQ_REL)) {
    pthread_attr_t attr;
    pthread_t starter;
    int started = pthread_attr_init(&attr) == 0;
    if (started) {
      started = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                pthread_create(&starter, &attr, starter_main, e) == 0;
      pthread_attr_destroy(&attr);
    }
    if (started)
      e->has_starter = 1;
    else
      start_bg_thread(e); /* no thread to spare: here, before serving */
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (status) {
    /* LevelDB returns NULL with an error; be defensive about the other case. */
    if (e->db) {
      leveldb_close(e->db);
      e->db = NULL;
    }
    fail_leveldb(err, "open", status);
    engine_free(e);
    return NULL;
  }
  if (!e->db) goto nomem;
  return e;

nomem:
  fail_nomem(err, "open");
  engine_free(e);
  return NULL;
}

void lp_engine_close(lp_engine *e) {
  if (e) engine_free(e);
}

/* The value is LevelDB's own malloc'd copy (leveldb_free is free() in this
 * build), handed over without a second copy: the caller frees it with free().
 * A found empty value comes back as a non-NULL pointer with *vlen == 0 (glibc's
 * malloc(0) is never NULL); NULL without an error means "not found". */
int lp_engine_get(lp_engine *e, lp_slice key, char **val, size_t *vlen, lp_err *err) {
  char *status = NULL;
  size_t n = 0;
  bg_guard g;
  char *v;

  guard_enter(&g);
  v = leveldb_get(e->db, e->ropts, bytes_of(key), key.len, &n, &status);
  guard_leave(&g);

  if (status) {
    if (v) leveldb_free(v);
    fail_leveldb(err, "get", status);
    *val = NULL;
    *vlen = 0;
    return -1;
  }
  *val = v;
  *vlen = v ? n : 0;
  return v ? 1 : 0;
}

int lp_engine_put(lp_engine *e, lp_slice key, lp_slice value, int sync, lp_err *err) {
  char *status = NULL;
  bg_guard g;

  guard_enter(&g);
  leveldb_put(e->db, sync ? e->wopts_sync : e->wopts, bytes_of(key), key.len, bytes_of(value),
              value.len, &status);
  guard_leave(&g);
  if (status) {
    fail_leveldb(err, "put", status);
    return -1;
  }
  return 0;
}

int lp_engine_del(lp_engine *e, lp_slice key, int sync, lp_err *err) {
  char *status = NULL;
  bg_guard g;

  guard_enter(&g);
  leveldb_delete(e->db, sync ? e->wopts_sync : e->wopts, bytes_of(key), key.len, &status);
  guard_leave(&g);
  if (status) {
    fail_leveldb(err, "del", status);
    return -1;
  }
  return 0;
}

char *lp_engine_property(lp_engine *e, const char *name) {
  if (!e || !name) return NULL;
  /* malloc'd by LevelDB; leveldb_free is free(). */
  return leveldb_property_value(e->db, name);
}

int lp_engine_approximate_size(lp_engine *e, lp_slice start, lp_slice limit, uint64_t *size) {
  const char *s = bytes_of(start), *l;
  size_t slen = start.len, llen;
  char *last = NULL;

  *size = 0;
  if (!limit.ptr) {
    /* To the end: up to the last key followed by a 0 byte, past every key. */
    leveldb_iterator_t *it = leveldb_create_iterator(e->db, e->ropts);
    size_t n;
    const char *k;
    bg_guard g;
    if (!it) return -1;
    guard_enter(&g);
    leveldb_iter_seek_to_last(it);
    guard_leave(&g);
    if (!leveldb_iter_valid(it)) {
      leveldb_iter_destroy(it);
      return 0; /* empty */
    }
    k = leveldb_iter_key(it, &n);
    last = malloc(n + 1);
    if (last) {
      memcpy(last, k, n);
      last[n] = 0;
    }
    leveldb_iter_destroy(it);
    if (!last) return -1;
    limit = (lp_slice){last, n + 1};
  }
  l = bytes_of(limit);
  llen = limit.len;
  leveldb_approximate_sizes(e->db, 1, &s, &slen, &l, &llen, size);
  free(last);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                    */
/* ------------------------------------------------------------------------ */

/* count and bytes mirror what was added since creation; bytes is the sum of key and value lengths
 * (LevelDB's own framing is not counted). */
struct lp_batch {
  leveldb_writebatch_t *wb;
  size_t count, bytes;
};

lp_batch *lp_batch_new(void) {
  lp_batch *b = malloc(sizeof *b);

  if (!b) return NULL;
  b->wb = leveldb_writebatch_create();
  if (!b->wb) {
    free(b);
    return NULL;
  }
  b->count = 0;
  b->bytes = 0;
  return b;
}

void lp_batch_put(lp_batch *b, lp_slice key, lp_slice value) {
  leveldb_writebatch_put(b->wb, bytes_of(key), key.len, bytes_of(value), value.len);
  b->count++;
  b->bytes += key.len + value.len;
}

void lp_batch_del(lp_batch *b, lp_slice key) {
  leveldb_writebatch_delete(b->wb, bytes_of(key), key.len);
  b->count++;
  b->bytes += key.len;
}

size_t lp_batch_count(const lp_batch *b) { return b->count; }

size_t lp_batch_bytes(const lp_batch *b) { return b->bytes; }

void lp_batch_free(lp_batch *b) {
  if (!b) return;
  leveldb_writebatch_destroy(b->wb);
  free(b);
}

/* The batch is left as it was: the caller frees it. */
int lp_engine_write(lp_engine *e, lp_batch *b, int sync, lp_err *err) {
  char *status = NULL;
  bg_guard g;

  guard_enter(&g);
  leveldb_write(e->db, sync ? e->wopts_sync : e->wopts, b->wb, &status);
  guard_leave(&g);
  if (status) {
    fail_leveldb(err, "batch", status);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Iterators                                                                  */
/* ------------------------------------------------------------------------ */

enum { IT_FRESH, IT_RUNNING, IT_END, IT_ERROR };

/* The reduced range: at most one lower and one upper bound.  lo/hi point into
 * the iterator's own allocation (copied at open, so the caller's range may go
 * away); ptr == NULL means unbounded on that side. */
struct lp_engine_iter {
  leveldb_iterator_t *it; /* holds LevelDB's implicit snapshot from open time */
  lp_slice lo, hi;        /* the bounds in force: the range's, or a seek target */
  int lo_excl, hi_excl;
  lp_slice lo0, hi0; /* the range's own bounds (lp_engine_iter_seek restores them) */
  int lo0_excl, hi0_excl;
  char *target; /* the last seek target (malloc'd), or NULL */
  int reverse, keys, values;
  int state;
  int64_t remaining; /* entries still allowed; < 0 unlimited */
};

/* Reduces gt/gte to one lower bound and lt/lte to one upper bound.  On a tie
 * the exclusive bound is the tighter one. */
static void reduce_bounds(const lp_range *r, lp_slice *lo, int *lo_excl, lp_slice *hi,
                          int *hi_excl) {
  if (r->gt.ptr && r->gte.ptr) {
    if (lp_slice_cmp(r->gt, r->gte) >= 0) {
      *lo = r->gt;
      *lo_excl = 1;
    } else {
      *lo = r->gte;
      *lo_excl = 0;
    }
  } else if (r->gt.ptr) {
    *lo = r->gt;
    *lo_excl = 1;
  } else {
    *lo = r->gte; /* possibly absent */
    *lo_excl = 0;
  }
  if (r->lt.ptr && r->lte.ptr) {
    if (lp_slice_cmp(r->lt, r->lte) <= 0) {
      *hi = r->lt;
      *hi_excl = 1;
    } else {
      *hi = r->lte;
      *hi_excl = 0;
    }
  } else if (r->lt.ptr) {
    *hi = r->lt;
    *hi_excl = 1;
  } else {
    *hi = r->lte;
    *hi_excl = 0;
  }
}

/* Allocates an iterator over [lo, hi] (each bound optional, inclusive or not)
 * with the bounds copied into the same block, and creates LevelDB's iterator
 * (that is when its snapshot is taken). */
static lp_engine_iter *eiter_create(lp_engine *e, lp_slice lo, int lo_excl, lp_slice hi,
                                    int hi_excl, int reverse, int64_t limit) {
  lp_engine_iter *it;
  char *p;
  size_t extra = lo.len + hi.len;

  if (extra < lo.len || extra > SIZE_MAX - sizeof *it - 1) return NULL;
  it = malloc(sizeof *it + extra + 1);
  if (!it) return NULL;
  p = (char *)(it + 1);
  if (lo.ptr) {
    memcpy(p, lo.ptr, lo.len);
    it->lo = (lp_slice){p, lo.len};
    p += lo.len;
  } else {
    it->lo = LP_SLICE_NONE;
  }
  if (hi.ptr) {
    memcpy(p, hi.ptr, hi.len);
    it->hi = (lp_slice){p, hi.len};
  } else {
    it->hi = LP_SLICE_NONE;
  }
  it->lo_excl = lo_excl;
  it->hi_excl = hi_excl;
  it->lo0 = it->lo;
  it->hi0 = it->hi;
  it->lo0_excl = lo_excl;
  it->hi0_excl = hi_excl;
  it->target = NULL;
  it->reverse = reverse ? 1 : 0;
  it->keys = 1;
  it->values = 1;
  it->state = IT_FRESH;
  it->remaining = limit < 0 ? -1 : limit;
  it->it = leveldb_create_iterator(e->db, e->ropts);
  if (!it->it) {
    free(it);
    return NULL;
  }
  return it;
}

lp_engine_iter *lp_engine_iter_open(lp_engine *e, const lp_range *r, lp_err *err) {
  lp_slice lo, hi;
  int lo_excl, hi_excl;
  lp_engine_iter *it;
  lp_range all;

  if (!r) {
    lp_range_init(&all);
    r = &all;
  }
  reduce_bounds(r, &lo, &lo_excl, &hi, &hi_excl);
  it = eiter_create(e, lo, lo_excl, hi, hi_excl, r->reverse, r->limit);
  if (!it) {
    fail_nomem(err, "iterator");
    return NULL;
  }
  it->keys = r->keys ? 1 : 0;
  it->values = r->values ? 1 : 0;
  return it;
}

static int below_lower(const lp_engine_iter *it, lp_slice k) {
  int c;

  if (!it->lo.ptr) return 0;
  c = lp_slice_cmp(k, it->lo);
  return c < 0 || (c == 0 && it->lo_excl);
}

static int above_upper(const lp_engine_iter *it, lp_slice k) {
  int c;

  if (!it->hi.ptr) return 0;
  c = lp_slice_cmp(k, it->hi);
  return c > 0 || (c == 0 && it->hi_excl);
}

/* 1 when LevelDB's iterator reports an error (err filled, state IT_ERROR). */
static int check_error(lp_engine_iter *it, lp_err *err) {
  char *status = NULL;

  leveldb_iter_get_error(it->it, &status);
  if (!status) return 0;
  fail_leveldb(err, "iterator", status);
  it->state = IT_ERROR;
  return 1;
}

/* Positions a fresh iterator on its first candidate.  Forward: at lo or the
 * first key.  Reverse: at hi, or at the last key when nothing is >= hi; keys
 * above the upper bound are then stepped over by the main loop. */
static int eiter_position(lp_engine_iter *it, lp_err *err) {
  if (!it->reverse) {
    if (it->lo.ptr)
      leveldb_iter_seek(it->it, bytes_of(it->lo), it->lo.len);
    else
      leveldb_iter_seek_to_first(it->it);
    return 0;
  }
  if (it->hi.ptr) {
    leveldb_iter_seek(it->it, bytes_of(it->hi), it->hi.len);
    if (leveldb_iter_valid(it->it)) return 0;
    /* Invalid either because every key is < hi or because of an error. */
    if (check_error(it, err)) return -1;
  }
  leveldb_iter_seek_to_last(it->it);
  return 0;
}

static int iter_next(lp_engine_iter *it, lp_slice *key, lp_slice *value, lp_err *err) {
  lp_slice k;
  size_t n;

  switch (it->state) {
    case IT_END: return 0;
    case IT_ERROR: {
      char *status = NULL;
      leveldb_iter_get_error(it->it, &status);
      if (status)
        fail_leveldb(err, "iterator", status);
      else if (err)
        lp_err_set(err, LP_EIO, "iterator: failed");
      return -1;
    }
    case IT_FRESH:
      if (it->remaining == 0) {
        it->state = IT_END;
        return 0;
      }
      it->state = IT_RUNNING;
      if (eiter_position(it, err) < 0) return -1;
      break;
    default: /* IT_RUNNING: move past the entry returned last time */
      if (it->remaining == 0) {
        it->state = IT_END;
        return 0;
      }
      if (it->reverse)
        leveldb_iter_prev(it->it);
      else
        leveldb_iter_next(it->it);
      break;
  }

  for (;;) {
    if (!leveldb_iter_valid(it->it)) {
      if (check_error(it, err)) return -1;
      it->state = IT_END;
      return 0;
    }
    k.ptr = leveldb_iter_key(it->it, &n);
    k.len = n;
    if (it->reverse) {
      if (below_lower(it, k)) break;
      if (above_upper(it, k)) {
        leveldb_iter_prev(it->it);
        continue;
      }
    } else {
      if (above_upper(it, k)) break;
      if (below_lower(it, k)) {
        leveldb_iter_next(it->it);
        continue;
      }
    }
    if (it->remaining > 0) it->remaining--;
    *key = it->keys ? k : LP_SLICE_NONE;
    if (it->values) {
      value->ptr = leveldb_iter_value(it->it, &n);
      value->len = n;
    } else {
      *value = LP_SLICE_NONE;
    }
    return 1;
  }
  it->state = IT_END;
  return 0;
}

/* An iterator's steps may schedule a compaction (LevelDB samples reads). */
int lp_engine_iter_next(lp_engine_iter *it, lp_slice *key, lp_slice *value, lp_err *err) {
  bg_guard g;
  int rc;
  guard_enter(&g);
  rc = iter_next(it, key, value, err);
  guard_leave(&g);
  return rc;
}

int lp_engine_iter_seek(lp_engine_iter *it, lp_slice target, int64_t unread) {
  char *copy;
  lp_slice t;

  if (it->state == IT_ERROR) return 0;
  copy = malloc(target.len + 1);
  if (!copy) return -1;
  if (target.len) memcpy(copy, target.ptr, target.len);
  free(it->target);
  it->target = copy;
  t = (lp_slice){copy, target.len};
  if (it->remaining >= 0 && unread > 0) it->remaining += unread;
  /* The target replaces the range's bound on the side the iterator starts
   * from unless that bound is at least as tight; the other side stays. */
  if (!it->reverse) {
    int tighter = !it->lo0.ptr || lp_slice_cmp(t, it->lo0) > 0;
    it->lo = tighter ? t : it->lo0;
    it->lo_excl = tighter ? 0 : it->lo0_excl;
  } else {
    int tighter = !it->hi0.ptr || lp_slice_cmp(t, it->hi0) < 0;
    it->hi = tighter ? t : it->hi0;
    it->hi_excl = tighter ? 0 : it->hi0_excl;
  }
  /* Positioned again by the next call, on the same snapshot; the limit
   * counts on (an iterator at its limit stays at its end). */
  it->state = IT_FRESH;
  return 0;
}

void lp_engine_iter_close(lp_engine_iter *it) {
  if (!it) return;
  leveldb_iter_destroy(it->it);
  free(it->target);
  free(it);
}

/* ------------------------------------------------------------------------ */
/* Clear                                                                      */
/* ------------------------------------------------------------------------ */

/* st->started: 0 before the first call, 1 while keys remain, 2 once done (later
 * calls return 0 at once).  st->resume is the last key deleted: the next call
 * continues strictly past it (above it forward, below it in reverse), so keys
 * already deleted are not scanned again as tombstones.  Each call takes a new
 * snapshot; st->deleted counts keys deleted so far against r->limit.  A failed
 * call leaves *st unchanged, so it may be retried. */
int lp_engine_clear_step(lp_engine *e, const lp_range *r, lp_clear_state *st, size_t max_ops,
                         int sync, lp_err *err) {
  lp_slice lo, hi, k, v;
  int lo_excl, hi_excl, rc, more = 0;
  int64_t remaining;
  lp_engine_iter *it;
  lp_batch *b;
  lp_buf last = {NULL, 0, 0};
  lp_slice resume = LP_SLICE_NONE, last_key;
  size_t n = 0;
  lp_range all;

  if (!r) {
    lp_range_init(&all);
    r = &all;
  }
  if (st->started == 2) return 0;
  if (r->limit >= 0) {
    remaining = r->limit - st->deleted;
    if (remaining <= 0) {
      st->started = 2;
      return 0;
    }
  } else {
    remaining = -1;
  }
  if (max_ops == 0) max_ops = SIZE_MAX; /* no per-call cap */

  reduce_bounds(r, &lo, &lo_excl, &hi, &hi_excl);
  if (st->started && st->resume.ptr) {
    /* The resume key was in range, so it is at least as tight as the bound it
     * replaces. */
    if (r->reverse) {
      hi = st->resume;
      hi_excl = 1;
    } else {
      lo = st->resume;
      lo_excl = 1;
    }
  }
  it = eiter_create(e, lo, lo_excl, hi, hi_excl, r->reverse, remaining);
  b = lp_batch_new();
  if (!it || !b) {
    lp_engine_iter_close(it);
    lp_batch_free(b);
    fail_nomem(err, "clear");
    return -1;
  }
  it->values = 0;

  /* Take up to max_ops keys, then look one key further to tell whether more
   * remain (the iterator's limit already accounts for r->limit). */
  while ((rc = lp_engine_iter_next(it, &k, &v, err)) == 1) {
    if (n == max_ops) {
      more = 1;
      break;
    }
    lp_batch_del(b, k);
    n++;
    last.len = 0;
    if (lp_buf_append(&last, bytes_of(k), k.len) < 0) {
      rc = -1;
      fail_nomem(err, "clear");
      break;
    }
  }
  lp_engine_iter_close(it);
  if (rc < 0) goto fail;

  if (n > 0) {
    if (lp_engine_write(e, b, sync, err) < 0) goto fail;
    /* last.ptr is NULL when the last key was empty: keep it present. */
    last_key.ptr = last.ptr ? last.ptr : "";
    last_key.len = last.len;
    /* On failure resume stays absent: the keys are deleted, so the next call
     * scanning from the range's start again is still correct, just slower. */
    if (more) (void)lp_slice_dup(last_key, &resume);
  }
  lp_batch_free(b);
  lp_buf_free(&last);
  lp_slice_free(&st->resume);
  st->resume = resume;
  st->deleted += (int64_t)n;
  st->started = more ? 1 : 2;
  return more;

fail:
  lp_batch_free(b);
  lp_buf_free(&last);
  return -1;
}

void lp_clear_state_free(lp_clear_state *st) {
  if (!st) return;
  lp_slice_free(&st->resume);
  st->resume = LP_SLICE_NONE;
  st->deleted = 0;
  st->started = 0;
}

/*
 * fuzz_session.c: fuzz target for the leader's protocol state (session.c)
 * over a real LevelDB, checked against an in-memory model of the store.
 *
 * Input: one configuration byte, then the bytes a follower sends on one
 * connection.  The configuration chooses the session's frame limit, the
 * entry budget of each lp_session_input call, how the stream is cut into
 * reads, and how lp_session_pump is called between them and at the end.
 *
 * Every frame the session takes is replayed, in order, on the model (a
 * sorted array of keys and values; each iterator a copy of the model taken
 * at its open), which predicts every reply and iterator entry exactly.  The
 * invariants checked, any violation abort()ing:
 *   - every reply is a whole frame that lp_wire_decode_response accepts,
 *     with the id, type, error text and value the model predicts; nothing
 *     else is written;
 *   - lp_session_input consumes exactly the whole frames in front of the
 *     first incomplete one, never more than it was given;
 *   - a frame over the limit, with an unknown tag or a malformed body is
 *     reported as LP_EPROTO and not acted on: the frames before it ran, it
 *     and everything after it did not (the store equals the model); a frame
 *     over the limit whose tag and id came with its length prefix is first
 *     answered with ETOOLARGE under that id, in its tag's reply type;
 *   - a reply that would exceed the frame limit is never sent: a get's or a
 *     getMany's is the ETOOLARGE error docs/PROTOCOL.md gives instead, and an
 *     iterator whose next entry does not fit gets that error and ends there;
 *   - iterator entries respect the window of the last ack and the entry
 *     budget of each call, come in key order from the open's snapshot, and
 *     lp_session_pump's result says whether a window is still open;
 *   - at the end of every input the store holds exactly the model.
 *
 * The store: one LevelDB per process in a fresh directory (under $TMPDIR,
 * else /dev/shm, else /tmp), opened before the first input and removed at
 * exit.  Each input starts from the same seventeen keys (one, "big", with a
 * value of 100 bytes, whose replies do not fit the smaller frame limits, and
 * six whose replies fall on either side of them); the keys an input leaves
 * are deleted by a write batch, and the directory is recreated after
 * REOPEN_WRITES writes so that the tombstones every full scan steps over
 * stay few.
 *
 * libFuzzer: make build/fuzz/fuzz_session (make fuzz runs it).
 * Standalone (gcc + ASan/UBSan, no libFuzzer): make build/fuzz/fuzz_session_standalone;
 *   build/fuzz/fuzz_session_standalone [N] [seed] [file or directory...]
 * replays the files given (the regression corpus), then N generated inputs
 * (fuzz/standalone.h).
 */
#include "private.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why) {
  fprintf(stderr, "fuzz_session: %s\n", why);
  abort();
}

#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) fail(#cond);                                                                      \
  } while (0)

/* session.c's texts and its limit on open iterators, as docs/PROTOCOL.md
 * gives them. */
#define MSG_EMPTY_KEY     "key cannot be an empty Buffer"
#define MSG_NULL_VALUE    "value cannot be `null` or `undefined`"
#define MSG_NOT_FOUND     "NotFound: "
#define MSG_TOO_MANY      "too many open iterators"
#define MSG_TOO_LARGE     "ETOOLARGE: %s: %s %zu bytes, over the frame limit of %zu"
#define MODEL_MAX_ITERS   4096
#define UNLIMITED_BUDGET  ((size_t)1 << 20)
#define REOPEN_WRITES     4096
#define PUMP_ROUNDS_GUARD 1000000

static const lp_slice EMPTY = {"", 0};

static int slice_eq(lp_slice a, lp_slice b) {
  if ((a.ptr == NULL) != (b.ptr == NULL)) return 0;
  if (a.len != b.len) return 0;
  return a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0;
}

static int bytes_eq(lp_slice a, lp_slice b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static lp_slice cstr(const char *s) {
  lp_slice r;
  r.ptr = s;
  r.len = strlen(s);
  return r;
}

/* A present copy; its ptr is never NULL, even when empty. */
static lp_slice dup_present(lp_slice s) {
  lp_slice r;
  char *p = malloc(s.len + 1);
  if (!p) fail("ENOMEM");
  if (s.len) memcpy(p, s.ptr, s.len);
  r.ptr = p;
  r.len = s.len;
  return r;
}

/* ------------------------------------------------------------------------ */
/* The model: keys in bytewise order, as LevelDB's comparator sorts them      */
/* ------------------------------------------------------------------------ */

typedef struct ment {
  lp_slice k, v; /* owned, both present */
} ment;

typedef struct model {
  ment *e;
  size_t n, cap;
} model;

static void ments_free(ment *e, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    free((char *)(uintptr_t)e[i].k.ptr);
    free((char *)(uintptr_t)e[i].v.ptr);
  }
  free(e);
}

/* The first index whose key is >= k. */
static size_t m_lower(const model *m, lp_slice k) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (lp_slice_cmp(m->e[mid].k, k) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static const ment *m_get(const model *m, lp_slice k) {
  size_t i = m_lower(m, k);
  return i < m->n && lp_slice_cmp(m->e[i].k, k) == 0 ? &m->e[i] : NULL;
}

static void m_put(model *m, lp_slice k, lp_slice v) {
  size_t i = m_lower(m, k);
  if (i < m->n && lp_slice_cmp(m->e[i].k, k) == 0) {
    free((char *)(uintptr_t)m->e[i].v.ptr);
    m->e[i].v = dup_present(v);
    return;
  }
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 32;
    ment *e = realloc(m->e, cap * sizeof *e);
    if (!e) fail("ENOMEM");
    m->e = e;
    m->cap = cap;
  }
  memmove(m->e + i + 1, m->e + i, (m->n - i) * sizeof *m->e);
  m->e[i].k = dup_present(k);
  m->e[i].v = dup_present(v);
  m->n++;
}

static void m_del(model *m, lp_slice k) {
  size_t i = m_lower(m, k);
  if (i >= m->n || lp_slice_cmp(m->e[i].k, k) != 0) return;
  free((char *)(uintptr_t)m->e[i].k.ptr);
  free((char *)(uintptr_t)m->e[i].v.ptr);
  memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof *m->e);
  m->n--;
}

/* Copies of the entries an iterator with range r visits, in its order, up to
 * its limit; *n gets their number. */
static ment *m_select(const model *m, const lp_range *r, size_t *n) {
  ment *out = malloc((m->n ? m->n : 1) * sizeof *out);
  size_t i, k = 0;
  if (!out) fail("ENOMEM");
  for (i = 0; i < m->n; i++) {
    const ment *e = &m->e[r->reverse ? m->n - 1 - i : i];
    if (r->limit >= 0 && (int64_t)k >= r->limit) break;
    if (!lp_range_contains(r, e->k)) continue;
    out[k].k = dup_present(e->k);
    out[k].v = dup_present(e->v);
    k++;
  }
  *n = k;
  return out;
}

/* Node's decode defaults (docs/PROTOCOL.md, "Fields and defaults"), written
 * from the table there rather than taken from session.c. */
static void model_range(const lp_wire_opts *o, lp_range *r) {
  lp_range_init(r);
  if (!o->present) return;
  r->keys = o->has_keys && o->keys;
  r->values = o->has_values && o->values;
  r->limit = o->has_limit ? (int64_t)o->limit : 0;
  r->reverse = o->has_reverse && o->reverse;
  r->gt = o->gt;
  r->gte = o->gte;
  r->lt = o->lt;
  r->lte = o->lte;
}

/* One iterator of the connection, as the model sees it. */
typedef struct mit {
  uint32_t id;
  int ended, keys, values;
  uint32_t window;
  ment *snap; /* the entries it will send, in order */
  size_t nsnap, pos;
} mit;

/* ------------------------------------------------------------------------ */
/* Per-process state                                                          */
/* ------------------------------------------------------------------------ */

static char dbdir[256];
static lp_engine *eng;
static size_t writes_since_open; /* tombstones + live keys, bounded by REOPEN_WRITES */
static model M;
static mit **its;
static size_t nits, itcap;
static lp_buf out;   /* the session's replies */
static size_t ocur;  /* replies checked so far */
static size_t limit; /* the session's frame limit, its default for 0 */
/* What the inputs reached (printed by the standalone main). */
static unsigned long stat_req[LP_REQ_GETMANY + 1], stat_entries, stat_proto, stat_reopen;
static unsigned long stat_refused, stat_too_large;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  (void)remove(p);
  return 0;
}

static void db_open(void) {
  lp_engine_opts o;
  lp_err err;
  lp_engine_opts_init(&o);
  eng = lp_engine_open(dbdir, &o, &err);
  if (!eng) {
    fprintf(stderr, "fuzz_session: open %s: %s\n", dbdir, err.msg);
    abort();
  }
  writes_since_open = 0;
}

static void db_remove(void) {
  if (eng) lp_engine_close(eng);
  eng = NULL;
  if (dbdir[0]) nftw(dbdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void at_exit(void) { db_remove(); }

static void setup(void) {
  const char *base = getenv("TMPDIR");
  struct stat st;
  if (eng) return;
  if (!base || !*base)
    base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
  snprintf(dbdir, sizeof dbdir, "%s/lp-fuzz-session-XXXXXX", base);
  if (!mkdtemp(dbdir)) {
    fprintf(stderr, "fuzz_session: mkdtemp %s: %s\n", dbdir, strerror(errno));
    abort();
  }
  db_open();
  atexit(at_exit);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
}

/* Every input starts from these, so that gets and iterators find something. */
#define BIG_VALUE                                                                                  \
  "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"                       \
  "0123456789abcdefghijklmnopqr"
static const struct {
  const char *k, *v;
  size_t kl, vl;
} seeds[] = {{"a", "1", 1, 1},
             {"ab", "", 2, 0},
             {"b", "bee", 1, 3},
             {"c", "{\"x\":1}", 1, 7},
             {"k1", "v1", 2, 2},
             {"k2", "v2", 2, 2},
             {"k3", "v3", 2, 2},
             {"z", "zed", 1, 3},
             {"\x00", "nul", 1, 3},
             {"\xff\xff", "\x00\x01", 2, 2},
             {"big", BIG_VALUE, 3, 100},
             /* around the limits of 16 and 64 bytes: an entry of "l" (under
              * an id of one byte) fits exactly, one of "m" is a byte over;
              * a get of "n" fits exactly, under an id of two bytes not */
             {"l", BIG_VALUE, 1, 9},
             {"m", BIG_VALUE, 1, 10},
             {"n", BIG_VALUE, 1, 11},
             {"L", BIG_VALUE, 1, 57},
             {"M", BIG_VALUE, 1, 58},
             {"N", BIG_VALUE, 1, 59}};

/* Leaves the store and the model holding exactly the seeds. */
static void start_input(void) {
  lp_batch *b = lp_batch_new();
  lp_err err;
  size_t i;
  if (!b) fail("ENOMEM");
  for (i = 0; i < M.n; i++)
    lp_batch_del(b, M.e[i].k);
  writes_since_open += M.n;
  ments_free(M.e, M.n);
  memset(&M, 0, sizeof M);
  if (writes_since_open > REOPEN_WRITES) {
    lp_batch_free(b);
    db_remove();
    stat_reopen++;
    if (mkdir(dbdir, 0700) != 0) fail("mkdir");
    db_open();
    b = lp_batch_new();
    if (!b) fail("ENOMEM");
  }
  for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    lp_slice k = {seeds[i].k, seeds[i].kl}, v = {seeds[i].v, seeds[i].vl};
    lp_batch_put(b, k, v);
    m_put(&M, k, v);
  }
  writes_since_open += sizeof seeds / sizeof seeds[0];
  if (lp_engine_write(eng, b, 0, &err) != 0) fail(err.msg);
  lp_batch_free(b);
}

/* The store must hold exactly the model. */
static void compare_store(void) {
  lp_engine_iter *it;
  lp_slice k, v;
  lp_err err;
  size_t i = 0;
  int rc;
  it = lp_engine_iter_open(eng, NULL, &err);
  REQUIRE(it != NULL);
  while ((rc = lp_engine_iter_next(it, &k, &v, &err)) == 1) {
    REQUIRE(i < M.n);
    REQUIRE(bytes_eq(k, M.e[i].k));
    REQUIRE(bytes_eq(v, M.e[i].v));
    i++;
  }
  REQUIRE(rc == 0);
  REQUIRE(i == M.n);
  lp_engine_iter_close(it);
}

/* ------------------------------------------------------------------------ */
/* Model iterators                                                            */
/* ------------------------------------------------------------------------ */

static mit *mit_find(uint32_t id) {
  size_t i;
  for (i = 0; i < nits; i++)
    if (its[i]->id == id) return its[i];
  return NULL;
}

static mit *mit_add(uint32_t id) {
  mit *m = calloc(1, sizeof *m);
  if (!m) fail("ENOMEM");
  if (nits == itcap) {
    size_t cap = itcap ? itcap * 2 : 16;
    mit **a = realloc(its, cap * sizeof *a);
    if (!a) fail("ENOMEM");
    its = a;
    itcap = cap;
  }
  m->id = id;
  its[nits++] = m;
  return m;
}

static void mit_free(mit *m) {
  ments_free(m->snap, m->nsnap);
  free(m);
}

static void mit_remove(mit *m) {
  size_t i;
  for (i = 0; i < nits; i++) {
    if (its[i] != m) continue;
    its[i] = its[--nits];
    mit_free(m);
    return;
  }
}

static void mits_clear(void) {
  while (nits)
    mit_free(its[--nits]);
}

static int mit_live(const mit *m) { return !m->ended && m->window > 0; }

static int any_live(void) {
  size_t i;
  for (i = 0; i < nits; i++)
    if (mit_live(its[i])) return 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                    */
/* ------------------------------------------------------------------------ */

/* The next reply the session wrote; it must be a whole, decodable frame. */
static void next_reply(lp_response *r) {
  lp_slice payload;
  size_t used;
  REQUIRE(ocur < out.len);
  REQUIRE(lp_wire_next_frame(out.ptr + ocur, out.len - ocur, 0, &payload, &used) == LP_WIRE_OK);
  REQUIRE(lp_wire_decode_response(payload, r) == LP_WIRE_OK);
  ocur += used;
}

/* Whether the reply frame f (length prefix included) has a payload over the
 * limit; f is emptied. */
static int over_limit(lp_buf *f) {
  uint64_t n;
  size_t used;
  int over;
  REQUIRE(lp_varint_get(f->ptr, f->len, &n, &used) == 1 && used + n == f->len);
  over = n > (uint64_t)limit;
  f->len = 0;
  return over;
}

static void too_large_msg(char *dst, size_t n, const char *op, const char *what, size_t bytes) {
  snprintf(dst, n, MSG_TOO_LARGE, op, what, bytes, limit);
}

static void expect_callback(uint32_t id, const char *err, lp_slice value) {
  lp_response r;
  next_reply(&r);
  REQUIRE(r.tag == LP_RES_CALLBACK);
  REQUIRE(r.id == id);
  REQUIRE(slice_eq(r.error, err ? cstr(err) : LP_SLICE_NONE));
  REQUIRE(slice_eq(r.value, value));
}

/* One iterator frame for m: an entry (checked against its snapshot), the end
 * marker, or the error for an entry over the limit.  Returns 1 for an entry. */
static int take_iter_frame(mit *m, const lp_response *r) {
  REQUIRE(r->tag == LP_RES_ITERDATA);
  REQUIRE(r->id == m->id);
  REQUIRE(mit_live(m));
  if (m->pos < m->nsnap) {
    lp_slice ks = m->keys ? m->snap[m->pos].k : EMPTY;
    lp_slice vs = m->values ? m->snap[m->pos].v : EMPTY;
    lp_buf f = {0};
    int over;
    if (lp_wire_enc_iterdata(&f, m->id, ks, vs) != 0) fail("ENOMEM");
    over = over_limit(&f);
    lp_buf_free(&f);
    if (over) {
      char msg[160];
      too_large_msg(msg, sizeof msg, "iterator", "an entry is", ks.len + vs.len);
      REQUIRE(slice_eq(r->error, cstr(msg)));
      REQUIRE(r->key.ptr == NULL && r->value.ptr == NULL);
      m->ended = 1;
      stat_too_large++;
      return 0;
    }
  }
  REQUIRE(r->error.ptr == NULL);
  if (r->key.ptr == NULL && r->value.ptr == NULL) {
    REQUIRE(m->pos == m->nsnap);
    m->ended = 1;
    return 0;
  }
  REQUIRE(m->pos < m->nsnap);
  REQUIRE(slice_eq(r->key, m->keys ? m->snap[m->pos].k : EMPTY));
  REQUIRE(slice_eq(r->value, m->values ? m->snap[m->pos].v : EMPTY));
  m->pos++;
  m->window--;
  stat_entries++;
  return 1;
}

/* What session_iter writes for m inside lp_session_input: entries until the
 * budget or the window runs out, or the end marker. */
static void expect_produce(mit *m, size_t *budget) {
  size_t n = 0;
  while (n < *budget && mit_live(m)) {
    lp_response r;
    next_reply(&r);
    n += (size_t)take_iter_frame(m, &r);
  }
  *budget -= n;
}

static void expect_iter_error(uint32_t id, const char *msg) {
  lp_response r;
  next_reply(&r);
  REQUIRE(r.tag == LP_RES_ITERDATA && r.id == id);
  REQUIRE(slice_eq(r.error, cstr(msg)));
}

/* ------------------------------------------------------------------------ */
/* One decoded request on the model, its replies checked                     */
/* ------------------------------------------------------------------------ */

static void model_batch(const lp_request *q) {
  lp_batch_op op;
  size_t cur = 0;
  while (lp_wire_next_op(q, &cur, &op)) {
    if (op.key.len == 0) {
      expect_callback(q->id, MSG_EMPTY_KEY, LP_SLICE_NONE);
      return;
    }
    if (op.type == LP_OP_PUT && !op.value.ptr) {
      expect_callback(q->id, MSG_NULL_VALUE, LP_SLICE_NONE);
      return;
    }
  }
  cur = 0;
  while (lp_wire_next_op(q, &cur, &op)) {
    if (op.type == LP_OP_PUT)
      m_put(&M, op.key, op.value);
    else
      m_del(&M, op.key);
    writes_since_open++;
  }
  expect_callback(q->id, NULL, LP_SLICE_NONE);
}

static void model_getmany(const lp_request *q) {
  lp_response r;
  lp_slice k, v;
  size_t cur = 0, vcur = 0, n = 0;
  int empty = 0;
  while (lp_wire_next_key(q, &cur, &k))
    if (k.len == 0) empty = 1;
  next_reply(&r);
  REQUIRE(r.tag == LP_RES_GETMANY && r.id == q->id);
  if (empty) {
    REQUIRE(slice_eq(r.error, cstr(MSG_EMPTY_KEY)) && r.count == 0);
    return;
  }
  /* the whole reply, to know whether it fits */
  {
    lp_buf rest = {0}, f = {0};
    size_t total = 0;
    cur = 0;
    while (lp_wire_next_key(q, &cur, &k)) {
      const ment *e = m_get(&M, k);
      if (lp_wire_rest_getmany_value(&rest, e ? e->v : LP_SLICE_NONE) != 0) fail("ENOMEM");
      total += e ? e->v.len : 0;
    }
    if (lp_wire_enc_getmany(&f, q->id, NULL, 0, (lp_slice){rest.ptr ? rest.ptr : "", rest.len}))
      fail("ENOMEM");
    lp_buf_free(&rest);
    if (over_limit(&f)) {
      char msg[160];
      lp_buf_free(&f);
      too_large_msg(msg, sizeof msg, "getMany", "the values are", total);
      REQUIRE(slice_eq(r.error, cstr(msg)) && r.count == 0);
      stat_too_large++;
      return;
    }
    lp_buf_free(&f);
  }
  REQUIRE(r.error.ptr == NULL);
  cur = 0;
  while (lp_wire_next_key(q, &cur, &k)) {
    const ment *e = m_get(&M, k);
    REQUIRE(lp_wire_next_value(&r, &vcur, &v));
    REQUIRE(slice_eq(v, e ? e->v : LP_SLICE_NONE));
    n++;
  }
  REQUIRE(!lp_wire_next_value(&r, &vcur, &v));
  REQUIRE(n == r.count);
}

static void model_iter(const lp_request *q, size_t *budget) {
  mit *m = mit_find(q->id);
  lp_range rg;
  if (q->batch == 0) {
    if (m) mit_remove(m);
    return;
  }
  if (!m) {
    if (nits >= MODEL_MAX_ITERS) {
      expect_iter_error(q->id, MSG_TOO_MANY);
      return;
    }
    model_range(&q->opts, &rg);
    m = mit_add(q->id);
    m->keys = rg.keys;
    m->values = rg.values;
    if (rg.limit == 0) {
      lp_response r;
      m->ended = 1;
      next_reply(&r);
      REQUIRE(r.tag == LP_RES_ITERDATA && r.id == q->id);
      REQUIRE(!r.error.ptr && !r.key.ptr && !r.value.ptr);
    } else {
      m->snap = m_select(&M, &rg, &m->nsnap);
    }
  }
  m->window = q->batch;
  expect_produce(m, budget);
}

static void model_request(const lp_request *q, size_t *budget) {
  const ment *e;
  lp_range rg;
  switch (q->tag) {
    case LP_REQ_GET:
      if (q->key.len == 0) {
        expect_callback(q->id, MSG_EMPTY_KEY, LP_SLICE_NONE);
      } else if ((e = m_get(&M, q->key)) != NULL) {
        lp_buf f = {0};
        int over;
        if (lp_wire_enc_callback(&f, q->id, NULL, 0, e->v) != 0) fail("ENOMEM");
        over = over_limit(&f);
        lp_buf_free(&f);
        if (over) {
          char msg[160];
          too_large_msg(msg, sizeof msg, "get", "the value is", e->v.len);
          expect_callback(q->id, msg, LP_SLICE_NONE);
          stat_too_large++;
        } else {
          expect_callback(q->id, NULL, e->v);
        }
      } else {
        expect_callback(q->id, MSG_NOT_FOUND, LP_SLICE_NONE);
      }
      break;
    case LP_REQ_PUT:
      if (q->key.len == 0) {
        expect_callback(q->id, MSG_EMPTY_KEY, LP_SLICE_NONE);
      } else if (!q->value.ptr) {
        expect_callback(q->id, MSG_NULL_VALUE, LP_SLICE_NONE);
      } else {
        m_put(&M, q->key, q->value);
        writes_since_open++;
        expect_callback(q->id, NULL, LP_SLICE_NONE);
      }
      break;
    case LP_REQ_DEL:
      if (q->key.len == 0) {
        expect_callback(q->id, MSG_EMPTY_KEY, LP_SLICE_NONE);
      } else {
        m_del(&M, q->key);
        writes_since_open++;
        expect_callback(q->id, NULL, LP_SLICE_NONE);
      }
      break;
    case LP_REQ_BATCH: model_batch(q); break;
    case LP_REQ_CLEAR:
      model_range(&q->opts, &rg);
      if (rg.limit != 0) {
        size_t n, i;
        ment *gone = m_select(&M, &rg, &n);
        for (i = 0; i < n; i++)
          m_del(&M, gone[i].k);
        writes_since_open += n;
        ments_free(gone, n);
      }
      expect_callback(q->id, NULL, LP_SLICE_NONE);
      break;
    case LP_REQ_GETMANY: model_getmany(q); break;
    case LP_REQ_ITER: model_iter(q, budget); break;
    default: fail("decoded request with an unknown tag");
  }
}

/* ------------------------------------------------------------------------ */
/* Driving the session                                                        */
/* ------------------------------------------------------------------------ */

/* A frame over the limit (p: from its length prefix, len bytes of it have
 * arrived): when its tag (a known one) and its whole id arrived, that request
 * is answered with ETOOLARGE in its tag's reply type (docs/PROTOCOL.md,
 * "Framing"); else nothing is. */
static void expect_refusal(const char *p, size_t len) {
  static const char *const ops[] = {"get", "put", "del", "batch", "iterator", "clear", "getMany"};
  static const int types[] = {LP_RES_CALLBACK, LP_RES_CALLBACK, LP_RES_CALLBACK, LP_RES_CALLBACK,
                              LP_RES_ITERDATA, LP_RES_CALLBACK, LP_RES_GETMANY};
  const unsigned char *h;
  uint64_t n, id;
  size_t u, avail;
  lp_response r;
  char msg[200];
  if (lp_varint_get(p, len, &n, &u) != 1) return; /* over 10 bytes: no answer */
  REQUIRE(n > (uint64_t)limit);
  h = (const unsigned char *)p + u;
  avail = len - u;
  if (avail < 3 || h[0] > LP_REQ_GETMANY || h[1] != 0x08) return;
  if (lp_varint_get((const char *)h + 2, avail - 2, &id, &u) != 1) return;
  snprintf(msg, sizeof msg, "ETOOLARGE: %s: the request is %llu bytes, over the frame limit of %zu",
           ops[h[0]], (unsigned long long)n, limit);
  next_reply(&r);
  REQUIRE(r.tag == types[h[0]] && r.id == (uint32_t)id);
  REQUIRE(slice_eq(r.error, cstr(msg)));
  stat_refused++;
}

static void replies_done(void) {
  REQUIRE(ocur == out.len);
  out.len = 0;
  ocur = 0;
}

/* One lp_session_input over everything received and not yet consumed.
 * Returns 0, or -1 after the protocol error the model expected. */
static int session_read(lp_session *s, lp_buf *in, size_t max_frame, size_t budget) {
  lp_err err;
  size_t off = 0;
  int bad = 0;
  long used;
  err.code = LP_OK;
  used = lp_session_input(s, in->ptr, in->len, &out, budget, &err);
  /* The reference: the frames in front of the first incomplete or bad one,
   * each replayed on the model in order. */
  while (off < in->len) {
    lp_slice payload;
    lp_request q;
    size_t u;
    int rc = lp_wire_next_frame(in->ptr + off, in->len - off, max_frame, &payload, &u);
    if (rc == LP_WIRE_NEED_MORE) break;
    if (rc == LP_WIRE_EMPTY) {
      off += u;
      continue;
    }
    if (rc == LP_WIRE_TOO_BIG) expect_refusal(in->ptr + off, in->len - off);
    if (rc != LP_WIRE_OK || lp_wire_decode_request(payload, &q) != LP_WIRE_OK) {
      bad = 1;
      break;
    }
    off += u;
    stat_req[q.tag]++;
    model_request(&q, &budget);
  }
  replies_done();
  if (bad) {
    REQUIRE(used == -1);
    REQUIRE(err.code == LP_EPROTO);
    stat_proto++;
    return -1;
  }
  REQUIRE(used >= 0);
  REQUIRE((size_t)used == off);
  REQUIRE(off <= in->len);
  lp_buf_consume(in, off);
  return 0;
}

/* One lp_session_pump: entries for iterators with an open window, in any
 * order between iterators; budget used up or no window left open. */
static int session_pump(lp_session *s, size_t budget) {
  int more = lp_session_pump(s, &out, budget);
  size_t produced = 0;
  while (ocur < out.len) {
    lp_response r;
    mit *m;
    next_reply(&r);
    m = mit_find(r.id);
    REQUIRE(m != NULL);
    produced += (size_t)take_iter_frame(m, &r);
  }
  replies_done();
  REQUIRE(produced <= budget);
  REQUIRE(more == any_live());
  REQUIRE(produced == budget || !more);
  return more;
}

/* A small deterministic sequence for read sizes, from the input itself. */
static uint32_t lcg(uint32_t *st) {
  *st = *st * 1103515245u + 12345u;
  return *st >> 16;
}

/* The frame limits the configuration byte chooses from (0: the default). */
static const size_t frame_limits[4] = {0, 16, 64, 1024};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t budgets[4] = {UNLIMITED_BUDGET, 1, 3, 17};
  static const uint32_t chunk_max[4] = {0, 1, 7, 97}; /* 0: everything at once */
  const char *p = (const char *)data + 1;
  lp_session *s;
  lp_buf in = {0};
  size_t n, pos = 0, max_frame, budget;
  uint32_t st, cmax;
  uint8_t cfg;
  int guard = 0, broken = 0;

  if (size == 0) return 0;
  setup();
  cfg = data[0];
  n = size - 1;
  max_frame = frame_limits[cfg & 3];
  limit = max_frame ? max_frame : LP_DEFAULT_MAX_FRAME;
  budget = budgets[(cfg >> 2) & 3];
  cmax = chunk_max[(cfg >> 4) & 3];
  st = (uint32_t)size * 2654435761u ^ cfg;

  start_input();
  s = lp_session_new(eng, max_frame);
  REQUIRE(s != NULL);
  while (pos < n && !broken) {
    size_t chunk = cmax ? 1 + lcg(&st) % cmax : n - pos;
    if (chunk > n - pos) chunk = n - pos;
    if (lp_buf_append(&in, p + pos, chunk) != 0) fail("ENOMEM");
    pos += chunk;
    if (session_read(s, &in, max_frame, budget) < 0) broken = 1;
    if (!broken && (cfg & 0x40)) session_pump(s, budget);
  }
  /* The follower keeps acking nothing: pump until every window is used up
   * (each is finite: a snapshot has an end). */
  if (!broken)
    while (session_pump(s, cfg & 0x80 ? 1 : UNLIMITED_BUDGET))
      REQUIRE(++guard < PUMP_ROUNDS_GUARD);
  lp_session_free(s);
  lp_buf_free(&in);
  mits_clear();
  compare_store();
  return 0;
}

#ifdef LP_FUZZ_STANDALONE
/* A short fuzz pass without libFuzzer: the files named on the command line,
 * then streams of encoder-made request frames over keys the seeds share,
 * half of them mutated. */

#include "standalone.h"

static const struct {
  const char *p;
  size_t n;
} gen_keys[] = {{"", 0},   {"a", 1},  {"ab", 2}, {"b", 1}, {"c", 1},        {"k1", 2},
                {"k2", 2}, {"k3", 2}, {"k4", 2}, {"z", 1}, {"\x00", 1},     {"\xff\xff", 2},
                {"aa", 2}, {"k", 1},  {"y", 1},  {"v", 1}, {"\x00\x00", 2}, {"big", 3},
                {"l", 1},  {"m", 1},  {"n", 1},  {"L", 1}, {"M", 1},        {"N", 1}};

static lp_slice gen_key(void) {
  size_t i = below(sizeof gen_keys / sizeof gen_keys[0]);
  lp_slice s;
  s.ptr = gen_keys[i].p;
  s.len = gen_keys[i].n;
  return s;
}

static size_t gen_limit; /* the frame limit of the input being made (0: the default) */

/* A key, or one time in three a value of 0 to 63 bytes, half of those a few
 * bytes under the input's frame limit, so that a put that fits can make a
 * reply or an entry one byte over it (under a wider id). */
static lp_slice gen_value(void) {
  lp_slice s;
  if (below(3)) return gen_key();
  s.ptr = BIG_VALUE;
  s.len = below(64);
  if (gen_limit && gen_limit < 100 && below(2)) s.len = gen_limit - 10 + below(4);
  return s;
}

static lp_slice gen_maybe_key(void) { return below(3) == 0 ? LP_SLICE_NONE : gen_key(); }

static void gen_range(lp_range *r) {
  static const int64_t limits[] = {-1, -1, 0, 1, 2, 3, 5, 100};
  lp_range_init(r);
  r->gt = gen_maybe_key();
  r->gte = below(2) ? LP_SLICE_NONE : gen_maybe_key();
  r->lt = gen_maybe_key();
  r->lte = below(2) ? LP_SLICE_NONE : gen_maybe_key();
  r->limit = limits[below(sizeof limits / sizeof limits[0])];
  r->reverse = (int)below(2);
  r->keys = below(4) != 0;
  r->values = below(4) != 0;
}

static void gen_frame(lp_buf *b) {
  lp_buf rest = {0};
  lp_range rg;
  /* a few ids, two of them wider on the wire (2 and 5 bytes): a reply under
   * one of them is larger than the request that wrote its value */
  uint32_t id = (uint32_t)below(6);
  size_t i, n;
  int rc = 0;
  if (id == 4) id = 300;
  if (id == 5) id = (uint32_t)1 << 28;
  /* one frame in 24 is an unknown tag or random bytes */
  switch (below(24) ? below(12) : 12 + below(2)) {
    case 0:
    case 1:
      rc = lp_wire_rest_key(&rest, gen_key()) ||
           lp_wire_frame(b, LP_REQ_GET, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 2:
      rc = lp_wire_rest_put(&rest, gen_key(), below(5) ? gen_value() : LP_SLICE_NONE) ||
           (below(4) == 0 && lp_wire_rest_sync(&rest)) ||
           lp_wire_frame(b, LP_REQ_PUT, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 3:
      rc = lp_wire_rest_key(&rest, gen_key()) || (below(4) == 0 && lp_wire_rest_sync(&rest)) ||
           lp_wire_frame(b, LP_REQ_DEL, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 4:
      n = below(5);
      for (i = 0; i < n && rc == 0; i++) {
        int put = (int)below(2);
        rc = lp_wire_rest_batch_op(&rest, put ? LP_OP_PUT : LP_OP_DEL, gen_key(),
                                   put && below(6) ? gen_value() : LP_SLICE_NONE);
      }
      rc = rc || (below(4) == 0 && lp_wire_rest_sync(&rest));
      rc = rc || lp_wire_frame(b, LP_REQ_BATCH, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 5:
      n = below(5);
      for (i = 0; i < n && rc == 0; i++)
        rc = lp_wire_rest_getmany_key(&rest, gen_key());
      rc = rc || lp_wire_frame(b, LP_REQ_GETMANY, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 6:
    case 7:
      gen_range(&rg);
      rc = lp_wire_rest_iter(&rest, (uint32_t)below(6), &rg) ||
           lp_wire_frame(b, LP_REQ_ITER, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 8: /* an ack, a close, or an open with the options left out */
      rc = lp_wire_rest_iter_window(&rest, (uint32_t)below(4)) ||
           lp_wire_frame(b, LP_REQ_ITER, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 9:
      gen_range(&rg);
      if (below(4) == 0)
        rc = lp_wire_frame(b, LP_REQ_CLEAR, id, EMPTY); /* options absent: everything */
      else
        rc = lp_wire_rest_clear(&rest, &rg) || (below(4) == 0 && lp_wire_rest_sync(&rest)) ||
             lp_wire_frame(b, LP_REQ_CLEAR, id, (lp_slice){rest.ptr, rest.len});
      break;
    case 10: rc = lp_wire_frame(b, LP_REQ_ITER, id, LP_SLICE_NONE); break; /* a close */
    case 11: rc = lp_buf_append(b, "\x00", 1); break;                      /* an empty frame */
    case 12: rc = lp_buf_append(b, "\x03\x09\x08\x00", 4); break;          /* an unknown tag */
    default:
      /* random bytes */
      n = 1 + below(8);
      for (i = 0; i < n && rc == 0; i++) {
        char c = (char)tap_rng();
        rc = lp_buf_append(b, &c, 1);
      }
      break;
  }
  if (rc) fail("ENOMEM");
  lp_buf_free(&rest);
}

static void mutate(lp_buf *b) {
  size_t k = 1 + below(3), i;
  for (i = 0; i < k && b->len > 1; i++) {
    size_t at = 1 + below(b->len - 1);
    switch (below(4)) {
      case 0: b->ptr[at] ^= (char)(1u << below(8)); break;
      case 1: b->ptr[at] = (char)tap_rng(); break;
      case 2: b->len = at; break;
      default:
        memmove(b->ptr + at, b->ptr + at + 1, b->len - at - 1);
        b->len--;
        break;
    }
  }
}

/* One input: the configuration byte, then 1 to 12 frames, mutated one time
 * in three. */
static void one_input(lp_buf *in) {
  uint8_t cfg = (uint8_t)tap_rng();
  size_t k, n;
  if (below(4)) cfg &= 0xfc; /* mostly the default frame limit */
  gen_limit = frame_limits[cfg & 3];
  if (lp_buf_append(in, &cfg, 1) != 0) fail("ENOMEM");
  n = 1 + below(12);
  for (k = 0; k < n; k++)
    gen_frame(in);
  if (below(3) == 0) mutate(in);
  LLVMFuzzerTestOneInput((const uint8_t *)in->ptr, in->len);
}

static void report(void) {
  printf("# requests: get %lu put %lu del %lu batch %lu iter %lu clear %lu getmany %lu | "
         "entries %lu, protocol errors %lu (%lu answered ETOOLARGE), replies over the limit %lu, "
         "store recreated %lu times\n",
         stat_req[0], stat_req[1], stat_req[2], stat_req[3], stat_req[4], stat_req[5], stat_req[6],
         stat_entries, stat_proto, stat_refused, stat_too_large, stat_reopen);
}

int main(int argc, char **argv) {
  setup();
  return standalone_main(argc, argv, "fuzz_session", 3000, one_input, report,
                         "every reply as the model predicts");
}
#endif

/*
 * levelparty: the leader's server.
 *
 * Two layers:
 *   lp_session  one follower connection's protocol state (decode, execute,
 *               encode, iterator windows).  No I/O, no clock; party.c also
 *               drives one over memory when a follower is promoted.
 *   lp_server   a thread running a private libuv loop that accepts followers
 *               on the leader's socket and drives one lp_session per
 *               connection.  LevelDB calls run inline on that thread.
 *
 * Wire behaviour follows multileveldown 5.0.1's server (reference 3.5, 3.6)
 * except that a peer that breaks the protocol is disconnected instead of being
 * left hanging.
 */
#include "private.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

/* ======================================================================== */
/* Session                                                                    */
/* ======================================================================== */

/* Open iterators per session; beyond it an open is refused with an error. */
#define SESS_MAX_ITERS 4096
/* Keys deleted per lp_engine_clear_step call while running a CLEAR. */
#define SESS_CLEAR_STEP 1024

#define MSG_EMPTY_KEY  "key cannot be an empty Buffer"
#define MSG_NULL_VALUE "value cannot be `null` or `undefined`"
#define MSG_NOT_FOUND  "NotFound: "

/* One iterator of a session.  `it` is NULL once the iterator has ended (end
 * marker or error sent, or never opened): the record stays until the client
 * sends batch:0, so that a late ack does not reopen it. */
typedef struct sess_iter {
  uint32_t id;
  uint32_t window; /* entries still allowed before the next ack */
  int ended;
  int keys, values;
  lp_engine_iter *it;
  struct sess_iter *hnext;       /* hash chain */
  struct sess_iter *prev, *next; /* all iterators, in pump order */
} sess_iter;

struct lp_session {
  lp_engine *eng;
  size_t max_frame;
  sess_iter **buckets; /* nbuckets is a power of two; NULL while empty */
  size_t nbuckets, count;
  sess_iter *head, *tail;
  size_t live; /* iterators with !ended && window > 0 */
};

static int iter_live(const sess_iter *it) { return !it->ended && it->window > 0; }

static size_t id_hash(uint32_t id, size_t nbuckets) {
  return (size_t)((id * 2654435761u) >> 7) & (nbuckets - 1);
}

static sess_iter *iter_find(lp_session *s, uint32_t id) {
  if (!s->buckets) return NULL;
  for (sess_iter *it = s->buckets[id_hash(id, s->nbuckets)]; it; it = it->hnext)
    if (it->id == id) return it;
  return NULL;
}

static int iter_table_grow(lp_session *s) {
  size_t n = s->nbuckets ? s->nbuckets * 2 : 16;
  sess_iter **b = calloc(n, sizeof *b);
  if (!b) return -1;
  for (sess_iter *it = s->head; it; it = it->next) {
    size_t h = id_hash(it->id, n);
    it->hnext = b[h];
    b[h] = it;
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
  return 0;
}

/* Links a fresh record (id set) into the table and at the tail of the list. */
static int iter_insert(lp_session *s, sess_iter *it) {
  if (s->count + 1 > s->nbuckets && iter_table_grow(s) < 0) return -1;
  size_t h = id_hash(it->id, s->nbuckets);
  it->hnext = s->buckets[h];
  s->buckets[h] = it;
  it->prev = s->tail;
  it->next = NULL;
  if (s->tail)
    s->tail->next = it;
  else
    s->head = it;
  s->tail = it;
  s->count++;
  s->live += (size_t)iter_live(it);
  return 0;
}

static void iter_unlink_list(lp_session *s, sess_iter *it) {
  if (it->prev)
    it->prev->next = it->next;
  else
    s->head = it->next;
  if (it->next)
    it->next->prev = it->prev;
  else
    s->tail = it->prev;
  it->prev = it->next = NULL;
}

static void iter_move_to_tail(lp_session *s, sess_iter *it) {
  if (s->tail == it) return;
  iter_unlink_list(s, it);
  it->prev = s->tail;
  if (s->tail)
    s->tail->next = it;
  else
    s->head = it;
  s->tail = it;
}

/* Closes the engine iterator (the record stays). */
static void iter_finish(lp_session *s, sess_iter *it) {
  s->live -= (size_t)iter_live(it);
  it->ended = 1;
  if (it->it) lp_engine_iter_close(it->it);
  it->it = NULL;
}

static void iter_remove(lp_session *s, sess_iter *it) {
  sess_iter **pp = &s->buckets[id_hash(it->id, s->nbuckets)];
  while (*pp != it)
    pp = &(*pp)->hnext;
  *pp = it->hnext;
  iter_unlink_list(s, it);
  iter_finish(s, it);
  s->count--;
  free(it);
}

lp_session *lp_session_new(lp_engine *e, size_t max_frame) {
  lp_session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->eng = e;
  s->max_frame = max_frame ? max_frame : LP_MAX_FRAME_DEFAULT;
  return s;
}

void lp_session_free(lp_session *s) {
  if (!s) return;
  while (s->head)
    iter_remove(s, s->head);
  free(s->buckets);
  free(s);
}

/* Formats a storage failure as "<CODE>: <op>: <leveldb text>".  The engine's
 * messages may already start with "<op>: "; it is then not repeated. */
static int storage_err(char *dst, size_t n, const char *op, const lp_err *e) {
  size_t oplen = strlen(op);
  const char *code = lp_code_name(e->code != LP_OK ? e->code : LP_EIO);
  int w;
  if (strncmp(e->msg, op, oplen) == 0 && e->msg[oplen] == ':')
    w = snprintf(dst, n, "%s: %s", code, e->msg);
  else
    w = snprintf(dst, n, "%s: %s: %s", code, op, e->msg);
  if (w < 0) w = 0;
  if ((size_t)w >= n) w = (int)n - 1;
  return w;
}

static int reply_err(lp_buf *out, uint32_t id, const char *msg) {
  return lp_wire_put_callback(out, id, msg, strlen(msg), LP_SLICE_NONE);
}

static int reply_storage_err(lp_buf *out, uint32_t id, const char *op, const lp_err *e) {
  char msg[sizeof e->msg + 64];
  int n = storage_err(msg, sizeof msg, op, e);
  return lp_wire_put_callback(out, id, msg, (size_t)n, LP_SLICE_NONE);
}

/* Node's decode defaults (reference 3.3): options absent -> leveldown's
 * defaults; present -> every missing field is the protobuf default. */
static void range_from_opts(const lp_wire_opts *o, lp_range *r) {
  lp_range_init(r);
  if (!o->present) return;
  r->keys = o->has_keys ? (o->keys != 0) : 0;
  r->values = o->has_values ? (o->values != 0) : 0;
  r->limit = o->has_limit ? (int64_t)o->limit : 0;
  r->reverse = o->has_reverse ? (o->reverse != 0) : 0;
  r->gt = o->gt;
  r->gte = o->gte;
  r->lt = o->lt;
  r->lte = o->lte;
}

static int exec_get(lp_engine *e, const lp_request *r, lp_buf *out) {
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  char *val = NULL;
  size_t vlen = 0;
  lp_err err;
  int rc = lp_engine_get(e, r->key, &val, &vlen, &err);
  if (rc < 0) return reply_storage_err(out, r->id, "get", &err);
  if (rc == 0) return reply_err(out, r->id, MSG_NOT_FOUND);
  /* a found empty value must still be a present field */
  lp_slice v = {val ? val : "", vlen};
  rc = lp_wire_put_callback(out, r->id, NULL, 0, v);
  free(val);
  return rc;
}

static int exec_put(lp_engine *e, const lp_request *r, lp_buf *out) {
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  if (!r->value.ptr) return reply_err(out, r->id, MSG_NULL_VALUE);
  lp_err err;
  if (lp_engine_put(e, r->key, r->value, 0, &err) < 0)
    return reply_storage_err(out, r->id, "put", &err);
  return lp_wire_put_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_del(lp_engine *e, const lp_request *r, lp_buf *out) {
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  lp_err err;
  if (lp_engine_del(e, r->key, 0, &err) < 0) return reply_storage_err(out, r->id, "del", &err);
  return lp_wire_put_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_batch(lp_engine *e, const lp_request *r, lp_buf *out) {
  size_t cur = 0;
  lp_batch_op op;
  /* validate everything first: nothing is applied when one op is refused */
  while (lp_wire_next_op(r, &cur, &op)) {
    if (op.key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
    if (op.type == 0 && !op.value.ptr) return reply_err(out, r->id, MSG_NULL_VALUE);
  }
  if (r->count == 0) return lp_wire_put_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
  lp_batch *b = lp_batch_new();
  if (!b) return reply_err(out, r->id, "ENOMEM: batch: out of memory");
  cur = 0;
  while (lp_wire_next_op(r, &cur, &op)) {
    if (op.type == 0)
      lp_batch_put(b, op.key, op.value);
    else
      lp_batch_del(b, op.key);
  }
  lp_err err;
  int rc = lp_engine_write(e, b, 0, &err);
  lp_batch_free(b);
  if (rc < 0) return reply_storage_err(out, r->id, "batch", &err);
  return lp_wire_put_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_clear(lp_engine *e, const lp_request *r, lp_buf *out) {
  lp_range range;
  range_from_opts(&r->opts, &range);
  if (range.limit != 0) {
    lp_clear_state st;
    memset(&st, 0, sizeof st);
    lp_err err;
    int rc;
    do
      rc = lp_engine_clear_step(e, &range, &st, SESS_CLEAR_STEP, 0, &err);
    while (rc == 1);
    lp_clear_state_free(&st);
    if (rc < 0) return reply_storage_err(out, r->id, "clear", &err);
  }
  return lp_wire_put_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_getmany(lp_engine *e, const lp_request *r, lp_buf *out) {
  lp_buf rest = {0};
  size_t cur = 0;
  lp_slice key;
  int rc = 0;
  while (lp_wire_next_key(r, &cur, &key)) {
    if (key.len == 0) {
      lp_buf_free(&rest);
      return lp_wire_put_getmany(out, r->id, MSG_EMPTY_KEY, strlen(MSG_EMPTY_KEY),
                                 (lp_slice){"", 0});
    }
  }
  cur = 0;
  while (lp_wire_next_key(r, &cur, &key)) {
    char *val = NULL;
    size_t vlen = 0;
    lp_err err;
    int g = lp_engine_get(e, key, &val, &vlen, &err);
    if (g < 0) {
      char msg[sizeof err.msg + 64];
      int n = storage_err(msg, sizeof msg, "getMany", &err);
      lp_buf_free(&rest);
      return lp_wire_put_getmany(out, r->id, msg, (size_t)n, (lp_slice){"", 0});
    }
    lp_slice v = g == 1 ? (lp_slice){val ? val : "", vlen} : LP_SLICE_NONE;
    rc = lp_wire_rest_getmany_value(&rest, v);
    free(val);
    if (rc < 0) break;
  }
  if (rc == 0) {
    lp_slice vr = {rest.ptr ? rest.ptr : "", rest.len};
    rc = lp_wire_put_getmany(out, r->id, NULL, 0, vr);
  }
  lp_buf_free(&rest);
  return rc;
}

/* Returns 0, or -1 when out of memory (the reply may be missing). */
static int session_execute(lp_engine *e, const lp_request *r, lp_buf *out) {
  switch (r->tag) {
    case LP_REQ_GET: return exec_get(e, r, out);
    case LP_REQ_PUT: return exec_put(e, r, out);
    case LP_REQ_DEL: return exec_del(e, r, out);
    case LP_REQ_BATCH: return exec_batch(e, r, out);
    case LP_REQ_CLEAR: return exec_clear(e, r, out);
    case LP_REQ_GETMANY: return exec_getmany(e, r, out);
    default: return 0; /* ITER is the session's business */
  }
}

void lp_session_execute(lp_engine *e, const lp_request *r, lp_buf *out) {
  (void)session_execute(e, r, out);
}

/* Produces up to budget entries of one iterator.  Returns the number of
 * entries produced, or -1 when out of memory (the iterator is then ended). */
static long iter_produce(lp_session *s, sess_iter *it, lp_buf *out, size_t budget) {
  long n = 0;
  while ((size_t)n < budget && iter_live(it)) {
    lp_slice k, v;
    lp_err err;
    int rc = lp_engine_iter_next(it->it, &k, &v, &err);
    if (rc == 1) {
      /* never both absent: a suppressed side is a present empty field */
      lp_slice ks = it->keys ? k : (lp_slice){"", 0};
      lp_slice vs = it->values ? v : (lp_slice){"", 0};
      if (!ks.ptr) ks.ptr = "";
      if (!vs.ptr) vs.ptr = "";
      if (lp_wire_put_iterdata(out, it->id, ks, vs) < 0) {
        iter_finish(s, it);
        return -1;
      }
      it->window--;
      if (it->window == 0) s->live--;
      n++;
    } else if (rc == 0) {
      iter_finish(s, it);
      if (lp_wire_put_iterend(out, it->id) < 0) return -1;
    } else {
      char msg[sizeof err.msg + 64];
      int len = storage_err(msg, sizeof msg, "iterator", &err);
      iter_finish(s, it);
      if (lp_wire_put_itererror(out, it->id, msg, (size_t)len) < 0) return -1;
    }
  }
  return n;
}

/* Opens a new iterator record for r (batch > 0, id unknown). */
static int iter_open(lp_session *s, const lp_request *r, sess_iter **res, lp_buf *out) {
  *res = NULL;
  if (s->count >= SESS_MAX_ITERS) {
    static const char msg[] = "too many open iterators";
    return lp_wire_put_itererror(out, r->id, msg, sizeof msg - 1);
  }
  lp_range range;
  range_from_opts(&r->opts, &range);
  sess_iter *it = calloc(1, sizeof *it);
  if (!it) return -1;
  it->id = r->id;
  it->keys = range.keys;
  it->values = range.values;
  it->window = 0;

  if (range.limit == 0) {
    /* zero entries: never touch the engine, end at once */
    it->ended = 1;
    if (iter_insert(s, it) < 0) {
      free(it);
      return -1;
    }
    *res = it;
    return lp_wire_put_iterend(out, r->id);
  }

  lp_err err;
  /* the bounds point into the request: the engine copies them */
  it->it = lp_engine_iter_open(s->eng, &range, &err);
  if (!it->it) {
    it->ended = 1;
    if (iter_insert(s, it) < 0) {
      free(it);
      return -1;
    }
    *res = it;
    char msg[sizeof err.msg + 64];
    int n = storage_err(msg, sizeof msg, "iterator", &err);
    return lp_wire_put_itererror(out, r->id, msg, (size_t)n);
  }
  if (iter_insert(s, it) < 0) {
    lp_engine_iter_close(it->it);
    free(it);
    return -1;
  }
  *res = it;
  return 0;
}

/* Handles one ITER message.  *budget is decreased by the entries produced. */
static int session_iter(lp_session *s, const lp_request *r, lp_buf *out, size_t *budget) {
  sess_iter *it = iter_find(s, r->id);
  if (r->batch == 0) {
    if (it) iter_remove(s, it);
    return 0;
  }
  if (!it) {
    if (iter_open(s, r, &it, out) < 0) return -1;
    if (!it) return 0;
  }
  s->live -= (size_t)iter_live(it);
  it->window = r->batch;
  s->live += (size_t)iter_live(it);
  long n = iter_produce(s, it, out, *budget);
  if (n < 0) return -1;
  *budget -= (size_t)n;
  return 0;
}

static const char *tag_name(int tag) {
  static const char *const names[] = {"get", "put", "del", "batch", "iterator", "clear", "getMany"};
  return tag >= 0 && tag < 7 ? names[tag] : "unknown";
}

long lp_session_input(lp_session *s, const char *in, size_t len, lp_buf *out, size_t budget,
                      lp_err *err) {
  size_t off = 0;
  while (off < len) {
    lp_slice payload;
    size_t used = 0;
    int rc = lp_wire_next_frame(in + off, len - off, s->max_frame, &payload, &used);
    if (rc == LP_WIRE_NEED_MORE) break;
    if (rc == LP_WIRE_EMPTY) {
      off += used ? used : 1;
      continue;
    }
    if (rc == LP_WIRE_TOO_BIG) {
      uint64_t n = 0;
      size_t vused = 0;
      if (lp_varint_get(in + off, len - off, &n, &vused) == 1)
        lp_err_set(err, LP_EPROTO, "frame of %" PRIu64 " bytes exceeds the limit of %zu", n,
                   s->max_frame);
      else
        lp_err_set(err, LP_EPROTO, "bad frame length prefix");
      return -1;
    }
    if (rc != LP_WIRE_OK) {
      lp_err_set(err, LP_EPROTO, "bad frame");
      return -1;
    }
    off += used;
    lp_request req;
    memset(&req, 0, sizeof req);
    rc = lp_wire_decode_request(payload, &req);
    if (rc == LP_WIRE_EMPTY) continue;
    if (rc == LP_WIRE_UNKNOWN_TAG) {
      lp_err_set(err, LP_EPROTO, "unknown request tag %u",
                 payload.len ? (unsigned)(unsigned char)payload.ptr[0] : 0u);
      return -1;
    }
    if (rc != LP_WIRE_OK) {
      lp_err_set(err, LP_EPROTO, "malformed %s request (%zu bytes)",
                 tag_name(payload.len ? (unsigned char)payload.ptr[0] : -1), payload.len);
      return -1;
    }
    if (req.tag == LP_REQ_ITER)
      rc = session_iter(s, &req, out, &budget);
    else
      rc = session_execute(s->eng, &req, out);
    if (rc < 0) {
      lp_err_set(err, LP_ENOMEM, "out of memory while replying to %s", tag_name(req.tag));
      return -1;
    }
  }
  return (long)off;
}

int lp_session_pump(lp_session *s, lp_buf *out, size_t budget) {
  /* Round robin: an iterator that used up the budget goes to the back of the
   * list so that the next call starts with the others. */
  sess_iter *it = s->head, *stop = s->tail;
  while (it && budget > 0 && s->live > 0) {
    sess_iter *next = it->next;
    int last = it == stop;
    if (iter_live(it)) {
      long n = iter_produce(s, it, out, budget);
      if (n > 0) budget -= (size_t)n;
      if (n >= 0 && iter_live(it)) iter_move_to_tail(s, it);
    }
    if (last) break;
    it = next;
  }
  return s->live > 0;
}

/* ======================================================================== */
/* Server                                                                     */
/* ======================================================================== */

/* Iterator entries produced per connection per loop turn, and per pump call
 * inside it (the output size is checked between calls). */
#define SRV_TURN_BUDGET 512
#define SRV_PUMP_CHUNK  64
#define SRV_READ_CHUNK  65536
/* Input run through the session between two checks of the output level; the
 * replies of each piece go out before the next piece runs.  The first piece of
 * a read is small, so that a follower with many requests in flight gets its
 * first replies (and sends more) while the leader works on the rest: on two
 * CPUs the two sides then overlap instead of taking turns. */
#define SRV_INPUT_PIECE 4096
#define SRV_FIRST_PIECE 512
/* An input buffer larger than this is released once drained. */
#define SRV_IN_KEEP (1u << 20)

typedef struct srv_conn srv_conn;

struct lp_server {
  lp_engine *eng;
  lp_server_opts opts;
  uv_loop_t loop;
  uv_pipe_t listener;
  uv_async_t stop_async;
  uv_idle_t pump_idle;
  uv_pipe_t spare; /* takes a pending fd when a connection cannot be allocated */
  int spare_busy;
  pthread_t thread;
  int thread_started;
  int stopping;    /* server thread only */
  int nconns;      /* atomic: accepted, not yet closed */
  srv_conn *conns; /* every open connection (also refused ones until closed) */
};

/* One accepted connection.  Owned by the server thread.  Freed in its close
 * callback; `inflight` must stay untouched while a uv_write is pending. */
struct srv_conn {
  uv_pipe_t pipe;
  uv_write_t wreq;
  lp_server *srv;
  lp_session *sess;
  lp_buf in;       /* received, not yet consumed (a partial frame) */
  lp_buf out;      /* replies produced, not yet handed to libuv */
  lp_buf inflight; /* bytes of the pending uv_write, from inflight_off */
  size_t inflight_off;
  int writing; /* a uv_write is pending */
  int reading; /* uv_read_start is active */
  int blocked; /* over max_conn_buffer: not reading, not pumping */
  int pumping; /* some iterator window is open */
  int eof;     /* peer finished sending: close after the output drains */
  int in_held; /* c->in may hold whole frames not yet run (output was full) */
  int closing;
  int counted; /* included in nconns */
  long pid;
  long uid;
  srv_conn *prev, *next;
};

static void srv_log(lp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_log(lp_server *s, const char *fmt, ...) {
  if (!s->opts.log) return;
  char msg[640];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  s->opts.log(s->opts.log_ud, msg);
}

void lp_server_opts_init(lp_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_frame = LP_MAX_FRAME_DEFAULT;
  o->max_conn_buffer = 8u * 1024u * 1024u;
  o->allow_other_users = 0;
  o->log = NULL;
  o->log_ud = NULL;
}

int lp_server_connections(lp_server *s) {
  return s ? __atomic_load_n(&s->nconns, __ATOMIC_ACQUIRE) : 0;
}

static size_t conn_unsent(const srv_conn *c) {
  return c->out.len + (c->inflight.len - c->inflight_off);
}

static void conn_close_cb(uv_handle_t *h) {
  srv_conn *c = h->data;
  lp_server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->counted) __atomic_fetch_sub(&s->nconns, 1, __ATOMIC_ACQ_REL);
  lp_session_free(c->sess);
  lp_buf_free(&c->in);
  lp_buf_free(&c->out);
  lp_buf_free(&c->inflight);
  free(c);
}

static void conn_close(srv_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->pipe);
  c->reading = 0;
  c->pumping = 0;
  uv_close((uv_handle_t *)&c->pipe, conn_close_cb);
}

static void conn_service(srv_conn *c);
static void conn_flush(srv_conn *c);

static void conn_write_cb(uv_write_t *req, int status) {
  srv_conn *c = req->data;
  c->writing = 0;
  c->inflight.len = 0;
  c->inflight_off = 0;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  conn_service(c);
}

/* Hands c->out to the socket: a direct write first, the rest as one uv_write.
 * At most one uv_write is pending; bytes produced meanwhile wait in c->out.
 * May close the connection (write error). */
static void conn_write_out(srv_conn *c) {
  if (c->closing || c->writing || c->out.len == 0) return;
  uv_buf_t b = uv_buf_init(c->out.ptr, (unsigned)c->out.len);
  int n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
  if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if ((size_t)n == c->out.len) {
    c->out.len = 0;
    if (c->out.cap > SRV_IN_KEEP) lp_buf_free(&c->out);
    return;
  }
  /* swap: the unsent tail becomes the in-flight buffer */
  lp_buf t = c->inflight;
  c->inflight = c->out;
  c->inflight_off = (size_t)n;
  t.len = 0;
  if (t.cap > SRV_IN_KEEP) lp_buf_free(&t);
  c->out = t;
  b = uv_buf_init(c->inflight.ptr + c->inflight_off, (unsigned)(c->inflight.len - c->inflight_off));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, conn_write_cb) < 0) {
    c->inflight.len = 0;
    c->inflight_off = 0;
    conn_close(c);
    return;
  }
  c->writing = 1;
}

/* conn_write_out; after EOF the connection closes once everything is out. */
static void conn_flush(srv_conn *c) {
  conn_write_out(c);
  if (!c->closing && c->eof && !c->writing && c->out.len == 0) conn_close(c);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  srv_conn *c = h->data;
  (void)suggested;
  if (lp_buf_reserve(&c->in, SRV_READ_CHUNK) < 0) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  size_t room = c->in.cap - c->in.len;
  if (room > UINT32_MAX) room = UINT32_MAX;
  *buf = uv_buf_init(c->in.ptr + c->in.len, (unsigned)room);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void pump_idle_cb(uv_idle_t *h);

/* Output level with hysteresis: blocked above max_conn_buffer, unblocked
 * below half of it. */
static void conn_level(srv_conn *c) {
  size_t unsent = conn_unsent(c), max = c->srv->opts.max_conn_buffer;
  if (!c->blocked && unsent > max)
    c->blocked = 1;
  else if (c->blocked && unsent < max / 2)
    c->blocked = 0;
}

/* Starts or stops reading and pumping from the output level. */
static void conn_update_flow(srv_conn *c) {
  lp_server *s = c->srv;
  conn_level(c);
  int want_read = !c->blocked && !c->eof && !c->closing && !c->in_held;
  if (want_read && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->pipe, conn_alloc_cb, conn_read_cb) == 0) c->reading = 1;
  } else if (!want_read && c->reading) {
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = 0;
  }
  if (c->pumping && !c->blocked && !c->closing && !s->stopping &&
      !uv_is_active((uv_handle_t *)&s->pump_idle))
    uv_idle_start(&s->pump_idle, pump_idle_cb);
}

/* Runs the whole frames of c->in through the session, in pieces, stopping
 * once the output passes max_conn_buffer (in_held then says that input was
 * left).  Returns -1 when the connection was closed. */
static int conn_process(srv_conn *c) {
  lp_server *s = c->srv;
  size_t off = 0, piece_max = SRV_FIRST_PIECE;
  c->in_held = 0;
  while (off < c->in.len) {
    if (conn_unsent(c) > s->opts.max_conn_buffer) {
      c->in_held = 1;
      break;
    }
    size_t rest = c->in.len - off, piece = rest < piece_max ? rest : piece_max;
    piece_max = SRV_INPUT_PIECE;
    if (piece < rest) {
      /* never cut a frame: a frame larger than the piece goes alone */
      lp_slice pl;
      size_t fl;
      if (lp_wire_next_frame(c->in.ptr + off, rest, s->opts.max_frame, &pl, &fl) !=
              LP_WIRE_NEED_MORE &&
          fl > piece)
        piece = fl;
    }
    lp_err err;
    long used = lp_session_input(c->sess, c->in.ptr + off, piece, &c->out, SRV_PUMP_CHUNK, &err);
    if (used < 0) {
      srv_log(s, "closing connection pid %ld: %s", c->pid, err.msg);
      /* best effort: the replies to the frames before the bad one */
      if (!c->writing && c->out.len > 0) {
        uv_buf_t b = uv_buf_init(c->out.ptr, (unsigned)c->out.len);
        (void)uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
      }
      conn_close(c);
      return -1;
    }
    if (used == 0) break; /* a partial frame */
    off += (size_t)used;
    if (off < c->in.len) {
      conn_write_out(c);
      if (c->closing) return -1;
    }
  }
  lp_buf_consume(&c->in, off);
  if (c->in.len == 0 && c->in.cap > SRV_IN_KEEP) lp_buf_free(&c->in);
  /* budget 0: only asks whether some window is still open */
  c->pumping = !c->eof && lp_session_pump(c->sess, &c->out, 0);
  return 0;
}

/* Everything a connection does after an event: run held input while the
 * output allows it, write, then adjust reading and pumping. */
static void conn_service(srv_conn *c) {
  for (;;) {
    if (c->closing) return;
    conn_level(c);
    if (!c->blocked && !c->eof && c->in.len > 0 && conn_process(c) < 0) return;
    conn_flush(c);
    if (c->closing) return;
    /* nothing pending: held input can go on now */
    if (c->writing || !c->in_held) break;
  }
  conn_update_flow(c);
}

/* Produces up to one turn of iterator entries for c. */
static void conn_pump(srv_conn *c) {
  size_t budget = SRV_TURN_BUDGET;
  while (c->pumping && budget > 0 && conn_unsent(c) <= c->srv->opts.max_conn_buffer) {
    size_t chunk = budget < SRV_PUMP_CHUNK ? budget : SRV_PUMP_CHUNK;
    c->pumping = lp_session_pump(c->sess, &c->out, chunk);
    budget -= chunk;
  }
}

static void pump_idle_cb(uv_idle_t *h) {
  lp_server *s = h->data;
  int more = 0;
  for (srv_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (c->closing || !c->pumping || c->blocked) continue;
    conn_pump(c);
    conn_service(c);
    if (!c->closing && c->pumping && !c->blocked) more = 1;
  }
  if (!more) uv_idle_stop(h);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  srv_conn *c = st->data;
  lp_server *s = c->srv;
  (void)buf;
  if (c->closing) return;
  if (nread == 0) return; /* EAGAIN */
  if (nread < 0) {
    if (nread == UV_EOF) {
      /* finish what was asked, then close; no more iterator entries */
      c->eof = 1;
      c->pumping = 0;
      conn_service(c);
      return;
    }
    if (nread == UV_ENOBUFS) srv_log(s, "closing connection pid %ld: out of memory", c->pid);
    conn_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  conn_service(c);
}

static void spare_close_cb(uv_handle_t *h) {
  lp_server *s = h->data;
  s->spare_busy = 0;
}

static void srv_connection_cb(uv_stream_t *ls, int status) {
  lp_server *s = ls->data;
  if (status < 0) {
    srv_log(s, "accept failed: %s", uv_strerror(status));
    return;
  }
  srv_conn *c = calloc(1, sizeof *c);
  if (!c) {
    /* The pending fd must be taken or libuv stops accepting: take it with the
     * spare handle and close it at once. */
    if (!s->spare_busy && uv_pipe_init(&s->loop, &s->spare, 0) == 0) {
      s->spare_busy = 1;
      s->spare.data = s;
      (void)uv_accept(ls, (uv_stream_t *)&s->spare);
      uv_close((uv_handle_t *)&s->spare, spare_close_cb);
    }
    srv_log(s, "refused a connection: out of memory");
    return;
  }
  c->srv = s;
  c->pid = -1;
  c->uid = -1;
  if (uv_pipe_init(&s->loop, &c->pipe, 0) < 0) {
    free(c);
    return;
  }
  c->pipe.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  int rc = uv_accept(ls, (uv_stream_t *)&c->pipe);
  if (rc < 0) {
    srv_log(s, "accept failed: %s", uv_strerror(rc));
    conn_close(c);
    return;
  }
  uv_os_fd_t fd = -1;
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && clen == sizeof cred) {
    c->pid = (long)cred.pid;
    c->uid = (long)cred.uid;
  } else if (!s->opts.allow_other_users) {
    srv_log(s, "refused peer: cannot read its credentials");
    conn_close(c);
    return;
  }
  if (!s->opts.allow_other_users && (uid_t)c->uid != geteuid()) {
    srv_log(s, "refused peer pid %ld uid %ld", c->pid, c->uid);
    conn_close(c);
    return;
  }
  c->sess = lp_session_new(s->eng, s->opts.max_frame);
  if (!c->sess) {
    srv_log(s, "closing connection pid %ld: out of memory", c->pid);
    conn_close(c);
    return;
  }
  c->counted = 1;
  __atomic_fetch_add(&s->nconns, 1, __ATOMIC_ACQ_REL);
  conn_service(c);
  if (!c->closing && !c->reading) {
    srv_log(s, "closing connection pid %ld: cannot read", c->pid);
    conn_close(c);
  }
}

static void srv_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void srv_stop_cb(uv_async_t *h) {
  lp_server *s = h->data;
  if (s->stopping) return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->listener, NULL);
  uv_close((uv_handle_t *)&s->pump_idle, NULL);
  for (srv_conn *c = s->conns; c; c = c->next)
    conn_close(c);
  uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void *srv_thread(void *arg) {
  lp_server *s = arg;
  uv_run(&s->loop, UV_RUN_DEFAULT);
  /* only reached once every handle is closed; be defensive anyway */
  uv_walk(&s->loop, srv_walk_close, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  return NULL;
}

lp_server *lp_server_start(lp_engine *e, int listen_fd, const lp_server_opts *o, lp_err *err) {
  lp_server *s = calloc(1, sizeof *s);
  if (!s) {
    close(listen_fd);
    lp_err_set(err, LP_ENOMEM, "server: out of memory");
    return NULL;
  }
  s->eng = e;
  if (o)
    s->opts = *o;
  else
    lp_server_opts_init(&s->opts);
  if (s->opts.max_frame == 0) s->opts.max_frame = LP_MAX_FRAME_DEFAULT;
  if (s->opts.max_conn_buffer == 0) s->opts.max_conn_buffer = 8u * 1024u * 1024u;

  int rc = uv_loop_init(&s->loop);
  if (rc < 0) {
    close(listen_fd);
    lp_err_set(err, LP_EIO, "server: uv_loop_init: %s", uv_strerror(rc));
    free(s);
    return NULL;
  }
  s->loop.data = s;
  /* from here on every failure closes the handles and runs the loop dry */
  const char *what = "uv_pipe_init";
  rc = uv_pipe_init(&s->loop, &s->listener, 0);
  if (rc < 0) {
    close(listen_fd);
    goto fail_loop;
  }
  s->listener.data = s;
  what = "uv_pipe_open";
  rc = uv_pipe_open(&s->listener, listen_fd);
  if (rc < 0) {
    close(listen_fd);
    goto fail_handles;
  }
  what = "uv_listen";
  rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, srv_connection_cb);
  if (rc < 0) goto fail_handles;
  what = "uv_idle_init";
  rc = uv_idle_init(&s->loop, &s->pump_idle);
  if (rc < 0) goto fail_handles;
  s->pump_idle.data = s;
  what = "uv_async_init";
  rc = uv_async_init(&s->loop, &s->stop_async, srv_stop_cb);
  if (rc < 0) goto fail_handles;
  s->stop_async.data = s;

  /* the server thread takes no signals: the host's handlers stay on its own
   * threads, and a write to a vanished peer gives EPIPE, not SIGPIPE */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int prc = pthread_create(&s->thread, NULL, srv_thread, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    rc = uv_translate_sys_error(prc);
    what = "pthread_create";
    goto fail_handles;
  }
  s->thread_started = 1;
  return s;

fail_handles:
  lp_err_set(err, rc == UV_ENOMEM ? LP_ENOMEM : LP_EIO, "server: %s: %s", what, uv_strerror(rc));
  uv_walk(&s->loop, srv_walk_close, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  uv_loop_close(&s->loop);
  free(s);
  return NULL;
fail_loop:
  lp_err_set(err, LP_EIO, "server: %s: %s", what, uv_strerror(rc));
  uv_loop_close(&s->loop);
  free(s);
  return NULL;
}

void lp_server_stop(lp_server *s) {
  if (!s) return;
  if (s->thread_started) {
    uv_async_send(&s->stop_async);
    pthread_join(s->thread, NULL);
  }
  uv_loop_close(&s->loop);
  free(s);
}

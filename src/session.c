/*
 * session.c: lp_session, one follower connection's protocol state.
 *
 * Decodes requests, runs them on the engine, encodes the replies, and keeps
 * the connection's open iterators with their windows.  No I/O, no clock, no
 * thread of its own: server.c drives one per socket on its thread, party.c
 * one over memory after a promotion.  Replies are multileveldown 5.0.1's
 * server's (docs/PROTOCOL.md, "Requests", "Responses", "Iterators and
 * windows"), except that a peer that breaks the protocol is disconnected
 * instead of being left hanging (docs/PROTOCOL.md, "Differences from
 * level-party 5.1.1").
 */
#include "private.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Open iterators per session; beyond it an open is refused with an error. */
#define SESS_MAX_ITERS 4096

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

static int sess_iter_live(const sess_iter *it) { return !it->ended && it->window > 0; }

static size_t id_hash(uint32_t id, size_t nbuckets) {
  return (size_t)((id * 2654435761u) >> 7) & (nbuckets - 1);
}

static sess_iter *sess_iter_find(lp_session *s, uint32_t id) {
  sess_iter *it;
  if (!s->buckets) return NULL;
  for (it = s->buckets[id_hash(id, s->nbuckets)]; it; it = it->hnext)
    if (it->id == id) return it;
  return NULL;
}

static int sess_iter_table_grow(lp_session *s) {
  size_t n = s->nbuckets ? s->nbuckets * 2 : 16;
  sess_iter **b = calloc(n, sizeof *b), *it;
  if (!b) return -1;
  for (it = s->head; it; it = it->next) {
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
static int sess_iter_insert(lp_session *s, sess_iter *it) {
  size_t h;
  if (s->count + 1 > s->nbuckets && sess_iter_table_grow(s) < 0) return -1;
  h = id_hash(it->id, s->nbuckets);
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
  s->live += (size_t)sess_iter_live(it);
  return 0;
}

static void sess_iter_unlink_list(lp_session *s, sess_iter *it) {
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

static void sess_iter_move_to_tail(lp_session *s, sess_iter *it) {
  if (s->tail == it) return;
  sess_iter_unlink_list(s, it);
  it->prev = s->tail;
  if (s->tail)
    s->tail->next = it;
  else
    s->head = it;
  s->tail = it;
}

/* Closes the engine iterator (the record stays). */
static void sess_iter_finish(lp_session *s, sess_iter *it) {
  s->live -= (size_t)sess_iter_live(it);
  it->ended = 1;
  if (it->it) lp_engine_iter_close(it->it);
  it->it = NULL;
}

static void sess_iter_remove(lp_session *s, sess_iter *it) {
  sess_iter **pp = &s->buckets[id_hash(it->id, s->nbuckets)];
  while (*pp != it)
    pp = &(*pp)->hnext;
  *pp = it->hnext;
  sess_iter_unlink_list(s, it);
  sess_iter_finish(s, it);
  s->count--;
  free(it);
}

lp_session *lp_session_new(lp_engine *e, size_t max_frame) {
  lp_session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->eng = e;
  s->max_frame = max_frame ? max_frame : LP_DEFAULT_MAX_FRAME;
  return s;
}

void lp_session_free(lp_session *s) {
  if (!s) return;
  while (s->head)
    sess_iter_remove(s, s->head);
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
  return lp_wire_enc_callback(out, id, msg, strlen(msg), LP_SLICE_NONE);
}

static int reply_storage_err(lp_buf *out, uint32_t id, const char *op, const lp_err *e) {
  char msg[sizeof e->msg + 64];
  int n = storage_err(msg, sizeof msg, op, e);
  return lp_wire_enc_callback(out, id, msg, (size_t)n, LP_SLICE_NONE);
}

/* Node's decode defaults (docs/PROTOCOL.md, "Fields and defaults"): options
 * absent -> leveldown's defaults; present -> every missing field is the
 * protobuf default. */
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

/* "ETOOLARGE: <op>: the <what> is N bytes, over the frame limit of M": a
 * reply that would exceed max_frame is never sent (the follower would refuse
 * it and, if it does not skip it, reconnect and ask again for ever); this
 * error takes its place, for that request only (docs/PROTOCOL.md,
 * "Framing"). */
static void too_large_text(const lp_session *s, char *dst, size_t n, const char *op,
                           const char *what, size_t bytes) {
  snprintf(dst, n, "%s: %s: %s %zu bytes, over the frame limit of %zu", lp_code_name(LP_ETOOLARGE),
           op, what, bytes, s->max_frame);
}

static int exec_get(lp_session *s, const lp_request *r, lp_buf *out) {
  char *val = NULL;
  size_t vlen = 0;
  lp_err err;
  lp_slice v;
  int rc;
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  rc = lp_engine_get(s->eng, r->key, &val, &vlen, &err);
  if (rc < 0) return reply_storage_err(out, r->id, "get", &err);
  if (rc == 0) return reply_err(out, r->id, MSG_NOT_FOUND);
  if (lp_wire_frame_payload(r->id, lp_wire_bytes_field_len(vlen)) > s->max_frame) {
    char msg[160];
    free(val);
    too_large_text(s, msg, sizeof msg, "get", "the value is", vlen);
    return reply_err(out, r->id, msg);
  }
  /* a found empty value must still be a present field */
  v.ptr = val ? val : "";
  v.len = vlen;
  rc = lp_wire_enc_callback(out, r->id, NULL, 0, v);
  free(val);
  return rc;
}

static int exec_put(lp_engine *e, const lp_request *r, lp_buf *out) {
  lp_err err;
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  if (!r->value.ptr) return reply_err(out, r->id, MSG_NULL_VALUE);
  if (lp_engine_put(e, r->key, r->value, r->sync, &err) < 0)
    return reply_storage_err(out, r->id, "put", &err);
  return lp_wire_enc_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_del(lp_engine *e, const lp_request *r, lp_buf *out) {
  lp_err err;
  if (r->key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
  if (lp_engine_del(e, r->key, r->sync, &err) < 0)
    return reply_storage_err(out, r->id, "del", &err);
  return lp_wire_enc_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_batch(lp_engine *e, const lp_request *r, lp_buf *out) {
  size_t cur = 0;
  lp_batch_op op;
  lp_batch *b;
  lp_err err;
  int rc;
  /* validate everything first: nothing is applied when one op is refused */
  while (lp_wire_next_op(r, &cur, &op)) {
    if (op.key.len == 0) return reply_err(out, r->id, MSG_EMPTY_KEY);
    if (op.type == LP_OP_PUT && !op.value.ptr) return reply_err(out, r->id, MSG_NULL_VALUE);
  }
  if (r->count == 0) return lp_wire_enc_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
  b = lp_batch_new();
  if (!b) return reply_err(out, r->id, "ENOMEM: batch: out of memory");
  cur = 0;
  while (lp_wire_next_op(r, &cur, &op)) {
    if (op.type == LP_OP_PUT)
      lp_batch_put(b, op.key, op.value);
    else
      lp_batch_del(b, op.key);
  }
  rc = lp_engine_write(e, b, r->sync, &err);
  lp_batch_free(b);
  if (rc < 0) return reply_storage_err(out, r->id, "batch", &err);
  return lp_wire_enc_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_clear(lp_engine *e, const lp_request *r, lp_buf *out) {
  lp_range range;
  range_from_opts(&r->opts, &range);
  if (range.limit != 0) {
    lp_clear_state st;
    lp_err err;
    int rc;
    memset(&st, 0, sizeof st);
    do
      rc = lp_engine_clear_step(e, &range, &st, LP_CLEAR_STEP, r->sync, &err);
    while (rc == 1);
    lp_clear_state_free(&st);
    if (rc < 0) return reply_storage_err(out, r->id, "clear", &err);
  }
  return lp_wire_enc_callback(out, r->id, NULL, 0, LP_SLICE_NONE);
}

static int exec_getmany(lp_session *s, const lp_request *r, lp_buf *out) {
  lp_engine *e = s->eng;
  lp_buf rest = {0};
  size_t cur = 0, total = 0;
  lp_slice key;
  int rc = 0, over = 0;
  while (lp_wire_next_key(r, &cur, &key)) {
    if (key.len == 0) {
      lp_buf_free(&rest);
      return lp_wire_enc_getmany(out, r->id, MSG_EMPTY_KEY, strlen(MSG_EMPTY_KEY),
                                 (lp_slice){"", 0});
    }
  }
  cur = 0;
  while (lp_wire_next_key(r, &cur, &key)) {
    char *val = NULL;
    size_t vlen = 0;
    lp_err err;
    lp_slice v;
    int g = lp_engine_get(e, key, &val, &vlen, &err);
    if (g < 0) {
      char msg[sizeof err.msg + 64];
      int n = storage_err(msg, sizeof msg, "getMany", &err);
      lp_buf_free(&rest);
      return lp_wire_enc_getmany(out, r->id, msg, (size_t)n, (lp_slice){"", 0});
    }
    v = g == 1 ? (lp_slice){val ? val : "", vlen} : LP_SLICE_NONE;
    total = total > SIZE_MAX - vlen ? SIZE_MAX : total + vlen;
    /* past the limit only the sizes are counted, for the message */
    if (!over) rc = lp_wire_rest_getmany_value(&rest, v);
    free(val);
    if (rc < 0) break;
    if (!over && lp_wire_frame_payload(r->id, rest.len) > s->max_frame) {
      over = 1;
      lp_buf_free(&rest);
    }
  }
  if (rc == 0 && over) {
    char msg[160];
    too_large_text(s, msg, sizeof msg, "getMany", "the values are", total);
    rc = lp_wire_enc_getmany(out, r->id, msg, strlen(msg), (lp_slice){"", 0});
  } else if (rc == 0) {
    lp_slice vr = {rest.ptr ? rest.ptr : "", rest.len};
    rc = lp_wire_enc_getmany(out, r->id, NULL, 0, vr);
  }
  lp_buf_free(&rest);
  return rc;
}

/* Returns 0, or -1 when out of memory (the reply may be missing). */
static int session_execute(lp_session *s, const lp_request *r, lp_buf *out) {
  lp_engine *e = s->eng;
  switch (r->tag) {
    case LP_REQ_GET: return exec_get(s, r, out);
    case LP_REQ_PUT: return exec_put(e, r, out);
    case LP_REQ_DEL: return exec_del(e, r, out);
    case LP_REQ_BATCH: return exec_batch(e, r, out);
    case LP_REQ_CLEAR: return exec_clear(e, r, out);
    case LP_REQ_GETMANY: return exec_getmany(s, r, out);
    default: return 0; /* ITER is the session's business */
  }
}

/* Produces up to budget entries of one iterator.  Returns the number of
 * entries produced, or -1 when out of memory (the iterator is then ended). */
static long sess_iter_produce(lp_session *s, sess_iter *it, lp_buf *out, size_t budget) {
  long n = 0;
  while ((size_t)n < budget && sess_iter_live(it)) {
    lp_slice k, v;
    lp_err err;
    int rc = lp_engine_iter_next(it->it, &k, &v, &err);
    if (rc == 1) {
      /* never both absent: a suppressed side is a present empty field */
      lp_slice ks = it->keys ? k : (lp_slice){"", 0};
      lp_slice vs = it->values ? v : (lp_slice){"", 0};
      if (!ks.ptr) ks.ptr = "";
      if (!vs.ptr) vs.ptr = "";
      if (lp_wire_frame_payload(it->id, lp_wire_bytes_field_len(ks.len) +
                                            lp_wire_bytes_field_len(vs.len)) > s->max_frame) {
        /* the entry cannot be sent: the iterator fails here */
        char msg[160];
        too_large_text(s, msg, sizeof msg, "iterator", "an entry is", ks.len + vs.len);
        sess_iter_finish(s, it);
        if (lp_wire_enc_itererror(out, it->id, msg, strlen(msg)) < 0) return -1;
        break;
      }
      if (lp_wire_enc_iterdata(out, it->id, ks, vs) < 0) {
        sess_iter_finish(s, it);
        return -1;
      }
      it->window--;
      if (it->window == 0) s->live--;
      n++;
    } else if (rc == 0) {
      sess_iter_finish(s, it);
      if (lp_wire_enc_iterend(out, it->id) < 0) return -1;
    } else {
      char msg[sizeof err.msg + 64];
      int len = storage_err(msg, sizeof msg, "iterator", &err);
      sess_iter_finish(s, it);
      if (lp_wire_enc_itererror(out, it->id, msg, (size_t)len) < 0) return -1;
    }
  }
  return n;
}

/* Opens a new iterator record for r (batch > 0, id unknown). */
static int sess_iter_open(lp_session *s, const lp_request *r, sess_iter **res, lp_buf *out) {
  lp_range range;
  lp_err err;
  sess_iter *it;
  *res = NULL;
  if (s->count >= SESS_MAX_ITERS) {
    static const char msg[] = "too many open iterators";
    return lp_wire_enc_itererror(out, r->id, msg, sizeof msg - 1);
  }
  range_from_opts(&r->opts, &range);
  it = calloc(1, sizeof *it);
  if (!it) return -1;
  it->id = r->id;
  it->keys = range.keys;
  it->values = range.values;
  it->window = 0;

  if (range.limit == 0) {
    /* zero entries: never touch the engine, end at once */
    it->ended = 1;
    if (sess_iter_insert(s, it) < 0) {
      free(it);
      return -1;
    }
    *res = it;
    return lp_wire_enc_iterend(out, r->id);
  }

  /* the bounds point into the request: the engine copies them */
  it->it = lp_engine_iter_open(s->eng, &range, &err);
  if (!it->it) {
    char msg[sizeof err.msg + 64];
    int n;
    it->ended = 1;
    if (sess_iter_insert(s, it) < 0) {
      free(it);
      return -1;
    }
    *res = it;
    n = storage_err(msg, sizeof msg, "iterator", &err);
    return lp_wire_enc_itererror(out, r->id, msg, (size_t)n);
  }
  if (sess_iter_insert(s, it) < 0) {
    lp_engine_iter_close(it->it);
    free(it);
    return -1;
  }
  *res = it;
  return 0;
}

/* Handles one ITER message.  *budget is decreased by the entries produced. */
static int session_iter(lp_session *s, const lp_request *r, lp_buf *out, size_t *budget) {
  sess_iter *it = sess_iter_find(s, r->id);
  long n;
  if (r->batch == 0) {
    if (it) sess_iter_remove(s, it);
    return 0;
  }
  if (!it) {
    if (sess_iter_open(s, r, &it, out) < 0) return -1;
    if (!it) return 0;
  }
  s->live -= (size_t)sess_iter_live(it);
  it->window = r->batch;
  s->live += (size_t)sess_iter_live(it);
  n = sess_iter_produce(s, it, out, *budget);
  if (n < 0) return -1;
  *budget -= (size_t)n;
  return 0;
}

static const char *tag_name(int tag) {
  static const char *const names[] = {"get", "put", "del", "batch", "iterator", "clear", "getMany"};
  return tag >= 0 && tag < 7 ? names[tag] : "unknown";
}

/* A request frame over max_frame of which h[0..avail) has arrived (after its
 * length prefix).  The connection is closed for it (its body cannot be
 * skipped without a state no other request needs), but when its tag and id
 * are already in, its request is first answered with ETOOLARGE, so that the
 * follower that sent it does not send it again on its next connection
 * (docs/PROTOCOL.md, "Framing").  Best effort: nothing when they are not. */
static void refuse_oversized(lp_session *s, const char *h, size_t avail, uint64_t n, lp_buf *out) {
  uint64_t id;
  size_t used;
  int tag;
  char msg[160];
  if (avail < 3 || (unsigned char)h[1] != 0x08) return; /* tag, then field 1 (id) */
  tag = (unsigned char)h[0];
  if (tag > LP_REQ_GETMANY || lp_varint_get(h + 2, avail - 2, &id, &used) != 1) return;
  snprintf(msg, sizeof msg, "%s: %s: the request is %" PRIu64 " bytes, over the frame limit of %zu",
           lp_code_name(LP_ETOOLARGE), tag_name(tag), n, s->max_frame);
  if (tag == LP_REQ_ITER)
    (void)lp_wire_enc_itererror(out, (uint32_t)id, msg, strlen(msg));
  else if (tag == LP_REQ_GETMANY)
    (void)lp_wire_enc_getmany(out, (uint32_t)id, msg, strlen(msg), (lp_slice){"", 0});
  else
    (void)lp_wire_enc_callback(out, (uint32_t)id, msg, strlen(msg), LP_SLICE_NONE);
}

long lp_session_input(lp_session *s, const char *in, size_t len, lp_buf *out, size_t budget,
                      lp_err *err) {
  size_t off = 0;
  while (off < len) {
    lp_slice payload;
    lp_request req;
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
      if (lp_varint_get(in + off, len - off, &n, &vused) == 1) {
        refuse_oversized(s, in + off + vused, len - off - vused, n, out);
        lp_err_set(err, LP_EPROTO, "frame of %" PRIu64 " bytes exceeds the limit of %zu", n,
                   s->max_frame);
      } else
        lp_err_set(err, LP_EPROTO, "bad frame length prefix");
      return -1;
    }
    if (rc != LP_WIRE_OK) {
      lp_err_set(err, LP_EPROTO, "bad frame");
      return -1;
    }
    off += used;
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
      rc = session_execute(s, &req, out);
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
    if (sess_iter_live(it)) {
      long n = sess_iter_produce(s, it, out, budget);
      if (n > 0) budget -= (size_t)n;
      if (n >= 0 && sess_iter_live(it)) sess_iter_move_to_tail(s, it);
    }
    if (last) break;
    it = next;
  }
  return s->live > 0;
}

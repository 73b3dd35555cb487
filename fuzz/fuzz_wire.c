/*
 * fuzz_wire.c: fuzz target for the wire codec (wire.c, with buf.c).
 *
 * For each input:
 *   - the frame splitter runs over it, and every payload it yields is decoded
 *     as a request and as a response;
 *   - the whole input is also decoded directly as a payload (so that the
 *     fuzzer need not get a length prefix right to reach the decoders);
 *   - every accepted message is walked, re-encoded with the public encoders,
 *     re-decoded and compared field by field (with the documented
 *     normalisations), and encoded a second time, which must give the same
 *     bytes.
 * Any inconsistency abort()s: fine in a fuzzer, never in the library.
 *
 * libFuzzer: make build/fuzz/fuzz_wire (make fuzz runs it).
 * Standalone (gcc + ASan/UBSan, no libFuzzer): make build/fuzz/fuzz_wire_standalone;
 *   build/fuzz/fuzz_wire_standalone [N] [seed] [file or directory...]
 * runs the examples of docs/PROTOCOL.md, the files given, then N generated
 * inputs (default 200000); fuzz/standalone.h.
 */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why) {
  fprintf(stderr, "fuzz_wire: %s\n", why);
  abort();
}

/* How many inputs reached a full round trip (reported by the standalone main). */
static unsigned long stat_req_ok[LP_REQ_GETMANY + 1], stat_res_ok[LP_RES_GETMANY + 1];

#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) fail(#cond);                                                                      \
  } while (0)

static int slice_eq(lp_slice a, lp_slice b) {
  if ((a.ptr == NULL) != (b.ptr == NULL)) return 0;
  if (a.len != b.len) return 0;
  return a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* An absent side of an iterator entry goes out as a present empty field. */
static lp_slice or_empty(lp_slice s) {
  if (s.ptr == NULL) {
    s.ptr = "";
    s.len = 0;
  }
  return s;
}

static lp_slice buf_slice(const lp_buf *b) {
  lp_slice s;

  s.ptr = b->ptr;
  s.len = b->len;
  return s;
}

/* The payload of a buffer that must hold exactly one whole frame. */
static lp_slice sole_payload(const lp_buf *b) {
  lp_slice p;
  size_t used;

  REQUIRE(lp_wire_next_frame(b->ptr, b->len, 0, &p, &used) == LP_WIRE_OK);
  REQUIRE(used == b->len);
  return p;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                   */
/* ------------------------------------------------------------------------ */

/* What the options turn into on the way back out: the protobuf defaults for
 * missing fields, then the encoder's normalisation of limit. */
static void opts_to_range(const lp_wire_opts *o, lp_range *r) {
  lp_range_init(r);
  r->keys = o->has_keys ? o->keys : 0;
  r->values = o->has_values ? o->values : 0;
  r->gt = o->gt;
  r->gte = o->gte;
  r->lt = o->lt;
  r->lte = o->lte;
  r->limit = o->has_limit ? o->limit : 0;
  r->reverse = o->has_reverse ? o->reverse : 0;
}

/* A clear leaves with at most one bound per side, each one of the caller's
 * own (docs/PROTOCOL.md, "Ranges"), and selects the same keys.  Whether a
 * key is in a conjunction of bounds changes only at a bound, so the bounds'
 * own values and their successors (+ "\0") are every key worth probing. */
static int is_one_of(lp_slice b, lp_slice x, lp_slice y) {
  return b.ptr == NULL || slice_eq(b, x) || slice_eq(b, y);
}

static void check_one_bound(const lp_wire_opts *a, const lp_wire_opts *b) {
  lp_range ra, rb;
  const lp_slice *bounds[4] = {&a->gt, &a->gte, &a->lt, &a->lte};
  int i;

  REQUIRE(!(b->gt.ptr && b->gte.ptr) && !(b->lt.ptr && b->lte.ptr));
  REQUIRE(is_one_of(b->gt, a->gt, LP_SLICE_NONE) && is_one_of(b->gte, a->gte, LP_SLICE_NONE));
  REQUIRE(is_one_of(b->lt, a->lt, LP_SLICE_NONE) && is_one_of(b->lte, a->lte, LP_SLICE_NONE));
  REQUIRE((a->gt.ptr || a->gte.ptr) == (b->gt.ptr || b->gte.ptr));
  REQUIRE((a->lt.ptr || a->lte.ptr) == (b->lt.ptr || b->lte.ptr));
  lp_range_init(&ra);
  lp_range_init(&rb);
  ra.gt = a->gt, ra.gte = a->gte, ra.lt = a->lt, ra.lte = a->lte;
  rb.gt = b->gt, rb.gte = b->gte, rb.lt = b->lt, rb.lte = b->lte;
  for (i = 0; i < 4; i++) {
    lp_slice k = *bounds[i];
    if (k.ptr == NULL) continue;
    REQUIRE(lp_range_contains(&ra, k) == lp_range_contains(&rb, k));
    {
      char *next = malloc(k.len + 1);
      REQUIRE(next != NULL);
      memcpy(next, k.ptr, k.len);
      next[k.len] = 0;
      REQUIRE(lp_range_contains(&ra, (lp_slice){next, k.len + 1}) ==
              lp_range_contains(&rb, (lp_slice){next, k.len + 1}));
      free(next);
    }
  }
}

/* b: a's options after a round trip; an iterator's (with_kv) keep every
 * bound, a clear's one per side. */
static void check_opts(const lp_wire_opts *a, const lp_wire_opts *b, int with_kv) {
  lp_range ra;

  opts_to_range(a, &ra);
  REQUIRE(b->present);
  if (with_kv) {
    REQUIRE(slice_eq(a->gt, b->gt) && slice_eq(a->gte, b->gte));
    REQUIRE(slice_eq(a->lt, b->lt) && slice_eq(a->lte, b->lte));
  } else {
    check_one_bound(a, b);
  }
  REQUIRE(b->has_limit && b->limit == (ra.limit < 0 ? -1 : ra.limit));
  REQUIRE(b->has_reverse && b->reverse == (ra.reverse != 0));
  if (with_kv) {
    REQUIRE(b->has_keys && b->keys == (ra.keys != 0));
    REQUIRE(b->has_values && b->values == (ra.values != 0));
  } else {
    REQUIRE(!b->has_keys && !b->has_values);
  }
}

/* Encodes r (which decoded OK) into out as one frame. */
static void encode_request(const lp_request *r, lp_buf *out) {
  lp_buf rest = {0};
  lp_range rg;
  lp_batch_op op;
  lp_slice k;
  size_t cur = 0, n = 0;

  switch (r->tag) {
    case LP_REQ_GET:
    case LP_REQ_DEL: REQUIRE(lp_wire_rest_key(&rest, r->key) == 0); break;
    case LP_REQ_PUT: REQUIRE(lp_wire_rest_put(&rest, r->key, r->value) == 0); break;
    case LP_REQ_BATCH:
      while (lp_wire_next_op(r, &cur, &op)) {
        REQUIRE(op.type == LP_OP_PUT || op.type == LP_OP_DEL);
        REQUIRE(op.key.ptr != NULL);
        REQUIRE(op.type == LP_OP_PUT || op.value.ptr == NULL);
        REQUIRE(lp_wire_rest_batch_op(&rest, op.type, op.key, op.value) == 0);
        n++;
      }
      REQUIRE(n == r->count);
      break;
    case LP_REQ_GETMANY:
      while (lp_wire_next_key(r, &cur, &k)) {
        REQUIRE(k.ptr != NULL);
        REQUIRE(lp_wire_rest_getmany_key(&rest, k) == 0);
        n++;
      }
      REQUIRE(n == r->count);
      break;
    case LP_REQ_ITER:
      if (r->opts.present) {
        opts_to_range(&r->opts, &rg);
        REQUIRE(lp_wire_rest_iter(&rest, r->batch, &rg) == 0);
      } else if (r->has_batch) {
        REQUIRE(lp_wire_rest_iter_window(&rest, r->batch) == 0);
      }
      break;
    case LP_REQ_CLEAR:
      if (r->opts.present) {
        opts_to_range(&r->opts, &rg);
        REQUIRE(lp_wire_rest_clear(&rest, &rg) == 0);
      }
      break;
    default: fail("decoded request with an unknown tag");
  }
  if (r->sync) REQUIRE(lp_wire_rest_sync(&rest) == 0); /* a write's sync flag, field 15, last */
  REQUIRE(lp_wire_frame(out, r->tag, r->id, buf_slice(&rest)) == 0);
  lp_buf_free(&rest);
}

static void compare_requests(const lp_request *a, const lp_request *b) {
  lp_batch_op oa, ob;
  lp_slice ka, kb;
  size_t ca = 0, cb = 0;
  int ra, rb;

  REQUIRE(a->tag == b->tag && a->id == b->id);
  REQUIRE(a->sync == b->sync);
  REQUIRE(!a->sync || (a->tag != LP_REQ_GET && a->tag != LP_REQ_ITER && a->tag != LP_REQ_GETMANY));
  switch (a->tag) {
    case LP_REQ_GET:
    case LP_REQ_DEL: REQUIRE(slice_eq(a->key, b->key) && b->value.ptr == NULL); break;
    case LP_REQ_PUT: REQUIRE(slice_eq(a->key, b->key) && slice_eq(a->value, b->value)); break;
    case LP_REQ_BATCH:
      REQUIRE(a->count == b->count);
      for (;;) {
        ra = lp_wire_next_op(a, &ca, &oa);
        rb = lp_wire_next_op(b, &cb, &ob);
        REQUIRE(ra == rb);
        if (!ra) break;
        REQUIRE(oa.type == ob.type && slice_eq(oa.key, ob.key) && slice_eq(oa.value, ob.value));
      }
      break;
    case LP_REQ_GETMANY:
      REQUIRE(a->count == b->count);
      for (;;) {
        ra = lp_wire_next_key(a, &ca, &ka);
        rb = lp_wire_next_key(b, &cb, &kb);
        REQUIRE(ra == rb);
        if (!ra) break;
        REQUIRE(slice_eq(ka, kb));
      }
      break;
    case LP_REQ_ITER:
      REQUIRE(a->batch == b->batch);
      if (a->opts.present) {
        REQUIRE(b->has_batch);
        check_opts(&a->opts, &b->opts, 1);
      } else {
        REQUIRE(a->has_batch == b->has_batch && !b->opts.present);
      }
      break;
    case LP_REQ_CLEAR:
      if (a->opts.present)
        check_opts(&a->opts, &b->opts, 0);
      else
        REQUIRE(!b->opts.present);
      break;
    default: fail("unknown tag");
  }
}

static void fuzz_request(lp_slice payload) {
  lp_request a, b, c;
  lp_buf e1 = {0}, e2 = {0};
  lp_batch_op op;
  lp_slice k;
  size_t cur = 0, n = 0;
  int rc = lp_wire_decode_request(payload, &a);

  REQUIRE(rc == LP_WIRE_OK || rc == LP_WIRE_EMPTY || rc == LP_WIRE_UNKNOWN_TAG ||
          rc == LP_WIRE_MALFORMED);
  if (rc != LP_WIRE_OK) {
    /* walkers on a refused request must still be safe */
    while (lp_wire_next_op(&a, &cur, &op) && n < 100000)
      n++;
    cur = 0;
    while (lp_wire_next_key(&a, &cur, &k) && n < 200000)
      n++;
    return;
  }
  REQUIRE(a.tag >= LP_REQ_GET && a.tag <= LP_REQ_GETMANY);
  if (a.tag == LP_REQ_GET || a.tag == LP_REQ_PUT || a.tag == LP_REQ_DEL) REQUIRE(a.key.ptr != NULL);
  if (a.repeated.ptr != NULL)
    REQUIRE(a.repeated.ptr >= payload.ptr &&
            a.repeated.ptr + a.repeated.len <= payload.ptr + payload.len);

  encode_request(&a, &e1);
  rc = lp_wire_decode_request(sole_payload(&e1), &b);
  REQUIRE(rc == LP_WIRE_OK);
  compare_requests(&a, &b);
  /* a second round trip is a fixed point, byte for byte */
  encode_request(&b, &e2);
  REQUIRE(e1.len == e2.len && memcmp(e1.ptr, e2.ptr, e1.len) == 0);
  rc = lp_wire_decode_request(sole_payload(&e2), &c);
  REQUIRE(rc == LP_WIRE_OK);
  compare_requests(&b, &c);
  stat_req_ok[a.tag]++;
  lp_buf_free(&e1);
  lp_buf_free(&e2);
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                  */
/* ------------------------------------------------------------------------ */

static void encode_response(const lp_response *r, lp_buf *out) {
  lp_buf rest = {0};
  lp_slice v;
  size_t cur = 0, n = 0;

  switch (r->tag) {
    case LP_RES_CALLBACK:
      REQUIRE(lp_wire_enc_callback(out, r->id, r->error.ptr, r->error.len, r->value) == 0);
      break;
    case LP_RES_ITERDATA:
      if (r->error.ptr != NULL)
        REQUIRE(lp_wire_enc_itererror(out, r->id, r->error.ptr, r->error.len) == 0);
      else if (r->key.ptr != NULL || r->value.ptr != NULL)
        REQUIRE(lp_wire_enc_iterdata(out, r->id, r->key, r->value) == 0);
      else
        REQUIRE(lp_wire_enc_iterend(out, r->id) == 0);
      break;
    case LP_RES_GETMANY:
      while (lp_wire_next_value(r, &cur, &v)) {
        REQUIRE(lp_wire_rest_getmany_value(&rest, v) == 0);
        n++;
      }
      REQUIRE(n == r->count);
      REQUIRE(lp_wire_enc_getmany(out, r->id, r->error.ptr, r->error.len, buf_slice(&rest)) == 0);
      break;
    default: fail("decoded response with an unknown tag");
  }
  lp_buf_free(&rest);
}

static void compare_responses(const lp_response *a, const lp_response *b) {
  lp_slice va, vb;
  size_t ca = 0, cb = 0;
  int ra, rb;

  REQUIRE(a->tag == b->tag && a->id == b->id);
  REQUIRE(slice_eq(a->error, b->error));
  switch (a->tag) {
    case LP_RES_CALLBACK: REQUIRE(slice_eq(a->value, b->value) && b->key.ptr == NULL); break;
    case LP_RES_ITERDATA:
      if (a->error.ptr != NULL) {
        REQUIRE(b->key.ptr == NULL && b->value.ptr == NULL);
      } else if (a->key.ptr != NULL || a->value.ptr != NULL) {
        REQUIRE(slice_eq(or_empty(a->key), b->key) && slice_eq(or_empty(a->value), b->value));
      } else {
        REQUIRE(b->key.ptr == NULL && b->value.ptr == NULL);
      }
      break;
    case LP_RES_GETMANY:
      REQUIRE(a->count == b->count);
      for (;;) {
        ra = lp_wire_next_value(a, &ca, &va);
        rb = lp_wire_next_value(b, &cb, &vb);
        REQUIRE(ra == rb);
        if (!ra) break;
        REQUIRE(slice_eq(va, vb));
      }
      break;
    default: fail("unknown tag");
  }
}

static void fuzz_response(lp_slice payload) {
  lp_response a, b, c;
  lp_buf e1 = {0}, e2 = {0};
  lp_slice v;
  size_t cur = 0, n = 0;
  int rc = lp_wire_decode_response(payload, &a);

  REQUIRE(rc == LP_WIRE_OK || rc == LP_WIRE_EMPTY || rc == LP_WIRE_UNKNOWN_TAG ||
          rc == LP_WIRE_MALFORMED);
  if (rc != LP_WIRE_OK) {
    while (lp_wire_next_value(&a, &cur, &v) && n < 100000)
      n++;
    return;
  }
  encode_response(&a, &e1);
  rc = lp_wire_decode_response(sole_payload(&e1), &b);
  REQUIRE(rc == LP_WIRE_OK);
  compare_responses(&a, &b);
  encode_response(&b, &e2);
  REQUIRE(e1.len == e2.len && memcmp(e1.ptr, e2.ptr, e1.len) == 0);
  rc = lp_wire_decode_response(sole_payload(&e2), &c);
  REQUIRE(rc == LP_WIRE_OK);
  compare_responses(&b, &c);
  stat_res_ok[a.tag]++;
  lp_buf_free(&e1);
  lp_buf_free(&e2);
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                                */
/* ------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  lp_slice whole, payload;
  size_t off = 0, used;
  uint64_t v;
  int rc;

  if (size > 0 && data == NULL) return 0;
  whole.ptr = size ? p : NULL;
  whole.len = size;

  /* the varint reader on its own */
  rc = lp_varint_get(p, size, &v, &used);
  REQUIRE(rc == 1 || rc == 0 || rc == -1);
  if (rc == 1) {
    uint8_t tmp[10];
    uint64_t back;
    size_t n = lp_varint_put(tmp, v), used2;
    REQUIRE(used >= 1 && used <= 10 && used <= size && n <= used);
    REQUIRE(lp_varint_get((const char *)tmp, n, &back, &used2) == 1 && back == v && used2 == n);
  }

  /* the splitter, with a small limit so that TOO_BIG is reachable */
  while (off < size) {
    rc = lp_wire_next_frame(p + off, size - off, 4096, &payload, &used);
    if (rc == LP_WIRE_NEED_MORE || rc == LP_WIRE_TOO_BIG) break;
    REQUIRE(used >= 1 && used <= size - off);
    if (rc == LP_WIRE_OK) {
      REQUIRE(payload.ptr > p + off && payload.ptr + payload.len == p + off + used);
      REQUIRE(payload.len >= 1 && payload.len <= 4096);
      fuzz_request(payload);
      fuzz_response(payload);
    } else {
      REQUIRE(rc == LP_WIRE_EMPTY);
    }
    off += used;
  }

  /* the whole input as one payload */
  fuzz_request(whole);
  fuzz_response(whole);

  /* the walkers over arbitrary bytes (not validated by a decoder) */
  {
    lp_request rq;
    lp_response rs;
    lp_batch_op op;
    lp_slice s;
    size_t cur, last, steps;

    memset(&rq, 0, sizeof rq);
    memset(&rs, 0, sizeof rs);
    rq.repeated = rs.repeated = whole;
    rq.tag = LP_REQ_BATCH;
    for (cur = last = steps = 0; lp_wire_next_op(&rq, &cur, &op); steps++, last = cur)
      REQUIRE(cur > last && cur <= size && (op.type == LP_OP_PUT || op.type == LP_OP_DEL) &&
              op.key.ptr);
    rq.tag = LP_REQ_GETMANY;
    for (cur = last = steps = 0; lp_wire_next_key(&rq, &cur, &s); steps++, last = cur)
      REQUIRE(cur > last && cur <= size && s.ptr >= p && s.ptr + s.len <= p + size);
    rs.tag = LP_RES_GETMANY;
    for (cur = last = steps = 0; lp_wire_next_value(&rs, &cur, &s); steps++, last = cur)
      REQUIRE(cur > last && cur <= size &&
              (s.ptr == NULL || (s.ptr >= p && s.ptr + s.len <= p + size)));
  }
  return 0;
}

#ifdef LP_FUZZ_STANDALONE
/* A short fuzz pass without libFuzzer: random bytes, structured random
 * messages, and mutations of valid frames (the examples of docs/PROTOCOL.md and
 * frames built by the encoders). */

#include "standalone.h"

static void put_byte(lp_buf *b, uint8_t c) {
  if (lp_buf_append(b, &c, 1) != 0) fail("ENOMEM");
}

static void put_varint(lp_buf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = lp_varint_put(tmp, v);

  if (lp_buf_append(b, tmp, n) != 0) fail("ENOMEM");
}

static const char *const words[] = {"put",      "del",        "",    "k",        "k2",
                                    "\x00\xff", "NotFound: ", "pux", "{\"x\":1}"};

static void random_field(lp_buf *b, int depth);

/* A random protobuf body: mostly plausible field numbers and wire types. */
static void random_body(lp_buf *b, int depth) {
  size_t n = below(6), i;

  for (i = 0; i < n; i++)
    random_field(b, depth);
}

static void random_field(lp_buf *b, int depth) {
  uint32_t num = below(10) == 0 ? (uint32_t)below(40) : 1 + (uint32_t)below(8);
  int wt = below(8) == 0 ? (int)below(8) : (below(2) ? 0 : 2);
  const char *w;
  lp_buf sub = {0};

  put_varint(b, ((uint64_t)num << 3) | (uint64_t)wt);
  switch (wt) {
    case 0: put_varint(b, below(4) == 0 ? tap_rng() : below(300)); break;
    case 1:
    case 5: {
      size_t k, n = wt == 1 ? 8 : 4;
      for (k = 0; k < n; k++)
        put_byte(b, (uint8_t)tap_rng());
      break;
    }
    case 2:
      if (depth < 2 && below(2)) {
        random_body(&sub, depth + 1);
        put_varint(b, sub.len);
        if (lp_buf_append(b, sub.ptr, sub.len) != 0) fail("ENOMEM");
      } else {
        w = words[below(sizeof words / sizeof words[0])];
        put_varint(b, strlen(w));
        if (lp_buf_append(b, w, strlen(w)) != 0) fail("ENOMEM");
      }
      break;
    default: break;
  }
  lp_buf_free(&sub);
}

static void random_slice(lp_slice *s, char *store, size_t cap) {
  size_t n = below(cap), i;

  if (below(4) == 0) {
    *s = LP_SLICE_NONE;
    return;
  }
  for (i = 0; i < n; i++)
    store[i] = (char)(below(3) == 0 ? tap_rng() : 'a' + below(4));
  s->ptr = store;
  s->len = n;
}

/* Fields of one message, emitted in a random order: valid messages that the
 * encoders would never produce (reordered, repeated, with unknown fields). */
typedef struct fieldset {
  lp_buf f[12];
  size_t n;
} fieldset;

static lp_buf *fs_add(fieldset *fs) {
  lp_buf *b = &fs->f[fs->n++];

  b->len = 0;
  return b;
}

static void fs_bytes(fieldset *fs, uint32_t num, const char *p, size_t n) {
  lp_buf *b = fs_add(fs);

  put_varint(b, (uint64_t)num << 3 | 2);
  put_varint(b, n);
  if (lp_buf_append(b, p, n) != 0) fail("ENOMEM");
}

static void fs_varint(fieldset *fs, uint32_t num, uint64_t v) {
  lp_buf *b = fs_add(fs);

  put_varint(b, (uint64_t)num << 3);
  put_varint(b, v);
}

static void fs_unknown(fieldset *fs) {
  if (below(3) == 0) fs_varint(fs, 9 + (uint32_t)below(20), tap_rng());
  if (below(3) == 0) fs_bytes(fs, 9 + (uint32_t)below(20), "zz", below(3));
}

/* Emits the fields shuffled into out and frees them. */
static void fs_emit(fieldset *fs, lp_buf *out) {
  size_t i, j;
  lp_buf t;

  for (i = fs->n; i > 1; i--) {
    j = below(i);
    t = fs->f[i - 1];
    fs->f[i - 1] = fs->f[j];
    fs->f[j] = t;
  }
  for (i = 0; i < fs->n; i++) {
    if (lp_buf_append(out, fs->f[i].ptr, fs->f[i].len) != 0) fail("ENOMEM");
    lp_buf_free(&fs->f[i]);
  }
  fs->n = 0;
}

static void fs_word(fieldset *fs, uint32_t num) {
  const char *w = words[below(sizeof words / sizeof words[0])];

  fs_bytes(fs, num, w, strlen(w));
}

/* One shuffled message body of the given request/response kind. */
static void shuffled_body(int kind, lp_buf *body) {
  fieldset fs, sub;
  lp_buf tmp = {0};
  const char *w;
  size_t i, n;

  memset(&fs, 0, sizeof fs);
  memset(&sub, 0, sizeof sub);
  if (below(8)) fs_varint(&fs, 1, below(4) ? below(10) : tap_rng());
  if (below(6) == 0) fs_varint(&fs, 1, below(10)); /* a repeated id: the last one wins */
  fs_unknown(&fs);
  switch (kind) {
    case 0: /* batch: ops with shuffled fields */
      n = below(4);
      for (i = 0; i < n && fs.n < 8; i++) {
        if (below(8)) {
          w = below(2) ? "put" : "del";
          fs_bytes(&sub, 1, w, 3);
        } else {
          fs_word(&sub, 1);
        }
        if (below(8) == 0) fs_bytes(&sub, 1, "del", 3);
        if (below(8)) fs_word(&sub, 2);
        if (below(2)) fs_bytes(&sub, 3, "val", below(4));
        fs_unknown(&sub);
        tmp.len = 0;
        fs_emit(&sub, &tmp);
        fs_bytes(&fs, 2, tmp.ptr, tmp.len);
      }
      break;
    case 1: /* iterator or clear options */
    case 2:
      if (below(2)) fs_varint(&fs, 2, below(64));
      if (kind == 1 && below(2)) fs_varint(&sub, 1, below(3));
      if (kind == 1 && below(2)) fs_varint(&sub, 2, below(3));
      for (i = 3; i <= 6; i++)
        if (below(2)) fs_word(&sub, (uint32_t)i);
      if (below(2)) fs_varint(&sub, 7, below(3) ? below(10) : tap_rng());
      if (below(2)) fs_varint(&sub, 8, below(3));
      fs_unknown(&sub);
      tmp.len = 0;
      fs_emit(&sub, &tmp);
      if (below(4)) fs_bytes(&fs, kind == 1 ? 3 : 2, tmp.ptr, tmp.len);
      break;
    default: /* getMany callback values, callback/iterdata fields */
      n = below(4);
      for (i = 0; i < n && fs.n < 8; i++) {
        if (below(2)) fs_word(&sub, 1);
        fs_unknown(&sub);
        tmp.len = 0;
        fs_emit(&sub, &tmp);
        fs_bytes(&fs, 3, tmp.ptr, tmp.len);
      }
      if (below(3) == 0) fs_bytes(&fs, 2, "err", below(4));
      if (below(3) == 0) fs_bytes(&fs, 4, "v4", below(3));
      break;
  }
  fs_emit(&fs, body);
  lp_buf_free(&tmp);
}

/* Frames built by the encoders, with random contents. */
static void valid_frame(lp_buf *out) {
  lp_buf rest = {0};
  char s1[40], s2[40], s3[40], s4[40];
  lp_slice a, b;
  lp_range rg;
  size_t i, n;
  uint32_t id = below(4) ? (uint32_t)below(20) : (uint32_t)tap_rng();
  int kind = (int)below(15);

  random_slice(&a, s1, sizeof s1);
  random_slice(&b, s2, sizeof s2);
  lp_range_init(&rg);
  random_slice(&rg.gt, s1, sizeof s1);
  random_slice(&rg.gte, s2, sizeof s2);
  random_slice(&rg.lt, s3, sizeof s3);
  random_slice(&rg.lte, s4, sizeof s4);
  rg.limit = below(3) == 0 ? (int64_t)tap_rng() : (int64_t)below(10) - 2;
  rg.reverse = (int)below(2);
  rg.keys = (int)below(2);
  rg.values = (int)below(2);
  switch (kind) {
    case 0:
      lp_wire_rest_key(&rest, a);
      if (below(2)) {
        lp_wire_frame(out, LP_REQ_GET, id, buf_slice(&rest));
        break;
      }
      if (below(4) == 0) lp_wire_rest_sync(&rest); /* writes: sometimes the sync flag */
      lp_wire_frame(out, LP_REQ_DEL, id, buf_slice(&rest));
      break;
    case 1:
      lp_wire_rest_put(&rest, a, b);
      if (below(4) == 0) lp_wire_rest_sync(&rest);
      lp_wire_frame(out, LP_REQ_PUT, id, buf_slice(&rest));
      break;
    case 2:
      n = below(5);
      for (i = 0; i < n; i++)
        lp_wire_rest_batch_op(&rest, (int)below(2), below(2) ? a : b, below(2) ? b : a);
      if (below(4) == 0) lp_wire_rest_sync(&rest);
      lp_wire_frame(out, LP_REQ_BATCH, id, buf_slice(&rest));
      break;
    case 3:
      n = below(5);
      for (i = 0; i < n; i++)
        lp_wire_rest_getmany_key(&rest, below(2) ? a : b);
      lp_wire_frame(out, LP_REQ_GETMANY, id, buf_slice(&rest));
      break;
    case 4:
      lp_wire_rest_iter(&rest, (uint32_t)below(64), &rg);
      lp_wire_frame(out, LP_REQ_ITER, id, buf_slice(&rest));
      break;
    case 5:
      lp_wire_rest_iter_window(&rest, (uint32_t)below(64));
      lp_wire_frame(out, LP_REQ_ITER, id, buf_slice(&rest));
      break;
    case 6:
      lp_wire_rest_clear(&rest, &rg);
      if (below(4) == 0) lp_wire_rest_sync(&rest);
      lp_wire_frame(out, LP_REQ_CLEAR, id, buf_slice(&rest));
      break;
    case 7: lp_wire_enc_callback(out, id, below(2) ? "NotFound: " : NULL, 10, b); break;
    case 8: lp_wire_enc_iterdata(out, id, a, b); break;
    case 9: lp_wire_enc_iterend(out, id); break;
    case 10: lp_wire_enc_itererror(out, id, "boom", 4); break;
    case 11:
      n = below(5);
      for (i = 0; i < n; i++)
        lp_wire_rest_getmany_value(&rest, below(2) ? a : b);
      lp_wire_enc_getmany(out, id, below(4) ? NULL : "err", 3, buf_slice(&rest));
      break;
    case 12:
    case 13: {
      /* a valid-looking message with its fields shuffled */
      lp_buf body = {0};
      static const uint8_t tags[] = {LP_REQ_BATCH,   LP_REQ_ITER,     LP_REQ_CLEAR,
                                     LP_RES_GETMANY, LP_RES_CALLBACK, LP_RES_ITERDATA};
      static const int kinds[] = {0, 1, 2, 3, 3, 3};
      size_t t = below(sizeof tags);
      put_byte(&body, tags[t]);
      shuffled_body(kinds[t], &body);
      put_varint(out, body.len);
      if (lp_buf_append(out, body.ptr, body.len) != 0) fail("ENOMEM");
      lp_buf_free(&body);
      break;
    }
    default: {
      /* a structured random message under a random tag */
      lp_buf body = {0};
      put_byte(&body, (uint8_t)below(8));
      random_body(&body, 0);
      put_varint(out, body.len);
      if (lp_buf_append(out, body.ptr, body.len) != 0) fail("ENOMEM");
      lp_buf_free(&body);
      break;
    }
  }
  lp_buf_free(&rest);
}

static const char *const examples[] = {
    "\x10\x01\x08\x00\x12\x02k1\x1a\x07{\"a\":1}",
    "\x07\x00\x08\x00\x12\x02k1",
    "\x1d\x03\x08\x00\x12\x0d\x0a\x03put\x12\x02k2\x1a\x02"
    "22\x12\x09\x0a\x03"
    "del\x12\x02k9",
    "\x11\x06\x08\x00\x12\x02k1\x12\x04nope\x12\x02k2",
    "\x0f\x05\x08\x00\x12\x0a\x22\x01x\x2a\x01y\x38\x01\x40\x00",
    "\x13\x04\x08\x00\x10\x20\x1a\x0c\x08\x01\x10\x01\x22\x02k2\x38\x06\x40\x00",
    "\x05\x04\x08\x00\x10\x20",
    "\x05\x04\x08\x00\x10\x00",
    "\x0c\x00\x08\x00\x1a\x07{\"x\":1}",
    "\x0f\x00\x08\x05\x12\x0aNotFound: ",
    "\x03\x00\x08\x03",
    "\x15\x02\x08\x07\x1a\x09\x0a\x07{\"x\":1}\x1a\x00\x1a\x03\x0a\x01"
    "2",
    "\x0f\x01\x08\x00\x1a\x01"
    "a\x22\x07{\"x\":1}",
    "\x03\x01\x08\x00",
};

/* The examples hold NUL bytes: their length is the prefix + the payload. */
static size_t example_len(const char *f) { return 1 + (size_t)(uint8_t)f[0]; }

static void mutate(lp_buf *b) {
  size_t n = 1 + below(4), i, pos;
  uint8_t c;

  for (i = 0; i < n; i++) {
    pos = below(b->len + 1);
    switch (below(7)) {
      case 0: /* flip a bit */
        if (b->len) b->ptr[below(b->len)] ^= (char)(1u << below(8));
        break;
      case 1: /* set a byte */
        if (b->len) b->ptr[below(b->len)] = (char)tap_rng();
        break;
      case 2: /* insert a byte */
        c = (uint8_t)tap_rng();
        put_byte(b, 0);
        memmove(b->ptr + pos + 1, b->ptr + pos, b->len - 1 - pos);
        b->ptr[pos] = (char)c;
        break;
      case 3: /* delete a byte */
        if (pos < b->len) {
          memmove(b->ptr + pos, b->ptr + pos + 1, b->len - pos - 1);
          b->len--;
        }
        break;
      case 4: /* truncate */ b->len = pos; break;
      case 5: /* interesting byte */
        if (b->len) {
          static const uint8_t special[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0b, 0x0c,
                                            0x0d, 0x0e, 0x0f, 0x79, 0x7d, 0x38, 0x40};
          b->ptr[below(b->len)] = (char)special[below(sizeof special)];
        }
        break;
      default: /* duplicate a chunk */
        if (b->len) {
          size_t from = below(b->len), len = 1 + below(b->len - from), at = below(b->len + 1);
          lp_buf tmp = {0};
          if (lp_buf_append(&tmp, b->ptr + from, len) != 0 || lp_buf_reserve(b, len) != 0)
            fail("ENOMEM");
          memmove(b->ptr + at + len, b->ptr + at, b->len - at);
          memcpy(b->ptr + at, tmp.ptr, len);
          b->len += len;
          lp_buf_free(&tmp);
        }
        break;
    }
  }
}

static void one_input(lp_buf *in) {
  size_t k, n;
  switch (below(4)) {
    case 0: /* random bytes */
      n = below(64);
      for (k = 0; k < n; k++)
        put_byte(in, (uint8_t)(below(2) ? tap_rng() : below(0x20)));
      break;
    case 1: /* an example, mutated */
      k = below(sizeof examples / sizeof examples[0]);
      if (lp_buf_append(in, examples[k], example_len(examples[k])) != 0) fail("ENOMEM");
      mutate(in);
      break;
    default: /* one to three encoder-made frames, mutated half of the time */
      n = 1 + below(3);
      for (k = 0; k < n; k++)
        valid_frame(in);
      if (below(2)) mutate(in);
      break;
  }
  /* Two views: the bytes as they are, and without the first byte (so the
   * whole-input decode sees a payload that starts at the tag). */
  LLVMFuzzerTestOneInput((const uint8_t *)in->ptr, in->len);
  if (in->len > 1) LLVMFuzzerTestOneInput((const uint8_t *)in->ptr + 1, in->len - 1);
}

static void report(void) {
  printf("# round trips: get %lu put %lu del %lu batch %lu iter %lu clear %lu getmany %lu | "
         "callback %lu iterdata %lu getmanycb %lu\n",
         stat_req_ok[0], stat_req_ok[1], stat_req_ok[2], stat_req_ok[3], stat_req_ok[4],
         stat_req_ok[5], stat_req_ok[6], stat_res_ok[0], stat_res_ok[1], stat_res_ok[2]);
}

int main(int argc, char **argv) {
  size_t k;
  /* the examples of docs/PROTOCOL.md first, as they are */
  for (k = 0; k < sizeof examples / sizeof examples[0]; k++)
    LLVMFuzzerTestOneInput((const uint8_t *)examples[k], example_len(examples[k]));
  return standalone_main(argc, argv, "fuzz_wire", 200000, one_input, report,
                         "no crash or mismatch");
}
#endif

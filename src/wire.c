/*
 * wire.c: the multileveldown 5.0.1 codec (docs/PROTOCOL.md, "Framing").
 *
 * Pure: no I/O, no globals, no allocation in the decoders; decoded slices
 * point into the payload decoded.  Every decoder is total: any input gives a
 * result code and is read only within [ptr, ptr + len).  Decoding is the Node
 * decoder's (fields in any order, unknown ones skipped by wire type, the last
 * scalar wins, repeated fields append, a bool is any nonzero varint, uint32
 * keeps the low 32 bits), but what Node would misparse is LP_WIRE_MALFORMED:
 * groups, wire types 6 and 7, field 0, a known field with the wrong wire
 * type, varints over 10 bytes or 64 bits, lengths past the end.  Encoders
 * reserve the exact size first and then cannot fail, so an lp_buf is left as
 * it was on ENOMEM; fields go out in ascending number, as Node's do, so the
 * frames of docs/PROTOCOL.md, "Example frames", come out byte for byte.
 */
#include "private.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* Varints                                                                    */
/* ------------------------------------------------------------------------ */

size_t lp_varint_put(uint8_t out[10], uint64_t v) {
  size_t n = 0;

  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

/* The tenth byte may only carry the 64th bit: a continuation there (an
 * eleventh byte) or higher bits (overflow) are refused. */
int lp_varint_get(const char *buf, size_t len, uint64_t *v, size_t *used) {
  const uint8_t *p = (const uint8_t *)buf;
  uint64_t r = 0;
  size_t i;

  for (i = 0; i < 10; i++) {
    if (i >= len) return 0;
    if (i == 9 && p[i] > 1) return -1;
    r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if ((p[i] & 0x80) == 0) {
      *v = r;
      *used = i + 1;
      return 1;
    }
  }
  return -1; /* not reached: the tenth byte either ends or is refused */
}

/* lp_varint_get with the one-byte case inline: field keys, ids and the
 * lengths of keys and values mostly fit in one byte, and the decoder reads
 * several per entry. */
static inline int varint_get(const char *buf, size_t len, uint64_t *v, size_t *used) {
  if (len > 0 && (uint8_t)buf[0] < 0x80) {
    *v = (uint8_t)buf[0];
    *used = 1;
    return 1;
  }
  return lp_varint_get(buf, len, v, used);
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;

  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* sint32 zigzag, without relying on signed shifts or overflow. */
static uint32_t zigzag32(int32_t n) { return ((uint32_t)n << 1) ^ (n < 0 ? 0xffffffffu : 0u); }

static int32_t unzigzag32(uint32_t z) {
  uint32_t u = (z >> 1) ^ (0u - (z & 1u));
  int32_t r;

  memcpy(&r, &u, sizeof r);
  return r;
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                     */
/* ------------------------------------------------------------------------ */

/* max_frame == 0 stands for LP_DEFAULT_MAX_FRAME: a peer never gets an
 * unbounded buffer out of us.  A zero-length frame gives LP_WIRE_EMPTY with
 * *consumed = the prefix size (1 for the canonical "00"). */
int lp_wire_next_frame(const char *buf, size_t len, size_t max_frame, lp_slice *payload,
                       size_t *consumed) {
  uint64_t n;
  size_t used;
  int rc;

  if (max_frame == 0) max_frame = LP_DEFAULT_MAX_FRAME;
  *payload = LP_SLICE_NONE;
  *consumed = 0;
  rc = varint_get(buf, len, &n, &used);
  if (rc == 0) return LP_WIRE_NEED_MORE;
  if (rc < 0 || n > (uint64_t)max_frame) return LP_WIRE_TOO_BIG;
  if (n == 0) {
    *consumed = used;
    return LP_WIRE_EMPTY;
  }
  if ((uint64_t)(len - used) < n) return LP_WIRE_NEED_MORE;
  payload->ptr = buf + used;
  payload->len = (size_t)n;
  *consumed = used + (size_t)n;
  return LP_WIRE_OK;
}

/* ------------------------------------------------------------------------ */
/* Protobuf field reader                                                      */
/* ------------------------------------------------------------------------ */

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_BYTES = 2, WT_FIXED32 = 5 };

/* Field numbers, per message of multileveldown's schema.  Every request and
 * reply has its id as field 1. */
enum {
  F_ID = 1,
  F_KEY = 2,   /* Get, Put, Del */
  F_VALUE = 3, /* Put */
  F_OPS = 2,   /* Batch: repeated Operation */
  F_OP_TYPE = 1,
  F_OP_KEY = 2,
  F_OP_VALUE = 3,
  F_ITER_BATCH = 2,    /* Iterator: the window (0 ends it) */
  F_ITER_OPTIONS = 3,  /* Iterator: Options */
  F_CLEAR_OPTIONS = 2, /* Clear: ClearOptions (Options without keys, values) */
  F_KEYS = 2,          /* GetMany: repeated keys */
  F_OPT_KEYS = 1,      /* Options */
  F_OPT_VALUES = 2,
  F_OPT_GT = 3,
  F_OPT_GTE = 4,
  F_OPT_LT = 5,
  F_OPT_LTE = 6,
  F_OPT_LIMIT = 7, /* sint32 */
  F_OPT_REVERSE = 8,
  F_ERROR = 2,       /* Callback, IteratorData, GetManyCallback */
  F_CB_VALUE = 3,    /* Callback */
  F_DATA_KEY = 3,    /* IteratorData */
  F_DATA_VALUE = 4,  /* IteratorData */
  F_VALUES = 3,      /* GetManyCallback: repeated Value */
  F_VALUE_VALUE = 1, /* GetManyCallback.Value: absent = not found */
  /* Put, Delete, Batch, Clear: levelparty's sync flag, a bool.  Not in
   * multileveldown's schema: Node's decoder skips it (an unknown field), so
   * a Node leader ignores it (docs/PROTOCOL.md, "Durability"). */
  F_SYNC = 15
};

typedef struct reader {
  const char *p, *end;
} reader;

typedef struct field {
  uint32_t num;
  int wt;
  uint64_t v; /* WT_VARINT */
  lp_slice s; /* WT_BYTES (also the raw bytes of fixed fields) */
} field;

static reader reader_of(lp_slice s) {
  reader r;

  r.p = s.ptr;
  r.end = s.ptr ? s.ptr + s.len : NULL;
  return r;
}

/* Reads one field.  1 read, 0 clean end of input, -1 malformed. */
static int read_field(reader *r, field *f) {
  uint64_t key, n;
  size_t used, left;

  if (r->p == r->end) return 0;
  left = (size_t)(r->end - r->p);
  if (varint_get(r->p, left, &key, &used) != 1) return -1;
  r->p += used;
  left -= used;
  if (key > 0xffffffffu || (key >> 3) == 0) return -1;
  f->num = (uint32_t)(key >> 3);
  f->wt = (int)(key & 7);
  f->v = 0;
  f->s = LP_SLICE_NONE;
  switch (f->wt) {
    case WT_VARINT:
      if (varint_get(r->p, left, &f->v, &used) != 1) return -1;
      r->p += used;
      return 1;
    case WT_FIXED64:
    case WT_FIXED32:
      n = f->wt == WT_FIXED64 ? 8 : 4;
      if (left < n) return -1;
      break;
    case WT_BYTES:
      if (varint_get(r->p, left, &n, &used) != 1) return -1;
      r->p += used;
      left -= used;
      if (n > left) return -1;
      break;
    default: /* 3, 4: groups; 6, 7: undefined */ return -1;
  }
  f->s.ptr = r->p;
  f->s.len = (size_t)n;
  r->p += n;
  return 1;
}

/* Batch.Operation {1 type, 2 key, 3 value}; type and key required. */
static int decode_op(lp_slice body, lp_batch_op *op) {
  reader r = reader_of(body);
  field f;
  lp_slice type = LP_SLICE_NONE;
  int rc;

  op->type = -1;
  op->key = op->value = LP_SLICE_NONE;
  while ((rc = read_field(&r, &f)) == 1) {
    if (f.num >= F_OP_TYPE && f.num <= F_OP_VALUE && f.wt != WT_BYTES) return -1;
    if (f.num == F_OP_TYPE)
      type = f.s;
    else if (f.num == F_OP_KEY)
      op->key = f.s;
    else if (f.num == F_OP_VALUE)
      op->value = f.s;
  }
  if (rc < 0 || type.ptr == NULL || op->key.ptr == NULL || type.len != 3) return -1;
  if (memcmp(type.ptr, "put", 3) == 0)
    op->type = LP_OP_PUT;
  else if (memcmp(type.ptr, "del", 3) == 0)
    op->type = LP_OP_DEL;
  else
    return -1;
  if (op->type == LP_OP_DEL) op->value = LP_SLICE_NONE; /* a del's value means nothing */
  return 0;
}

/* GetManyCallback.Value {1 value}; absent value = not found. */
static int decode_value(lp_slice body, lp_slice *value) {
  reader r = reader_of(body);
  field f;
  int rc;

  *value = LP_SLICE_NONE;
  while ((rc = read_field(&r, &f)) == 1) {
    if (f.num == F_VALUE_VALUE) {
      if (f.wt != WT_BYTES) return -1;
      *value = f.s;
    }
  }
  return rc;
}

/* Iterator.Options (with_kv) or Clear.ClearOptions (fields 1 and 2 unknown).
 * A repeated options field replaces the earlier one, as in Node. */
static int decode_opts(lp_slice body, int with_kv, lp_wire_opts *o) {
  reader r = reader_of(body);
  field f;
  int rc;

  memset(o, 0, sizeof *o);
  o->gt = o->gte = o->lt = o->lte = LP_SLICE_NONE;
  o->present = 1;
  while ((rc = read_field(&r, &f)) == 1) {
    switch (f.num) {
      case F_OPT_KEYS:
      case F_OPT_VALUES:
        if (!with_kv) break;
        if (f.wt != WT_VARINT) return -1;
        if (f.num == F_OPT_KEYS) {
          o->has_keys = 1;
          o->keys = f.v != 0;
        } else {
          o->has_values = 1;
          o->values = f.v != 0;
        }
        break;
      case F_OPT_GT:
      case F_OPT_GTE:
      case F_OPT_LT:
      case F_OPT_LTE:
        if (f.wt != WT_BYTES) return -1;
        if (f.num == F_OPT_GT)
          o->gt = f.s;
        else if (f.num == F_OPT_GTE)
          o->gte = f.s;
        else if (f.num == F_OPT_LT)
          o->lt = f.s;
        else
          o->lte = f.s;
        break;
      case F_OPT_LIMIT:
        if (f.wt != WT_VARINT) return -1;
        o->has_limit = 1;
        o->limit = unzigzag32((uint32_t)f.v);
        break;
      case F_OPT_REVERSE:
        if (f.wt != WT_VARINT) return -1;
        o->has_reverse = 1;
        o->reverse = f.v != 0;
        break;
      default: break;
    }
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Request and response decoders                                              */
/* ------------------------------------------------------------------------ */

int lp_wire_decode_request(lp_slice payload, lp_request *out) {
  reader r;
  field f;
  lp_slice body;
  lp_batch_op op;
  int rc, tag, has_id = 0;

  memset(out, 0, sizeof *out);
  out->key = out->value = out->repeated = LP_SLICE_NONE;
  out->opts.gt = out->opts.gte = out->opts.lt = out->opts.lte = LP_SLICE_NONE;
  if (payload.ptr == NULL || payload.len == 0) return LP_WIRE_EMPTY;
  tag = (uint8_t)payload.ptr[0];
  out->tag = tag;
  if (tag > LP_REQ_GETMANY) return LP_WIRE_UNKNOWN_TAG;
  body.ptr = payload.ptr + 1;
  body.len = payload.len - 1;
  r = reader_of(body);
  while ((rc = read_field(&r, &f)) == 1) {
    if (f.num == F_ID) { /* id, in every request */
      if (f.wt != WT_VARINT) return LP_WIRE_MALFORMED;
      out->id = (uint32_t)f.v;
      has_id = 1;
      continue;
    }
    if (f.num == F_SYNC && tag != LP_REQ_GET && tag != LP_REQ_ITER && tag != LP_REQ_GETMANY) {
      if (f.wt != WT_VARINT) return LP_WIRE_MALFORMED;
      out->sync = f.v != 0;
      continue;
    }
    switch (tag) {
      case LP_REQ_GET:
      case LP_REQ_DEL:
      case LP_REQ_PUT:
        if (f.num == F_KEY || (f.num == F_VALUE && tag == LP_REQ_PUT)) {
          if (f.wt != WT_BYTES) return LP_WIRE_MALFORMED;
          if (f.num == F_KEY)
            out->key = f.s;
          else
            out->value = f.s;
        }
        break;
      case LP_REQ_BATCH:
        if (f.num == F_OPS) {
          if (f.wt != WT_BYTES || decode_op(f.s, &op) != 0) return LP_WIRE_MALFORMED;
          out->count++;
        }
        break;
      case LP_REQ_GETMANY:
        if (f.num == F_KEYS) {
          if (f.wt != WT_BYTES) return LP_WIRE_MALFORMED;
          out->count++;
        }
        break;
      case LP_REQ_ITER:
        if (f.num == F_ITER_BATCH) {
          if (f.wt != WT_VARINT) return LP_WIRE_MALFORMED;
          out->batch = (uint32_t)f.v;
          out->has_batch = 1;
        } else if (f.num == F_ITER_OPTIONS) {
          if (f.wt != WT_BYTES || decode_opts(f.s, 1, &out->opts) != 0) return LP_WIRE_MALFORMED;
        }
        break;
      case LP_REQ_CLEAR:
        if (f.num == F_CLEAR_OPTIONS) {
          if (f.wt != WT_BYTES || decode_opts(f.s, 0, &out->opts) != 0) return LP_WIRE_MALFORMED;
        }
        break;
      default: break;
    }
  }
  if (rc < 0 || !has_id) return LP_WIRE_MALFORMED;
  if ((tag == LP_REQ_GET || tag == LP_REQ_PUT || tag == LP_REQ_DEL) && out->key.ptr == NULL)
    return LP_WIRE_MALFORMED;
  if (tag == LP_REQ_BATCH || tag == LP_REQ_GETMANY) out->repeated = body;
  return LP_WIRE_OK;
}

int lp_wire_decode_response(lp_slice payload, lp_response *out) {
  reader r;
  field f;
  lp_slice body, v;
  int rc, tag, has_id = 0;

  memset(out, 0, sizeof *out);
  out->error = out->key = out->value = out->repeated = LP_SLICE_NONE;
  if (payload.ptr == NULL || payload.len == 0) return LP_WIRE_EMPTY;
  tag = (uint8_t)payload.ptr[0];
  out->tag = tag;
  if (tag > LP_RES_GETMANY) return LP_WIRE_UNKNOWN_TAG;
  body.ptr = payload.ptr + 1;
  body.len = payload.len - 1;
  r = reader_of(body);
  while ((rc = read_field(&r, &f)) == 1) {
    if (f.num == F_ID) {
      if (f.wt != WT_VARINT) return LP_WIRE_MALFORMED;
      out->id = (uint32_t)f.v;
      has_id = 1;
    } else if (f.num == F_ERROR) {
      if (f.wt != WT_BYTES) return LP_WIRE_MALFORMED;
      out->error = f.s;
    } else if (tag == LP_RES_CALLBACK && f.num == F_CB_VALUE) {
      if (f.wt != WT_BYTES) return LP_WIRE_MALFORMED;
      out->value = f.s;
    } else if (tag == LP_RES_ITERDATA && (f.num == F_DATA_KEY || f.num == F_DATA_VALUE)) {
      if (f.wt != WT_BYTES) return LP_WIRE_MALFORMED;
      if (f.num == F_DATA_KEY)
        out->key = f.s;
      else
        out->value = f.s;
    } else if (tag == LP_RES_GETMANY && f.num == F_VALUES) {
      if (f.wt != WT_BYTES || decode_value(f.s, &v) != 0) return LP_WIRE_MALFORMED;
      out->count++;
    }
  }
  if (rc < 0 || !has_id) return LP_WIRE_MALFORMED;
  if (tag == LP_RES_GETMANY) out->repeated = body;
  return LP_WIRE_OK;
}

/* ------------------------------------------------------------------------ */
/* Walkers                                                                    */
/* ------------------------------------------------------------------------ */

/* Finds the next occurrence of length-delimited field `num` in body, starting
 * at *cursor (an offset into body).  Safe on any input: stops at the first
 * byte that does not parse. */
static int next_repeated(lp_slice body, size_t *cursor, uint32_t num, lp_slice *s) {
  reader r;
  field f;

  if (body.ptr == NULL || *cursor >= body.len) return 0;
  r.p = body.ptr + *cursor;
  r.end = body.ptr + body.len;
  while (read_field(&r, &f) == 1) {
    if (f.num == num && f.wt == WT_BYTES) {
      *cursor = (size_t)(r.p - body.ptr);
      *s = f.s;
      return 1;
    }
  }
  *cursor = body.len;
  return 0;
}

int lp_wire_next_op(const lp_request *r, size_t *cursor, lp_batch_op *op) {
  lp_slice s;

  if (r->tag != LP_REQ_BATCH) return 0;
  while (next_repeated(r->repeated, cursor, F_OPS, &s)) {
    if (decode_op(s, op) == 0) return 1;
    /* only reachable on a request the decoder refused: skip the element */
  }
  return 0;
}

int lp_wire_next_key(const lp_request *r, size_t *cursor, lp_slice *key) {
  if (r->tag != LP_REQ_GETMANY) return 0;
  return next_repeated(r->repeated, cursor, F_KEYS, key);
}

int lp_wire_next_value(const lp_response *r, size_t *cursor, lp_slice *value) {
  lp_slice s;

  if (r->tag != LP_RES_GETMANY) return 0;
  while (next_repeated(r->repeated, cursor, F_VALUES, &s)) {
    if (decode_value(s, value) == 0) return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoders                                                                   */
/* ------------------------------------------------------------------------ */

/* Field keys: (number << 3) | wire type.  All our numbers are < 16, so every
 * key is one byte. */
#define KEY(num, wt) ((uint8_t)(((num) << 3) | (wt)))

/* Size of a length-delimited field holding n bytes. */
static size_t bytes_field_len(size_t n) { return 1 + varint_len(n) + n; }

static size_t varint_field_len(uint64_t v) { return 1 + varint_len(v); }

/* The writers below assume the space was reserved. */
static void w_byte(lp_buf *b, uint8_t c) { b->ptr[b->len++] = (char)c; }

static void w_varint(lp_buf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = lp_varint_put(tmp, v);

  memcpy(b->ptr + b->len, tmp, n);
  b->len += n;
}

static void w_raw(lp_buf *b, const char *p, size_t n) {
  if (n) {
    memcpy(b->ptr + b->len, p, n);
    b->len += n;
  }
}

static void w_bytes_field(lp_buf *b, uint8_t key, const char *p, size_t n) {
  w_byte(b, key);
  w_varint(b, n);
  w_raw(b, p, n);
}

static void w_varint_field(lp_buf *b, uint8_t key, uint64_t v) {
  w_byte(b, key);
  w_varint(b, v);
}

/* Sum of sizes; saturates so that lp_buf_reserve refuses an impossible one. */
static size_t add_sz(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

/* Reserves room for one whole frame whose body after the id is `after_id`
 * bytes, and writes varint(len) tag 08 varint(id).  -1 on ENOMEM (nothing
 * written) or a tag that does not fit a byte. */
static int frame_begin(lp_buf *out, int tag, uint32_t id, size_t after_id) {
  size_t payload, total;

  if (tag < 0 || tag > 255) return -1;
  payload = add_sz(1 + varint_field_len(id), after_id);
  total = add_sz(varint_len(payload), payload);
  if (total == SIZE_MAX || lp_buf_reserve(out, total) != 0) return -1;
  w_varint(out, payload);
  w_byte(out, (uint8_t)tag);
  w_varint_field(out, KEY(F_ID, WT_VARINT), id);
  return 0;
}

/* rest must not point into out (out may move). */
int lp_wire_frame(lp_buf *out, int tag, uint32_t id, lp_slice rest) {
  if (frame_begin(out, tag, id, rest.len) != 0) return -1;
  w_raw(out, rest.ptr, rest.len);
  return 0;
}

size_t lp_wire_frame_payload(uint32_t id, size_t restlen) {
  return add_sz(1 + varint_field_len(id), restlen);
}

size_t lp_wire_bytes_field_len(size_t n) { return add_sz(1 + varint_len(n), n); }

/* Required bytes fields (keys) are always written; an absent one goes out
 * empty so that the frame stays decodable and the peer reports the empty key. */
int lp_wire_rest_key(lp_buf *rest, lp_slice key) {
  if (lp_buf_reserve(rest, bytes_field_len(key.len)) != 0) return -1;
  w_bytes_field(rest, KEY(F_KEY, WT_BYTES), key.ptr, key.len);
  return 0;
}

/* The value is written only when present; Node's server answers a missing
 * value with its own error. */
int lp_wire_rest_put(lp_buf *rest, lp_slice key, lp_slice value) {
  size_t n = bytes_field_len(key.len);

  if (value.ptr != NULL) n = add_sz(n, bytes_field_len(value.len));
  if (lp_buf_reserve(rest, n) != 0) return -1;
  w_bytes_field(rest, KEY(F_KEY, WT_BYTES), key.ptr, key.len);
  if (value.ptr != NULL) w_bytes_field(rest, KEY(F_VALUE, WT_BYTES), value.ptr, value.len);
  return 0;
}

/* LP_OP_PUT (value written when present) or LP_OP_DEL (never a value); any
 * other type is refused with -1. */
int lp_wire_rest_batch_op(lp_buf *rest, int type, lp_slice key, lp_slice value) {
  size_t inner;

  if (type != LP_OP_PUT && type != LP_OP_DEL) return -1;
  inner = add_sz(bytes_field_len(3), bytes_field_len(key.len));
  if (type == LP_OP_PUT && value.ptr != NULL) inner = add_sz(inner, bytes_field_len(value.len));
  if (lp_buf_reserve(rest, bytes_field_len(inner)) != 0) return -1;
  w_byte(rest, KEY(F_OPS, WT_BYTES));
  w_varint(rest, inner);
  w_bytes_field(rest, KEY(F_OP_TYPE, WT_BYTES), type == LP_OP_PUT ? "put" : "del", 3);
  w_bytes_field(rest, KEY(F_OP_KEY, WT_BYTES), key.ptr, key.len);
  if (type == LP_OP_PUT && value.ptr != NULL)
    w_bytes_field(rest, KEY(F_OP_VALUE, WT_BYTES), value.ptr, value.len);
  return 0;
}

int lp_wire_rest_getmany_key(lp_buf *rest, lp_slice key) { return lp_wire_rest_key(rest, key); }

int lp_wire_rest_sync(lp_buf *rest) {
  if (lp_buf_reserve(rest, 2) != 0) return -1;
  w_varint_field(rest, KEY(F_SYNC, WT_VARINT), 1);
  return 0;
}

/* lp_range.limit is int64; on the wire it is sint32.  Negative means no
 * limit (-1); larger than INT32_MAX is clamped. */
static int32_t wire_limit(int64_t limit) {
  if (limit < 0) return -1;
  if (limit > INT32_MAX) return INT32_MAX;
  return (int32_t)limit;
}

/* Options body: [1 keys, 2 values] 3 gt, 4 gte, 5 lt, 6 lte (when present;
 * present empty bounds go out empty), 7 limit, 8 reverse. */
static size_t opts_len(const lp_range *r, int with_kv) {
  size_t n = with_kv ? 4 : 0;

  if (r->gt.ptr != NULL) n = add_sz(n, bytes_field_len(r->gt.len));
  if (r->gte.ptr != NULL) n = add_sz(n, bytes_field_len(r->gte.len));
  if (r->lt.ptr != NULL) n = add_sz(n, bytes_field_len(r->lt.len));
  if (r->lte.ptr != NULL) n = add_sz(n, bytes_field_len(r->lte.len));
  n = add_sz(n, varint_field_len(zigzag32(wire_limit(r->limit))));
  return add_sz(n, 2);
}

static void w_opts(lp_buf *b, const lp_range *r, int with_kv) {
  if (with_kv) {
    w_varint_field(b, KEY(F_OPT_KEYS, WT_VARINT), r->keys ? 1 : 0);
    w_varint_field(b, KEY(F_OPT_VALUES, WT_VARINT), r->values ? 1 : 0);
  }
  if (r->gt.ptr != NULL) w_bytes_field(b, KEY(F_OPT_GT, WT_BYTES), r->gt.ptr, r->gt.len);
  if (r->gte.ptr != NULL) w_bytes_field(b, KEY(F_OPT_GTE, WT_BYTES), r->gte.ptr, r->gte.len);
  if (r->lt.ptr != NULL) w_bytes_field(b, KEY(F_OPT_LT, WT_BYTES), r->lt.ptr, r->lt.len);
  if (r->lte.ptr != NULL) w_bytes_field(b, KEY(F_OPT_LTE, WT_BYTES), r->lte.ptr, r->lte.len);
  w_varint_field(b, KEY(F_OPT_LIMIT, WT_VARINT), zigzag32(wire_limit(r->limit)));
  w_varint_field(b, KEY(F_OPT_REVERSE, WT_VARINT), r->reverse ? 1 : 0);
}

int lp_wire_rest_iter(lp_buf *rest, uint32_t batch, const lp_range *r) {
  size_t inner = opts_len(r, 1);

  if (lp_buf_reserve(rest, add_sz(varint_field_len(batch), bytes_field_len(inner))) != 0) return -1;
  w_varint_field(rest, KEY(F_ITER_BATCH, WT_VARINT), batch);
  w_byte(rest, KEY(F_ITER_OPTIONS, WT_BYTES));
  w_varint(rest, inner);
  w_opts(rest, r, 1);
  return 0;
}

int lp_wire_rest_iter_window(lp_buf *rest, uint32_t batch) {
  if (lp_buf_reserve(rest, varint_field_len(batch)) != 0) return -1;
  w_varint_field(rest, KEY(F_ITER_BATCH, WT_VARINT), batch);
  return 0;
}

int lp_wire_rest_clear(lp_buf *rest, const lp_range *given) {
  lp_range r = *given;
  size_t inner;

  lp_range_one_bound(&r); /* leveldown's clear walks leveldown's iterator */
  inner = opts_len(&r, 0);
  if (lp_buf_reserve(rest, bytes_field_len(inner)) != 0) return -1;
  w_byte(rest, KEY(F_CLEAR_OPTIONS, WT_BYTES));
  w_varint(rest, inner);
  w_opts(rest, &r, 0);
  return 0;
}

/* Callback {1 id, [2 error], [3 value]}. */
int lp_wire_enc_callback(lp_buf *out, uint32_t id, const char *err, size_t errlen, lp_slice value) {
  size_t n = 0;

  if (err != NULL) n = bytes_field_len(errlen);
  if (value.ptr != NULL) n = add_sz(n, bytes_field_len(value.len));
  if (frame_begin(out, LP_RES_CALLBACK, id, n) != 0) return -1;
  if (err != NULL) w_bytes_field(out, KEY(F_ERROR, WT_BYTES), err, errlen);
  if (value.ptr != NULL) w_bytes_field(out, KEY(F_CB_VALUE, WT_BYTES), value.ptr, value.len);
  return 0;
}

/* IteratorData entry {1 id, 3 key, 4 value}: both sides always written, an
 * absent one as an empty field, because Node's client takes an entry with
 * neither field for the end marker (docs/PROTOCOL.md, "Iterators and windows"). */
int lp_wire_enc_iterdata(lp_buf *out, uint32_t id, lp_slice key, lp_slice value) {
  size_t n = add_sz(bytes_field_len(key.len), bytes_field_len(value.len));

  if (frame_begin(out, LP_RES_ITERDATA, id, n) != 0) return -1;
  w_bytes_field(out, KEY(F_DATA_KEY, WT_BYTES), key.ptr, key.len);
  w_bytes_field(out, KEY(F_DATA_VALUE, WT_BYTES), value.ptr, value.len);
  return 0;
}

int lp_wire_enc_iterend(lp_buf *out, uint32_t id) {
  return frame_begin(out, LP_RES_ITERDATA, id, 0);
}

/* IteratorData error {1 id, 2 error}; the error is always written (a NULL
 * err goes out as an empty string, which Node would not treat as an error). */
int lp_wire_enc_itererror(lp_buf *out, uint32_t id, const char *err, size_t errlen) {
  if (err == NULL) errlen = 0;
  if (frame_begin(out, LP_RES_ITERDATA, id, bytes_field_len(errlen)) != 0) return -1;
  w_bytes_field(out, KEY(F_ERROR, WT_BYTES), err, errlen);
  return 0;
}

/* One Value of GetManyCallback: 1a len (0a len bytes) when found, 1a 00 when
 * not. */
int lp_wire_rest_getmany_value(lp_buf *rest, lp_slice value) {
  size_t inner = value.ptr != NULL ? bytes_field_len(value.len) : 0;

  if (lp_buf_reserve(rest, bytes_field_len(inner)) != 0) return -1;
  w_byte(rest, KEY(F_VALUES, WT_BYTES));
  w_varint(rest, inner);
  if (value.ptr != NULL) w_bytes_field(rest, KEY(F_VALUE_VALUE, WT_BYTES), value.ptr, value.len);
  return 0;
}

/* GetManyCallback {1 id, [2 error], 3 values...}; values_rest must not point
 * into out. */
int lp_wire_enc_getmany(lp_buf *out, uint32_t id, const char *err, size_t errlen,
                        lp_slice values_rest) {
  size_t n = values_rest.len;

  if (err != NULL) n = add_sz(n, bytes_field_len(errlen));
  if (frame_begin(out, LP_RES_GETMANY, id, n) != 0) return -1;
  if (err != NULL) w_bytes_field(out, KEY(F_ERROR, WT_BYTES), err, errlen);
  w_raw(out, values_rest.ptr, values_rest.len);
  return 0;
}

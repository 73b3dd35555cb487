/*
 * wire_test.c: the multileveldown codec (wire.c) and the buffer, slice, error
 * and range helpers (buf.c).
 *
 * Every frame of docs/PROTOCOL.md, "Example frames", is checked in both
 * directions.  Frames are written here in that section's notation: hex byte
 * pairs, with "quoted text" for literal bytes and parentheses/spaces ignored.
 *
 * Build and run: make build/test/wire_test && build/test/wire_test
 */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                    */
/* ------------------------------------------------------------------------ */

/* Parses that notation into b (replacing its contents). */
static void spec_bytes(lp_buf *b, const char *spec) {
  const char *s = spec;

  b->len = 0;
  while (*s) {
    if (*s == '"') {
      s++;
      while (*s && *s != '"') {
        if (*s == '\\' && s[1]) s++;
        if (lp_buf_append(b, s, 1) != 0) abort();
        s++;
      }
      if (*s == '"') s++;
    } else if (strchr("0123456789abcdefABCDEF", *s) && s[1] &&
               strchr("0123456789abcdefABCDEF", s[1])) {
      char hex[3] = {s[0], s[1], 0};
      char c = (char)strtoul(hex, NULL, 16);
      if (lp_buf_append(b, &c, 1) != 0) abort();
      s += 2;
    } else {
      s++;
    }
  }
}

static const char *hexof(const char *p, size_t n) {
  static char out[4096];
  size_t i, o = 0;

  for (i = 0; i < n && o + 4 < sizeof out; i++)
    o += (size_t)snprintf(out + o, sizeof out - o, "%02x ", (unsigned char)p[i]);
  out[o] = 0;
  return out;
}

static int same_bytes(const lp_buf *got, const char *spec, const char *what) {
  lp_buf want = {0};
  int ok;
  char wanthex[4096];

  spec_bytes(&want, spec);
  ok = got->len == want.len && memcmp(got->ptr, want.ptr, want.len) == 0;
  snprintf(wanthex, sizeof wanthex, "%s", hexof(want.ptr, want.len));
  check(ok, what, "got [%s] want [%s]", hexof(got->ptr, got->len), wanthex);
  lp_buf_free(&want);
  return ok;
}

static int slice_is(lp_slice s, const char *want) {
  if (want == NULL) return s.ptr == NULL;
  return s.ptr != NULL && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static const char *sdesc(lp_slice s) {
  static char out[2][256];
  static int k;
  char *o = out[k++ & 1];

  if (s.ptr == NULL) return "(absent)";
  snprintf(o, 256, "'%.*s'", (int)(s.len > 200 ? 200 : s.len), s.ptr);
  return o;
}

/* Splits one frame out of a buffer holding exactly one frame. */
static lp_slice one_payload(const lp_buf *b) {
  lp_slice p = LP_SLICE_NONE;
  size_t used = 0;
  int rc = lp_wire_next_frame(b->ptr, b->len, LP_DEFAULT_MAX_FRAME, &p, &used);

  if (rc != LP_WIRE_OK || used != b->len) return LP_SLICE_NONE;
  return p;
}

static int decode_req_spec(const char *spec, lp_buf *hold, lp_request *r) {
  lp_slice p;

  spec_bytes(hold, spec);
  p = one_payload(hold);
  if (p.ptr == NULL) return 99;
  return lp_wire_decode_request(p, r);
}

static int decode_res_spec(const char *spec, lp_buf *hold, lp_response *r) {
  lp_slice p;

  spec_bytes(hold, spec);
  p = one_payload(hold);
  if (p.ptr == NULL) return 99;
  return lp_wire_decode_response(p, r);
}

/* Decodes a raw payload given in the notation (no length prefix). */
static int decode_req_payload(const char *spec, lp_buf *hold, lp_request *r) {
  lp_slice p;

  spec_bytes(hold, spec);
  p.ptr = hold->ptr ? hold->ptr : "";
  p.len = hold->len;
  return lp_wire_decode_request(p, r);
}

static int decode_res_payload(const char *spec, lp_buf *hold, lp_response *r) {
  lp_slice p;

  spec_bytes(hold, spec);
  p.ptr = hold->ptr ? hold->ptr : "";
  p.len = hold->len;
  return lp_wire_decode_response(p, r);
}

/* ------------------------------------------------------------------------ */
/* 3.7 example frames: requests                                              */
/* ------------------------------------------------------------------------ */

#define F_PUT "10 01 08 00 12 02 6b31 1a 07 7b2261223a317d"
#define F_GET "07 00 08 00 12 02 6b31"
#define F_BATCH                                                                                    \
  "1d 03 08 00 12 0d (0a 03 \"put\" 12 02 \"k2\" 1a 02 \"22\") 12 09 (0a 03 \"del\" 12 02 \"k9\")"
#define F_GETMANY "11 06 08 00 12 02 \"k1\" 12 04 \"nope\" 12 02 \"k2\""
#define F_CLEAR   "0f 05 08 00 12 0a (22 01 \"x\" 2a 01 \"y\" 38 01 40 00)"
#define F_ITER    "13 04 08 00 10 20 1a 0c (08 01 10 01 22 02 \"k2\" 38 06 40 00)"
#define F_ACK     "05 04 08 00 10 20"
#define F_END     "05 04 08 00 10 00"

#define F_GETHIT    "0c 00 08 00 1a 07 7b2278223a317d"
#define F_GETMISS   "0f 00 08 05 12 0a \"NotFound: \""
#define F_OK3       "03 00 08 03"
#define F_GETMANYCB "15 02 08 07 1a 09 (0a 07 \"{\\\"x\\\":1}\") 1a 00 1a 03 (0a 01 \"2\")"
#define F_ENTRY     "0f 01 08 00 1a 01 \"a\" 22 07 \"{\\\"x\\\":1}\""
#define F_ITEREND   "03 01 08 00"

static void test_request_examples(void) {
  lp_buf rest = {0}, out = {0}, hold = {0};
  lp_request r;
  lp_range rg;
  lp_batch_op op;
  lp_slice k;
  size_t cur;
  int rc;

  /* put */
  lp_wire_rest_put(&rest, S("k1"), S("{\"a\":1}"));
  lp_wire_frame(&out, LP_REQ_PUT, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_PUT, "encode put('k1',{a:1})");
  rc = decode_req_spec(F_PUT, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_PUT && r.id == 0 && slice_is(r.key, "k1") &&
            slice_is(r.value, "{\"a\":1}"),
        "decode put", "rc=%d tag=%d id=%u key=%s value=%s", rc, r.tag, r.id, sdesc(r.key),
        sdesc(r.value));

  /* get */
  rest.len = out.len = 0;
  lp_wire_rest_key(&rest, S("k1"));
  lp_wire_frame(&out, LP_REQ_GET, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_GET, "encode get('k1')");
  rc = decode_req_spec(F_GET, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_GET && r.id == 0 && slice_is(r.key, "k1") &&
            r.value.ptr == NULL,
        "decode get", "rc=%d key=%s value=%s", rc, sdesc(r.key), sdesc(r.value));

  /* batch */
  rest.len = out.len = 0;
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("k2"), S("22"));
  lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("k9"), LP_SLICE_NONE);
  lp_wire_frame(&out, LP_REQ_BATCH, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_BATCH, "encode batch([put k2=22, del k9])");
  rc = decode_req_spec(F_BATCH, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_BATCH && r.id == 0 && r.count == 2, "decode batch",
        "rc=%d count=%zu", rc, r.count);
  cur = 0;
  rc = lp_wire_next_op(&r, &cur, &op);
  check(rc == 1 && op.type == LP_OP_PUT && slice_is(op.key, "k2") && slice_is(op.value, "22"),
        "batch op 1 is put k2=22", "rc=%d type=%d key=%s value=%s", rc, op.type, sdesc(op.key),
        sdesc(op.value));
  rc = lp_wire_next_op(&r, &cur, &op);
  check(rc == 1 && op.type == LP_OP_DEL && slice_is(op.key, "k9") && op.value.ptr == NULL,
        "batch op 2 is del k9", "rc=%d type=%d key=%s value=%s", rc, op.type, sdesc(op.key),
        sdesc(op.value));
  rc = lp_wire_next_op(&r, &cur, &op);
  check(rc == 0, "batch walker ends after 2 ops", "rc=%d", rc);

  /* getMany */
  rest.len = out.len = 0;
  lp_wire_rest_getmany_key(&rest, S("k1"));
  lp_wire_rest_getmany_key(&rest, S("nope"));
  lp_wire_rest_getmany_key(&rest, S("k2"));
  lp_wire_frame(&out, LP_REQ_GETMANY, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_GETMANY, "encode getMany(['k1','nope','k2'])");
  rc = decode_req_spec(F_GETMANY, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_GETMANY && r.count == 3, "decode getMany",
        "rc=%d count=%zu", rc, r.count);
  {
    const char *want[] = {"k1", "nope", "k2"};
    int i, ok = 1;
    cur = 0;
    for (i = 0; i < 3; i++)
      ok &= lp_wire_next_key(&r, &cur, &k) == 1 && slice_is(k, want[i]);
    ok &= lp_wire_next_key(&r, &cur, &k) == 0;
    check(ok, "getMany key walker yields k1, nope, k2, end", "mismatch");
  }

  /* clear */
  rest.len = out.len = 0;
  lp_range_init(&rg);
  rg.gte = S("x");
  rg.lt = S("y");
  lp_wire_rest_clear(&rest, &rg);
  lp_wire_frame(&out, LP_REQ_CLEAR, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_CLEAR, "encode clear({gte:'x', lt:'y'})");
  rc = decode_req_spec(F_CLEAR, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_CLEAR && r.opts.present && !r.opts.has_keys &&
            !r.opts.has_values && r.opts.gt.ptr == NULL && slice_is(r.opts.gte, "x") &&
            slice_is(r.opts.lt, "y") && r.opts.lte.ptr == NULL && r.opts.has_limit &&
            r.opts.limit == -1 && r.opts.has_reverse && r.opts.reverse == 0,
        "decode clear", "rc=%d gte=%s lt=%s limit=%d", rc, sdesc(r.opts.gte), sdesc(r.opts.lt),
        r.opts.limit);

  /* clear with two bounds on a side sends the tighter alone */
  rest.len = out.len = 0;
  lp_range_init(&rg);
  rg.gt = S("b");
  rg.gte = S("a");
  rg.lt = S("y");
  rg.lte = S("y");
  lp_wire_rest_clear(&rest, &rg);
  lp_wire_frame(&out, LP_REQ_CLEAR, 0, (lp_slice){rest.ptr, rest.len});
  rc = lp_wire_decode_request(one_payload(&out), &r);
  check(rc == LP_WIRE_OK && slice_is(r.opts.gt, "b") && r.opts.gte.ptr == NULL &&
            slice_is(r.opts.lt, "y") && r.opts.lte.ptr == NULL,
        "clear({gt:'b', gte:'a', lt:'y', lte:'y'}) sends gt 'b' and lt 'y' alone", "rc=%d", rc);

  /* iterator open */
  rest.len = out.len = 0;
  lp_range_init(&rg);
  rg.gte = S("k2");
  rg.limit = 3;
  lp_wire_rest_iter(&rest, 32, &rg);
  lp_wire_frame(&out, LP_REQ_ITER, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_ITER, "encode createReadStream({gte:'k2', limit:3})");
  rc = decode_req_spec(F_ITER, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_ITER && r.id == 0 && r.has_batch && r.batch == 32 &&
            r.opts.present && r.opts.has_keys && r.opts.keys == 1 && r.opts.has_values &&
            r.opts.values == 1 && slice_is(r.opts.gte, "k2") && r.opts.gt.ptr == NULL &&
            r.opts.lt.ptr == NULL && r.opts.lte.ptr == NULL && r.opts.has_limit &&
            r.opts.limit == 3 && r.opts.has_reverse && r.opts.reverse == 0,
        "decode iterator open", "rc=%d batch=%u limit=%d", rc, r.batch, r.opts.limit);

  /* ack and end */
  rest.len = out.len = 0;
  lp_wire_rest_iter_window(&rest, 32);
  lp_wire_frame(&out, LP_REQ_ITER, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_ACK, "encode iterator ack");
  rc = decode_req_spec(F_ACK, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_REQ_ITER && r.has_batch && r.batch == 32 && !r.opts.present,
        "decode iterator ack", "rc=%d batch=%u present=%d", rc, r.batch, r.opts.present);
  rest.len = out.len = 0;
  lp_wire_rest_iter_window(&rest, 0);
  lp_wire_frame(&out, LP_REQ_ITER, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_END, "encode iterator end");
  rc = decode_req_spec(F_END, &hold, &r);
  check(rc == LP_WIRE_OK && r.has_batch && r.batch == 0 && !r.opts.present, "decode iterator end",
        "rc=%d batch=%u", rc, r.batch);

  lp_buf_free(&rest);
  lp_buf_free(&out);
  lp_buf_free(&hold);
}

/* ------------------------------------------------------------------------ */
/* 3.7 example frames: replies                                               */
/* ------------------------------------------------------------------------ */

static void test_reply_examples(void) {
  lp_buf rest = {0}, out = {0}, hold = {0};
  lp_response r;
  lp_slice v;
  size_t cur;
  int rc;

  lp_wire_enc_callback(&out, 0, NULL, 0, S("{\"x\":1}"));
  same_bytes(&out, F_GETHIT, "encode get hit");
  rc = decode_res_spec(F_GETHIT, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_RES_CALLBACK && r.id == 0 && r.error.ptr == NULL &&
            slice_is(r.value, "{\"x\":1}"),
        "decode get hit", "rc=%d err=%s value=%s", rc, sdesc(r.error), sdesc(r.value));

  out.len = 0;
  lp_wire_enc_callback(&out, 5, "NotFound: ", 10, LP_SLICE_NONE);
  same_bytes(&out, F_GETMISS, "encode get miss");
  rc = decode_res_spec(F_GETMISS, &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 5 && slice_is(r.error, "NotFound: ") && r.value.ptr == NULL,
        "decode get miss", "rc=%d err=%s value=%s", rc, sdesc(r.error), sdesc(r.value));

  out.len = 0;
  lp_wire_enc_callback(&out, 3, NULL, 0, LP_SLICE_NONE);
  same_bytes(&out, F_OK3, "encode put/del/batch ok");
  rc = decode_res_spec(F_OK3, &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 3 && r.error.ptr == NULL && r.value.ptr == NULL,
        "decode put/del/batch ok", "rc=%d", rc);

  out.len = 0;
  lp_wire_rest_getmany_value(&rest, S("{\"x\":1}"));
  lp_wire_rest_getmany_value(&rest, LP_SLICE_NONE);
  lp_wire_rest_getmany_value(&rest, S("2"));
  lp_wire_enc_getmany(&out, 7, NULL, 0, (lp_slice){rest.ptr, rest.len});
  same_bytes(&out, F_GETMANYCB, "encode getMany callback");
  rc = decode_res_spec(F_GETMANYCB, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_RES_GETMANY && r.id == 7 && r.count == 3 &&
            r.error.ptr == NULL,
        "decode getMany callback", "rc=%d count=%zu", rc, r.count);
  cur = 0;
  {
    int ok = 1;
    ok &= lp_wire_next_value(&r, &cur, &v) == 1 && slice_is(v, "{\"x\":1}");
    ok &= lp_wire_next_value(&r, &cur, &v) == 1 && v.ptr == NULL;
    ok &= lp_wire_next_value(&r, &cur, &v) == 1 && slice_is(v, "2");
    ok &= lp_wire_next_value(&r, &cur, &v) == 0;
    check(ok, "getMany value walker yields value, not-found, value, end", "mismatch");
  }

  out.len = 0;
  lp_wire_enc_iterdata(&out, 0, S("a"), S("{\"x\":1}"));
  same_bytes(&out, F_ENTRY, "encode iterator entry");
  rc = decode_res_spec(F_ENTRY, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_RES_ITERDATA && slice_is(r.key, "a") &&
            slice_is(r.value, "{\"x\":1}") && r.error.ptr == NULL,
        "decode iterator entry", "rc=%d key=%s value=%s", rc, sdesc(r.key), sdesc(r.value));

  out.len = 0;
  lp_wire_enc_iterend(&out, 0);
  same_bytes(&out, F_ITEREND, "encode iterator end marker");
  rc = decode_res_spec(F_ITEREND, &hold, &r);
  check(rc == LP_WIRE_OK && r.tag == LP_RES_ITERDATA && r.key.ptr == NULL && r.value.ptr == NULL &&
            r.error.ptr == NULL,
        "decode iterator end marker", "rc=%d", rc);

  /* entries with a suppressed side keep the field, empty (3.6) */
  out.len = 0;
  lp_wire_enc_iterdata(&out, 2, S("k"), LP_SLICE_NONE);
  same_bytes(&out, "08 01 08 02 1a 01 \"k\" 22 00", "iterdata with values off writes 22 00");
  out.len = 0;
  lp_wire_enc_iterdata(&out, 2, LP_SLICE_NONE, LP_SLICE_NONE);
  same_bytes(&out, "07 01 08 02 1a 00 22 00", "iterdata with both absent writes both empty");
  rc = lp_wire_decode_response(one_payload(&out), &r);
  check(rc == LP_WIRE_OK && r.key.ptr != NULL && r.key.len == 0 && r.value.ptr != NULL &&
            r.value.len == 0,
        "empty iterdata decodes as present empty key and value", "rc=%d", rc);

  out.len = 0;
  lp_wire_enc_itererror(&out, 1, "boom", 4);
  same_bytes(&out, "09 01 08 01 12 04 \"boom\"", "encode iterator error");
  rc = lp_wire_decode_response(one_payload(&out), &r);
  check(rc == LP_WIRE_OK && slice_is(r.error, "boom") && r.key.ptr == NULL && r.value.ptr == NULL,
        "decode iterator error", "rc=%d", rc);

  out.len = 0;
  lp_wire_enc_callback(&out, 1, "", 0, S(""));
  same_bytes(&out, "07 00 08 01 12 00 1a 00", "callback with present empty error and value");

  out.len = 0;
  rest.len = 0;
  lp_wire_enc_getmany(&out, 1, "bad", 3, (lp_slice){NULL, 0});
  same_bytes(&out, "08 02 08 01 12 03 \"bad\"", "getMany callback with error and no values");

  lp_buf_free(&rest);
  lp_buf_free(&out);
  lp_buf_free(&hold);
}

/* ------------------------------------------------------------------------ */
/* Varints and zigzag                                                         */
/* ------------------------------------------------------------------------ */

static void varint_case(uint64_t v, const char *spec) {
  uint8_t tmp[10];
  size_t n = lp_varint_put(tmp, v), used = 0;
  lp_buf want = {0}, got = {0};
  uint64_t back = 0;
  int rc;
  char what[128];

  spec_bytes(&want, spec);
  lp_buf_append(&got, tmp, n);
  snprintf(what, sizeof what, "varint %llu encodes as %s", (unsigned long long)v, spec);
  same_bytes(&got, spec, what);
  rc = lp_varint_get(want.ptr, want.len, &back, &used);
  snprintf(what, sizeof what, "varint %llu decodes", (unsigned long long)v);
  check(rc == 1 && back == v && used == want.len, what, "rc=%d back=%llu used=%zu", rc,
        (unsigned long long)back, used);
  /* every proper prefix asks for more */
  {
    size_t i;
    int ok = 1;
    for (i = 0; i < want.len; i++)
      ok &= lp_varint_get(want.ptr, i, &back, &used) == 0;
    snprintf(what, sizeof what, "varint %llu prefixes need more", (unsigned long long)v);
    check(ok, what, "a prefix did not return 0");
  }
  lp_buf_free(&want);
  lp_buf_free(&got);
}

static void test_varints(void) {
  lp_buf b = {0};
  uint64_t v;
  size_t used;
  int rc;

  varint_case(0, "00");
  varint_case(1, "01");
  varint_case(127, "7f");
  varint_case(128, "80 01");
  varint_case(300, "ac 02");
  varint_case(16383, "ff 7f");
  varint_case(16384, "80 80 01");
  varint_case(0xffffffffull, "ff ff ff ff 0f");
  varint_case(0x100000000ull, "80 80 80 80 10");
  varint_case(UINT64_MAX, "ff ff ff ff ff ff ff ff ff 01");
  varint_case(1ull << 63, "80 80 80 80 80 80 80 80 80 01");

  spec_bytes(&b, "ff ff ff ff ff ff ff ff ff ff 01");
  rc = lp_varint_get(b.ptr, b.len, &v, &used);
  check(rc == -1, "11-byte varint is an error", "rc=%d", rc);
  spec_bytes(&b, "ff ff ff ff ff ff ff ff ff 02");
  rc = lp_varint_get(b.ptr, b.len, &v, &used);
  check(rc == -1, "10-byte varint over 64 bits is an error", "rc=%d", rc);
  spec_bytes(&b, "ff ff ff ff ff ff ff ff ff 80");
  rc = lp_varint_get(b.ptr, b.len, &v, &used);
  check(rc == -1, "10 bytes all with continuation is an error (no need-more)", "rc=%d", rc);
  spec_bytes(&b, "80 00");
  rc = lp_varint_get(b.ptr, b.len, &v, &used);
  check(rc == 1 && v == 0 && used == 2, "non-canonical 80 00 decodes as 0", "rc=%d", rc);
  rc = lp_varint_get(NULL, 0, &v, &used);
  check(rc == 0, "empty input needs more", "rc=%d", rc);
  lp_buf_free(&b);
}

/* limit is sint32 on the wire: check the zigzag bytes through the encoder and
 * back through the decoder. */
static void zigzag_case(int64_t limit, const char *limit_field, int32_t back_want) {
  lp_buf rest = {0}, out = {0}, want = {0};
  lp_range rg;
  lp_request r;
  int rc;
  char what[128];

  lp_range_init(&rg);
  rg.limit = limit;
  lp_wire_rest_clear(&rest, &rg);
  /* rest = 12 len <limit_field> 40 00 */
  spec_bytes(&want, limit_field);
  snprintf(what, sizeof what, "limit %lld encodes as %s", (long long)limit, limit_field);
  check(rest.len == 2 + want.len + 2 && memcmp(rest.ptr + 2, want.ptr, want.len) == 0, what,
        "got [%s]", hexof(rest.ptr, rest.len));
  lp_wire_frame(&out, LP_REQ_CLEAR, 1, (lp_slice){rest.ptr, rest.len});
  rc = lp_wire_decode_request(one_payload(&out), &r);
  snprintf(what, sizeof what, "limit %lld decodes as %d", (long long)limit, back_want);
  check(rc == LP_WIRE_OK && r.opts.has_limit && r.opts.limit == back_want, what, "rc=%d limit=%d",
        rc, r.opts.limit);
  lp_buf_free(&rest);
  lp_buf_free(&out);
  lp_buf_free(&want);
}

static void test_zigzag(void) {
  zigzag_case(-1, "38 01", -1);
  zigzag_case(3, "38 06", 3);
  zigzag_case(0, "38 00", 0);
  zigzag_case(1, "38 02", 1);
  zigzag_case(INT32_MAX, "38 fe ff ff ff 0f", INT32_MAX);
  zigzag_case(-7, "38 01", -1);                           /* any negative means "no limit" */
  zigzag_case(INT64_MAX, "38 fe ff ff ff 0f", INT32_MAX); /* clamped */
  zigzag_case((int64_t)INT32_MAX + 1, "38 fe ff ff ff 0f", INT32_MAX);

  /* INT32_MIN cannot come out of the encoder (negatives become -1): decode it */
  {
    lp_buf hold = {0};
    lp_request r;
    int rc = decode_req_payload("05 08 01 12 06 38 ff ff ff ff 0f", &hold, &r);
    check(rc == LP_WIRE_OK && r.opts.limit == INT32_MIN, "zigzag ffffffff decodes as INT32_MIN",
          "rc=%d limit=%d", rc, r.opts.limit);
    rc = decode_req_payload("05 08 01 12 06 38 fe ff ff ff 0f", &hold, &r);
    check(rc == LP_WIRE_OK && r.opts.limit == INT32_MAX, "zigzag fffffffe decodes as INT32_MAX",
          "rc=%d limit=%d", rc, r.opts.limit);
    rc = decode_req_payload("05 08 01 12 02 38 05", &hold, &r);
    check(rc == LP_WIRE_OK && r.opts.limit == -3, "zigzag 05 decodes as -3", "rc=%d limit=%d", rc,
          r.opts.limit);
    lp_buf_free(&hold);
  }
}

/* ------------------------------------------------------------------------ */
/* Frame splitting                                                            */
/* ------------------------------------------------------------------------ */

static void test_frames(void) {
  lp_buf all = {0}, acc = {0}, one = {0};
  lp_slice p;
  size_t used, i, nframes = 0, nempty = 0;
  int rc, ok = 1;
  const char *want[3] = {F_GET, F_ITEREND, F_BATCH};

  /* three frames and an empty one in between, fed one byte at a time */
  spec_bytes(&one, F_GET);
  lp_buf_append(&all, one.ptr, one.len);
  lp_buf_append(&all, "\0", 1);
  spec_bytes(&one, F_ITEREND);
  lp_buf_append(&all, one.ptr, one.len);
  spec_bytes(&one, F_BATCH);
  lp_buf_append(&all, one.ptr, one.len);

  for (i = 0; i < all.len; i++) {
    lp_buf_append(&acc, all.ptr + i, 1);
    for (;;) {
      rc = lp_wire_next_frame(acc.ptr, acc.len, LP_DEFAULT_MAX_FRAME, &p, &used);
      if (rc == LP_WIRE_NEED_MORE) break;
      if (rc == LP_WIRE_EMPTY) {
        ok &= used == 1;
        nempty++;
      } else if (rc == LP_WIRE_OK) {
        spec_bytes(&one, want[nframes < 3 ? nframes : 2]);
        /* the payload is the frame without its 1-byte prefix */
        ok &= nframes < 3 && used == one.len && p.len == one.len - 1 &&
              memcmp(p.ptr, one.ptr + 1, p.len) == 0;
        nframes++;
      } else {
        ok = 0;
        break;
      }
      lp_buf_consume(&acc, used);
    }
  }
  check(ok && nframes == 3 && nempty == 1 && acc.len == 0,
        "3 frames + 1 empty fed byte by byte split exactly", "ok=%d frames=%zu empty=%zu left=%zu",
        ok, nframes, nempty, acc.len);

  rc = lp_wire_next_frame(NULL, 0, 100, &p, &used);
  check(rc == LP_WIRE_NEED_MORE, "no bytes: need more", "rc=%d", rc);
  spec_bytes(&one, "00");
  rc = lp_wire_next_frame(one.ptr, one.len, 100, &p, &used);
  check(rc == LP_WIRE_EMPTY && used == 1, "00 is an empty frame consuming 1", "rc=%d used=%zu", rc,
        used);
  spec_bytes(&one, "80");
  rc = lp_wire_next_frame(one.ptr, one.len, 100, &p, &used);
  check(rc == LP_WIRE_NEED_MORE, "partial length prefix: need more", "rc=%d", rc);
  spec_bytes(&one, "05 00 08");
  rc = lp_wire_next_frame(one.ptr, one.len, 100, &p, &used);
  check(rc == LP_WIRE_NEED_MORE, "partial payload: need more", "rc=%d", rc);

  spec_bytes(&one, "64");
  rc = lp_wire_next_frame(one.ptr, one.len, 100, &p, &used);
  check(rc == LP_WIRE_NEED_MORE, "length == limit is accepted (needs more)", "rc=%d", rc);
  spec_bytes(&one, "65");
  rc = lp_wire_next_frame(one.ptr, one.len, 100, &p, &used);
  check(rc == LP_WIRE_TOO_BIG, "length over the limit: too big", "rc=%d", rc);
  spec_bytes(&one, "81 80 80 20"); /* 64 MiB + 1 */
  rc = lp_wire_next_frame(one.ptr, one.len, LP_DEFAULT_MAX_FRAME, &p, &used);
  check(rc == LP_WIRE_TOO_BIG, "64 MiB + 1 over the default limit: too big", "rc=%d", rc);
  spec_bytes(&one, "80 80 80 20"); /* exactly 64 MiB */
  rc = lp_wire_next_frame(one.ptr, one.len, LP_DEFAULT_MAX_FRAME, &p, &used);
  check(rc == LP_WIRE_NEED_MORE, "exactly 64 MiB: accepted, needs more", "rc=%d", rc);
  spec_bytes(&one, "ff ff ff ff ff ff ff ff ff ff 01");
  rc = lp_wire_next_frame(one.ptr, one.len, LP_DEFAULT_MAX_FRAME, &p, &used);
  check(rc == LP_WIRE_TOO_BIG, "11-byte length prefix: too big", "rc=%d", rc);
  spec_bytes(&one, "ff ff ff ff ff ff ff ff ff 01");
  rc = lp_wire_next_frame(one.ptr, one.len, LP_DEFAULT_MAX_FRAME, &p, &used);
  check(rc == LP_WIRE_TOO_BIG, "2^64-1 length: too big", "rc=%d", rc);

  lp_buf_free(&all);
  lp_buf_free(&acc);
  lp_buf_free(&one);
}

/* ------------------------------------------------------------------------ */
/* Decoder edge cases                                                         */
/* ------------------------------------------------------------------------ */

static void expect_req(const char *payload, int want_rc, const char *what) {
  lp_buf hold = {0};
  lp_request r;
  int rc = decode_req_payload(payload, &hold, &r);

  check(rc == want_rc, what, "rc=%d want %d", rc, want_rc);
  lp_buf_free(&hold);
}

static void expect_res(const char *payload, int want_rc, const char *what) {
  lp_buf hold = {0};
  lp_response r;
  int rc = decode_res_payload(payload, &hold, &r);

  check(rc == want_rc, what, "rc=%d want %d", rc, want_rc);
  lp_buf_free(&hold);
}

static void test_decoder_edges(void) {
  lp_buf hold = {0};
  lp_request r;
  lp_response s;
  lp_batch_op op;
  lp_slice k;
  size_t cur;
  int rc;

  /* empty and unknown */
  expect_req("", LP_WIRE_EMPTY, "empty request payload");
  expect_res("", LP_WIRE_EMPTY, "empty response payload");
  expect_req("07 08 00", LP_WIRE_UNKNOWN_TAG, "request tag 7 is unknown");
  expect_req("ff 08 00", LP_WIRE_UNKNOWN_TAG, "request tag 255 is unknown");
  expect_res("03 08 00", LP_WIRE_UNKNOWN_TAG, "response tag 3 is unknown");
  rc = lp_wire_decode_request(LP_SLICE_NONE, &r);
  check(rc == LP_WIRE_EMPTY, "absent payload is empty", "rc=%d", rc);

  /* required fields */
  expect_req("00 12 02 \"k1\"", LP_WIRE_MALFORMED, "get without id");
  expect_req("00 08 00", LP_WIRE_MALFORMED, "get without key");
  expect_req("02 08 00", LP_WIRE_MALFORMED, "del without key");
  expect_req("01 08 00 1a 01 \"v\"", LP_WIRE_MALFORMED, "put without key");
  expect_req("01 08 00 12 01 \"k\"", LP_WIRE_OK, "put without value is accepted");
  expect_req("03", LP_WIRE_MALFORMED, "batch without id");
  expect_req("03 08 00", LP_WIRE_OK, "batch with no ops");
  expect_req("03 08 00 12 04 (12 02 \"k2\")", LP_WIRE_MALFORMED, "batch op without type");
  expect_req("03 08 00 12 05 (0a 03 \"put\")", LP_WIRE_MALFORMED, "batch op without key");
  expect_req("03 08 00 12 09 (0a 03 \"pux\" 12 02 \"k2\")", LP_WIRE_MALFORMED,
             "batch op type 'pux'");
  expect_req("03 08 00 12 0a (0a 04 \"puts\" 12 02 \"k2\")", LP_WIRE_MALFORMED,
             "batch op type 'puts'");
  expect_req("03 08 00 12 06 (0a 00 12 02 \"k2\")", LP_WIRE_MALFORMED, "batch op empty type");
  expect_req("03 08 00 12 09 (0a 03 \"PUT\" 12 02 \"k2\")", LP_WIRE_MALFORMED,
             "batch op type is case-sensitive");
  expect_req("03 08 00 12 07 (0a 03 \"put\" 12 00)", LP_WIRE_OK, "batch op with empty key");
  expect_req("04", LP_WIRE_MALFORMED, "iterator without id");
  expect_req("04 08 00", LP_WIRE_OK, "iterator with only id");
  expect_req("05 08 00", LP_WIRE_OK, "clear without options");
  expect_req("06 08 00", LP_WIRE_OK, "getMany with no keys");
  expect_res("00", LP_WIRE_MALFORMED, "callback without id");
  expect_res("01 1a 01 \"k\"", LP_WIRE_MALFORMED, "iterdata without id");
  expect_res("02 12 01 \"e\"", LP_WIRE_MALFORMED, "getMany callback without id");

  /* truncation, bad lengths, bad wire types */
  expect_req("00 08 00 12 05 \"k1\"", LP_WIRE_MALFORMED, "length runs past the end");
  expect_req("00 08 00 12", LP_WIRE_MALFORMED, "field key without value");
  expect_req("00 08", LP_WIRE_MALFORMED, "varint field truncated");
  expect_req("00 08 80", LP_WIRE_MALFORMED, "varint value truncated");
  expect_req("00 08 ff ff ff ff ff ff ff ff ff ff 01 12 00", LP_WIRE_MALFORMED,
             "11-byte varint in a body");
  expect_req("00 08 00 12 ff ff ff ff ff ff ff ff ff 01", LP_WIRE_MALFORMED,
             "huge length in a body");
  expect_req("00 08 00 12 02 \"k1\" 0b 0c", LP_WIRE_MALFORMED, "group start (wire type 3)");
  expect_req("00 08 00 12 02 \"k1\" 0c", LP_WIRE_MALFORMED, "group end (wire type 4)");
  expect_req("00 08 00 12 02 \"k1\" 0e 00", LP_WIRE_MALFORMED, "wire type 6");
  expect_req("00 08 00 12 02 \"k1\" 0f 00", LP_WIRE_MALFORMED, "wire type 7");
  expect_req("00 00 01 08 00 12 02 \"k1\"", LP_WIRE_MALFORMED, "field number 0");
  expect_req("00 0a 01 00 12 02 \"k1\"", LP_WIRE_MALFORMED, "id sent as bytes");
  expect_req("00 08 00 10 02", LP_WIRE_MALFORMED, "get key sent as varint");
  expect_req("00 08 00 12 02 \"k1\" 7d 01 02 03", LP_WIRE_MALFORMED, "fixed32 truncated");
  expect_req("00 08 00 12 02 \"k1\" 79 01 02 03 04 05 06 07", LP_WIRE_MALFORMED,
             "fixed64 truncated");
  expect_req("04 08 00 1a 02 08", LP_WIRE_MALFORMED, "options body truncated inside");
  expect_req("04 08 00 1a 02 3a 00", LP_WIRE_MALFORMED, "options limit sent as bytes");
  expect_req("04 08 00 12 00", LP_WIRE_MALFORMED, "iterator batch sent as bytes");
  expect_req("06 08 00 10 01", LP_WIRE_MALFORMED, "getMany key sent as varint");
  expect_res("02 08 00 1a 02 0a 05", LP_WIRE_MALFORMED, "getMany value truncated inside");
  expect_res("02 08 00 1a 02 08 01", LP_WIRE_MALFORMED, "getMany value sent as varint");

  /* field order independence, unknown fields, last value wins */
  rc = decode_req_payload("01 1a 01 \"v\" 12 01 \"k\" 08 09", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 9 && slice_is(r.key, "k") && slice_is(r.value, "v"),
        "put fields in reverse order", "rc=%d id=%u", rc, r.id);
  rc = decode_req_payload("00 08 01 78 05 12 01 \"k\" 7a 02 \"zz\" 7d 01 02 03 04 "
                          "79 01 02 03 04 05 06 07 08 f8 ff ff ff 0f 00 22 01 \"x\"",
                          &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 1 && slice_is(r.key, "k"),
        "get skips unknown varint, bytes, fixed32, fixed64 and high field numbers",
        "rc=%d id=%u key=%s", rc, r.id, sdesc(r.key));
  rc = decode_req_payload("00 08 01 12 01 \"a\" 08 02 12 01 \"b\"", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 2 && slice_is(r.key, "b"), "last id and key win",
        "rc=%d id=%u key=%s", rc, r.id, sdesc(r.key));
  rc = decode_req_payload("00 08 ff ff ff ff 1f 12 00", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 0xffffffffu, "id 2^32-1", "rc=%d id=%u", rc, r.id);
  rc = decode_req_payload("00 08 80 80 80 80 10 12 00", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 0, "id 2^32 keeps the low 32 bits", "rc=%d id=%u", rc, r.id);
  rc = decode_req_payload("04 1a 0b (40 05 38 06 22 01 \"a\" 10 00 08 02) 10 20 08 03", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 3 && r.batch == 32 && r.opts.present && r.opts.reverse == 1 &&
            r.opts.limit == 3 && slice_is(r.opts.gte, "a") && r.opts.has_values &&
            r.opts.values == 0 && r.opts.has_keys && r.opts.keys == 1,
        "iterator options in any order, bool is any nonzero varint",
        "rc=%d id=%u batch=%u rev=%d lim=%d keys=%d values=%d", rc, r.id, r.batch, r.opts.reverse,
        r.opts.limit, r.opts.keys, r.opts.values);
  rc = decode_req_payload("04 08 00 1a 00", &hold, &r);
  check(rc == LP_WIRE_OK && r.opts.present && !r.opts.has_keys && !r.opts.has_values &&
            !r.opts.has_limit && !r.opts.has_reverse && !r.has_batch,
        "present empty options: present with no fields", "rc=%d", rc);
  rc = decode_req_payload("04 08 00 1a 02 08 01 1a 02 10 01", &hold, &r);
  check(rc == LP_WIRE_OK && !r.opts.has_keys && r.opts.has_values,
        "a second options field replaces the first", "rc=%d keys=%d values=%d", rc, r.opts.has_keys,
        r.opts.has_values);
  rc = decode_req_payload("05 08 00 12 04 (08 01 10 01)", &hold, &r);
  check(rc == LP_WIRE_OK && r.opts.present && !r.opts.has_keys && !r.opts.has_values,
        "clear options ignore fields 1 and 2", "rc=%d", rc);
  rc = decode_req_payload("05 08 00 12 04 (0a 00 12 00)", &hold, &r);
  check(rc == LP_WIRE_OK, "clear options skip fields 1 and 2 of any wire type", "rc=%d", rc);

  /* repeated fields interleaved with other fields */
  rc = decode_req_payload("06 12 01 \"a\" 08 04 7a 01 \"z\" 12 00 12 01 \"c\"", &hold, &r);
  check(rc == LP_WIRE_OK && r.id == 4 && r.count == 3, "getMany with interleaved id/unknown",
        "rc=%d count=%zu", rc, r.count);
  {
    int ok = 1;
    cur = 0;
    ok &= lp_wire_next_key(&r, &cur, &k) == 1 && slice_is(k, "a");
    ok &= lp_wire_next_key(&r, &cur, &k) == 1 && k.ptr != NULL && k.len == 0;
    ok &= lp_wire_next_key(&r, &cur, &k) == 1 && slice_is(k, "c");
    ok &= lp_wire_next_key(&r, &cur, &k) == 0;
    ok &= lp_wire_next_key(&r, &cur, &k) == 0;
    check(ok, "key walker: a, present empty, c, end (twice)", "mismatch");
    cur = 0;
    check(lp_wire_next_op(&r, &cur, &op) == 0, "op walker on a getMany request yields nothing",
          "yielded");
  }
  rc = decode_req_payload("03 12 0b (1a 01 \"v\" 12 01 \"k\" 0a 03 \"put\") 08 01 "
                          "12 0b (0a 03 \"del\" 12 01 \"d\" 1a 01 \"x\") "
                          "12 0d (0a 03 \"del\" 0a 03 \"put\" 12 01 \"p\")",
                          &hold, &r);
  check(rc == LP_WIRE_OK && r.count == 3 && r.id == 1, "batch ops with fields in any order",
        "rc=%d count=%zu", rc, r.count);
  {
    int ok = 1;
    cur = 0;
    ok &= lp_wire_next_op(&r, &cur, &op) == 1 && op.type == LP_OP_PUT && slice_is(op.key, "k") &&
          slice_is(op.value, "v");
    ok &= lp_wire_next_op(&r, &cur, &op) == 1 && op.type == LP_OP_DEL && slice_is(op.key, "d") &&
          op.value.ptr == NULL;
    ok &= lp_wire_next_op(&r, &cur, &op) == 1 && op.type == LP_OP_PUT && slice_is(op.key, "p") &&
          op.value.ptr == NULL;
    ok &= lp_wire_next_op(&r, &cur, &op) == 0;
    check(ok, "op walker: put k=v, del d (value dropped), put p (last type wins, no value)",
          "mismatch");
  }
  expect_req("03 08 00 12 05 (0a 03 \"put\") 12 07 (0a 03 \"put\" 12 00)", LP_WIRE_MALFORMED,
             "one bad op among good ones fails the batch");
  rc = decode_res_payload("02 1a 00 1a 04 (0a 00 7a 00) 08 02 1a 05 (0a 01 \"q\" 7a 00) 1a 06 "
                          "(0a 01 \"a\" 0a 01 \"b\")",
                          &hold, &s);
  check(rc == LP_WIRE_OK && s.id == 2 && s.count == 4, "getMany values interleaved",
        "rc=%d count=%zu", rc, s.count);
  {
    lp_slice v;
    int ok = 1;
    cur = 0;
    ok &= lp_wire_next_value(&s, &cur, &v) == 1 && v.ptr == NULL;
    ok &= lp_wire_next_value(&s, &cur, &v) == 1 && v.ptr != NULL && v.len == 0;
    ok &= lp_wire_next_value(&s, &cur, &v) == 1 && slice_is(v, "q");
    ok &= lp_wire_next_value(&s, &cur, &v) == 1 && slice_is(v, "b");
    ok &= lp_wire_next_value(&s, &cur, &v) == 0;
    check(ok, "value walker: not found, present empty, q, last-wins b, end", "mismatch");
  }

  /* absent vs present empty */
  rc = decode_req_payload("01 08 00 12 00 1a 00", &hold, &r);
  check(rc == LP_WIRE_OK && r.key.ptr != NULL && r.key.len == 0 && r.value.ptr != NULL &&
            r.value.len == 0,
        "put with present empty key and value", "rc=%d", rc);
  rc = decode_req_payload("01 08 00 12 00", &hold, &r);
  check(rc == LP_WIRE_OK && r.value.ptr == NULL, "put value absent stays absent", "rc=%d", rc);
  rc = decode_req_payload("04 08 00 1a 04 (1a 00 32 00)", &hold, &r);
  check(rc == LP_WIRE_OK && r.opts.gt.ptr != NULL && r.opts.gt.len == 0 && r.opts.lte.ptr != NULL &&
            r.opts.lte.len == 0 && r.opts.gte.ptr == NULL && r.opts.lt.ptr == NULL,
        "options: present empty gt/lte, absent gte/lt", "rc=%d", rc);
  rc = decode_res_payload("00 08 00 12 00", &hold, &s);
  check(rc == LP_WIRE_OK && s.error.ptr != NULL && s.error.len == 0 && s.value.ptr == NULL,
        "callback: present empty error, absent value", "rc=%d", rc);
  rc = decode_res_payload("01 08 00 22 00", &hold, &s);
  check(rc == LP_WIRE_OK && s.key.ptr == NULL && s.value.ptr != NULL && s.value.len == 0,
        "iterdata: absent key, present empty value", "rc=%d", rc);

  lp_buf_free(&hold);
}

/* The bounds present-but-empty on the wire, and rest_iter's explicit fields. */
static void test_encoder_options(void) {
  lp_buf rest = {0};
  lp_range rg;

  lp_range_init(&rg);
  lp_wire_rest_iter(&rest, 32, &rg);
  same_bytes(&rest, "10 20 1a 08 (08 01 10 01 38 01 40 00)",
             "iter open with defaults writes keys, values, limit -1, reverse");
  rest.len = 0;
  rg.keys = 0;
  rg.values = 0;
  rg.reverse = 1;
  rg.gt = S("");
  rg.gte = S("b");
  rg.lt = S("c");
  rg.lte = S("");
  rg.limit = 0;
  lp_wire_rest_iter(&rest, 7, &rg);
  same_bytes(&rest, "10 07 1a 12 (08 00 10 00 1a 00 22 01 \"b\" 2a 01 \"c\" 32 00 38 00 40 01)",
             "iter open with every bound (empty ones written empty), reverse, limit 0");
  rest.len = 0;
  lp_wire_rest_clear(&rest, &rg);
  same_bytes(&rest, "12 09 (22 01 \"b\" 32 00 38 00 40 01)",
             "clear options: no keys/values, the tighter bound of each side, limit, reverse");
  rest.len = 0;
  lp_range_init(&rg);
  lp_wire_rest_clear(&rest, &rg);
  same_bytes(&rest, "12 04 (38 01 40 00)", "clear of everything still sends limit and reverse");
  rest.len = 0;
  lp_wire_rest_put(&rest, S("k"), S(""));
  same_bytes(&rest, "12 01 \"k\" 1a 00", "put with empty value writes 1a 00");
  rest.len = 0;
  lp_wire_rest_put(&rest, S("k"), LP_SLICE_NONE);
  same_bytes(&rest, "12 01 \"k\"", "put with absent value omits field 3");
  rest.len = 0;
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("k"), S(""));
  same_bytes(&rest, "12 0a (0a 03 \"put\" 12 01 \"k\" 1a 00)", "batch put with empty value");
  rest.len = 0;
  lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("k"), S("ignored"));
  same_bytes(&rest, "12 08 (0a 03 \"del\" 12 01 \"k\")", "batch del never writes a value");
  check(lp_wire_rest_batch_op(&rest, 2, S("k"), S("")) == -1 && rest.len == 10,
        "batch op with a bad type is refused and writes nothing", "len=%zu", rest.len);
  rest.len = 0;
  lp_wire_rest_key(&rest, LP_SLICE_NONE);
  same_bytes(&rest, "12 00", "absent key is written as an empty key");
  check(lp_wire_frame(&rest, 256, 0, LP_SLICE_NONE) == -1 && rest.len == 2,
        "frame with an out-of-range tag is refused", "len=%zu", rest.len);

  /* large id and long field: multi-byte varints */
  {
    lp_buf out = {0};
    lp_response s;
    char big[300];
    int rc;
    memset(big, 'v', sizeof big);
    lp_wire_enc_callback(&out, 0xffffffffu, NULL, 0, (lp_slice){big, sizeof big});
    rc = lp_wire_decode_response(one_payload(&out), &s);
    check(rc == LP_WIRE_OK && s.id == 0xffffffffu && s.value.len == 300 &&
              out.len == 2 + 1 + 6 + 1 + 2 + 300,
          "callback with id 2^32-1 and a 300-byte value", "rc=%d len=%zu", rc, out.len);
    lp_buf_free(&out);
  }
  lp_buf_free(&rest);
}

/* ------------------------------------------------------------------------ */
/* buf.c                                                                      */
/* ------------------------------------------------------------------------ */

static void test_buf(void) {
  lp_buf b = {0};
  lp_slice d, e;
  size_t cap;
  int i, rc, ok = 1;

  for (i = 0; i < 1000; i++)
    ok &= lp_buf_append(&b, "abcdefghij", 10) == 0;
  check(ok && b.len == 10000 && b.cap >= 10000 && memcmp(b.ptr + 9990, "abcdefghij", 10) == 0,
        "append 1000 x 10 bytes", "len=%zu cap=%zu", b.len, b.cap);
  cap = b.cap;
  lp_buf_consume(&b, 9995);
  check(b.len == 5 && b.cap == cap && memcmp(b.ptr, "fghij", 5) == 0,
        "consume keeps the tail and the capacity", "len=%zu cap=%zu", b.len, b.cap);
  lp_buf_consume(&b, 100);
  check(b.len == 0 && b.cap == cap, "consume more than len empties", "len=%zu", b.len);
  check(lp_buf_reserve(&b, SIZE_MAX) == -1 && b.cap == cap, "reserve SIZE_MAX fails cleanly",
        "cap=%zu", b.cap);
  check(lp_buf_append(&b, NULL, 0) == 0 && b.len == 0, "append of 0 bytes", "len=%zu", b.len);
  lp_buf_free(&b);
  check(b.ptr == NULL && b.len == 0 && b.cap == 0, "free resets to zero", "cap=%zu", b.cap);
  lp_buf_free(&b);

  /* each call comes first: check()'s arguments are evaluated in no set order */
  rc = lp_slice_dup(LP_SLICE_NONE, &d);
  check(rc == 0 && d.ptr == NULL, "dup of absent is absent", "ptr=%p", (const void *)d.ptr);
  rc = lp_slice_dup(S(""), &d);
  check(rc == 0 && d.ptr != NULL && d.len == 0, "dup of present empty is present empty",
        "ptr=%p len=%zu", (const void *)d.ptr, d.len);
  lp_slice_free(&d);
  check(d.ptr == NULL, "slice_free clears", "ptr=%p", (const void *)d.ptr);
  rc = lp_slice_dup(S("hello"), &e);
  check(rc == 0 && slice_is(e, "hello"), "dup copies", "%s", sdesc(e));
  lp_slice_free(&e);

  check(lp_slice_cmp(S("a"), S("b")) < 0, "cmp a < b", "failed");
  check(lp_slice_cmp(S("b"), S("a")) > 0, "cmp b > a", "failed");
  check(lp_slice_cmp(S("a"), S("ab")) < 0, "cmp prefix sorts first", "failed");
  check(lp_slice_cmp(S("ab"), S("ab")) == 0, "cmp equal", "failed");
  check(lp_slice_cmp(S(""), LP_SLICE_NONE) == 0, "cmp empty == absent", "failed");
  check(lp_slice_cmp((lp_slice){"\xff", 1}, (lp_slice){"\x01", 1}) > 0, "cmp is unsigned bytewise",
        "failed");
  check(lp_slice_cmp((lp_slice){"a\0b", 3}, (lp_slice){"a\0a", 3}) > 0, "cmp handles NUL bytes",
        "failed");
}

static void test_codes(void) {
  int i, ok = 1;
  lp_err e;

  for (i = 0; i < LP_CODE_MAX; i++) {
    const char *n = lp_code_name((lp_code)i);
    ok &= n != NULL && lp_code_from_name(n, strlen(n)) == (lp_code)i;
  }
  check(ok, "every code name round-trips", "failed");
  check(strcmp(lp_code_name(LP_OK), "OK") == 0 && strcmp(lp_code_name(LP_EIO), "EIO") == 0 &&
            strcmp(lp_code_name(LP_ELEADERLOST), "ELEADERLOST") == 0 &&
            strcmp(lp_code_name(LP_EREMOTE), "EREMOTE") == 0 &&
            strcmp(lp_code_name(LP_ETIMEDOUT), "ETIMEDOUT") == 0,
        "code names match the enum", "failed");
  check(lp_code_from_name("ENOPE", 5) == LP_OK && lp_code_from_name("EIOX", 3) == LP_EIO &&
            lp_code_from_name("EI", 2) == LP_OK,
        "unknown names give OK; length is honoured", "failed");

  lp_err_set(&e, LP_EINVAL, "get: %s %d", "bad", 42);
  check(e.code == LP_EINVAL && strcmp(e.msg, "get: bad 42") == 0, "err_set formats", "%s", e.msg);
  {
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    lp_err_set(&e, LP_EIO, "op: %s", big);
    check(strlen(e.msg) == sizeof e.msg - 1 && strncmp(e.msg, "op: xxx", 7) == 0,
          "err_set truncates safely", "len=%zu", strlen(e.msg));
  }
  lp_err_set(&e, LP_EIO, "short");
  lp_err_set(&e, LP_EPROTO, "outer: %s", e.msg);
  check(e.code == LP_EPROTO && strcmp(e.msg, "outer: short") == 0,
        "err_set may format its own message", "%s", e.msg);

  {
    struct {
      const char *s;
      lp_code c;
    } cases[] = {
        {"IO error: lock /tmp/x/db/LOCK: Resource temporarily unavailable", LP_ELOCKED},
        {"IO error: lock /tmp/x/db/LOCK: already held by process", LP_ELOCKED},
        {"IO error: /tmp/ro/LOCK: Permission denied", LP_EACCES},
        {"NotFound: /tmp/nope/x/db/LOCK: No such file or directory", LP_ENOENT},
        {"IO error: /tmp/file/LOCK: Not a directory", LP_ENOTDIR},
        {"Invalid argument: /tmp/x/db: exists (error_if_exists is true)", LP_EEXIST},
        {"Invalid argument: /tmp/x/db/CURRENT: does not exist (create_if_missing is false)",
         LP_ENOENT},
        {"Invalid argument: something else", LP_EINVAL},
        {"Corruption: bad block", LP_ECORRUPT},
        {"NotFound: ", LP_ENOENT},
        {"IO error: /tmp/x/db/000005.log: No space left on device", LP_EIO},
        {"Not implemented: x", LP_EIO},
        {"", LP_EIO},
    };
    size_t n;
    for (n = 0; n < sizeof cases / sizeof cases[0]; n++) {
      char what[200];
      lp_code got = lp_code_from_leveldb(cases[n].s);
      snprintf(what, sizeof what, "leveldb '%s' -> %s", cases[n].s, lp_code_name(cases[n].c));
      check(got == cases[n].c, what, "got %s", lp_code_name(got));
    }
    check(lp_code_from_leveldb(NULL) == LP_EIO, "leveldb NULL status -> EIO", "failed");
  }

  {
    uint64_t a = lp_now_ns(), b = lp_now_ns();
    check(a > 0 && b >= a, "monotonic clock", "a=%llu b=%llu", (unsigned long long)a,
          (unsigned long long)b);
  }
}

static void test_ranges(void) {
  lp_range r;
  struct {
    const char *gt, *gte, *lt, *lte, *key;
    int want;
  } cases[] = {
      {NULL, NULL, NULL, NULL, "", 1},
      {NULL, NULL, NULL, NULL, "anything", 1},
      {"b", NULL, NULL, NULL, "a", 0},
      {"b", NULL, NULL, NULL, "b", 0},
      {"b", NULL, NULL, NULL, "b\x01", 1},
      {"b", NULL, NULL, NULL, "c", 1},
      {NULL, "b", NULL, NULL, "a", 0},
      {NULL, "b", NULL, NULL, "b", 1},
      {NULL, "b", NULL, NULL, "c", 1},
      {NULL, NULL, "b", NULL, "a", 1},
      {NULL, NULL, "b", NULL, "b", 0},
      {NULL, NULL, "b", NULL, "ab", 1},
      {NULL, NULL, NULL, "b", "b", 1},
      {NULL, NULL, NULL, "b", "ba", 0},
      {NULL, NULL, NULL, "b", "a", 1},
      /* gt together with gte: both must hold (conjunction, not "gt wins") */
      {"b", "a", NULL, NULL, "a", 0},
      {"b", "a", NULL, NULL, "b", 0},
      {"b", "a", NULL, NULL, "c", 1},
      {"a", "c", NULL, NULL, "b", 0},
      {"a", "c", NULL, NULL, "c", 1},
      /* lt together with lte */
      {NULL, NULL, "c", "b", "b", 1},
      {NULL, NULL, "c", "b", "bb", 0},
      {NULL, NULL, "b", "c", "b", 0},
      {NULL, NULL, "b", "c", "a", 1},
      /* all four */
      {"a", "b", "y", "z", "b", 1},
      {"a", "b", "y", "z", "y", 0},
      {"a", "b", "y", "z", "m", 1},
      {"a", "b", "y", "z", "a", 0},
      /* empty bounds are real bounds */
      {"", NULL, NULL, NULL, "", 0},
      {"", NULL, NULL, NULL, "a", 1},
      {NULL, "", NULL, NULL, "", 1},
      {NULL, NULL, "", NULL, "a", 0},
      {NULL, NULL, NULL, "", "", 1},
      /* crossed bounds contain nothing */
      {NULL, "z", "a", NULL, "m", 0},
  };
  size_t i;

  lp_range_init(&r);
  check(r.keys == 1 && r.values == 1 && r.limit == -1 && r.reverse == 0 && r.gt.ptr == NULL &&
            r.gte.ptr == NULL && r.lt.ptr == NULL && r.lte.ptr == NULL,
        "range_init defaults", "failed");
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[200];
    int got;
    lp_range_init(&r);
    if (cases[i].gt) r.gt = S(cases[i].gt);
    if (cases[i].gte) r.gte = S(cases[i].gte);
    if (cases[i].lt) r.lt = S(cases[i].lt);
    if (cases[i].lte) r.lte = S(cases[i].lte);
    got = lp_range_contains(&r, S(cases[i].key));
    snprintf(what, sizeof what, "range gt=%s gte=%s lt=%s lte=%s contains '%s' == %d",
             cases[i].gt ? cases[i].gt : "-", cases[i].gte ? cases[i].gte : "-",
             cases[i].lt ? cases[i].lt : "-", cases[i].lte ? cases[i].lte : "-", cases[i].key,
             cases[i].want);
    check(got == cases[i].want, what, "got %d", got);
    /* one bound per side selects the same keys */
    lp_range_one_bound(&r);
    got = lp_range_contains(&r, S(cases[i].key));
    snprintf(what, sizeof what, "one_bound(gt=%s gte=%s lt=%s lte=%s) contains '%s' == %d",
             cases[i].gt ? cases[i].gt : "-", cases[i].gte ? cases[i].gte : "-",
             cases[i].lt ? cases[i].lt : "-", cases[i].lte ? cases[i].lte : "-", cases[i].key,
             cases[i].want);
    check(got == cases[i].want && !(r.gt.ptr && r.gte.ptr) && !(r.lt.ptr && r.lte.ptr), what,
          "got %d", got);
  }
}

/* levelparty's sync flag (field 15): written last and only when true, read
 * on Put, Delete, Batch and Clear, skipped like any unknown field elsewhere
 * (docs/PROTOCOL.md, "Durability"). */
static void test_sync_flag(void) {
  lp_buf rest = {0}, f = {0}, want = {0};
  lp_request r;
  lp_slice pl;
  size_t used;
  lp_range range;

  lp_wire_rest_put(&rest, S("k1"), S("v"));
  lp_wire_rest_sync(&rest);
  lp_wire_frame(&f, LP_REQ_PUT, 0, (lp_slice){rest.ptr, rest.len});
  check(same_bytes(&f, "0c 01 08 00 12 02 6b 31 1a 01 76 78 01", "put with sync"),
        "put with sync: the flag is 78 01, after the value (example frame)", "failed");
  check(lp_wire_next_frame(f.ptr, f.len, 0, &pl, &used) == LP_WIRE_OK &&
            lp_wire_decode_request(pl, &r) == LP_WIRE_OK && r.sync == 1 && slice_is(r.value, "v"),
        "and decodes with sync set", "failed");
  rest.len = f.len = 0;
  lp_wire_rest_key(&rest, S("k1"));
  lp_wire_frame(&f, LP_REQ_DEL, 3, (lp_slice){rest.ptr, rest.len});
  check(lp_wire_next_frame(f.ptr, f.len, 0, &pl, &used) == LP_WIRE_OK &&
            lp_wire_decode_request(pl, &r) == LP_WIRE_OK && r.sync == 0,
        "a delete without the flag: sync 0, the bytes Node sends", "failed");
  rest.len = f.len = 0;
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("a"), S("1"));
  lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("b"), LP_SLICE_NONE);
  lp_wire_rest_sync(&rest);
  lp_wire_frame(&f, LP_REQ_BATCH, 1, (lp_slice){rest.ptr, rest.len});
  check(lp_wire_next_frame(f.ptr, f.len, 0, &pl, &used) == LP_WIRE_OK &&
            lp_wire_decode_request(pl, &r) == LP_WIRE_OK && r.sync == 1 && r.count == 2,
        "a batch with the flag after its ops", "failed");
  rest.len = f.len = 0;
  lp_range_init(&range);
  lp_wire_rest_clear(&rest, &range);
  lp_wire_rest_sync(&rest);
  lp_wire_frame(&f, LP_REQ_CLEAR, 2, (lp_slice){rest.ptr, rest.len});
  check(lp_wire_next_frame(f.ptr, f.len, 0, &pl, &used) == LP_WIRE_OK &&
            lp_wire_decode_request(pl, &r) == LP_WIRE_OK && r.sync == 1 && r.opts.present,
        "a clear with the flag after its options", "failed");
  spec_bytes(&want, "00 08 00 12 02 6b 31 78 01");
  check(lp_wire_decode_request((lp_slice){want.ptr, want.len}, &r) == LP_WIRE_OK && r.sync == 0,
        "field 15 on a get is skipped as unknown", "failed");
  spec_bytes(&want, "01 08 00 12 02 6b 31 1a 00 7a 00");
  check(lp_wire_decode_request((lp_slice){want.ptr, want.len}, &r) == LP_WIRE_MALFORMED,
        "field 15 as bytes on a put does not decode", "failed");
  lp_buf_free(&rest);
  lp_buf_free(&f);
  lp_buf_free(&want);
}

int main(void) {
  test_request_examples();
  test_reply_examples();
  test_varints();
  test_zigzag();
  test_frames();
  test_decoder_edges();
  test_encoder_options();
  test_buf();
  test_codes();
  test_ranges();
  test_sync_flag();
  return tap_done();
}

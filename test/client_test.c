/*
 * client_test.c: the follower client core (src/client.c).
 *
 * Part 1 checks the bytes the client writes and how it reads hand-built
 * replies (ids, replay order, timeouts, iterator flow control) with the codec
 * alone.  Part 2 runs the client against a real LevelDB through lp_session over
 * memory, with leader changes (reset, new session, replay) at random points of
 * iterator streams, and checks exactly-once, in-order delivery and the bound on
 * buffered entries.
 *
 * Build and run: make build/test/client_test && build/test/client_test
 * (ASan+UBSan: make build/asan/test/client_test).  LP_TEST_SEED=n changes
 * the random schedule.
 */
#include "client_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int buf_is(const lp_buf *b, const char *hex) {
  size_t n = 0;
  unsigned v;
  const char *p = hex;
  while (*p) {
    if (*p == ' ') {
      p++;
      continue;
    }
    if (sscanf(p, "%2x", &v) != 1) return 0;
    if (n >= b->len || (unsigned char)b->ptr[n] != v) return 0;
    n++;
    p += 2;
  }
  return n == b->len;
}

/* ------------------------------------------------------------------------ */
/* Request helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t sub_key(lp_client *c, int tag, const char *k, uint64_t dl) {
  lp_buf r = {0};
  uint64_t t;
  if (lp_wire_rest_key(&r, S(k))) return 0;
  t = lp_client_submit(c, tag, (lp_slice){r.ptr, r.len}, dl);
  lp_buf_free(&r);
  return t;
}

static uint64_t sub_put(lp_client *c, const char *k, const char *v, uint64_t dl) {
  lp_buf r = {0};
  uint64_t t;
  if (lp_wire_rest_put(&r, S(k), S(v))) return 0;
  t = lp_client_submit(c, LP_REQ_PUT, (lp_slice){r.ptr, r.len}, dl);
  lp_buf_free(&r);
  return t;
}

/* Takes a finished request and decodes its reply.  Returns the lp_result code
 * (LP_OK with *resp filled; resp's slices point into res->payload). */
static int take(lp_client *c, uint64_t t, lp_result *res, lp_response *resp) {
  memset(res, 0, sizeof *res);
  if (lp_client_take(c, t, res)) return -100;
  if (res->code != LP_OK) return (int)res->code;
  if (lp_wire_decode_response((lp_slice){res->payload.ptr, res->payload.len}, resp) != LP_WIRE_OK)
    return -101;
  return LP_OK;
}

/* ------------------------------------------------------------------------ */
/* Part 1: codec level                                                        */
/* ------------------------------------------------------------------------ */

static void test_frames(void) {
  lp_client *c = lp_client_new(NULL);
  lp_buf *out = lp_client_out(c);
  uint64_t t1, t2;
  lp_request rq[8];
  lp_buf rest = {0};

  t1 = sub_key(c, LP_REQ_GET, "k1", 0);
  check(t1 > 0 && buf_is(out, "07 00 08 00 12 02 6b 31"),
        "get('k1') id 0 frames as 07 00 08 00 12 02 6b31", "failed");
  out->len = 0;
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("k2"), S("22"));
  lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("k9"), LP_SLICE_NONE);
  t2 = lp_client_submit(c, LP_REQ_BATCH, (lp_slice){rest.ptr, rest.len}, 0);
  check(t2 == t1 + 1, "tokens grow with submission", "failed");
  check(
      buf_is(out,
             "1d 03 08 01 12 0d 0a 03 707574 12 02 6b32 1a 02 3232 12 09 0a 03 64656c 12 02 6b39"),
      "batch frame with id 1 matches the example layout", "failed");
  check(decode_reqs(out, rq, 8) == 1 && rq[0].tag == LP_REQ_BATCH && rq[0].id == 1 &&
            rq[0].count == 2,
        "batch frame decodes with two ops", "failed");
  check(lp_client_pending(c) == 2, "two pending", "failed");
  check(lp_client_submit(c, LP_REQ_ITER, (lp_slice){rest.ptr, rest.len}, 0) == 0,
        "submit refuses the iterator tag", "failed");
  check(lp_client_submit(c, 42, (lp_slice){rest.ptr, rest.len}, 0) == 0,
        "submit refuses unknown tags", "failed");
  lp_buf_free(&rest);
  lp_client_free(c); /* frees the pending requests */
}

/* The replies used by the split test, all addressed to requests 0..3. */
static void build_replies(lp_buf *b) {
  lp_buf vals = {0};
  lp_wire_enc_callback(b, 2, NULL, 0, LP_SLICE_NONE); /* put ok */
  lp_buf_append(b, "\x00", 1);                        /* empty frame */
  lp_wire_enc_callback(b, 9, NULL, 0, S("nobody"));   /* unknown id */
  lp_wire_enc_iterdata(b, 5, S("a"), S("b"));         /* unknown iterator */
  lp_wire_rest_getmany_value(&vals, S("{\"x\":1}"));
  lp_wire_rest_getmany_value(&vals, LP_SLICE_NONE);
  lp_wire_rest_getmany_value(&vals, S("2"));
  lp_wire_enc_getmany(b, 3, NULL, 0, (lp_slice){vals.ptr, vals.len});
  lp_wire_enc_callback(b, 1, "NotFound: ", 10, LP_SLICE_NONE); /* get miss */
  lp_wire_enc_callback(b, 0, NULL, 0, S("{\"x\":1}"));         /* get hit */
  lp_buf_free(&vals);
}

static int run_split(const lp_buf *replies, size_t cut1, size_t cut2, int bytewise) {
  lp_client *c = lp_client_new(NULL);
  uint64_t tg, tm, tp, tgm;
  lp_buf rest = {0};
  lp_err err;
  lp_result res;
  lp_response r;
  int ok = 1;
  size_t i, cur = 0;
  tg = sub_key(c, LP_REQ_GET, "k1", 0);
  tm = sub_key(c, LP_REQ_GET, "nope", 0);
  tp = sub_put(c, "k", "v", 0);
  lp_wire_rest_getmany_key(&rest, S("k1"));
  lp_wire_rest_getmany_key(&rest, S("nope"));
  lp_wire_rest_getmany_key(&rest, S("k2"));
  tgm = lp_client_submit(c, LP_REQ_GETMANY, (lp_slice){rest.ptr, rest.len}, 0);
  lp_buf_free(&rest);
  if (bytewise) {
    for (i = 0; i < replies->len; i++)
      if (lp_client_feed(c, replies->ptr + i, 1, &err)) ok = 0;
  } else {
    size_t cuts[3] = {cut1, cut2, replies->len};
    for (i = 0; i < 3; i++) {
      if (cuts[i] < cur) continue;
      if (lp_client_feed(c, replies->ptr + cur, cuts[i] - cur, &err)) ok = 0;
      cur = cuts[i];
    }
  }
  ok = ok && lp_client_pending(c) == 0;
  ok = ok && take(c, tg, &res, &r) == LP_OK && r.tag == LP_RES_CALLBACK && r.id == 0 &&
       slice_eq(r.value, "{\"x\":1}") && !r.error.ptr;
  lp_result_free(&res);
  ok = ok && take(c, tm, &res, &r) == LP_OK && slice_eq(r.error, "NotFound: ");
  lp_result_free(&res);
  ok = ok && take(c, tp, &res, &r) == LP_OK && !r.error.ptr && !r.value.ptr;
  lp_result_free(&res);
  if (ok && take(c, tgm, &res, &r) == LP_OK && r.tag == LP_RES_GETMANY && r.count == 3) {
    size_t cursor = 0;
    lp_slice v[3];
    for (i = 0; i < 3; i++)
      ok = ok && lp_wire_next_value(&r, &cursor, &v[i]) == 1;
    ok = ok && slice_eq(v[0], "{\"x\":1}") && v[1].ptr == NULL && slice_eq(v[2], "2");
  } else {
    ok = 0;
  }
  lp_result_free(&res);
  ok = ok && lp_client_take(c, tg, &res) == -1 && lp_client_done(c, tg) == 1;
  lp_client_free(c);
  return ok;
}

static void test_feed_splits(void) {
  lp_buf replies = {0};
  size_t a, b, bad = 0, runs = 0;
  build_replies(&replies);
  check(run_split(&replies, replies.len, replies.len, 0), "replies in any order, fed whole",
        "failed");
  check(run_split(&replies, 0, 0, 1), "replies fed one byte at a time", "failed");
  for (a = 0; a <= replies.len; a++) {
    runs++;
    if (!run_split(&replies, a, a, 0)) bad++;
  }
  check(bad == 0, "replies split at every byte boundary", "%zu of %zu splits failed", bad, runs);
  bad = runs = 0;
  for (a = 0; a <= replies.len; a += 3)
    for (b = a; b <= replies.len; b += 5) {
      runs++;
      if (!run_split(&replies, a, b, 0)) bad++;
    }
  check(bad == 0, "replies split in three pieces", "%zu of %zu failed", bad, runs);
  lp_buf_free(&replies);
}

static uint32_t last_id(lp_client *c) {
  lp_request rq[64];
  int n = decode_reqs(lp_client_out(c), rq, 64);
  return n > 0 ? rq[n - 1].id : 0xFFFFFFFFu;
}

static void reply_ok(lp_client *c, uint32_t id) {
  lp_buf b = {0};
  lp_err err;
  lp_wire_enc_callback(&b, id, NULL, 0, LP_SLICE_NONE);
  lp_client_feed(c, b.ptr, b.len, &err);
  lp_buf_free(&b);
}

static void test_ids(void) {
  lp_client *c = lp_client_new(NULL);
  lp_result res;
  uint64_t t[8];
  int i, ok = 1;
  for (i = 0; i < 3; i++) {
    t[i] = sub_key(c, LP_REQ_GET, "a", 0);
    ok = ok && last_id(c) == (uint32_t)i;
  }
  check(ok, "ids start at 0 and are dense", "failed");
  reply_ok(c, 1);
  check(lp_client_done(c, t[1]) && !lp_client_done(c, t[0]), "reply completes only its id",
        "failed");
  t[3] = sub_key(c, LP_REQ_GET, "a", 0);
  check(last_id(c) == 1, "a freed id is reused at once", "failed");
  reply_ok(c, 2);
  reply_ok(c, 0);
  t[4] = sub_key(c, LP_REQ_GET, "a", 0);
  check(last_id(c) == 0, "lowest free slot first (0)", "failed");
  t[5] = sub_key(c, LP_REQ_GET, "a", 0);
  check(last_id(c) == 2, "then the next lowest (2)", "failed");
  t[6] = sub_key(c, LP_REQ_GET, "a", 0);
  check(last_id(c) == 3, "then a new slot (3)", "failed");
  check(lp_client_pending(c) == 4, "pending counts 4", "failed");
  for (i = 0; i < 7; i++) {
    if (lp_client_take(c, t[i], &res) == 0) lp_result_free(&res);
  }
  check(lp_client_done(c, t[6]) == 0, "pending request is not done", "failed");
  check(lp_client_done(c, 999) == 1, "unknown token counts as done", "failed");
  lp_client_free(c);
}

/* Reference 4.1: get x (id 0) pending, put old (id 1), get x done, put new
 * reuses id 0; after reset + replay, put old must come before put new. */
static void test_replay_order(void) {
  lp_client *c = lp_client_new(NULL);
  lp_request rq[8];
  uint64_t tg, told, tnew, tg2;
  int n;
  tg = sub_key(c, LP_REQ_GET, "x", 0);
  told = sub_put(c, "k", "old", 0);
  reply_ok(c, 0);
  tnew = sub_put(c, "k", "new", 0);
  check(last_id(c) == 0, "put new reuses id 0", "failed");
  lp_client_reset(c);
  check(lp_client_out(c)->len == 0 && lp_client_pending(c) == 2, "reset clears out, keeps pending",
        "failed");
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 2 && rq[0].tag == LP_REQ_PUT && slice_eq(rq[0].value, "old") &&
            rq[1].tag == LP_REQ_PUT && slice_eq(rq[1].value, "new"),
        "replay sends put old then put new (submission order)", "failed");
  check(n == 2 && rq[0].id == 0 && rq[1].id == 1, "replayed ids are fresh and dense", "failed");
  check(lp_client_done(c, tg) == 1, "done request stays done across reset", "failed");
  /* A request submitted between reset and replay is framed in order too. */
  lp_client_reset(c);
  tg2 = sub_key(c, LP_REQ_GET, "y", 0);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 3 && slice_eq(rq[0].value, "old") && slice_eq(rq[1].value, "new") &&
            rq[2].tag == LP_REQ_GET && slice_eq(rq[2].key, "y"),
        "request submitted after reset comes after older ones, no duplicate", "failed");
  (void)told;
  (void)tnew;
  (void)tg2;
  lp_client_free(c);
}

static void test_timeouts(void) {
  lp_client *c = lp_client_new(NULL);
  lp_result res;
  uint64_t t0, t1, t2, t3;
  int rc;
  t0 = sub_key(c, LP_REQ_GET, "a", 100);
  t1 = sub_key(c, LP_REQ_GET, "b", 50);
  t2 = sub_key(c, LP_REQ_GET, "c", 0);
  check(lp_client_next_deadline(c) == 50, "next deadline is the earliest", "failed");
  check(lp_client_expire(c, 49) == 0, "nothing expires early", "failed");
  check(lp_client_expire(c, 50) == 1 && lp_client_done(c, t1) && !lp_client_done(c, t0),
        "expire finishes the due request only", "failed");
  check(lp_client_next_deadline(c) == 100, "next deadline moves on", "failed");
  rc = lp_client_take(c, t1, &res);
  check(rc == 0 && res.code == LP_ETIMEDOUT && res.msg && strstr(res.msg, "timeout") != NULL,
        "timed-out request has ETIMEDOUT", "%s", res.msg ? res.msg : "(null)");
  lp_result_free(&res);
  t3 = sub_key(c, LP_REQ_GET, "d", 0);
  check(last_id(c) == 3, "timed-out request keeps its id reserved (new one got 3)", "failed");
  reply_ok(c, 1); /* the late reply of the timed-out request */
  check(!lp_client_done(c, t3) && lp_client_pending(c) == 3, "late reply lands on no one",
        "failed");
  sub_key(c, LP_REQ_GET, "e", 0);
  check(last_id(c) == 1, "after the late reply id 1 is free again", "failed");
  lp_client_expire(c, 1000);
  check(lp_client_done(c, t0) && lp_client_next_deadline(c) == 0, "all deadlines expired",
        "failed");
  /* forget */
  lp_client_forget(c, t2);
  check(lp_client_pending(c) == 2 && lp_client_done(c, t2), "forgotten request is not pending",
        "failed");
  sub_key(c, LP_REQ_GET, "f", 0);
  check(last_id(c) == 4, "forgotten request keeps its id reserved", "failed");
  lp_client_free(c);
}

/* The finished-token log the luv driver drains (lp_client_log_finished). */
static void test_finished_log(void) {
  lp_client *c = lp_client_new(NULL);
  const uint64_t *fin;
  size_t n;
  uint64_t t[200];
  int i, ok;
  t[0] = sub_key(c, LP_REQ_GET, "a", 0);
  reply_ok(c, 0);
  check(lp_client_finished(c, &fin, &n) == 0 && n == 0, "off: nothing is logged", "failed");
  lp_client_log_finished(c, 1);
  t[1] = sub_key(c, LP_REQ_GET, "b", 0);  /* id 0 */
  t[2] = sub_key(c, LP_REQ_GET, "c", 10); /* id 1, deadline 10 */
  t[3] = sub_key(c, LP_REQ_GET, "d", 0);  /* id 2 */
  t[4] = sub_key(c, LP_REQ_GET, "e", 0);  /* id 3 */
  reply_ok(c, 2);
  lp_client_expire(c, 10);
  lp_client_forget(c, t[4]);
  reply_ok(c, 0);
  check(lp_client_finished(c, &fin, &n) == 0 && n == 4 && fin[0] == t[3] && fin[1] == t[2] &&
            fin[2] == t[4] && fin[3] == t[1],
        "on: reply, expiry, forget and reply logged in finishing order", "failed");
  check(lp_client_finished(c, &fin, &n) == 0 && n == 0, "handing the log over empties it",
        "failed");
  for (i = 0; i < 200; i++)
    t[i] = sub_key(c, LP_REQ_GET, "x", 0);
  lp_client_fail_all(c, LP_ELEADERLOST, "gone");
  ok = lp_client_finished(c, &fin, &n) == 0 && n == 200;
  for (i = 0; ok && i < 200; i++)
    ok = fin[i] == t[i];
  check(ok, "failing all logs every token, in order, past the first allocation", "failed");
  t[0] = sub_key(c, LP_REQ_GET, "y", 0);
  lp_client_fail_all(c, LP_ELEADERLOST, "gone");
  lp_client_log_finished(c, 0);
  check(lp_client_finished(c, &fin, &n) == 0 && n == 0, "switching it off empties it", "failed");
  lp_client_free(c);
}

/* A log nobody drains (luv loaded, its loop idle, every call blocking)
 * stays bounded: past LP_FINISHED_LOG_MAX tokens it is dropped and marked
 * lost, and the poller then asks after every token it waits for. */
static void test_finished_log_bound(void) {
  lp_client *c = lp_client_new(NULL);
  const uint64_t *fin;
  size_t n = 0;
  uint64_t i, last = 0;
  lp_result res = {0};
  int taken = 1;
  lp_client_log_finished(c, 1);
  for (i = 0; i < 3 * LP_FINISHED_LOG_MAX + 7; i++) {
    last = sub_key(c, LP_REQ_GET, "k", 0);
    reply_ok(c, 0);
    /* the blocking caller takes its own result, as party.c does */
    taken = taken && lp_client_take(c, last, &res) == 0;
    lp_result_free(&res);
  }
  check(taken, "blocking callers take their results while the log is on", "failed");
  check(lp_client_finished(c, &fin, &n) == -1 && n < LP_FINISHED_LOG_MAX,
        "an undrained log past its bound is dropped and reported lost", "n = %zu", n);
  last = sub_key(c, LP_REQ_GET, "k", 0);
  reply_ok(c, 0);
  check(lp_client_finished(c, &fin, &n) == 0 && n == 1 && fin[0] == last,
        "after a loss is reported, the log records again", "n = %zu", n);
  lp_client_free(c);
}

static void test_mismatch_and_errors(void) {
  lp_client *c;
  lp_client_opts o;
  lp_buf b = {0};
  lp_err err;
  lp_result res;
  uint64_t t;
  c = lp_client_new(NULL);
  t = sub_key(c, LP_REQ_GET, "a", 0);
  lp_wire_enc_getmany(&b, 0, NULL, 0, (lp_slice){"", 0});
  check(lp_client_feed(c, b.ptr, b.len, &err) == 0, "feed accepts a reply of the wrong type",
        "failed");
  check(lp_client_take(c, t, &res) == 0 && res.code == LP_EREMOTE,
        "GETMANY reply to a GET completes it with EREMOTE", "failed");
  lp_result_free(&res);
  b.len = 0;
  lp_buf_append(&b, "\x03\x09\x08\x00", 4); /* unknown response tag 9 */
  check(lp_client_feed(c, b.ptr, b.len, &err) == 0, "unknown reply tag is ignored", "failed");
  b.len = 0;
  lp_buf_append(&b, "\x03\x00\x0a\x00", 4); /* callback without id */
  check(lp_client_feed(c, b.ptr, b.len, &err) == -1 && err.code == LP_EPROTO,
        "malformed reply is a protocol error", "failed");
  lp_client_free(c);

  lp_client_opts_init(&o);
  o.max_frame = 16;
  c = lp_client_new(&o);
  t = sub_key(c, LP_REQ_GET, "a", 0);
  b.len = 0;
  lp_buf_append(&b, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11);
  check(lp_client_feed(c, b.ptr, b.len, &err) == -1 && err.code == LP_EPROTO,
        "a length prefix over 10 bytes is a protocol error", "failed");
  lp_client_reset(c);
  b.len = 0;
  lp_wire_enc_callback(&b, 0, NULL, 0, S("0123"));
  lp_client_replay(c);
  check(lp_client_feed(c, b.ptr, b.len, &err) == 0 && lp_client_done(c, t),
        "after reset and replay a small reply completes the request", "failed");
  lp_client_take(c, t, &res);
  lp_result_free(&res);
  lp_buf_free(&b);
  lp_client_free(c);
}

/* A reply frame over max_frame (from a leader that does not check what it
 * sends) fails only the request it answers, with ETOOLARGE, as soon as its
 * tag and id are in; its bytes are dropped as they arrive, and the frames
 * after it are read as usual: no protocol error, no reconnect. */
static void test_too_large_replies(void) {
  lp_client_opts o;
  lp_client *c;
  lp_buf b = {0}, big = {0};
  lp_err err;
  lp_result res;
  lp_response r;
  lp_range range;
  lp_citer *it;
  lp_slice k, v;
  uint64_t t0, t1;
  size_t i, ok = 1;
  char val[200];
  memset(val, 'v', sizeof val);
  lp_client_opts_init(&o);
  o.max_frame = 64;
  c = lp_client_new(&o);
  t0 = sub_key(c, LP_REQ_GET, "big", 0);
  t1 = sub_key(c, LP_REQ_GET, "small", 0);
  lp_wire_enc_callback(&big, 0, NULL, 0, (lp_slice){val, sizeof val});
  lp_wire_enc_callback(&b, 1, NULL, 0, S("ok"));
  check(lp_client_feed(c, big.ptr, 3, &err) == 0 && !lp_client_done(c, t0),
        "an oversized reply waits for its tag and id", "failed");
  check(lp_client_feed(c, big.ptr + 3, 2, &err) == 0 && lp_client_done(c, t0) &&
            !lp_client_done(c, t1),
        "then fails its request alone", "failed");
  memset(&res, 0, sizeof res);
  (void)lp_client_take(c, t0, &res);
  check(res.code == LP_ETOOLARGE && res.msg &&
            strcmp(res.msg, "the reply is 206 bytes, over the frame limit of 64") == 0,
        "with ETOOLARGE and the sizes", "%s", res.msg ? res.msg : "(null)");
  lp_result_free(&res);
  for (i = 5; i < big.len; i += 7)
    ok = ok && lp_client_feed(c, big.ptr + i, i + 7 < big.len ? 7 : big.len - i, &err) == 0;
  check(ok && !lp_client_done(c, t1), "its bytes are dropped as they come, never a protocol error",
        "failed");
  check(lp_client_feed(c, b.ptr, b.len, &err) == 0 && take(c, t1, &res, &r) == LP_OK &&
            slice_eq(r.value, "ok"),
        "the next reply completes its request", "failed");
  lp_result_free(&res);
  /* in one feed: the oversized frame whole, then a normal one */
  t0 = sub_key(c, LP_REQ_GET, "big", 0);
  t1 = sub_key(c, LP_REQ_GET, "small", 0);
  b.len = 0;
  lp_buf_append(&b, big.ptr, big.len);
  lp_wire_enc_callback(&b, 1, NULL, 0, S("ok"));
  check(lp_client_feed(c, b.ptr, b.len, &err) == 0 && lp_client_take(c, t0, &res) == 0 &&
            res.code == LP_ETOOLARGE,
        "an oversized frame fed whole fails its request", "failed");
  lp_result_free(&res);
  check(take(c, t1, &res, &r) == LP_OK && slice_eq(r.value, "ok"),
        "and the frame after it in the same feed is read", "failed");
  lp_result_free(&res);
  /* an iterator entry over the limit fails the iterator after what it holds */
  lp_range_init(&range);
  it = lp_client_iter_open(c, &range);
  lp_client_out(c)->len = 0;
  feed_entry(c, 0, "a", "1");
  big.len = 0;
  lp_wire_enc_iterdata(&big, 0, S("b"), (lp_slice){val, sizeof val});
  check(lp_client_feed(c, big.ptr, 10, &err) == 0 && buf_is(lp_client_out(c), "05 04 08 00 10 00"),
        "an oversized entry ends the iterator on the wire (batch:0)", "failed");
  check(lp_client_feed(c, big.ptr + 10, big.len - 10, &err) == 0, "and its bytes are dropped",
        "failed");
  check(lp_client_iter_next(c, it, &k, &v, &err) == 1 && slice_eq(k, "a") &&
            lp_client_iter_next(c, it, &k, &v, &err) == -1 && err.code == LP_ETOOLARGE &&
            strcmp(err.msg, "iterator: the entry is 209 bytes, over the frame limit of 64") == 0,
        "the entry before it comes out, then ETOOLARGE", "%s", err.msg);
  lp_client_reset(c);
  lp_client_replay(c);
  check(lp_client_out(c)->len == 0 && lp_client_iter_next(c, it, &k, &v, &err) == -1 &&
            err.code == LP_ETOOLARGE,
        "a reconnect does not reopen it", "failed");
  lp_client_iter_close(c, it);
  lp_buf_free(&b);
  lp_buf_free(&big);
  lp_client_free(c);
}

/* A request whose frame exceeds max_frame fails at once with ETOOLARGE and
 * never reaches the wire; one of exactly max_frame goes out. */
static void test_too_large_requests(void) {
  lp_client_opts o;
  lp_client *c;
  lp_result res;
  lp_buf rest = {0};
  lp_request rq[4];
  uint64_t t;
  lp_client_opts_init(&o);
  o.max_frame = 16;
  c = lp_client_new(&o);
  /* payload: tag, 08 00, 12 01 6b, 1a 09 + 9 bytes = 17 */
  t = sub_put(c, "k", "123456789", 0);
  check(t > 0 && lp_client_done(c, t) && lp_client_pending(c) == 0 && lp_client_out(c)->len == 0,
        "a put one byte over max_frame is finished at once and never sent", "failed");
  memset(&res, 0, sizeof res);
  (void)lp_client_take(c, t, &res);
  check(res.code == LP_ETOOLARGE && res.msg &&
            strcmp(res.msg, "the request is 17 bytes, over the frame limit of 16") == 0,
        "with ETOOLARGE and the sizes", "%s", res.msg ? res.msg : "(null)");
  lp_result_free(&res);
  t = sub_put(c, "k", "12345678", 0);
  check(t > 0 && !lp_client_done(c, t) && decode_reqs(lp_client_out(c), rq, 4) == 1 &&
            rq[0].id == 0 && lp_client_out(c)->len == 17 && lp_wire_frame_payload(0, 13) == 16,
        "a put of exactly max_frame goes out, under id 0 (no id was taken)", "failed");
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("a"), S("0123456789"));
  t = lp_client_submit(c, LP_REQ_BATCH, (lp_slice){rest.ptr, rest.len}, 0);
  check(t > 0 && lp_client_take(c, t, &res) == 0 && res.code == LP_ETOOLARGE,
        "a batch over max_frame fails with ETOOLARGE too", "failed");
  lp_result_free(&res);
  check(lp_client_pending(c) == 1 && decode_reqs(lp_client_out(c), rq, 4) == 1,
        "only the put that fits is pending and framed", "failed");
  lp_client_reset(c);
  lp_client_replay(c);
  check(decode_reqs(lp_client_out(c), rq, 4) == 1 && rq[0].tag == LP_REQ_PUT,
        "replay sends the put that fits, never the refused ones", "failed");
  lp_buf_free(&rest);
  lp_client_free(c);
}

static void test_fail_all(void) {
  lp_client *c = lp_client_new(NULL);
  lp_result res;
  lp_range r;
  lp_citer *it;
  lp_slice k, v;
  lp_err err;
  uint64_t t0, t1;
  t0 = sub_key(c, LP_REQ_GET, "a", 10);
  t1 = sub_put(c, "b", "c", 0);
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  check(lp_client_iterators(c) == 1, "one iterator open", "failed");
  lp_client_fail_all(c, LP_ELEADERLOST, "connection to leader lost");
  check(lp_client_pending(c) == 0 && lp_client_done(c, t0) && lp_client_done(c, t1),
        "fail_all finishes every pending request", "failed");
  check(lp_client_take(c, t1, &res) == 0 && res.code == LP_ELEADERLOST && res.msg &&
            strcmp(res.msg, "connection to leader lost") == 0,
        "with the given code and message", "failed");
  lp_result_free(&res);
  check(lp_client_next_deadline(c) == 0, "no deadline left", "failed");
  check(lp_client_iter_next(c, it, &k, &v, &err) == -1 && err.code == LP_ELEADERLOST,
        "iterator is in the error state", "failed");
  lp_client_replay(c);
  check(lp_client_out(c)->len == 0, "nothing is replayed after fail_all", "failed");
  lp_client_iter_close(c, it);
  check(lp_client_iterators(c) == 0, "iterator closed", "failed");
  lp_client_free(c); /* t0 result not taken: freed here */
}

static void test_iter_codec(void) {
  lp_client *c;
  lp_citer *it, *it2;
  lp_range r;
  lp_request rq[8];
  lp_slice k, v;
  lp_err err;
  lp_buf b = {0};
  int n, rc;
  memset(&err, 0, sizeof err);
  c = client_with_window(32);
  lp_range_init(&r);
  r.gte = S("k2");
  r.limit = 3;
  it = lp_client_iter_open(c, &r);
  check(buf_is(lp_client_out(c), "13 04 08 00 10 03 1a 0c 08 01 10 01 22 02 6b32 38 06 40 00"),
        "open with gte and limit 3 asks for a window of 3 (example frame, batch capped)", "failed");
  lp_client_out(c)->len = 0;
  lp_client_iter_close(c, it);
  check(buf_is(lp_client_out(c), "05 04 08 00 10 00"), "close sends {id, batch:0}", "failed");
  lp_client_out(c)->len = 0;
  /* closed with 3 entries outstanding: id 0 stays reserved */
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].id == 1 && rq[0].batch == 32 && rq[0].opts.present && rq[0].opts.keys &&
            rq[0].opts.values && rq[0].opts.has_limit && rq[0].opts.limit == -1,
        "closed iterator's id stays reserved while entries may arrive; open asks window 32",
        "failed");
  lp_client_out(c)->len = 0;
  feed_entry(c, 0, "stale1", "x");
  feed_entry(c, 0, "stale2", "x");
  check(!lp_client_iter_ready(c, it), "stale entries for the closed id are dropped", "failed");
  lp_wire_enc_iterend(&b, 0);
  lp_client_feed(c, b.ptr, b.len, &err);
  it2 = lp_client_iter_open(c, &r);
  check(last_id(c) == 0, "after the old stream's end, id 0 is free again", "failed");
  lp_client_iter_close(c, it2);
  lp_client_out(c)->len = 0;
  /* flow control with window 32: ack only when exhausted and <= 16 buffered */
  {
    int i;
    char key[16];
    for (i = 0; i < 32; i++) {
      snprintf(key, sizeof key, "k%02d", i);
      feed_entry(c, 1, key, "v");
    }
    check(lp_client_out(c)->len == 0, "no ack while more than window/2 are buffered", "failed");
    for (i = 0; i < 15; i++)
      lp_client_iter_next(c, it, &k, &v, &err);
    check(lp_client_out(c)->len == 0, "no ack at 17 buffered", "failed");
    rc = lp_client_iter_next(c, it, &k, &v, &err);
    check(rc == 1 && slice_eq(k, "k15") && slice_eq(v, "v"), "entries come in order", "failed");
    check(buf_is(lp_client_out(c), "05 04 08 01 10 20"),
          "ack {id, batch:32} at 16 buffered (example bytes)", "failed");
    lp_client_out(c)->len = 0;
    for (i = 0; i < 16; i++)
      lp_client_iter_next(c, it, &k, &v, &err);
    check(lp_client_out(c)->len == 0, "no second ack while the window is open", "failed");
    check(lp_client_iter_next(c, it, &k, &v, &err) == 2, "2 when nothing is buffered", "failed");
    lp_client_iter_wait_deadline(c, it, 500);
    check(lp_client_next_deadline(c) == 500, "iterator wait deadline counts", "failed");
    feed_entry(c, 1, "k32", "v");
    check(lp_client_next_deadline(c) == 0, "an entry clears the wait deadline", "failed");
    lp_client_iter_next(c, it, &k, &v, &err);
    /* end marker: after buffered entries; then batch:0 and the id is freed */
    feed_entry(c, 1, "k33", "v");
    b.len = 0;
    lp_wire_enc_iterend(&b, 1);
    lp_client_feed(c, b.ptr, b.len, &err);
    check(buf_is(lp_client_out(c), "05 04 08 01 10 00"), "end marker makes the client send batch:0",
          "failed");
    rc = lp_client_iter_next(c, it, &k, &v, &err);
    check(rc == 1 && slice_eq(k, "k33"), "buffered entry before the end", "failed");
    check(lp_client_iter_next(c, it, &k, &v, &err) == 0, "then 0 at the end", "failed");
    check(lp_client_iter_next(c, it, &k, &v, &err) == 0, "and 0 again", "failed");
  }
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;

  /* errors */
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  b.len = 0;
  lp_wire_enc_itererror(&b, last_id(c), "EIO: iterator: disk on fire", 27);
  lp_client_feed(c, b.ptr, b.len, &err);
  rc = lp_client_iter_next(c, it, &k, &v, &err);
  check(rc == -1 && err.code == LP_EIO &&
            strcmp(err.msg, "iterator: EIO: iterator: disk on fire") == 0,
        "remote error keeps its code", "%s", err.msg);
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  it = lp_client_iter_open(c, &r);
  b.len = 0;
  lp_wire_enc_itererror(&b, last_id(c), "too many open iterators", 23);
  lp_client_feed(c, b.ptr, b.len, &err);
  rc = lp_client_iter_next(c, it, &k, &v, &err);
  check(rc == -1 && err.code == LP_EREMOTE, "unclassified error text gives EREMOTE", "failed");
  lp_client_iter_close(c, it);
  /* timeout of a wait */
  it = lp_client_iter_open(c, &r);
  lp_client_iter_wait_deadline(c, it, 77);
  check(lp_client_expire(c, 76) == 0 && lp_client_expire(c, 77) == 1, "iterator wait expires",
        "failed");
  rc = lp_client_iter_next(c, it, &k, &v, &err);
  check(rc == -1 && err.code == LP_ETIMEDOUT, "expired iterator returns ETIMEDOUT", "failed");
  lp_client_iter_close(c, it);
  /* keys-only and values-only stripping; values on the wire only when wanted */
  lp_client_out(c)->len = 0;
  lp_range_init(&r);
  r.keys = 0;
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].opts.keys == 1 && rq[0].opts.values == 1, "values-only still asks for keys",
        "failed");
  feed_entry(c, rq[0].id, "kk", "vv");
  rc = lp_client_iter_next(c, it, &k, &v, &err);
  check(rc == 1 && k.ptr == NULL && slice_eq(v, "vv"), "key stripped for a values-only iterator",
        "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  r.keys = 1;
  r.values = 0;
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].opts.keys == 1 && rq[0].opts.values == 0,
        "keys-only does not ask for values", "failed");
  feed_entry(c, rq[0].id, "kk", "");
  rc = lp_client_iter_next(c, it, &k, &v, &err);
  check(rc == 1 && slice_eq(k, "kk") && v.ptr == NULL, "value stripped for a keys-only iterator",
        "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  /* too many entries is a protocol error */
  lp_range_init(&r);
  r.limit = 2;
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].batch == 2, "window capped by the limit", "failed");
  lp_client_out(c)->len = 0;
  feed_entry(c, rq[0].id, "a", "1");
  check(lp_client_out(c)->len == 0, "no batch:0 before the limit is reached", "failed");
  feed_entry(c, rq[0].id, "b", "1");
  {
    lp_request e[2];
    check(decode_reqs(lp_client_out(c), e, 2) == 1 && e[0].id == rq[0].id && e[0].has_batch &&
              e[0].batch == 0 && !e[0].opts.present,
          "all limit entries received: batch:0 sent at once", "failed");
  }
  check(lp_client_iter_next(c, it, &k, &v, &err) == 1 &&
            lp_client_iter_next(c, it, &k, &v, &err) == 1 &&
            lp_client_iter_next(c, it, &k, &v, &err) == 0,
        "limit 2 gives 2 entries then the end", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  lp_range_init(&r);
  lp_client_free(c);
  c = client_with_window(2);
  it = lp_client_iter_open(c, &r);
  feed_entry(c, 0, "a", "1");
  feed_entry(c, 0, "b", "1");
  b.len = 0;
  lp_wire_enc_iterdata(&b, 0, S("c"), S("1"));
  check(lp_client_feed(c, b.ptr, b.len, &err) == -1 && err.code == LP_EPROTO,
        "an entry beyond the granted window is a protocol error", "failed");
  lp_client_reset(c);
  lp_client_iter_close(c, it);
  check(lp_client_out(c)->len == 0, "closing an iterator that is off the wire sends nothing",
        "failed");
  /* limit 0 */
  r.limit = 0;
  it = lp_client_iter_open(c, &r);
  check(it && lp_client_out(c)->len == 0 && lp_client_iter_next(c, it, &k, &v, &err) == 0,
        "limit 0 ends locally without touching the wire", "failed");
  lp_client_iter_close(c, it);
  lp_buf_free(&b);
  lp_client_free(c);
}

/* Plays `rounds` windows of one iterator: the server sends each window whole
 * (as Node's leader does, in one burst), the caller consumes everything and,
 * when `waits`, then waits for more.  Writes the batch of the open and of
 * every refill into seq; returns how many. */
static int window_sequence(lp_client *c, lp_citer *it, int waits, int rounds, uint32_t *seq) {
  lp_request rq[4];
  lp_slice k, v;
  lp_err err;
  char key[32];
  int n = 0, fed = 0, round, i, m;
  uint32_t id = 0, credit = 0;
  m = decode_reqs(lp_client_out(c), rq, 4);
  if (m == 1) {
    id = rq[0].id;
    credit = seq[n++] = rq[0].batch;
  }
  lp_client_out(c)->len = 0;
  for (round = 0; round < rounds; round++) {
    uint32_t g = credit;
    for (i = 0; i < (int)g; i++) {
      snprintf(key, sizeof key, "k%08d", fed++);
      feed_entry(c, id, key, "v");
    }
    while (lp_client_iter_next(c, it, &k, &v, &err) == 1) {
      m = decode_reqs(lp_client_out(c), rq, 4);
      if (m == 1 && n < 64) credit = seq[n++] = rq[0].batch;
      lp_client_out(c)->len = 0;
    }
    if (waits) lp_client_iter_wait_deadline(c, it, 0);
  }
  return n;
}

static int seq_is(const uint32_t *seq, int n, const uint32_t *want, int nwant) {
  return n == nwant && memcmp(seq, want, (size_t)n * sizeof *seq) == 0;
}

/* An iterator's window starts at 32 and doubles up to `window` at each refill
 * after the caller had to wait; a caller that never waits keeps asking for 32,
 * as Node's client does. */
static void test_iter_window_growth(void) {
  static const uint32_t fast[] = {32, 32, 64, 128, 256, 256, 256};
  static const uint32_t slow[] = {32, 32, 32, 32, 32, 32, 32};
  lp_client *c;
  lp_citer *it;
  lp_range r;
  lp_request rq[4];
  uint32_t seq[64];
  int n;
  c = lp_client_new(NULL);
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  check(buf_is(lp_client_out(c), "0f 04 08 00 10 20 1a 08 08 01 10 01 38 01 40 00"),
        "the default open asks for 32 entries (example frame)", "failed");
  lp_client_iter_close(c, it);
  lp_client_free(c);
  c = client_with_window(256);
  it = lp_client_iter_open(c, &r);
  n = window_sequence(c, it, 1, 6, seq);
  check(seq_is(seq, n, fast, 7),
        "a reader that waits: windows 32, 32, 64, 128, 256, 256, 256 (doubling, capped)",
        "%d windows: %u %u %u %u %u %u %u", n, seq[0], seq[1], seq[2], seq[3], seq[4], seq[5],
        seq[6]);
  lp_client_reset(c);
  lp_client_replay(c);
  check(decode_reqs(lp_client_out(c), rq, 4) == 1 && rq[0].batch == 256,
        "a reopen after a reset keeps the grown window", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  it = lp_client_iter_open(c, &r);
  n = window_sequence(c, it, 0, 6, seq);
  check(seq_is(seq, n, slow, 7), "a reader that never waits keeps windows of 32", "%d windows", n);
  lp_client_iter_close(c, it);
  lp_client_free(c);
  c = client_with_window(8);
  it = lp_client_iter_open(c, &r);
  n = window_sequence(c, it, 1, 3, seq);
  check(n == 4 && seq[0] == 8 && seq[1] == 8 && seq[2] == 8 && seq[3] == 8,
        "a window option below 32 is the first window and the cap", "%d: %u %u", n, seq[0], seq[2]);
  lp_client_iter_close(c, it);
  lp_client_free(c);
}

/* Reopen options after a reset, decoded from the client's own bytes. */
/* Received entries share one byte arena per iterator, compacted as the caller
 * consumes.  Entries of mixed sizes (empty keys and values among them) arrive
 * while others wait unconsumed; every one must come out whole and in order,
 * and the bookmark a reset sends must be the last key consumed, across many
 * compactions and growths of the arena. */
static void test_iter_arena(void) {
  enum { WINDOW = 64, TOTAL = 3000 };
  lp_client *c;
  lp_citer *it;
  lp_range r;
  lp_request rq[4];
  lp_slice k, v;
  lp_err err;
  char key[32], val[3000], last[32] = "";
  int fed = 0, got = 0, n, resets = 0, credit;
  c = client_with_window(WINDOW);
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 4);
  credit = n == 1 ? (int)rq[0].batch : 0; /* the first window */
  lp_client_out(c)->len = 0;
  tap_quiet_failures = 0;
  while (got < TOTAL) {
    /* the server sends some of what its window allows; the caller takes a
     * random share */
    int burst = (int)(tap_rng() % 40) + 1, take = (int)(tap_rng() % 48) + 1, i;
    while (burst-- > 0 && credit > 0 && fed < TOTAL) {
      size_t vlen = fed % 7 == 0 ? 0 : (size_t)(fed * 37 % 2900);
      memset(val, 'a' + fed % 26, vlen);
      val[vlen] = '\0';
      snprintf(key, sizeof key, fed % 11 == 0 ? "" : "k%06d", fed);
      if (fed % 11 == 0) key[0] = '\0';
      feed_entry(c, 0, key, val);
      fed++;
      credit--;
    }
    while (take-- > 0 && lp_client_iter_ready(c, it)) {
      int rc = lp_client_iter_next(c, it, &k, &v, &err);
      size_t vlen = got % 7 == 0 ? 0 : (size_t)(got * 37 % 2900);
      snprintf(key, sizeof key, got % 11 == 0 ? "" : "k%06d", got);
      if (got % 11 == 0) key[0] = '\0';
      qcheck(rc == 1 && k.ptr != NULL && k.len == strlen(key) && memcmp(k.ptr, key, k.len) == 0,
             "arena: an entry's key", "entry %d", got);
      qcheck(v.ptr != NULL && v.len == vlen &&
                 (vlen == 0 || (v.ptr[0] == 'a' + got % 26 && v.ptr[vlen - 1] == 'a' + got % 26)),
             "arena: an entry's value", "entry %d (%zu bytes)", got, vlen);
      memcpy(last, key, strlen(key) + 1);
      got++;
    }
    /* a window ack grants the server a fresh window */
    n = decode_reqs(lp_client_out(c), rq, 4);
    for (i = 0; i < n; i++)
      if (rq[i].tag == LP_REQ_ITER) credit = (int)rq[i].batch;
    lp_client_out(c)->len = 0;
    if (got > 0 && got < TOTAL && tap_rng() % 50 == 0) {
      /* a lost leader: unconsumed entries go, the bookmark stays */
      lp_client_reset(c);
      lp_client_replay(c);
      n = decode_reqs(lp_client_out(c), rq, 4);
      qcheck(n == 1 && rq[0].tag == LP_REQ_ITER && rq[0].opts.gt.ptr != NULL &&
                 rq[0].opts.gt.len == strlen(last) &&
                 memcmp(rq[0].opts.gt.ptr, last, strlen(last)) == 0,
             "arena: a reopen sends gt = the last key consumed", "after entry %d", got);
      lp_client_out(c)->len = 0;
      fed = got;
      credit = n == 1 ? (int)rq[0].batch : 0;
      resets++;
    }
  }
  check(tap_quiet_failures == 0 && got == TOTAL,
        "entries of 0..2900 bytes pass the arena whole and in order, resets keep the bookmark",
        "%d entries, %d resets", got, resets);
  lp_client_iter_close(c, it);

  /* a burst of large entries grows the arena past what it keeps; consumed,
   * it shrinks back with the bookmark intact, and serves the next burst */
  {
    static char big[300000];
    int round, i, ok = 1;
    uint32_t id;
    lp_range_init(&r);
    it = lp_client_iter_open(c, &r);
    n = decode_reqs(lp_client_out(c), rq, 4);
    /* after the first iterator's close (its id stays reserved), the open */
    id = n >= 1 ? rq[n - 1].id : 0;
    lp_client_out(c)->len = 0;
    for (round = 0; round < 3; round++) {
      for (i = 0; i < 10; i++) {
        memset(big, 'A' + i, sizeof big - 1);
        big[sizeof big - 1] = '\0';
        snprintf(key, sizeof key, "big%d.%02d", round, i);
        feed_entry(c, id, key, big);
      }
      for (i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "big%d.%02d", round, i);
        ok = ok && lp_client_iter_next(c, it, &k, &v, &err) == 1 && slice_eq(k, key) &&
             v.len == sizeof big - 1 && v.ptr[0] == 'A' + i && v.ptr[v.len - 1] == 'A' + i;
      }
      lp_client_out(c)->len = 0; /* window acks */
    }
    lp_client_reset(c);
    lp_client_replay(c);
    n = decode_reqs(lp_client_out(c), rq, 4);
    check(ok && n == 1 && slice_eq(rq[0].opts.gt, "big2.09"),
          "3 bursts of 10 entries of 300 kB: whole, in order, and the bookmark survives the "
          "arena's shrinking",
          "failed");
    lp_client_iter_close(c, it);
  }
  lp_client_free(c);
}

static void test_iter_reopen(void) {
  lp_client *c;
  lp_citer *it;
  lp_range r;
  lp_request rq[8];
  lp_slice k, v;
  lp_err err;
  int n;

  it = harness_iter_bcd(&c);
  if (!check(it != NULL, "client and iterator", "out of memory")) return;
  lp_client_reset(c);
  check(!lp_client_iter_ready(c, it), "reset drops buffered entries", "failed");
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].tag == LP_REQ_ITER && rq[0].id == 0 && slice_eq(rq[0].opts.gt, "c") &&
            rq[0].opts.gte.ptr == NULL && slice_eq(rq[0].opts.lte, "y") && rq[0].opts.limit == 8 &&
            rq[0].batch == 8,
        "forward reopen: gt = bookmark, gte removed, lte kept, limit 10 - 2", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;

  lp_range_init(&r);
  r.gt = S("a");
  r.lt = S("x");
  r.reverse = 1;
  it = lp_client_iter_open(c, &r);
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.gt, "a") && slice_eq(rq[0].opts.lt, "x") &&
            rq[0].opts.reverse && rq[0].opts.limit == -1,
        "reopen before any consumption resends the original range", "failed");
  lp_client_out(c)->len = 0;
  feed_entry(c, 0, "w", "1");
  lp_client_iter_next(c, it, &k, &v, &err);
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.lt, "w") && rq[0].opts.lte.ptr == NULL &&
            slice_eq(rq[0].opts.gt, "a") && rq[0].opts.reverse,
        "reverse reopen: lt = bookmark, gt kept", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;

  /* an iterator whose end arrived but whose entries were dropped is reopened;
   * one that the caller saw end stays ended */
  lp_range_init(&r);
  it = lp_client_iter_open(c, &r);
  feed_entry(c, 0, "a", "1");
  {
    lp_buf b = {0};
    lp_wire_enc_iterend(&b, 0);
    lp_client_feed(c, b.ptr, b.len, &err);
    lp_buf_free(&b);
  }
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && rq[0].tag == LP_REQ_ITER && rq[0].batch == 8,
        "end with unconsumed entries is refetched", "failed");
  lp_client_out(c)->len = 0;
  {
    lp_buf b = {0};
    lp_wire_enc_iterend(&b, 0);
    lp_client_feed(c, b.ptr, b.len, &err);
    lp_buf_free(&b);
  }
  check(lp_client_iter_next(c, it, &k, &v, &err) == 0, "ended", "failed");
  lp_client_reset(c);
  lp_client_replay(c);
  check(lp_client_out(c)->len == 0, "ended iterator is not reopened", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;

  /* two bounds on a side: only the tighter goes out (the exclusive on a tie),
   * on the open and on a reopen before anything is consumed */
  lp_range_init(&r);
  r.gte = S("b");
  r.gt = S("c");
  r.lt = S("x");
  r.lte = S("x");
  it = lp_client_iter_open(c, &r);
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.gt, "c") && rq[0].opts.gte.ptr == NULL &&
            slice_eq(rq[0].opts.lt, "x") && rq[0].opts.lte.ptr == NULL,
        "gt c over gte b, lt x over lte x: one bound a side", "failed");
  lp_client_iter_close(c, it);
  lp_client_out(c)->len = 0;
  lp_range_init(&r);
  r.gt = S("b");
  r.gte = S("c");
  r.lt = S("y");
  r.lte = S("w");
  r.reverse = 1;
  it = lp_client_iter_open(c, &r);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.gte, "c") && rq[0].opts.gt.ptr == NULL &&
            slice_eq(rq[0].opts.lte, "w") && rq[0].opts.lt.ptr == NULL,
        "reverse open: gte c over gt b, lte w over lt y", "failed");
  lp_client_out(c)->len = 0;
  feed_entry(c, n == 1 ? rq[0].id : 0, "v", "1");
  lp_client_iter_next(c, it, &k, &v, &err);
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.lt, "v") && rq[0].opts.lte.ptr == NULL &&
            slice_eq(rq[0].opts.gte, "c") && rq[0].opts.gt.ptr == NULL,
        "reverse reopen: lt = bookmark, the tighter lower bound kept alone", "failed");
  lp_client_iter_close(c, it);
  lp_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* Part 2: against LevelDB through lp_session over memory                     */
/* ------------------------------------------------------------------------ */

#define NKEYS  10000
#define WINDOW 64

static char tmpdir[64];

typedef struct loop {
  lp_engine *eng;
  lp_session *s;
  lp_client *c;
  lp_buf sout;       /* session output not yet fed to the client */
  lp_buf tin;        /* test-side copy of the bytes fed, for counting entries */
  long recv_entries; /* iterator entries fed since the last reset */
  int proto_errors;
} loop;

/* Counts whole iterator data frames in the bytes handed to the client. */
static void count_fed(loop *L, const char *p, size_t n) {
  size_t off = 0;
  lp_buf_append(&L->tin, p, n);
  while (off < L->tin.len) {
    lp_slice pl;
    size_t used;
    lp_response r;
    int w =
        lp_wire_next_frame(L->tin.ptr + off, L->tin.len - off, LP_DEFAULT_MAX_FRAME, &pl, &used);
    if (w == LP_WIRE_NEED_MORE) break;
    off += used;
    if (w != LP_WIRE_OK) continue;
    if (lp_wire_decode_response(pl, &r) == LP_WIRE_OK && r.tag == LP_RES_ITERDATA && !r.error.ptr &&
        (r.key.ptr || r.value.ptr))
      L->recv_entries++;
  }
  lp_buf_consume(&L->tin, off);
}

/* One random step of transport: client -> session, pump, session -> client
 * (possibly a partial prefix).  Returns 1 when something moved. */
static int loop_step(loop *L, int all) {
  lp_buf *out = lp_client_out(L->c);
  lp_err err;
  int moved = 0;
  if (out->len) {
    size_t n = all ? out->len : 1 + tap_rng() % out->len;
    long used =
        lp_session_input(L->s, out->ptr, n, &L->sout, all ? 100000 : 1 + tap_rng() % 100, &err);
    if (used < 0) {
      L->proto_errors++;
      return 0;
    }
    if (used > 0) moved = 1;
    lp_buf_consume(out, (size_t)used);
  }
  if (lp_session_pump(L->s, &L->sout, all ? 100000 : 1 + tap_rng() % 100)) moved = 1;
  if (L->sout.len) {
    size_t n = all ? L->sout.len : 1 + tap_rng() % L->sout.len;
    count_fed(L, L->sout.ptr, n);
    if (lp_client_feed(L->c, L->sout.ptr, n, &err)) {
      printf("# client feed: %s\n", err.msg);
      L->proto_errors++;
    }
    lp_buf_consume(&L->sout, n);
    moved = 1;
  }
  return moved;
}

static void loop_flush(loop *L) {
  int guard = 0;
  while (loop_step(L, 1) && guard++ < 100000) {
  }
}

/* Checks the reopen frames the way a Node leader would see them. */
static int nodeish_ok(lp_client *c) {
  lp_request rq[256];
  int n = decode_reqs(lp_client_out(c), rq, 256), i;
  if (n < 0) return 0;
  for (i = 0; i < n; i++) {
    if (rq[i].tag != LP_REQ_ITER || !rq[i].opts.present) continue;
    if (rq[i].opts.gt.ptr && rq[i].opts.gte.ptr) return 0;
    if (rq[i].opts.lt.ptr && rq[i].opts.lte.ptr) return 0;
    if (!rq[i].opts.has_keys || !rq[i].opts.keys || !rq[i].opts.has_limit) return 0;
  }
  return 1;
}

static int nodeish_failures;

/* Leader change: the connection drops, a new leader (a fresh session on the
 * same data) takes over, the client replays. */
static void leader_change(loop *L) {
  lp_client_reset(L->c);
  lp_session_free(L->s);
  L->s = lp_session_new(L->eng, LP_DEFAULT_MAX_FRAME);
  L->sout.len = 0;
  L->tin.len = 0;
  L->recv_entries = 0;
  lp_client_replay(L->c);
  if (!nodeish_ok(L->c)) nodeish_failures++;
}

static void keyname(char *b, int i) { snprintf(b, 16, "k%05d", i); }
static void valname(char *b, int i) { snprintf(b, 24, "value-%d-%s", i, (i % 7) ? "x" : ""); }

static void fill(lp_engine *e) {
  lp_batch *b = lp_batch_new();
  lp_err err;
  char k[16], v[24];
  int i;
  for (i = 0; i < NKEYS; i++) {
    keyname(k, i);
    valname(v, i);
    lp_batch_put(b, S(k), S(v));
    if (i % 1000 == 999) {
      if (lp_engine_write(e, b, 0, &err)) printf("# write: %s\n", err.msg);
      lp_batch_free(b);
      b = lp_batch_new();
    }
  }
  lp_batch_free(b);
}

static int wait_done(loop *L, uint64_t t) {
  int guard = 0;
  while (!lp_client_done(L->c, t) && guard++ < 1000)
    loop_step(L, 1);
  return lp_client_done(L->c, t);
}

static void test_requests(loop *L) {
  uint64_t t;
  lp_result res;
  lp_response r;
  lp_buf rest = {0};
  lp_range range;
  size_t cursor = 0;
  lp_slice v1, v2, v3;
  int rc;

  t = sub_put(L->c, "zput", "hello", 0);
  check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && !r.error.ptr, "put round trip",
        "failed");
  lp_result_free(&res);
  t = sub_key(L->c, LP_REQ_GET, "zput", 0);
  check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && slice_eq(r.value, "hello"),
        "get round trip", "failed");
  lp_result_free(&res);
  t = sub_key(L->c, LP_REQ_DEL, "zput", 0);
  check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && !r.error.ptr, "del round trip",
        "failed");
  lp_result_free(&res);
  t = sub_key(L->c, LP_REQ_GET, "zput", 0);
  rc = wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK;
  check(rc && r.error.ptr && r.error.len >= 8 && memcmp(r.error.ptr, "NotFound", 8) == 0,
        "get of a deleted key: NotFound", "failed");
  lp_result_free(&res);
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("zb1"), S("1"));
  lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("zb2"), S("2"));
  lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("zb1"), LP_SLICE_NONE);
  t = lp_client_submit(L->c, LP_REQ_BATCH, (lp_slice){rest.ptr, rest.len}, 0);
  check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && !r.error.ptr, "batch round trip",
        "failed");
  lp_result_free(&res);
  rest.len = 0;
  lp_wire_rest_getmany_key(&rest, S("zb1"));
  lp_wire_rest_getmany_key(&rest, S("zb2"));
  lp_wire_rest_getmany_key(&rest, S("k00042"));
  t = lp_client_submit(L->c, LP_REQ_GETMANY, (lp_slice){rest.ptr, rest.len}, 0);
  rc = wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && r.tag == LP_RES_GETMANY &&
       r.count == 3 && lp_wire_next_value(&r, &cursor, &v1) &&
       lp_wire_next_value(&r, &cursor, &v2) && lp_wire_next_value(&r, &cursor, &v3);
  check(rc && v1.ptr == NULL && slice_eq(v2, "2") && slice_eq(v3, "value-42-"),
        "getMany round trip (missing, batch-written, preloaded)", "failed");
  lp_result_free(&res);
  rest.len = 0;
  lp_range_init(&range);
  range.gte = S("zb");
  range.lt = S("zc");
  lp_wire_rest_clear(&rest, &range);
  t = lp_client_submit(L->c, LP_REQ_CLEAR, (lp_slice){rest.ptr, rest.len}, 0);
  check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && !r.error.ptr, "clear round trip",
        "failed");
  lp_result_free(&res);
  t = sub_key(L->c, LP_REQ_GET, "zb2", 0);
  rc = wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK;
  check(rc && r.error.ptr != NULL, "cleared key is gone", "failed");
  lp_result_free(&res);

  /* Replay order through a real leader (docs/PROTOCOL.md, "Replay and resume"): put old stays
   * pending while put new reuses id 0; the leader dies; the new one must end with new. */
  {
    uint64_t tg, told, tnew;
    lp_err err;
    lp_buf *out = lp_client_out(L->c);
    lp_buf replies = {0};
    size_t off = 0;
    tg = sub_key(L->c, LP_REQ_GET, "zx", 0);
    told = sub_put(L->c, "zorder", "old", 0);
    /* the old leader receives both but only the get's reply gets back */
    lp_session_input(L->s, out->ptr, out->len, &replies, 1000, &err);
    out->len = 0;
    while (off < replies.len) {
      lp_slice pl;
      size_t used;
      lp_response rr;
      if (lp_wire_next_frame(replies.ptr + off, replies.len - off, LP_DEFAULT_MAX_FRAME, &pl,
                             &used) != LP_WIRE_OK)
        break;
      if (lp_wire_decode_response(pl, &rr) == LP_WIRE_OK && rr.id == 0)
        lp_client_feed(L->c, replies.ptr + off, used, &err);
      off += used;
    }
    lp_buf_free(&replies);
    tnew = sub_put(L->c, "zorder", "new", 0);
    check(lp_client_done(L->c, tg) && !lp_client_done(L->c, told) && last_id(L->c) == 0,
          "4.1 setup: get done, put old pending, put new on id 0", "failed");
    leader_change(L);
    loop_flush(L);
    check(lp_client_done(L->c, told) && lp_client_done(L->c, tnew),
          "both puts acknowledged after replay", "failed");
    if (!lp_client_take(L->c, tg, &res)) lp_result_free(&res);
    if (!lp_client_take(L->c, told, &res)) lp_result_free(&res);
    if (!lp_client_take(L->c, tnew, &res)) lp_result_free(&res);
    t = sub_key(L->c, LP_REQ_GET, "zorder", 0);
    check(wait_done(L, t) && take(L->c, t, &res, &r) == LP_OK && slice_eq(r.value, "new"),
          "final value is 'new' (submission order, no lost update)", "failed");
    lp_result_free(&res);
    t = sub_key(L->c, LP_REQ_DEL, "zorder", 0);
    check(wait_done(L, t), "cleanup del", "failed");
    if (!lp_client_take(L->c, t, &res)) lp_result_free(&res);
  }
  lp_buf_free(&rest);
}

/* Expected index sequence for a range over k00000..k09999. */
static int expected(const lp_range *r, int *seq) {
  int n = 0, i;
  char k[16];
  for (i = 0; i < NKEYS; i++) {
    keyname(k, i);
    if (lp_range_contains(r, S(k))) seq[n++] = i;
  }
  if (r->reverse)
    for (i = 0; i < n / 2; i++) {
      int t = seq[i];
      seq[i] = seq[n - 1 - i];
      seq[n - 1 - i] = t;
    }
  if (r->limit >= 0 && n > r->limit) n = (int)r->limit;
  return n;
}

static int keyindex(lp_slice k) {
  char b[16];
  if (k.len != 6 || k.ptr[0] != 'k') return -1;
  memcpy(b, k.ptr + 1, 5);
  b[5] = 0;
  return atoi(b);
}

/* Streams one iterator to its end, with leader changes at random points.
 * Returns the number of leader changes done. */
static int run_iter(loop *L, const lp_range *r, const char *desc, double change_p, long *max_buf) {
  static int seq[NKEYS];
  int n = expected(r, seq), got = 0, changes = 0, stalls = 0, ok = 1;
  long consumed_since_reset = 0;
  lp_citer *it;
  lp_slice k, v;
  lp_err err;
  char kb[16], vb[24];
  loop_flush(L);
  L->recv_entries = 0;
  it = lp_client_iter_open(L->c, r);
  if (!it) {
    check(0, desc, "lp_client_iter_open failed");
    return 0;
  }
  if (!nodeish_ok(L->c)) nodeish_failures++; /* the first open, as a Node leader sees it */
  for (;;) {
    int steps = (int)(tap_rng() % 4), i, rc, burst;
    for (i = 0; i < steps; i++)
      loop_step(L, 0);
    burst = 1 + (int)(tap_rng() % 80);
    rc = 2;
    for (i = 0; i < burst; i++) {
      long buffered = L->recv_entries - consumed_since_reset;
      if (buffered > *max_buf) *max_buf = buffered;
      rc = lp_client_iter_next(L->c, it, &k, &v, &err);
      if (rc != 1) break;
      consumed_since_reset++;
      if (got >= n) {
        ok = 0;
        qcheck(0, desc, "more entries than expected (%d)", n);
        break;
      }
      keyname(kb, seq[got]);
      valname(vb, seq[got]);
      if (r->keys) {
        if (!slice_eq(k, kb)) {
          qcheck(0, desc, "entry %d key %.*s, want %s", got, (int)k.len, k.ptr ? k.ptr : "", kb);
          ok = 0;
        }
      } else if (k.ptr) {
        qcheck(0, desc, "key not stripped");
        ok = 0;
      }
      if (r->values) {
        if (!slice_eq(v, vb)) {
          qcheck(0, desc, "entry %d value mismatch (want %s)", got, vb);
          ok = 0;
        }
      } else if (v.ptr) {
        qcheck(0, desc, "value not stripped");
        ok = 0;
      }
      got++;
      if (change_p > 0 && (double)(tap_rng() % 1000000) / 1e6 < change_p) {
        leader_change(L);
        consumed_since_reset = 0;
        changes++;
      }
    }
    if (!ok) break;
    if (rc == 0) break;
    if (rc == -1) {
      qcheck(0, desc, "error %s", err.msg);
      ok = 0;
      break;
    }
    if (rc == 2) {
      if (change_p > 0 && tap_rng() % 50 == 0) {
        leader_change(L);
        consumed_since_reset = 0;
        changes++;
      }
      if (!loop_step(L, 1) && !lp_client_iter_ready(L->c, it)) {
        if (++stalls > 3) {
          qcheck(0, desc, "stalled after %d of %d entries", got, n);
          ok = 0;
          break;
        }
      } else {
        stalls = 0;
      }
    }
  }
  if (ok && got != n) {
    qcheck(0, desc, "got %d entries, want %d", got, n);
    ok = 0;
  }
  lp_client_iter_close(L->c, it);
  loop_flush(L);
  return ok ? changes + 1 : 0;
}

static void test_iterators(loop *L) {
  static const char *const lows[] = {"none", "gt", "gte", "gt+gte"};
  static const char *const highs[] = {"none", "lt", "lte", "lt+lte"};
  static const int64_t limits[] = {-1, 1, 100, 3000};
  static const char *const modes[] = {"kv", "keys", "values"};
  int rev, lo, hi, li, mo, combos = 0, okcombos = 0, changes = 0;
  long max_buf = 0;
  char lowk[16], highk[16], lowk2[16], highk2[16], desc[160];
  for (rev = 0; rev < 2; rev++)
    for (lo = 0; lo < 4; lo++)
      for (hi = 0; hi < 4; hi++)
        for (li = 0; li < 4; li++)
          for (mo = 0; mo < 3; mo++) {
            lp_range r;
            int res;
            lp_range_init(&r);
            r.reverse = rev;
            keyname(lowk, (int)(tap_rng() % 3000));
            keyname(highk, 7000 + (int)(tap_rng() % 3000));
            /* both bounds of a side: either may be the tighter, or they tie */
            keyname(lowk2, (int)(tap_rng() % 3000));
            keyname(highk2, 7000 + (int)(tap_rng() % 3000));
            if (tap_rng() % 8 == 0) strcpy(lowk2, lowk);
            if (tap_rng() % 8 == 0) strcpy(highk2, highk);
            if (lo & 1) r.gt = S(lowk);
            if (lo == 2) r.gte = S(lowk);
            if (lo == 3) r.gte = S(lowk2);
            if (hi & 1) r.lt = S(highk);
            if (hi == 2) r.lte = S(highk);
            if (hi == 3) r.lte = S(highk2);
            r.limit = limits[li];
            r.keys = mo != 2;
            r.values = mo != 1;
            snprintf(desc, sizeof desc, "%s %s=%s%s%s %s=%s%s%s limit %lld %s",
                     rev ? "reverse" : "forward", lows[lo], lowk, lo == 3 ? "," : "",
                     lo == 3 ? lowk2 : "", highs[hi], highk, hi == 3 ? "," : "",
                     hi == 3 ? highk2 : "", (long long)r.limit, modes[mo]);
            combos++;
            res = run_iter(L, &r, desc, 0.002, &max_buf);
            if (res) {
              okcombos++;
              changes += res - 1;
            }
          }
  check(okcombos == combos,
        "every iterator shape streamed exactly once, in order, across leader changes",
        "%d of %d shapes, %d leader changes", okcombos, combos, changes);
  check(changes > 50, "leader changes happened mid-stream", "%d", changes);
  check(max_buf <= WINDOW * 3 / 2, "buffered entries never exceeded 1.5 x window",
        "max %ld, window %d", max_buf, WINDOW);
  check(nodeish_failures == 0, "no open or reopen frame carried gt with gte or lt with lte",
        "%d bad", nodeish_failures);
  check(L->proto_errors == 0, "no protocol errors on either side", "%d", L->proto_errors);

  /* several iterators and requests interleaved on one connection */
  {
    lp_range r1, r2;
    lp_citer *a, *b;
    lp_slice k, v;
    lp_err err;
    int na = 0, nb = 0, ra = 2, rb = 2, guard = 0, ok = 1;
    uint64_t t;
    lp_range_init(&r1);
    lp_range_init(&r2);
    r2.reverse = 1;
    a = lp_client_iter_open(L->c, &r1);
    b = lp_client_iter_open(L->c, &r2);
    t = sub_put(L->c, "k00005", "value-5-x", 0); /* same value: the expected data stays */
    while ((ra || rb) && guard++ < 200000) {
      loop_step(L, 0);
      if (ra) {
        ra = lp_client_iter_next(L->c, a, &k, &v, &err);
        if (ra == 1) ok = ok && keyindex(k) == na++;
        if (ra == -1) ok = 0, ra = 0;
      }
      if (rb) {
        rb = lp_client_iter_next(L->c, b, &k, &v, &err);
        if (rb == 1) ok = ok && keyindex(k) == NKEYS - 1 - nb++;
        if (rb == -1) ok = 0, rb = 0;
      }
      if (tap_rng() % 3000 == 0) leader_change(L);
    }
    check(ok && na == NKEYS && nb == NKEYS && lp_client_done(L->c, t),
          "two iterators and a put interleaved with leader changes", "%d, %d", na, nb);
    lp_client_iter_close(L->c, a);
    lp_client_iter_close(L->c, b);
    if (lp_client_done(L->c, t)) {
      lp_result res;
      if (!lp_client_take(L->c, t, &res)) lp_result_free(&res);
    }
    check(lp_client_pending(L->c) == 0 && lp_client_iterators(L->c) == 0, "flushed", "failed");
  }
  /* an iterator closed mid-stream: its stale entries never reach the next one */
  {
    lp_range r1;
    lp_citer *a;
    lp_slice k, v;
    lp_err err;
    int i, ok = 1, rc;
    lp_range_init(&r1);
    a = lp_client_iter_open(L->c, &r1);
    loop_step(L, 1); /* the first window is on its way */
    lp_client_iter_next(L->c, a, &k, &v, &err);
    lp_client_iter_close(L->c, a);
    r1.reverse = 1;
    a = lp_client_iter_open(L->c, &r1);
    for (i = 0; i < 500 && ok; i++) {
      int guard = 0;
      while ((rc = lp_client_iter_next(L->c, a, &k, &v, &err)) == 2 && guard++ < 100)
        loop_step(L, 0);
      ok = rc == 1 && keyindex(k) == NKEYS - 1 - i;
    }
    check(ok, "an iterator opened after an early close gets only its own entries", "failed");
    lp_client_iter_close(L->c, a);
    loop_flush(L);
  }
}

int main(void) {
  loop L;
  lp_engine_opts eo;
  lp_client_opts co;
  lp_err err;
  const char *seed = getenv("LP_TEST_SEED");
  if (seed) tap_rng_seed(strtoull(seed, NULL, 0));
  printf("# seed 0x%llx\n", (unsigned long long)tap_rng_state);

  test_frames();
  test_feed_splits();
  test_ids();
  test_replay_order();
  test_timeouts();
  test_finished_log();
  test_finished_log_bound();
  test_mismatch_and_errors();
  test_too_large_requests();
  test_too_large_replies();
  test_fail_all();
  test_iter_codec();
  test_iter_reopen();
  test_iter_arena();
  test_iter_window_growth();

  memset(&L, 0, sizeof L);
  if (!tap_tmpdir(tmpdir, sizeof tmpdir, "client")) return tap_done();
  lp_engine_opts_init(&eo);
  L.eng = lp_engine_open(tmpdir, &eo, &err);
  check(L.eng != NULL, "engine opens", "%s: %s", tmpdir, err.msg);
  if (L.eng) {
    fill(L.eng);
    L.s = lp_session_new(L.eng, LP_DEFAULT_MAX_FRAME);
    lp_client_opts_init(&co);
    co.window = WINDOW;
    L.c = lp_client_new(&co);
    test_requests(&L);
    test_iterators(&L);
    lp_client_free(L.c);
    lp_session_free(L.s);
    lp_buf_free(&L.sout);
    lp_buf_free(&L.tin);
    lp_engine_close(L.eng);
  }
  rm_rf(tmpdir);
  return tap_done();
}

/*
 * seek_test.c: it:seek's two halves, frame by frame and against LevelDB.
 *
 * The follower's (lp_client_iter_seek): the frames it writes (the old remote
 * iterator ended, a new one opened under a fresh id with one bound on the
 * side it starts from and the rest of the limit), what it drops (buffered
 * entries, late entries of the old id), and the bookmark after a reset.  The
 * leader's (lp_engine_iter_seek): positions inside, before and past the
 * range, moving back, reverse, the limit, on the same snapshot.
 *
 * Build and run: make build/test/seek_test && build/test/seek_test
 */
#include "client_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The key of the iterator's next entry, "" at its end or when nothing is
 * buffered ("?"), into buf. */
static const char *next_key(lp_client *c, lp_citer *it, char *buf) {
  lp_slice k, v;
  lp_err err;
  int r = lp_client_iter_next(c, it, &k, &v, &err);
  if (r == 1)
    snprintf(buf, 32, "%.*s", (int)k.len, k.ptr);
  else
    snprintf(buf, 32, "%s", r == 2 ? "?" : r == 0 ? "" : "error");
  return buf;
}

static void test_client_seek(void) {
  lp_client *c;
  lp_citer *it;
  lp_range r;
  lp_request rq[8];
  char kb[32];
  int n;

  it = harness_iter_bcd(&c);
  if (!check(it != NULL, "client and iterator", "out of memory")) return;
  check(lp_client_iter_seek(c, it, S("m"), 0) == 0, "seek", "failed");
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 2 && rq[0].tag == LP_REQ_ITER && rq[0].id == 0 && rq[0].has_batch && rq[0].batch == 0,
        "seek ends the remote iterator (batch 0 on its id)", "n=%d", n);
  check(n == 2 && rq[1].tag == LP_REQ_ITER && rq[1].id == 1 && slice_eq(rq[1].opts.gte, "m") &&
            rq[1].opts.gt.ptr == NULL && slice_eq(rq[1].opts.lte, "y") && rq[1].opts.limit == 8 &&
            rq[1].batch == 8,
        "and opens one under a fresh id: gte = target alone, lte kept, limit 10 - 2", "failed");
  check(!lp_client_iter_ready(c, it), "what was buffered before the seek is dropped", "failed");
  lp_client_out(c)->len = 0;
  feed_entry(c, 0, "e", "v"); /* in flight before the end reached the leader */
  check(!lp_client_iter_ready(c, it), "a late entry of the old id is not delivered", "failed");
  feed_entry(c, 1, "m", "v");
  feed_entry(c, 1, "n", "v");
  check(strcmp(next_key(c, it, kb), "m") == 0, "the first entry is the target's", "got %s", kb);

  /* a leader change now resumes after the last entry consumed since the seek */
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.gt, "m") && rq[0].opts.gte.ptr == NULL &&
            slice_eq(rq[0].opts.lte, "y") && rq[0].opts.limit == 7,
        "reopen after a seek: gt = the entry consumed since, limit 10 - 3", "failed");
  lp_client_out(c)->len = 0;
  /* a seek back, then a leader change before anything is consumed */
  lp_client_iter_seek(c, it, S("a"), 0);
  lp_client_out(c)->len = 0;
  lp_client_reset(c);
  lp_client_replay(c);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 1 && slice_eq(rq[0].opts.gte, "b") && rq[0].opts.gt.ptr == NULL &&
            rq[0].opts.limit == 7,
        "a target before the range resumes from the range's own bound", "failed");
  lp_client_iter_close(c, it);
  lp_client_free(c);

  /* reverse, an exclusive bound tighter than the target, entries given back */
  c = client_with_window(8);
  lp_range_init(&r);
  r.gt = S("c");
  r.lt = S("x");
  r.reverse = 1;
  r.limit = 5;
  it = lp_client_iter_open(c, &r);
  feed_entry(c, 0, "w", "v");
  feed_entry(c, 0, "v", "v");
  feed_entry(c, 0, "u", "v");
  next_key(c, it, kb);
  next_key(c, it, kb);
  next_key(c, it, kb);
  lp_client_out(c)->len = 0;
  lp_client_iter_seek(c, it, S("p"), 2); /* the caller used one of the three */
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 2 && slice_eq(rq[1].opts.lte, "p") && rq[1].opts.lt.ptr == NULL &&
            slice_eq(rq[1].opts.gt, "c") && rq[1].opts.reverse && rq[1].opts.limit == 4,
        "reverse: lte = target alone, gt kept, unread entries back to the limit", "failed");
  lp_client_out(c)->len = 0;
  lp_client_iter_seek(c, it, S("z"), 0);
  n = decode_reqs(lp_client_out(c), rq, 8);
  check(n == 2 && slice_eq(rq[1].opts.lt, "x") && rq[1].opts.lte.ptr == NULL,
        "reverse: a target past the range keeps the range's exclusive bound", "failed");
  lp_client_iter_close(c, it);
  lp_client_free(c);

  /* an iterator at its limit stays ended */
  c = client_with_window(8);
  lp_range_init(&r);
  r.limit = 1;
  it = lp_client_iter_open(c, &r);
  feed_entry(c, 0, "a", "v");
  next_key(c, it, kb);
  lp_client_out(c)->len = 0;
  lp_client_iter_seek(c, it, S("a"), 0);
  check(lp_client_out(c)->len == 0 && strcmp(next_key(c, it, kb), "") == 0,
        "an iterator at its limit sends nothing and stays ended", "got %s", kb);
  lp_client_iter_close(c, it);
  lp_client_free(c);
}

/* The keys the engine iterator yields next, up to n, comma-separated, in buf. */
static const char *take(lp_engine_iter *it, int n, char *buf, size_t size) {
  lp_slice k, v;
  lp_err err;
  size_t len = 0;
  buf[0] = 0;
  while (n-- > 0 && lp_engine_iter_next(it, &k, &v, &err) == 1)
    len += (size_t)snprintf(buf + len, size - len, "%s%.*s", len ? "," : "", (int)k.len, k.ptr);
  return buf;
}

static void test_engine_seek(void) {
  char dir[64], buf[256];
  lp_engine *e;
  lp_engine_iter *it;
  lp_range r;
  lp_err err;
  int i;
  if (!tap_tmpdir(dir, sizeof dir, "seek")) return;
  e = lp_engine_open(dir, NULL, &err);
  if (!check(e != NULL, "engine opens", "%s", err.msg)) return;
  for (i = 1; i <= 9; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    lp_engine_put(e, S(k), S("v"), 0, &err);
  }
  lp_range_init(&r);
  r.gte = S("k3");
  r.lt = S("k8");
  it = lp_engine_iter_open(e, &r, &err);
  check(strcmp(take(it, 1, buf, sizeof buf), "k3") == 0, "first entry", "%s", buf);
  lp_engine_put(e, S("k65"), S("v"), 0, &err); /* after the snapshot */
  lp_engine_iter_seek(it, S("k6"), 0);
  check(strcmp(take(it, 2, buf, sizeof buf), "k6,k7") == 0, "seek forward, same snapshot", "%s",
        buf);
  lp_engine_iter_seek(it, S("k1"), 0);
  check(strcmp(take(it, 1, buf, sizeof buf), "k3") == 0, "before the range: its first key", "%s",
        buf);
  lp_engine_iter_seek(it, S("k9"), 0);
  check(strcmp(take(it, 5, buf, sizeof buf), "") == 0, "past the range: the end", "%s", buf);
  lp_engine_iter_seek(it, S("k7"), 0);
  check(strcmp(take(it, 5, buf, sizeof buf), "k7") == 0, "back after the end", "%s", buf);
  lp_engine_iter_close(it);

  lp_range_init(&r);
  r.gt = S("k2");
  r.reverse = 1;
  r.limit = 4;
  it = lp_engine_iter_open(e, &r, &err);
  check(strcmp(take(it, 2, buf, sizeof buf), "k9,k8") == 0, "reverse", "%s", buf);
  lp_engine_iter_seek(it, S("k5"), 1); /* the caller used k9 only */
  check(strcmp(take(it, 9, buf, sizeof buf), "k5,k4,k3") == 0,
        "reverse seek: <= target, the limit counts on less the unread entry", "%s", buf);
  lp_engine_iter_seek(it, S("k8"), 0);
  check(strcmp(take(it, 9, buf, sizeof buf), "") == 0, "at its limit it stays ended", "%s", buf);
  lp_engine_iter_close(it);
  lp_engine_close(e);
  rm_rf(dir);
}

int main(void) {
  test_client_seek();
  test_engine_seek();
  return tap_done();
}

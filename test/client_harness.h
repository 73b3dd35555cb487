/*
 * client_harness.h: what the tests of the follower client (client_test.c,
 * seek_test.c) share: reading the frames the client wrote, feeding it
 * iterator entries, and the iterator both start from.  Header only, on top
 * of tap.h.
 */
#ifndef LEVELPARTY_CLIENT_HARNESS_H
#define LEVELPARTY_CLIENT_HARNESS_H

#include "tap.h"

/* a is present and holds exactly the bytes of s. */
static inline int slice_eq(lp_slice a, const char *s) {
  return a.ptr && a.len == strlen(s) && memcmp(a.ptr, s, a.len) == 0;
}

/* Decodes every whole frame of b as requests, up to max.  Returns the count or
 * -1 when something does not decode.  The requests point into b. */
static inline int decode_reqs(const lp_buf *b, lp_request *rq, int max) {
  size_t off = 0;
  int n = 0;
  while (off < b->len) {
    lp_slice pl;
    size_t used;
    int w = lp_wire_next_frame(b->ptr + off, b->len - off, LP_DEFAULT_MAX_FRAME, &pl, &used);
    if (w != LP_WIRE_OK) return -1;
    if (n >= max) return -1;
    if (lp_wire_decode_request(pl, &rq[n]) != LP_WIRE_OK) return -1;
    n++;
    off += used;
  }
  return n;
}

/* Feeds c one entry of iterator id as the leader sends it; v NULL: no value. */
static inline void feed_entry(lp_client *c, uint32_t id, const char *k, const char *v) {
  lp_buf b = {0};
  lp_err err;
  lp_wire_enc_iterdata(&b, id, S(k), v ? S(v) : LP_SLICE_NONE);
  if (lp_client_feed(c, b.ptr, b.len, &err)) printf("# feed failed: %s\n", err.msg);
  lp_buf_free(&b);
}

/* A new client with the default options but its iterator window: NULL when
 * out of memory. */
static inline lp_client *client_with_window(uint32_t window) {
  lp_client_opts o;
  lp_client_opts_init(&o);
  o.window = window;
  return lp_client_new(&o);
}

/* A new client (window 8, in *cp; the caller frees it) with one iterator over
 * gte = "b", lte = "y", limit 10 on id 0, which has received b, c and d and
 * handed b and c to the caller: its bookmark is "c", d is buffered, 2 of the
 * limit are used.  The client's output is empty.  NULL when out of memory. */
static inline lp_citer *harness_iter_bcd(lp_client **cp) {
  lp_client *c;
  lp_citer *it;
  lp_range r;
  lp_slice k, v;
  lp_err err;
  *cp = c = client_with_window(8);
  if (!c) return NULL;
  lp_range_init(&r);
  r.gte = S("b");
  r.lte = S("y");
  r.limit = 10;
  it = lp_client_iter_open(c, &r);
  if (!it) return NULL;
  feed_entry(c, 0, "b", "1");
  feed_entry(c, 0, "c", "1");
  feed_entry(c, 0, "d", "1");
  lp_client_iter_next(c, it, &k, &v, &err);
  lp_client_iter_next(c, it, &k, &v, &err);
  lp_client_out(c)->len = 0;
  return it;
}

#endif

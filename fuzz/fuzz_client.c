/*
 * fuzz_client.c: fuzz target for the follower's client core (client.c).
 *
 * The input is a program: its first byte chooses the client's options
 * (window, frame limit) and how the run ends; every later byte chooses the
 * next operation and its arguments.  Operations: submit a request; write
 * (part of) the out buffer to the "leader"; make up a reply, well-formed or
 * not, for an id the client sent, one it never sent or a random one, of the
 * right type or not; make up iterator entries, ends and errors; queue raw
 * bytes, replies over the frame limit; feed (part of) what was made up;
 * take, forget; advance the clock and expire; reset the connection, replay;
 * open, step, seek, close iterators, give them deadlines; switch the
 * finished-token log and drain it; fail everything.
 *
 * Invariants, any violation abort()ing:
 *   - tokens count up from 1 by one; a token is taken at most once, only
 *     once it is done, and a taken or forgotten one is unknown (done, not
 *     takeable); an OK result holds a reply of its request's type;
 *   - lp_client_pending and lp_client_iterators count exactly the requests
 *     waiting and the iterators open; expiry finishes every request whose
 *     deadline passed and leaves no deadline at or before now;
 *   - the out buffer is always whole request frames that decode; on the
 *     connection, a request id is never sent again before its reply came,
 *     an iterator is opened only under an id not open, acked and ended only
 *     under one that is;
 *   - iterator windows (docs/PROTOCOL.md, "Iterators and windows"): each
 *     open, reopen and seek asks for the iterator's current window (first
 *     the smaller of LP_FIRST_WINDOW and the configured one), or the rest of
 *     its limit when smaller, and sends that rest as its limit; a refill
 *     asks for the window doubled (up to the configured one) when the reader
 *     waited since the last grant, else the same (less only for the limit);
 *     the out buffer is mapped to iterators by their wire ids, and every
 *     reopen of a replay to the iterators that had to be reopened, in their
 *     opening order;
 *   - after a replay the out buffer starts with every waiting request, in
 *     token order, under ids 0, 1, 2, ...;
 *   - lp_client_feed fails (LP_EPROTO) exactly when the bytes break the
 *     protocol: a frame that does not decode, or one over the limit whose
 *     payload does not start with its tag and id, fails it, and a failure
 *     without one comes from an iterator entry; a frame over the limit that
 *     does start so is skipped, its bytes dropped as they come (the mirror
 *     counts them), and fails only the request or iterator it answers;
 *   - an iterator's entries never pass its limit (less what a seek gave
 *     back), carry exactly the sides asked for, lp_client_iter_ready agrees
 *     with lp_client_iter_next, and an iterator that ended or failed stays
 *     so, until a seek reopens one that ended (one that failed stays so);
 *   - the finished-token log holds each token at most once, only finished
 *     ones, and, unless it reports a loss, every token that finished while
 *     it was on;
 *   - nothing leaks (LSan), whether the run takes and closes everything or
 *     just frees the client.
 *
 * libFuzzer: make build/fuzz/fuzz_client (make fuzz runs it).
 * Standalone (gcc + ASan/UBSan, no libFuzzer): make build/fuzz/fuzz_client_standalone;
 *   build/fuzz/fuzz_client_standalone [N] [seed] [file or directory...]
 * replays the files given (the regression corpus), then N random programs
 * (fuzz/standalone.h).
 */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why) {
  fprintf(stderr, "fuzz_client: %s\n", why);
  abort();
}

#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) fail(#cond);                                                                      \
  } while (0)

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) fail("ENOMEM");
  return p;
}

static void append(lp_buf *b, const void *p, size_t n) {
  if (lp_buf_append(b, p, n) != 0) fail("ENOMEM");
}

/* What the runs reached (printed by the standalone main). */
static unsigned long stat_ops[18], stat_taken, stat_entries, stat_fed_entries, stat_proto,
    stat_logged, stat_oversized, stat_seeks, stat_refills, stat_grown;

/* ------------------------------------------------------------------------ */
/* The program                                                               */
/* ------------------------------------------------------------------------ */

typedef struct prog {
  const uint8_t *p;
  size_t n, off;
} prog;

static uint8_t next_byte(prog *g) { return g->off < g->n ? g->p[g->off++] : 0; }

static const struct {
  const char *p;
  size_t n;
} keys[] = {{"", 0}, {"a", 1}, {"b", 1}, {"k1", 2}, {"k2", 2}, {"z", 1}, {"\x00", 1}, {"\xff", 1}};

static lp_slice key_of(uint8_t b) {
  lp_slice s;
  s.ptr = keys[b % (sizeof keys / sizeof keys[0])].p;
  s.len = keys[b % (sizeof keys / sizeof keys[0])].n;
  return s;
}

/* A present slice of up to 15 program bytes (the program's own memory). */
static lp_slice bytes_of(prog *g) {
  lp_slice s;
  size_t n = next_byte(g) % 16;
  if (n > g->n - g->off) n = g->n - g->off;
  s.ptr = g->off < g->n ? (const char *)g->p + g->off : "";
  s.len = n;
  g->off += n;
  return s;
}

static void range_of(prog *g, lp_range *r) {
  static const int64_t limits[8] = {-1, -1, 0, 1, 2, 3, 7, (int64_t)1 << 40};
  uint8_t b = next_byte(g), c = next_byte(g);
  lp_range_init(r);
  if (b & 1) r->gt = key_of(c);
  if (b & 2) r->gte = key_of((uint8_t)(c >> 3));
  if (b & 4) r->lt = key_of(next_byte(g));
  if (b & 8) r->lte = key_of(next_byte(g));
  r->reverse = (b >> 4) & 1;
  r->keys = !((b >> 5) & 1);
  r->values = !((b >> 6) & 1);
  r->limit = limits[(c >> 5) & 7];
}

/* ------------------------------------------------------------------------ */
/* The fuzzer's books                                                         */
/* ------------------------------------------------------------------------ */

enum { T_LIVE, T_TAKEN, T_FORGOTTEN };

typedef struct tok {
  uint64_t token, deadline;
  int tag, state;
  int logged;  /* seen in the finished-token log */
  int excused; /* finished while the log was off, emptied or lost */
} tok;

enum { F_NONE = 2 }; /* else the iterator's final lp_client_iter_next result, 0 or -1 */

typedef struct titer {
  lp_citer *it;
  lp_range r;       /* keys, values and limit as asked; the bounds are not kept */
  int64_t consumed; /* entries returned, less those a seek gave back */
  int final;
  /* the window model: what the next open or refill asks for, whether the
   * reader waited since the last grant, the wire id while open on it */
  uint32_t win;
  int starved, on_wire;
  uint32_t wid;
} titer;

/* The leader's side of the current connection: what it has read (sv_in, a
 * partial frame at most once parsed), and per id what is outstanding. */
enum { SV_OUT = 1, SV_TAINT = 2 };

/* The client hands out the lowest free id, so the ids it sends stay below
 * the number of requests in one program (programs are far shorter than
 * this).  A made-up reply may name any id: one at or above the bound can
 * never be sent, so the leader's view need not record it. */
#define SV_ID_BOUND (1u << 16)

typedef struct run {
  lp_client *c;
  uint32_t window;
  size_t max_frame;
  int keep_stale, polite;
  uint64_t now, last_token;
  tok *toks;
  size_t ntok;
  titer *its;
  size_t nit;
  int log_on;
  lp_buf sv_in;    /* bytes written to the leader, not yet parsed */
  uint8_t *sv_req; /* per request id: SV_OUT, SV_TAINT */
  uint8_t *sv_it;  /* per iterator id: open */
  size_t nsv_req, nsv_it;
  size_t out_checked; /* bytes at the start of out already validated */
  lp_buf pend;        /* made-up replies not fed yet */
  lp_buf fed;         /* the fed bytes after the last whole frame (mirror of the client's) */
  uint64_t skip;      /* bytes of an oversized reply frame still to drop (mirror) */
  lp_citer **expect;  /* iterators whose (re)open must come next in out, in order */
  size_t nexpect, expect_cap, expect_at;
} run;

static uint8_t *sv_slot(uint8_t **a, size_t *n, uint32_t id) {
  if (id >= *n) {
    size_t m = *n ? *n : 16;
    while (m <= id)
      m *= 2;
    *a = xrealloc(*a, m);
    memset(*a + *n, 0, m - *n);
    *n = m;
  }
  return &(*a)[id];
}

static tok *tok_find(run *R, uint64_t t) {
  if (t == 0 || t > R->ntok) return NULL;
  return &R->toks[t - 1]; /* tokens are 1, 2, 3, ...: checked at submit */
}

static int done(run *R, const tok *t) { return lp_client_done(R->c, t->token); }

/* ------------------------------------------------------------------------ */
/* The leader's view                                                          */
/* ------------------------------------------------------------------------ */

/* One request frame as the leader reads it. */
static void sv_request(run *R, const lp_request *q) {
  REQUIRE(q->id < SV_ID_BOUND);
  if (q->tag != LP_REQ_ITER) {
    uint8_t *s = sv_slot(&R->sv_req, &R->nsv_req, q->id);
    REQUIRE(q->tag >= LP_REQ_GET && q->tag <= LP_REQ_GETMANY);
    /* an id is free again only once its reply came */
    REQUIRE(!(*s & SV_OUT) || (*s & SV_TAINT));
    *s |= SV_OUT;
    return;
  }
  {
    uint8_t *s = sv_slot(&R->sv_it, &R->nsv_it, q->id);
    if (q->opts.present) {
      REQUIRE(!*s);
      REQUIRE(q->batch > 0 && q->batch <= R->window);
      REQUIRE(q->opts.has_keys && q->opts.keys);
      *s = 1;
    } else if (q->batch > 0) {
      REQUIRE(*s);
      REQUIRE(q->batch <= R->window);
    } else {
      REQUIRE(*s);
      *s = 0;
    }
  }
}

/* Whole request frames from buf[0..len); returns the bytes they take.  With
 * whole set, nothing may be left over. */
static size_t parse_requests(run *R, const char *buf, size_t len, int whole, int apply) {
  size_t off = 0;
  while (off < len) {
    lp_slice payload;
    lp_request q;
    size_t used;
    int rc = lp_wire_next_frame(buf + off, len - off, 0, &payload, &used);
    if (rc == LP_WIRE_NEED_MORE) break;
    REQUIRE(rc == LP_WIRE_OK); /* never an empty or oversized frame */
    REQUIRE(lp_wire_decode_request(payload, &q) == LP_WIRE_OK);
    if (apply) sv_request(R, &q);
    off += used;
  }
  if (whole) REQUIRE(off == len);
  return off;
}

static titer *titer_of(run *R, lp_citer *it) {
  size_t i;
  for (i = 0; i < R->nit; i++)
    if (R->its[i].it == it) return &R->its[i];
  return NULL;
}

static titer *titer_on_wire(run *R, uint32_t id) {
  size_t i;
  for (i = 0; i < R->nit; i++)
    if (R->its[i].on_wire && R->its[i].wid == id) return &R->its[i];
  return NULL;
}

/* The next frames of out must include an open of t, before any other open. */
static void expect_open(run *R, titer *t) {
  if (R->nexpect == R->expect_cap) {
    R->expect_cap = R->expect_cap ? R->expect_cap * 2 : 8;
    R->expect = xrealloc(R->expect, R->expect_cap * sizeof *R->expect);
  }
  R->expect[R->nexpect++] = t->it;
}

/* An iterator frame the client wrote, on the window model. */
static void out_iter_frame(run *R, const lp_request *q) {
  titer *t;
  if (q->opts.present) { /* an open: of the iterator expected next */
    int64_t rem = -1;
    uint32_t g;
    REQUIRE(R->expect_at < R->nexpect);
    t = titer_of(R, R->expect[R->expect_at++]);
    REQUIRE(t != NULL && !t->on_wire);
    g = t->win;
    if (t->r.limit >= 0) {
      rem = t->r.limit - t->consumed;
      REQUIRE(rem > 0);
      if (rem < (int64_t)g) g = (uint32_t)rem;
    }
    REQUIRE(q->batch == g);
    REQUIRE(q->opts.has_limit && q->opts.limit == (rem > INT32_MAX ? -1 : rem));
    REQUIRE(q->opts.has_reverse && q->opts.reverse == t->r.reverse);
    REQUIRE(titer_on_wire(R, q->id) == NULL);
    t->on_wire = 1;
    t->wid = q->id;
    t->final = F_NONE; /* a seek may reopen an iterator that had ended */
    return;
  }
  t = titer_on_wire(R, q->id);
  if (q->batch == 0) { /* an end; of an iterator closed already when t is NULL */
    if (t) t->on_wire = 0;
    return;
  }
  REQUIRE(t != NULL); /* a refill only for an iterator open on the wire */
  {
    uint32_t w = t->win;
    if (t->starved && w < R->window) w = w > R->window / 2 ? R->window : w * 2;
    REQUIRE(q->batch <= w);
    if (t->r.limit < 0)
      REQUIRE(q->batch == w);
    else
      REQUIRE((int64_t)q->batch <= t->r.limit - t->consumed);
    stat_refills++;
    stat_grown += w > t->win;
    t->win = w;
    t->starved = 0;
  }
}

/* Decodes the request frame at off of out, which must be whole and valid, into
 * q (its slices point into out); returns the frame's size. */
static size_t out_request(const lp_buf *out, size_t off, lp_request *q) {
  lp_slice payload;
  size_t used;
  REQUIRE(lp_wire_next_frame(out->ptr + off, out->len - off, 0, &payload, &used) == LP_WIRE_OK);
  REQUIRE(lp_wire_decode_request(payload, q) == LP_WIRE_OK);
  return used;
}

/* The out buffer only grows between writes and resets: validate what is new,
 * and follow its iterator frames on the window model. */
static void check_out(run *R) {
  lp_buf *out = lp_client_out(R->c);
  size_t off = R->out_checked;
  REQUIRE(out->len >= R->out_checked);
  while (off < out->len) {
    lp_request q;
    size_t used = out_request(out, off, &q);
    if (q.tag == LP_REQ_ITER) out_iter_frame(R, &q);
    off += used;
  }
  R->out_checked = out->len;
}

/* After an operation: every open it had to write was written. */
static void expect_done(run *R) {
  REQUIRE(R->expect_at == R->nexpect);
  R->nexpect = R->expect_at = 0;
}

static void op_write(run *R, prog *g) {
  lp_buf *out = lp_client_out(R->c);
  uint8_t b = next_byte(g);
  size_t n = out->len, used;
  if ((b & 0x80) && (size_t)(b & 0x7f) < n) n = b & 0x7f;
  append(&R->sv_in, out->ptr, n);
  lp_buf_consume(out, n);
  R->out_checked -= n;
  used = parse_requests(R, R->sv_in.ptr, R->sv_in.len, 0, 1);
  lp_buf_consume(&R->sv_in, used);
}

/* The connection is gone; the next one starts from nothing on both sides. */
static void disconnect(run *R) {
  size_t i;
  lp_client_reset(R->c);
  REQUIRE(lp_client_out(R->c)->len == 0);
  R->out_checked = 0;
  R->sv_in.len = 0;
  if (R->sv_req) memset(R->sv_req, 0, R->nsv_req);
  if (R->sv_it) memset(R->sv_it, 0, R->nsv_it);
  R->fed.len = 0;
  R->skip = 0;
  if (!R->keep_stale) R->pend.len = 0;
  for (i = 0; i < R->nit; i++)
    R->its[i].on_wire = 0;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                   */
/* ------------------------------------------------------------------------ */

static void op_submit(run *R, prog *g) {
  static const int tags[8] = {LP_REQ_GET,   LP_REQ_PUT,     LP_REQ_DEL,  LP_REQ_BATCH,
                              LP_REQ_CLEAR, LP_REQ_GETMANY, LP_REQ_ITER, 9};
  uint8_t b = next_byte(g);
  int tag = tags[b & 7];
  uint64_t deadline = (b & 8) ? R->now + 1 + (next_byte(g) & 15) : 0, t;
  lp_buf rest = {0};
  lp_range rg;
  size_t i, n;
  int rc = 0;
  switch (tag) {
    case LP_REQ_PUT: rc = lp_wire_rest_put(&rest, key_of(next_byte(g)), bytes_of(g)); break;
    case LP_REQ_BATCH:
      n = next_byte(g) % 4;
      for (i = 0; i < n && rc == 0; i++) {
        uint8_t k = next_byte(g);
        rc = lp_wire_rest_batch_op(&rest, k & 1, key_of((uint8_t)(k >> 1)),
                                   k & 1 ? LP_SLICE_NONE : bytes_of(g));
      }
      break;
    case LP_REQ_CLEAR:
      range_of(g, &rg);
      rc = lp_wire_rest_clear(&rest, &rg);
      break;
    case LP_REQ_GETMANY:
      n = next_byte(g) % 4;
      for (i = 0; i < n && rc == 0; i++)
        rc = lp_wire_rest_getmany_key(&rest, key_of(next_byte(g)));
      break;
    default: rc = lp_wire_rest_key(&rest, key_of(next_byte(g))); break;
  }
  /* levelparty's sync flag on a write (field 15) */
  if ((b & 0x10) && tag != LP_REQ_GET && tag != LP_REQ_GETMANY && tag <= LP_REQ_GETMANY)
    rc = rc || lp_wire_rest_sync(&rest);
  if (rc) fail("ENOMEM");
  t = lp_client_submit(R->c, tag, (lp_slice){rest.ptr ? rest.ptr : "", rest.len}, deadline);
  lp_buf_free(&rest);
  if (tag == LP_REQ_ITER || tag > LP_REQ_GETMANY) {
    REQUIRE(t == 0); /* not a request of the table */
    return;
  }
  REQUIRE(t == R->last_token + 1);
  R->last_token = t;
  R->toks = xrealloc(R->toks, (R->ntok + 1) * sizeof *R->toks);
  memset(&R->toks[R->ntok], 0, sizeof *R->toks);
  R->toks[R->ntok].token = t;
  R->toks[R->ntok].tag = tag;
  R->toks[R->ntok].deadline = deadline;
  R->toks[R->ntok].state = T_LIVE;
  R->ntok++;
}

static tok *pick_tok(run *R, prog *g) {
  uint8_t b = next_byte(g);
  return R->ntok ? &R->toks[(R->ntok - 1 - b % R->ntok)] : NULL; /* recent ones first */
}

static void op_take(run *R, prog *g) {
  tok *t = pick_tok(R, g);
  lp_result res;
  int d, rc;
  if (!t) return;
  d = done(R, t);
  memset(&res, 0, sizeof res);
  rc = lp_client_take(R->c, t->token, &res);
  if (t->state != T_LIVE) {
    REQUIRE(d == 1 && rc == -1); /* unknown */
    return;
  }
  if (!d) {
    REQUIRE(rc == -1);
    return;
  }
  REQUIRE(rc == 0);
  t->state = T_TAKEN;
  stat_taken++;
  if (res.code == LP_OK) {
    lp_response r;
    lp_slice payload = {res.payload.ptr, res.payload.len};
    REQUIRE(res.msg == NULL);
    REQUIRE(lp_wire_decode_response(payload, &r) == LP_WIRE_OK);
    REQUIRE(r.tag == (t->tag == LP_REQ_GETMANY ? LP_RES_GETMANY : LP_RES_CALLBACK));
  } else {
    REQUIRE(res.code > LP_OK && res.code < LP_CODE_MAX);
  }
  lp_result_free(&res);
  REQUIRE(lp_client_take(R->c, t->token, &res) == -1);
  REQUIRE(done(R, t) == 1);
}

static void op_forget(run *R, prog *g) {
  tok *t = pick_tok(R, g);
  if (!t) return;
  lp_client_forget(R->c, t->token); /* a no-op on an unknown token */
  if (t->state == T_LIVE) t->state = T_FORGOTTEN;
  REQUIRE(done(R, t) == 1);
}

static void op_expire(run *R, prog *g) {
  size_t i, due = 0, n;
  uint64_t next;
  R->now += 1 + (next_byte(g) & 7);
  for (i = 0; i < R->ntok; i++) {
    tok *t = &R->toks[i];
    if (t->state == T_LIVE && t->deadline && t->deadline <= R->now && !done(R, t)) due++;
  }
  n = lp_client_expire(R->c, R->now);
  REQUIRE(n >= due && n <= due + R->nit);
  for (i = 0; i < R->ntok; i++) {
    tok *t = &R->toks[i];
    if (t->state == T_LIVE && t->deadline && t->deadline <= R->now) REQUIRE(done(R, t));
  }
  next = lp_client_next_deadline(R->c);
  REQUIRE(next == 0 || next > R->now);
}

static void op_replay(run *R) {
  lp_buf *out;
  size_t off = 0, nreq = 0;
  size_t i, iters_seen = 0;
  disconnect(R);
  /* after the reset, an iterator with nothing to hand out is open on the
   * leader's side only, and is reopened, in opening order */
  for (i = 0; i < R->nit; i++)
    if (!lp_client_iter_ready(R->c, R->its[i].it)) expect_open(R, &R->its[i]);
  lp_client_replay(R->c);
  out = lp_client_out(R->c);
  while (off < out->len) {
    lp_request q;
    size_t used = out_request(out, off, &q);
    if (q.tag == LP_REQ_ITER) {
      REQUIRE(q.opts.present); /* only reopens */
      iters_seen++;
    } else {
      REQUIRE(!iters_seen);              /* requests first */
      REQUIRE(q.id == (uint32_t)nreq++); /* in token order under fresh ids */
    }
    off += used;
  }
  REQUIRE(nreq == lp_client_pending(R->c));
  REQUIRE(iters_seen == R->nexpect);
}

static void op_fail_all(run *R, prog *g) {
  static const lp_code codes[3] = {LP_ECLOSED, LP_ELEADERLOST, LP_EACCES};
  lp_client_fail_all(R->c, codes[next_byte(g) % 3], next_byte(g) & 1 ? "gone" : NULL);
  REQUIRE(lp_client_pending(R->c) == 0);
}

/* ------------------------------------------------------------------------ */
/* Made-up replies                                                            */
/* ------------------------------------------------------------------------ */

/* An id the leader has outstanding (of requests or iterators), or any. */
static uint32_t pick_id(prog *g, const uint8_t *slots, size_t n, uint8_t flag) {
  uint8_t b = next_byte(g);
  size_t i, k = 0, want;
  if ((b & 0xe0) == 0xe0) return b & 0x0f; /* any small id, sent or not */
  for (i = 0; i < n; i++)
    if (slots[i] & flag) k++;
  if (!k) return b & 0x07;
  want = b % k;
  for (i = 0; i < n; i++)
    if ((slots[i] & flag) && want-- == 0) return (uint32_t)i;
  return 0;
}

static void op_make_reply(run *R, prog *g) {
  uint32_t id = pick_id(g, R->sv_req, R->nsv_req, SV_OUT);
  uint8_t b = next_byte(g);
  lp_buf rest = {0};
  size_t i, n;
  int rc = 0;
  switch (b % 6) {
    case 0:
      if (b & 0x80) { /* a value of 32 to 152 bytes: over the smaller frame limits */
        static const char big[160] = "big";
        rc = lp_wire_enc_callback(&R->pend, id, NULL, 0, (lp_slice){big, 32 + 8 * ((b >> 3) & 15)});
      } else {
        rc = lp_wire_enc_callback(&R->pend, id, NULL, 0, LP_SLICE_NONE);
      }
      break;
    case 1: rc = lp_wire_enc_callback(&R->pend, id, NULL, 0, bytes_of(g)); break;
    case 2: rc = lp_wire_enc_callback(&R->pend, id, "NotFound: ", 10, LP_SLICE_NONE); break;
    case 3: rc = lp_wire_enc_callback(&R->pend, id, "EIO: disk", 9, LP_SLICE_NONE); break;
    case 4:
      n = next_byte(g) % 4;
      for (i = 0; i < n && rc == 0; i++)
        rc = lp_wire_rest_getmany_value(&rest, next_byte(g) & 1 ? bytes_of(g) : LP_SLICE_NONE);
      rc = rc || lp_wire_enc_getmany(&R->pend, id, NULL, 0,
                                     (lp_slice){rest.ptr ? rest.ptr : "", rest.len});
      break;
    default: rc = lp_wire_enc_getmany(&R->pend, id, "EIO: x", 6, (lp_slice){"", 0}); break;
  }
  if (rc) fail("ENOMEM");
  lp_buf_free(&rest);
}

/* IteratorData {1 id, [3 key], [4 value]}, either side possibly absent. */
static void iterdata_raw(lp_buf *b, uint32_t id, lp_slice key, lp_slice value) {
  lp_buf rest = {0};
  uint8_t h[2];
  if (key.ptr) {
    h[0] = 0x1a;
    h[1] = (uint8_t)key.len; /* < 128 */
    append(&rest, h, 2);
    append(&rest, key.ptr, key.len);
  }
  if (value.ptr) {
    h[0] = 0x22;
    h[1] = (uint8_t)value.len;
    append(&rest, h, 2);
    append(&rest, value.ptr, value.len);
  }
  if (lp_wire_frame(b, LP_RES_ITERDATA, id, (lp_slice){rest.ptr ? rest.ptr : "", rest.len}))
    fail("ENOMEM");
  lp_buf_free(&rest);
}

static void op_make_iter(run *R, prog *g) {
  uint32_t id = pick_id(g, R->sv_it, R->nsv_it, 1);
  uint8_t b = next_byte(g);
  size_t i, n;
  switch (b % 8) {
    case 0:
    case 1:
    case 2:
    case 3: /* a burst of entries; a long one, to use up larger windows */
      n = b % 8 == 3 ? 8 + (b >> 3) % 32 : 1 + (b >> 3) % 4;
      for (i = 0; i < n; i++) {
        uint8_t k = next_byte(g);
        iterdata_raw(&R->pend, id, key_of(k), k & 0x80 ? LP_SLICE_NONE : bytes_of(g));
      }
      break;
    case 4:
      if (lp_wire_enc_iterend(&R->pend, id)) fail("ENOMEM");
      break;
    case 5:
      if (lp_wire_enc_itererror(&R->pend, id, b & 8 ? "EIO: broken" : "boom", b & 8 ? 11 : 4))
        fail("ENOMEM");
      break;
    case 6: iterdata_raw(&R->pend, id, LP_SLICE_NONE, key_of(b)); break; /* no key */
    default: /* an empty error: an end marker to the client */
      if (lp_wire_enc_itererror(&R->pend, id, "", 0)) fail("ENOMEM");
      break;
  }
}

/* Bytes the client must skip (an empty frame, a frame of an unknown reply
 * type), or, one time in eight, raw program bytes. */
static void op_garbage(run *R, prog *g) {
  uint8_t b = next_byte(g);
  lp_slice s = bytes_of(g);
  if ((b & 7) == 0) {
    append(&R->pend, s.ptr, s.len);
  } else if ((b & 7) == 1) {
    append(&R->pend, "\x00", 1);
  } else {
    b = (uint8_t)(3 + b % 250); /* a tag past LP_RES_GETMANY */
    if (lp_wire_frame(&R->pend, b, 0, s)) fail("ENOMEM");
  }
}

/* A reply for request id r reached the client: the id is free again. */
static void sv_replied(run *R, uint32_t id) {
  uint8_t *s;
  if (id >= SV_ID_BOUND) return;
  s = sv_slot(&R->sv_req, &R->nsv_req, id);
  if (*s & SV_OUT)
    *s &= (uint8_t)~SV_OUT;
  else
    *s |= SV_TAINT; /* freed before the leader read it: the id may come twice */
}

/* What lp_client_feed must make of the fed bytes, mirrored: the frames it
 * completes, their effect on the leader's books (a reply frees its id), and
 * whether they must break the protocol.  *entries counts iterator entries,
 * the only frames whose verdict depends on the client's state. */
static int mirror_feed(run *R, size_t *entries) {
  size_t off = 0;
  int bad = 0;
  *entries = 0;
  while (off < R->fed.len && !bad) {
    lp_slice payload;
    lp_response r;
    size_t used;
    int rc = lp_wire_next_frame(R->fed.ptr + off, R->fed.len - off, R->max_frame, &payload, &used);
    if (rc == LP_WIRE_NEED_MORE) break;
    if (rc == LP_WIRE_TOO_BIG) {
      /* skipped once its tag and id are in; without them first, garbage */
      const char *p = R->fed.ptr + off;
      size_t avail = R->fed.len - off, pre, idn;
      uint64_t len, id;
      if (lp_varint_get(p, avail, &len, &pre) != 1 || len > UINT64_MAX - 16) {
        bad = 1;
        break;
      }
      if (avail - pre < 3) break;
      if ((unsigned char)p[pre + 1] != 0x08) {
        bad = 1;
        break;
      }
      rc = lp_varint_get(p + pre + 2, avail - pre - 2, &id, &idn);
      if (rc == 0) break;
      if (rc < 0) {
        bad = 1;
        break;
      }
      if ((unsigned char)p[pre] == LP_RES_CALLBACK || (unsigned char)p[pre] == LP_RES_GETMANY)
        sv_replied(R, (uint32_t)id);
      stat_oversized++;
      if (pre + len >= avail) {
        R->skip = pre + len - avail;
        off = R->fed.len;
        break;
      }
      off += (size_t)(pre + len);
      continue;
    }
    if (rc != LP_WIRE_OK && rc != LP_WIRE_EMPTY) {
      bad = 1;
      break;
    }
    off += used;
    if (rc == LP_WIRE_EMPTY) continue;
    rc = lp_wire_decode_response(payload, &r);
    if (rc == LP_WIRE_UNKNOWN_TAG) continue;
    if (rc != LP_WIRE_OK) {
      bad = 1;
      break;
    }
    if (r.tag == LP_RES_ITERDATA) {
      if (!(r.error.ptr && r.error.len) && (r.key.ptr || r.value.ptr)) ++*entries;
    } else {
      sv_replied(R, r.id);
    }
  }
  lp_buf_consume(&R->fed, off);
  return bad;
}

static void op_feed(run *R, prog *g) {
  uint8_t b = next_byte(g);
  size_t n = R->pend.len, entries, k;
  lp_err err;
  int rc, bad;
  if ((b & 0x80) && (size_t)(b & 0x7f) < n) n = b & 0x7f;
  err.code = LP_OK;
  rc = lp_client_feed(R->c, R->pend.ptr ? R->pend.ptr : "", n, &err);
  k = (uint64_t)n < R->skip ? n : (size_t)R->skip; /* the rest of an oversized frame */
  R->skip -= k;
  if (n > k) append(&R->fed, R->pend.ptr + k, n - k);
  lp_buf_consume(&R->pend, n);
  bad = mirror_feed(R, &entries);
  stat_fed_entries += entries;
  if (bad) REQUIRE(rc == -1);
  if (rc == 0) return;
  REQUIRE(rc == -1 && err.code == LP_EPROTO);
  REQUIRE(bad || entries > 0);
  stat_proto++;
  check_out(R);  /* the refills it wrote before the failure changed windows */
  disconnect(R); /* as the contract says: close, reset */
}

/* ------------------------------------------------------------------------ */
/* Iterators                                                                  */
/* ------------------------------------------------------------------------ */

static void op_iter_open(run *R, prog *g) {
  lp_range rg;
  titer *t;
  range_of(g, &rg);
  R->its = xrealloc(R->its, (R->nit + 1) * sizeof *R->its);
  t = &R->its[R->nit];
  memset(t, 0, sizeof *t);
  t->it = lp_client_iter_open(R->c, &rg);
  REQUIRE(t->it != NULL);
  t->r = rg;
  t->r.gt = t->r.gte = t->r.lt = t->r.lte = LP_SLICE_NONE;
  if (t->r.limit < 0) t->r.limit = -1;
  t->final = F_NONE;
  t->win = R->window < LP_FIRST_WINDOW ? R->window : LP_FIRST_WINDOW;
  R->nit++;
  if (t->r.limit != 0) expect_open(R, t);
}

static titer *pick_iter(run *R, prog *g) {
  uint8_t b = next_byte(g);
  if (!R->nit) return NULL;
  return &R->its[b & 1 ? R->nit - 1 : (size_t)(b >> 1) % R->nit]; /* the newest half the time */
}

static unsigned sum_bytes(lp_slice s) {
  unsigned h = 0;
  size_t i;
  for (i = 0; i < s.len; i++)
    h = h * 31u + (unsigned char)s.ptr[i];
  return h;
}

static volatile unsigned sink; /* the entries' bytes are read, so ASan sees them */

static void op_iter_next(run *R, prog *g) {
  titer *t = pick_iter(R, g);
  int k, steps = 1 + (next_byte(g) & 7);
  if (!t) return;
  for (k = 0; k < steps; k++) {
    lp_slice key, value;
    lp_err err;
    int ready = lp_client_iter_ready(R->c, t->it);
    int rc = lp_client_iter_next(R->c, t->it, &key, &value, &err);
    REQUIRE(ready == (rc != 2));
    if (t->final != F_NONE) REQUIRE(rc == t->final);
    if (t->r.limit >= 0 && t->consumed == t->r.limit) REQUIRE(rc == 0); /* ends at its limit */
    if (rc == 2) break;
    if (rc == 1) {
      t->consumed++;
      stat_entries++;
      REQUIRE(t->r.limit < 0 || t->consumed <= t->r.limit);
      REQUIRE((key.ptr != NULL) == (t->r.keys != 0));
      REQUIRE(t->r.values || value.ptr == NULL);
      sink += sum_bytes(key) + sum_bytes(value);
      continue;
    }
    REQUIRE(rc == 0 || rc == -1);
    if (rc == -1) REQUIRE(err.code > LP_OK && err.code < LP_CODE_MAX);
    t->final = rc;
    break;
  }
}

static void op_iter_close(run *R, prog *g) {
  titer *t = pick_iter(R, g);
  if (!t) return;
  lp_client_iter_close(R->c, t->it);
  /* the rest keep their opening order, which a replay's reopens follow */
  memmove(t, t + 1, (size_t)(R->its + R->nit - (t + 1)) * sizeof *t);
  R->nit--;
}

/* A seek to a key; an iterator known to have ended (not failed: its error
 * may still be behind buffered entries) may give entries back. */
static void op_iter_seek(run *R, titer *t, uint8_t b) {
  int64_t unread = t->final == 0 ? (b >> 3) & 3 : 0;
  size_t before = lp_client_out(R->c)->len;
  REQUIRE(lp_client_iter_seek(R->c, t->it, key_of((uint8_t)(b >> 5)), unread) == 0);
  stat_seeks++;
  if (unread > 0) t->consumed = unread < t->consumed ? t->consumed - unread : 0;
  if (t->final == -1 || (t->r.limit >= 0 && t->consumed >= t->r.limit)) {
    REQUIRE(lp_client_out(R->c)->len == before); /* stays failed, or at its limit */
    return;
  }
  if (t->final == 0) {
    expect_open(R, t);
    return;
  }
  /* not known to have ended: reopened, unless it failed with entries still
   * buffered (then nothing changes) */
  if (lp_client_out(R->c)->len == before) {
    REQUIRE(lp_client_iter_ready(R->c, t->it));
  } else {
    expect_open(R, t);
  }
}

static void op_iter_deadline(run *R, prog *g) {
  titer *t = pick_iter(R, g);
  uint8_t b = next_byte(g);
  if (!t) return;
  if (b & 0x80) {
    op_iter_seek(R, t, b);
    return;
  }
  lp_client_iter_wait_deadline(R->c, t->it, R->now + 1 + (b & 7));
  /* a wait before the first entry is the open's latency */
  if (t->consumed > 0) t->starved = 1;
}

/* ------------------------------------------------------------------------ */
/* The finished-token log                                                     */
/* ------------------------------------------------------------------------ */

/* Every token finished by now can no longer be expected in the log. */
static void excuse_finished(run *R) {
  size_t i;
  for (i = 0; i < R->ntok; i++)
    if (done(R, &R->toks[i])) R->toks[i].excused = 1;
}

static void op_log(run *R, prog *g) {
  R->log_on = next_byte(g) & 1;
  lp_client_log_finished(R->c, R->log_on); /* empties the log */
  excuse_finished(R);
}

static void op_drain(run *R) {
  const uint64_t *p;
  uint64_t *copy;
  size_t n, i;
  int lost = lp_client_finished(R->c, &p, &n);
  REQUIRE(lost == 0 || lost == -1);
  copy = xrealloc(NULL, n * sizeof *copy);
  if (n) memcpy(copy, p, n * sizeof *copy); /* valid only until the next call into c */
  for (i = 0; i < n; i++) {
    tok *t = tok_find(R, copy[i]);
    REQUIRE(t != NULL);
    REQUIRE(!t->logged); /* a request finishes once */
    REQUIRE(done(R, t));
    t->logged = 1;
    stat_logged++;
  }
  free(copy);
  if (lost) {
    excuse_finished(R);
    return;
  }
  if (!R->log_on) return;
  for (i = 0; i < R->ntok; i++) {
    tok *t = &R->toks[i];
    if (!t->logged && !t->excused) REQUIRE(!done(R, t));
  }
}

/* ------------------------------------------------------------------------ */
/* The run                                                                    */
/* ------------------------------------------------------------------------ */

static void check_counts(run *R) {
  size_t i, waiting = 0;
  for (i = 0; i < R->ntok; i++)
    if (R->toks[i].state == T_LIVE && !done(R, &R->toks[i])) waiting++;
  REQUIRE(lp_client_pending(R->c) == waiting);
  REQUIRE(lp_client_iterators(R->c) == R->nit);
  check_out(R);
  expect_done(R);
}

static void finish(run *R) {
  size_t i;
  if (R->polite) {
    /* the out buffer goes out whole; every token is taken or forgotten and
     * every iterator closed before the client is freed */
    prog none = {NULL, 0, 0};
    op_write(R, &none);
    REQUIRE(R->sv_in.len == 0);
    for (i = 0; i < R->ntok; i++) {
      tok *t = &R->toks[i];
      lp_result res;
      if (t->state != T_LIVE) continue;
      if (done(R, t)) {
        REQUIRE(lp_client_take(R->c, t->token, &res) == 0);
        lp_result_free(&res);
      } else {
        lp_client_forget(R->c, t->token);
      }
    }
    while (R->nit)
      lp_client_iter_close(R->c, R->its[--R->nit].it);
    REQUIRE(lp_client_pending(R->c) == 0 && lp_client_iterators(R->c) == 0);
  }
  lp_client_free(R->c);
  free(R->toks);
  free(R->its);
  free(R->expect);
  free(R->sv_req);
  free(R->sv_it);
  lp_buf_free(&R->sv_in);
  lp_buf_free(&R->pend);
  lp_buf_free(&R->fed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint32_t windows[8] = {1, 2, 3, 4, 40, 16, 1024, 0};
  static const size_t limits[4] = {0, 24, 64, 4096};
  prog g = {data, size, 0};
  lp_client_opts o;
  run R;
  uint8_t cfg;
  if (size == 0) return 0;
  cfg = next_byte(&g);
  memset(&R, 0, sizeof R);
  lp_client_opts_init(&o);
  o.window = windows[cfg & 7];
  o.max_frame = limits[(cfg >> 3) & 3];
  R.window = o.window ? o.window : LP_DEFAULT_WINDOW;
  R.max_frame = o.max_frame;
  R.keep_stale = (cfg >> 5) & 1;
  R.polite = (cfg >> 6) & 1;
  R.now = 1000;
  R.c = lp_client_new(&o);
  REQUIRE(R.c != NULL);
  if (cfg & 0x80) {
    R.log_on = 1;
    lp_client_log_finished(R.c, 1);
  }
  while (g.off < g.n) {
    uint8_t op = next_byte(&g) % 18;
    stat_ops[op]++;
    switch (op) {
      case 0:
      case 1: op_submit(&R, &g); break;
      case 2: op_write(&R, &g); break;
      case 3: op_make_reply(&R, &g); break;
      case 4: op_make_iter(&R, &g); break;
      case 5: op_garbage(&R, &g); break;
      case 6: op_feed(&R, &g); break;
      case 7: op_take(&R, &g); break;
      case 8: op_forget(&R, &g); break;
      case 9: op_expire(&R, &g); break;
      case 10: disconnect(&R); break;
      case 11: op_replay(&R); break;
      case 12: op_iter_open(&R, &g); break;
      case 13: op_iter_next(&R, &g); break;
      case 14: op_iter_close(&R, &g); break;
      case 15: op_iter_deadline(&R, &g); break;
      case 16: op_log(&R, &g); break;
      default: /* a drain, or one time in eight the end of retrying */
        if (next_byte(&g) & 7)
          op_drain(&R);
        else
          op_fail_all(&R, &g);
        break;
    }
    check_counts(&R);
  }
  finish(&R);
  return 0;
}

#ifdef LP_FUZZ_STANDALONE
/* A short fuzz pass without libFuzzer: the files named on the command line,
 * then random programs. */

#include "standalone.h"

static void put(lp_buf *b, unsigned c) {
  uint8_t u = (uint8_t)c;
  append(b, &u, 1);
}

/* Operations in the order that streams entries to an iterator: open one,
 * write the open, make up entries for an open iterator id, feed them, step
 * the newest iterator.  Each argument byte as its operation reads it. */
static void stream_macro(lp_buf *in) {
  unsigned b = (unsigned)tap_rng() & 0x7f, n, i;
  put(in, 12); /* op_iter_open: range_of */
  put(in, b);
  put(in, tap_rng());
  if (b & 4) put(in, tap_rng());
  if (b & 8) put(in, tap_rng());
  put(in, 2); /* op_write: everything */
  put(in, 0);
  put(in, 4);                                                     /* op_make_iter */
  put(in, tap_rng() % 0xe0);                                      /* an open id */
  b = (unsigned)(tap_rng() % 4) | (unsigned)(tap_rng() % 4) << 3; /* a burst */
  put(in, b);
  n = 1 + (b >> 3) % 4;
  for (i = 0; i < n; i++) {
    unsigned k = (unsigned)tap_rng();
    put(in, k);
    if (!(k & 0x80)) {
      unsigned len = (unsigned)tap_rng() % 4, j;
      put(in, len);
      for (j = 0; j < len; j++)
        put(in, 'a' + j);
    }
  }
  put(in, 6); /* op_feed: everything */
  put(in, 0);
  put(in, 13); /* op_iter_next: the newest, up to 8 steps */
  put(in, 1);
  put(in, 7);
}

/* A reader that waits: open an iterator without a limit, write the open,
 * stream a full first window (LP_FIRST_WINDOW entries) for an open id, feed
 * it, step once, wait (op 15), step until the refill, which must double the
 * window when the configured one allows it; then stream that larger window
 * and step, without waiting, until the next refill, which must not. */
static void burst32(lp_buf *in) {
  unsigned i;
  put(in, 4); /* op_make_iter: a long burst of 8 + 24 entries */
  put(in, tap_rng() % 0xe0);
  put(in, 24u << 3 | 3);
  for (i = 0; i < 32; i++)
    put(in, 0x80 | (unsigned)tap_rng()); /* a key, no value */
}

static void window_macro(lp_buf *in) {
  unsigned b = (unsigned)tap_rng() & 0x73, i;
  put(in, 12); /* op_iter_open: range_of, no limit */
  put(in, b);
  put(in, tap_rng() & 0x3f);
  put(in, 2); /* op_write: everything */
  put(in, 0);
  burst32(in); /* LP_FIRST_WINDOW entries */
  put(in, 6);  /* op_feed: everything */
  put(in, 0);
  put(in, 13); /* op_iter_next: the newest, one step */
  put(in, 1);
  put(in, 0);
  put(in, 15); /* op_iter_deadline: the newest waits */
  put(in, 1);
  put(in, 3);
  for (i = 0; i < 3; i++) {
    put(in, 13); /* op_iter_next: the newest, 8 steps */
    put(in, 1);
    put(in, 7);
  }
  burst32(in);
  burst32(in);
  put(in, 6); /* op_feed: everything */
  put(in, 0);
  for (i = 0; i < 6; i++) {
    put(in, 13); /* op_iter_next: the newest, 8 steps */
    put(in, 1);
    put(in, 7);
  }
}

/* How often random programs draw each operation (by its number in
 * LLVMFuzzerTestOneInput's switch): garbage and resets rarely, or nothing
 * would survive long enough to stream iterator entries. */
static const unsigned weights[18] = {6, 6, 10, 8, 10, 1, 12, 6, 2, 3, 1, 2, 4, 10, 1, 4, 1, 2};

/* One random program: the configuration byte, then 1 to 120 operations
 * drawn by weight, with 0 to 4 argument bytes each, or a macro. */
static void one_input(lp_buf *in) {
  static unsigned total_weight;
  uint8_t c = (uint8_t)tap_rng();
  size_t k, n;
  if (!total_weight)
    for (k = 0; k < sizeof weights / sizeof weights[0]; k++)
      total_weight += weights[k];
  append(in, &c, 1);
  n = 1 + (size_t)(tap_rng() % 120);
  for (k = 0; k < n; k++) {
    unsigned w, op = 0, j;
    if (tap_rng() % 8 == 0) {
      stream_macro(in);
      continue;
    }
    if (tap_rng() % 24 == 0) {
      window_macro(in);
      continue;
    }
    /* an operation drawn by weight, then arguments; an operation that
     * takes fewer leaves the rest to be read as the next operations */
    w = (unsigned)(tap_rng() % total_weight);
    while (w >= weights[op])
      w -= weights[op++];
    c = (uint8_t)(op + 18 * (tap_rng() % 14));
    append(in, &c, 1);
    for (j = tap_rng() % 5; j > 0; j--) {
      c = (uint8_t)tap_rng();
      append(in, &c, 1);
    }
  }
  LLVMFuzzerTestOneInput((const uint8_t *)in->ptr, in->len);
}

static void report(void) {
  size_t k;
  printf("# ops:");
  for (k = 0; k < sizeof stat_ops / sizeof stat_ops[0]; k++)
    printf(" %lu", stat_ops[k]);
  printf(" | taken %lu, entries fed %lu, returned %lu, protocol errors %lu, logged %lu, "
         "oversized replies %lu, seeks %lu, refills %lu (%lu grown)\n",
         stat_taken, stat_fed_entries, stat_entries, stat_proto, stat_logged, stat_oversized,
         stat_seeks, stat_refills, stat_grown);
}

int main(int argc, char **argv) {
  return standalone_main(argc, argv, "fuzz_client", 20000, one_input, report,
                         "every invariant held");
}
#endif

/*
 * client.c: lp_client, the follower's request table (contract: private.h).
 *
 * Kept across reconnections; never touches a socket, the Lua state or the
 * clock.  Invariants:
 *   - a request is in the token hash from submit until taken or forgotten;
 *     while pending it is also on the pending list (token order, which is
 *     replay order) and, when it has a deadline, in the deadline heap;
 *   - wire ids come from an id map that hands out the lowest free slot (as
 *     Node's numeric-id-map); iterators have an id map of their own.  A slot
 *     whose owner finished before its reply stays reserved as an orphan until
 *     the reply arrives or a reset, so that a late reply finds no one;
 *   - an iterator's window is refilled only once exhausted, so granted - recv
 *     is exactly what the server may still send; an iterator closed early
 *     leaves an orphan slot counting those frames down.
 * The protocol side: docs/PROTOCOL.md, "Iterators and windows" and "Replay
 * and resume".
 */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MSG "timeout: no reply from the leader within the timeout"
#define NO_HEAP     ((size_t)-1)

/* ------------------------------------------------------------------------ */
/* Id maps: lowest free slot first                                           */
/* ------------------------------------------------------------------------ */

/* A slot is free (used == 0), owned (ptr != NULL), or an orphan (used, ptr
 * NULL).  For iterator orphans, `left` counts the frames the server may still
 * send on that id. */
typedef struct idslot {
  void *ptr;
  uint32_t left;
  uint8_t used;
} idslot;

/* Invariant: every id >= nslot is free; `heap` is a min-heap holding exactly
 * the free ids below nslot.  So the lowest free id is min(heap[0], nslot).
 * heap has the same capacity as slot, so pushing never allocates. */
typedef struct idmap {
  idslot *slot;
  uint32_t *heap;
  uint32_t nslot, cap, nheap;
} idmap;

static void heapu_push(idmap *m, uint32_t v) {
  uint32_t i = m->nheap++;
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (m->heap[p] <= v) break;
    m->heap[i] = m->heap[p];
    i = p;
  }
  m->heap[i] = v;
}

static uint32_t heapu_pop(idmap *m) {
  uint32_t top = m->heap[0], v = m->heap[--m->nheap], i = 0, n = m->nheap;
  for (;;) {
    uint32_t l = 2 * i + 1, s;
    if (l >= n) break;
    s = (l + 1 < n && m->heap[l + 1] < m->heap[l]) ? l + 1 : l;
    if (m->heap[s] >= v) break;
    m->heap[i] = m->heap[s];
    i = s;
  }
  if (n) m->heap[i] = v;
  return top;
}

/* Takes the lowest free id for ptr.  0 ok, -1 out of memory. */
static int idmap_alloc(idmap *m, void *ptr, uint32_t *id) {
  uint32_t i;
  if (m->nheap) {
    i = heapu_pop(m);
  } else {
    if (m->nslot == m->cap) {
      uint32_t ncap = m->cap ? m->cap * 2 : 16;
      idslot *s;
      uint32_t *h;
      if (ncap <= m->cap) return -1;
      s = realloc(m->slot, (size_t)ncap * sizeof *s);
      if (!s) return -1;
      m->slot = s;
      h = realloc(m->heap, (size_t)ncap * sizeof *h);
      if (!h) return -1; /* slot grew but cap did not: harmless */
      m->heap = h;
      m->cap = ncap;
    }
    i = m->nslot++;
  }
  m->slot[i].ptr = ptr;
  m->slot[i].left = 0;
  m->slot[i].used = 1;
  *id = i;
  return 0;
}

static void idmap_release(idmap *m, uint32_t id) {
  if (id >= m->nslot || !m->slot[id].used) return;
  m->slot[id].used = 0;
  m->slot[id].ptr = NULL;
  heapu_push(m, id);
}

static idslot *idmap_get(idmap *m, uint32_t id) {
  if (id >= m->nslot || !m->slot[id].used) return NULL;
  return &m->slot[id];
}

static void idmap_clear(idmap *m) {
  m->nslot = 0;
  m->nheap = 0;
}

static void idmap_free(idmap *m) {
  free(m->slot);
  free(m->heap);
  memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

/* The two intrusive doubly-linked lists (pending requests, open iterators):
 * node has prev/next fields, head and tail are the list's ends.  A node is
 * on at most one list, and on it exactly while linked (prev/next NULL
 * otherwise). */
#define DLIST_APPEND(head, tail, node)                                                             \
  do {                                                                                             \
    (node)->prev = (tail);                                                                         \
    (node)->next = NULL;                                                                           \
    if (tail)                                                                                      \
      (tail)->next = (node);                                                                       \
    else                                                                                           \
      (head) = (node);                                                                             \
    (tail) = (node);                                                                               \
  } while (0)

#define DLIST_UNLINK(head, tail, node)                                                             \
  do {                                                                                             \
    if ((node)->prev)                                                                              \
      (node)->prev->next = (node)->next;                                                           \
    else                                                                                           \
      (head) = (node)->next;                                                                       \
    if ((node)->next)                                                                              \
      (node)->next->prev = (node)->prev;                                                           \
    else                                                                                           \
      (tail) = (node)->prev;                                                                       \
    (node)->prev = (node)->next = NULL;                                                            \
  } while (0)

typedef struct creq creq;
struct creq {
  uint64_t token;
  int tag;
  char *rest; /* copy of the body after the id, in the same allocation */
  size_t restlen;
  uint64_t deadline; /* 0 = none */
  int done;
  int on_wire; /* id is valid and its slot points here */
  uint32_t id;
  size_t hidx;       /* index in the deadline heap, NO_HEAP when not there */
  creq *prev, *next; /* pending list (token order), only while pending */
  creq *hnext;       /* token hash chain */
  lp_result res;     /* valid once done */
};

/* One buffered iterator entry: its key then its value, at off in the
 * iterator's byte arena (it->bytes). */
typedef struct centry {
  size_t off, klen, vlen;
  int hasv;
} centry;

enum { IT_NONE = 0, IT_END, IT_ERROR };

struct lp_citer {
  lp_citer *prev, *next;    /* c->iters, opening order */
  lp_range r;               /* the caller's range; bounds are owned copies */
  int64_t consumed;         /* entries returned to the caller (the limit) */
  int64_t pos;              /* of them, since the open or the last seek */
  lp_slice seek;            /* the last seek target (owned), or absent */
  centry cur;               /* last entry returned (its key is the bookmark);
                               kept until the next entry is returned; valid
                               once pos > 0 */
  centry *q;                /* ring of entries received and not consumed */
  size_t qhead, qlen, qcap; /* qcap: 0 or a power of two */
  lp_buf bytes;             /* arena: cur's bytes, then the queued entries' in
                               queue order; compacted, not freed, per entry */
  int on_wire;
  uint32_t id;
  uint32_t granted, recv; /* window last sent; entries received since */
  uint32_t win;           /* the window the next open or refill asks for:
                             LP_FIRST_WINDOW doubling up to o.window */
  int starved;            /* the caller waited for entries since that grant */
  int term;               /* IT_END / IT_ERROR: comes after the buffered entries */
  int term_local;         /* term survives a reset (set by us, not by the server) */
  lp_err err;             /* for IT_ERROR */
  uint64_t deadline;      /* current wait, 0 = none */
};

struct lp_client {
  lp_client_opts o;
  uint64_t last_token;
  lp_buf out, in, scratch;
  creq **hb; /* token hash buckets, power of two */
  size_t nhb, nreq;
  creq *phead, *ptail; /* pending, token order */
  size_t npending;
  creq **dh; /* deadline heap */
  size_t ndh, dhcap;
  idmap rids, iids;
  lp_citer *ihead, *itail;
  size_t niters;
  /* finished-token log (lp_client_log_finished): tokens in finishing order */
  uint64_t *fin;
  size_t nfin, fincap;
  int log_fin;  /* recording */
  int fin_lost; /* a token could not be recorded (out of memory) */
  /* bytes of a reply frame over max_frame still to drop as they arrive;
   * while nonzero, `in` is empty */
  uint64_t skip;
};

/* ------------------------------------------------------------------------ */
/* Options, lifetime                                                         */
/* ------------------------------------------------------------------------ */

void lp_client_opts_init(lp_client_opts *o) {
  o->window = LP_DEFAULT_WINDOW;
  o->max_frame = LP_DEFAULT_MAX_FRAME;
}

lp_client *lp_client_new(const lp_client_opts *o) {
  lp_client *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (o)
    c->o = *o;
  else
    lp_client_opts_init(&c->o);
  if (c->o.window == 0) c->o.window = LP_DEFAULT_WINDOW;
  if (c->o.max_frame == 0) c->o.max_frame = LP_DEFAULT_MAX_FRAME;
  return c;
}

static void result_clear(lp_result *r) {
  free(r->msg);
  lp_buf_free(&r->payload);
  memset(r, 0, sizeof *r);
}

void lp_result_free(lp_result *res) {
  if (res) result_clear(res);
}

static void req_free(creq *q) {
  result_clear(&q->res);
  free(q);
}

/* Drops the queued entries; keeps cur (the bookmark). */
static void citer_drop_buffer(lp_citer *it) {
  it->qlen = it->qhead = 0;
  it->bytes.len = it->pos > 0 ? it->cur.off + it->cur.klen + it->cur.vlen : 0;
}

static void citer_free(lp_citer *it) {
  free(it->q);
  lp_buf_free(&it->bytes);
  lp_slice_free(&it->r.gt);
  lp_slice_free(&it->r.gte);
  lp_slice_free(&it->r.lt);
  lp_slice_free(&it->r.lte);
  lp_slice_free(&it->seek);
  free(it);
}

void lp_client_free(lp_client *c) {
  size_t i;
  lp_citer *it;
  if (!c) return;
  for (i = 0; i < c->nhb; i++) {
    creq *q = c->hb[i];
    while (q) {
      creq *n = q->hnext;
      req_free(q);
      q = n;
    }
  }
  free(c->hb);
  free(c->dh);
  free(c->fin);
  it = c->ihead;
  while (it) {
    lp_citer *n = it->next;
    citer_free(it);
    it = n;
  }
  idmap_free(&c->rids);
  idmap_free(&c->iids);
  lp_buf_free(&c->out);
  lp_buf_free(&c->in);
  lp_buf_free(&c->scratch);
  free(c);
}

lp_buf *lp_client_out(lp_client *c) { return &c->out; }

/* ------------------------------------------------------------------------ */
/* Token hash                                                                */
/* ------------------------------------------------------------------------ */

/* Makes room for one more request.  0 ok, -1 when there is no table at all;
 * a failed growth only lengthens the chains. */
static int hash_reserve(lp_client *c) {
  size_t n, i;
  creq **nb;
  if (c->nhb && c->nreq < c->nhb) return 0;
  n = c->nhb ? c->nhb * 2 : 64;
  nb = calloc(n, sizeof *nb);
  if (!nb) return c->nhb ? 0 : -1;
  for (i = 0; i < c->nhb; i++) {
    creq *q = c->hb[i];
    while (q) {
      creq *nx = q->hnext;
      size_t b = (size_t)(q->token & (n - 1));
      q->hnext = nb[b];
      nb[b] = q;
      q = nx;
    }
  }
  free(c->hb);
  c->hb = nb;
  c->nhb = n;
  return 0;
}

static void hash_insert(lp_client *c, creq *q) {
  size_t b = (size_t)(q->token & (c->nhb - 1));
  q->hnext = c->hb[b];
  c->hb[b] = q;
  c->nreq++;
}

static creq *hash_find(lp_client *c, uint64_t token) {
  creq *q;
  if (!c->nhb) return NULL;
  for (q = c->hb[token & (c->nhb - 1)]; q; q = q->hnext)
    if (q->token == token) return q;
  return NULL;
}

static void hash_remove(lp_client *c, creq *q) {
  creq **pp = &c->hb[q->token & (c->nhb - 1)];
  while (*pp) {
    if (*pp == q) {
      *pp = q->hnext;
      c->nreq--;
      return;
    }
    pp = &(*pp)->hnext;
  }
}

/* ------------------------------------------------------------------------ */
/* Deadline heap (pending requests with a deadline)                          */
/* ------------------------------------------------------------------------ */

static int dl_less(const creq *a, const creq *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->token < b->token);
}

static void dl_set(lp_client *c, size_t i, creq *q) {
  c->dh[i] = q;
  q->hidx = i;
}

static void dl_up(lp_client *c, size_t i) {
  creq *q = c->dh[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!dl_less(q, c->dh[p])) break;
    dl_set(c, i, c->dh[p]);
    i = p;
  }
  dl_set(c, i, q);
}

static void dl_down(lp_client *c, size_t i) {
  creq *q = c->dh[i];
  for (;;) {
    size_t l = 2 * i + 1, s;
    if (l >= c->ndh) break;
    s = (l + 1 < c->ndh && dl_less(c->dh[l + 1], c->dh[l])) ? l + 1 : l;
    if (!dl_less(c->dh[s], q)) break;
    dl_set(c, i, c->dh[s]);
    i = s;
  }
  dl_set(c, i, q);
}

static int dl_reserve(lp_client *c) {
  size_t n;
  creq **nd;
  if (c->ndh < c->dhcap) return 0;
  n = c->dhcap ? c->dhcap * 2 : 16;
  nd = realloc(c->dh, n * sizeof *nd);
  if (!nd) return -1;
  c->dh = nd;
  c->dhcap = n;
  return 0;
}

static void dl_push(lp_client *c, creq *q) { /* after dl_reserve */
  c->dh[c->ndh] = q;
  q->hidx = c->ndh++;
  dl_up(c, q->hidx);
}

static void dl_remove(lp_client *c, creq *q) {
  size_t i = q->hidx;
  creq *last;
  if (i == NO_HEAP) return;
  q->hidx = NO_HEAP;
  last = c->dh[--c->ndh];
  if (i == c->ndh) return;
  dl_set(c, i, last);
  dl_up(c, i);
  dl_down(c, last->hidx);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

static void log_finished(lp_client *c, uint64_t token);

/* The failure of a request whose frame exceeds max_frame: the leader would
 * refuse it (docs/PROTOCOL.md, "Framing"), so it never goes on the wire and
 * is never retried. */
static void too_large_msg(lp_client *c, size_t payload, char *buf, size_t n) {
  snprintf(buf, n, "the request is %zu bytes, over the frame limit of %zu", payload,
           c->o.max_frame);
}

/* Frames q under the lowest free id.  0 ok, -1 out of memory, -2 when the
 * frame would exceed max_frame (*payload then says by how much; no id is
 * taken).  The id is counted at its actual width, so the check is exact. */
static int frame_req(lp_client *c, creq *q, size_t *payload) {
  uint32_t id;
  if (idmap_alloc(&c->rids, q, &id)) return -1;
  *payload = lp_wire_frame_payload(id, q->restlen);
  if (*payload > c->o.max_frame) {
    idmap_release(&c->rids, id);
    return -2;
  }
  if (lp_wire_frame(&c->out, q->tag, id, (lp_slice){q->rest, q->restlen})) {
    idmap_release(&c->rids, id);
    return -1;
  }
  q->id = id;
  q->on_wire = 1;
  return 0;
}

uint64_t lp_client_submit(lp_client *c, int tag, lp_slice rest, uint64_t deadline_ns) {
  creq *q;
  size_t payload = 0;
  int rc;
  if (!c || tag < LP_REQ_GET || tag > LP_REQ_GETMANY || tag == LP_REQ_ITER) return 0;
  if (!rest.ptr && rest.len) return 0;
  if (hash_reserve(c) || (deadline_ns && dl_reserve(c))) return 0;
  if (rest.len > SIZE_MAX - sizeof *q) return 0;
  q = malloc(sizeof *q + rest.len); /* the request, then its body */
  if (!q) return 0;
  memset(q, 0, sizeof *q);
  q->rest = (char *)(q + 1);
  if (rest.len) memcpy(q->rest, rest.ptr, rest.len);
  q->restlen = rest.len;
  q->tag = tag;
  q->deadline = deadline_ns;
  q->hidx = NO_HEAP;
  rc = frame_req(c, q, &payload);
  if (rc == -1) {
    req_free(q);
    return 0;
  }
  q->token = ++c->last_token;
  hash_insert(c, q);
  if (rc == -2) { /* finished at once, never pending */
    char msg[128];
    too_large_msg(c, payload, msg, sizeof msg);
    q->done = 1;
    q->res.code = LP_ETOOLARGE;
    q->res.msg = strdup(msg);
    if (c->log_fin) log_finished(c, q->token);
    return q->token;
  }
  if (deadline_ns) dl_push(c, q);
  DLIST_APPEND(c->phead, c->ptail, q);
  c->npending++;
  return q->token;
}

/* Appends token to the finished-token log (lp_client_log_finished). */
static void log_finished(lp_client *c, uint64_t token) {
  if (c->fin_lost) return; /* the poller checks every waiter anyway */
  if (c->nfin == LP_FINISHED_LOG_MAX) {
    /* Nobody drained the log (luv loaded but its loop not running, the
     * requests waited for by blocking calls): drop it rather than grow. */
    c->nfin = 0;
    c->fin_lost = 1;
    return;
  }
  if (c->nfin == c->fincap) {
    size_t cap = c->fincap ? c->fincap * 2 : 64;
    uint64_t *fin = realloc(c->fin, cap * sizeof *fin);
    if (fin == NULL) {
      c->nfin = 0;
      c->fin_lost = 1;
      return;
    }
    c->fin = fin;
    c->fincap = cap;
  }
  c->fin[c->nfin++] = token;
}

/* Takes q out of the pending structures.  If it still holds a wire id the
 * slot becomes an orphan: the reply may still come and must find no one. */
static void req_unpend(lp_client *c, creq *q) {
  if (q->done) return;
  q->done = 1;
  if (c->log_fin) log_finished(c, q->token);
  DLIST_UNLINK(c->phead, c->ptail, q);
  dl_remove(c, q);
  c->npending--;
  if (q->on_wire) {
    idslot *s = idmap_get(&c->rids, q->id);
    if (s) s->ptr = NULL;
    q->on_wire = 0;
  }
}

static void req_fail(lp_client *c, creq *q, lp_code code, const char *msg) {
  req_unpend(c, q);
  q->res.code = code;
  q->res.msg = msg ? strdup(msg) : NULL;
}

int lp_client_done(lp_client *c, uint64_t token) {
  creq *q = hash_find(c, token);
  return q ? q->done : 1;
}

int lp_client_take(lp_client *c, uint64_t token, lp_result *res) {
  creq *q = hash_find(c, token);
  if (!q || !q->done) return -1;
  *res = q->res;
  memset(&q->res, 0, sizeof q->res);
  hash_remove(c, q);
  req_free(q);
  return 0;
}

void lp_client_forget(lp_client *c, uint64_t token) {
  creq *q = hash_find(c, token);
  if (!q) return;
  req_unpend(c, q); /* keeps the wire id reserved as an orphan */
  hash_remove(c, q);
  req_free(q);
}

void lp_client_log_finished(lp_client *c, int on) {
  c->log_fin = on;
  c->nfin = 0;
  c->fin_lost = 0;
}

int lp_client_finished(lp_client *c, const uint64_t **tokens, size_t *n) {
  int lost = c->fin_lost;
  *tokens = c->fin;
  *n = c->nfin;
  c->nfin = 0;
  c->fin_lost = 0;
  return lost ? -1 : 0;
}

size_t lp_client_pending(lp_client *c) { return c->npending; }
size_t lp_client_iterators(lp_client *c) { return c->niters; }

/* ------------------------------------------------------------------------ */
/* Iterators                                                                 */
/* ------------------------------------------------------------------------ */

/* Appends {id, batch} for the iterator's current id.  0 ok, -1 ENOMEM. */
static int citer_send_window(lp_client *c, lp_citer *it, uint32_t batch) {
  c->scratch.len = 0;
  if (lp_wire_rest_iter_window(&c->scratch, batch)) return -1;
  return lp_wire_frame(&c->out, LP_REQ_ITER, it->id, (lp_slice){c->scratch.ptr, c->scratch.len});
}

/* Takes the iterator off the wire: sends {id, batch:0} when asked, and leaves
 * the id reserved while the server may still send `left` frames on it. */
static void citer_unwire(lp_client *c, lp_citer *it, int send_end, uint32_t left) {
  idslot *s;
  if (!it->on_wire) return;
  if (send_end)
    (void)citer_send_window(c, it, 0); /* ENOMEM: the server keeps
                                          it until disconnection */
  s = idmap_get(&c->iids, it->id);
  if (s) {
    if (left) {
      s->ptr = NULL;
      s->left = left;
    } else {
      idmap_release(&c->iids, it->id);
    }
  }
  it->on_wire = 0;
  it->granted = it->recv = 0;
}

static uint32_t citer_outstanding(const lp_citer *it) {
  return it->granted > it->recv ? it->granted - it->recv : 0;
}

static void citer_set_error(lp_client *c, lp_citer *it, lp_code code, const char *msg) {
  it->term = IT_ERROR;
  it->term_local = 1;
  lp_err_set(&it->err, code, "%s", msg);
  it->deadline = 0;
  citer_unwire(c, it, 1, citer_outstanding(it));
}

/* A seek target (inclusive) on the side the iterator starts from, whose
 * bounds lp_range_one_bound has reduced to one: the tighter of the two goes out
 * alone (the bound on a tie). */
static void citer_seek_bound(lp_slice *excl, lp_slice *incl, lp_slice target, int upper) {
  lp_slice b = excl->ptr ? *excl : *incl;
  int c = b.ptr ? lp_slice_cmp(target, b) : 0;
  if (!b.ptr || (upper ? c < 0 : c > 0)) {
    *excl = LP_SLICE_NONE;
    *incl = target;
  }
}

/* Sends the open (or reopen from the bookmark or the seek target) under a
 * fresh id. */
static int citer_wire_open(lp_client *c, lp_citer *it) {
  lp_range w = it->r;
  uint32_t g = it->win, id;
  w.keys = 1; /* always: the key is the bookmark */
  /* one bound per side on every open and reopen (docs/PROTOCOL.md, Ranges) */
  lp_range_one_bound(&w);
  if (it->pos == 0 && it->seek.ptr) {
    if (!w.reverse)
      citer_seek_bound(&w.gt, &w.gte, it->seek, 0);
    else
      citer_seek_bound(&w.lt, &w.lte, it->seek, 1);
  }
  if (it->pos > 0) {
    lp_slice bm = {it->bytes.ptr + it->cur.off, it->cur.klen};
    if (!w.reverse) {
      w.gt = bm;
      w.gte = LP_SLICE_NONE;
    } else {
      w.lt = bm;
      w.lte = LP_SLICE_NONE;
    }
  }
  if (it->r.limit >= 0) {
    int64_t rem = it->r.limit - it->consumed;
    if (rem <= 0) return 1; /* nothing left to ask for */
    if (rem < (int64_t)g) g = (uint32_t)rem;
    /* We stop locally at the limit anyway, so a limit the sint32 field cannot
     * carry is simply left out (-1). */
    w.limit = rem > INT32_MAX ? -1 : rem;
  }
  c->scratch.len = 0;
  if (lp_wire_rest_iter(&c->scratch, g, &w)) return -1;
  if (idmap_alloc(&c->iids, it, &id)) return -1;
  if (lp_wire_frame(&c->out, LP_REQ_ITER, id, (lp_slice){c->scratch.ptr, c->scratch.len})) {
    idmap_release(&c->iids, id);
    return -1;
  }
  it->id = id;
  it->on_wire = 1;
  it->granted = g;
  it->recv = 0;
  return 0;
}

/* The iterator ends here, not at the leader: the end survives a reset. */
static void citer_end_local(lp_citer *it) {
  it->term = IT_END;
  it->term_local = 1;
}

/* Opens a live iterator again (replay, seek): it ends locally when nothing
 * of its limit is left, and fails with ENOMEM when the open cannot be
 * written.  0, or -1 after that failure. */
static int citer_reopen(lp_client *c, lp_citer *it) {
  int rc = citer_wire_open(c, it);
  if (rc > 0) citer_end_local(it);
  if (rc >= 0) return 0;
  citer_set_error(c, it, LP_ENOMEM, "iterator: out of memory");
  return -1;
}

lp_citer *lp_client_iter_open(lp_client *c, const lp_range *r) {
  lp_citer *it;
  int rc;
  if (!c || !r) return NULL;
  it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->r = *r;
  it->r.gt = it->r.gte = it->r.lt = it->r.lte = LP_SLICE_NONE;
  if (lp_slice_dup(r->gt, &it->r.gt) || lp_slice_dup(r->gte, &it->r.gte) ||
      lp_slice_dup(r->lt, &it->r.lt) || lp_slice_dup(r->lte, &it->r.lte)) {
    citer_free(it);
    return NULL;
  }
  if (it->r.limit < 0) it->r.limit = -1;
  it->win = c->o.window < LP_FIRST_WINDOW ? c->o.window : LP_FIRST_WINDOW;
  if (it->r.limit == 0) {
    citer_end_local(it);
  } else {
    rc = citer_wire_open(c, it);
    if (rc < 0) {
      citer_free(it);
      return NULL;
    }
  }
  DLIST_APPEND(c->ihead, c->itail, it);
  c->niters++;
  return it;
}

/* Refills the server's window when it is exhausted and at most win/2
 * entries are buffered, so buffered + in flight never passes 1.5 x win (win
 * <= o.window); with a limit, never more than the entries still missing.
 * The window doubles when the caller had to wait since the last grant: it
 * reads faster than the window brings entries.  On ENOMEM nothing changes,
 * so the next call tries again. */
static void citer_maybe_ack(lp_client *c, lp_citer *it) {
  uint32_t win = it->win, g;
  if (!it->on_wire || it->term != IT_NONE) return;
  if (it->recv < it->granted) return;
  if (it->qlen > win / 2) return;
  if (it->starved && win < c->o.window) win = win > c->o.window / 2 ? c->o.window : win * 2;
  g = win;
  if (it->r.limit >= 0) {
    int64_t rem = it->r.limit - it->consumed - (int64_t)it->qlen;
    if (rem <= 0) return;
    if (rem < (int64_t)g) g = (uint32_t)rem;
  }
  if (citer_send_window(c, it, g)) return;
  it->win = win;
  it->starved = 0;
  it->granted = g;
  it->recv = 0;
}

/* Moves the live bytes of the arena (cur's, then the queued entries') to its
 * start when that makes room for `need` more; offsets follow. */
static void citer_compact(lp_citer *it, size_t need) {
  size_t keep, i;
  if (it->bytes.cap - it->bytes.len >= need) return;
  if (it->pos > 0)
    keep = it->cur.off;
  else if (it->qlen)
    keep = it->q[it->qhead].off;
  else
    keep = it->bytes.len;
  if (keep == 0) return;
  memmove(it->bytes.ptr, it->bytes.ptr + keep, it->bytes.len - keep);
  it->bytes.len -= keep;
  if (it->pos > 0) it->cur.off -= keep;
  for (i = 0; i < it->qlen; i++)
    it->q[(it->qhead + i) & (it->qcap - 1)].off -= keep;
}

/* An arena that grew past this for a burst of large entries is given back
 * once the caller has consumed everything buffered. */
#define ITER_ARENA_KEEP ((size_t)1 << 20)
#define ITER_ARENA_MIN  ((size_t)1 << 16)

/* Nothing is queued: moves cur's bytes to the start and shrinks the arena. */
static void citer_shrink(lp_citer *it) {
  size_t live = it->cur.klen + it->cur.vlen;
  size_t cap = live + 1 > ITER_ARENA_MIN ? live + 1 : ITER_ARENA_MIN;
  char *p;
  memmove(it->bytes.ptr, it->bytes.ptr + it->cur.off, live);
  it->cur.off = 0;
  it->bytes.len = live;
  if (cap >= it->bytes.cap) return;
  p = realloc(it->bytes.ptr, cap);
  if (p == NULL) return; /* keeps the larger block */
  it->bytes.ptr = p;
  it->bytes.cap = cap;
}

static int citer_push(lp_citer *it, lp_slice key, lp_slice value) {
  centry e;
  size_t need;
  if (it->qlen == it->qcap) {
    size_t ncap = it->qcap ? it->qcap * 2 : 16, i;
    centry *nq = malloc(ncap * sizeof *nq);
    if (!nq) return -1;
    for (i = 0; i < it->qlen; i++)
      nq[i] = it->q[(it->qhead + i) & (it->qcap - 1)];
    free(it->q);
    it->q = nq;
    it->qcap = ncap;
    it->qhead = 0;
  }
  e.klen = key.len;
  e.vlen = value.ptr ? value.len : 0;
  e.hasv = value.ptr != NULL;
  need = e.klen + e.vlen;
  if (need < e.klen) return -1;
  /* +1: a present empty slice still gets a non-NULL pointer */
  citer_compact(it, need + 1);
  if (lp_buf_reserve(&it->bytes, need + 1) != 0) return -1;
  e.off = it->bytes.len;
  if (e.klen) memcpy(it->bytes.ptr + e.off, key.ptr, e.klen);
  if (e.vlen) memcpy(it->bytes.ptr + e.off + e.klen, value.ptr, e.vlen);
  it->bytes.len += need;
  it->q[(it->qhead + it->qlen) & (it->qcap - 1)] = e;
  it->qlen++;
  return 0;
}

int lp_client_iter_next(lp_client *c, lp_citer *it, lp_slice *key, lp_slice *value, lp_err *err) {
  *key = LP_SLICE_NONE;
  *value = LP_SLICE_NONE;
  if (it->qlen) {
    const char *blk;
    it->cur = it->q[it->qhead];
    it->qhead = (it->qhead + 1) & (it->qcap - 1);
    it->qlen--;
    it->consumed++;
    it->pos++;
    if (it->qlen == 0 && it->bytes.cap > ITER_ARENA_KEEP) citer_shrink(it);
    blk = it->bytes.ptr + it->cur.off;
    if (it->r.keys) *key = (lp_slice){blk, it->cur.klen};
    if (it->r.values && it->cur.hasv) *value = (lp_slice){blk + it->cur.klen, it->cur.vlen};
    if (it->r.limit >= 0 && it->consumed >= it->r.limit && it->term == IT_NONE) {
      citer_end_local(it);
      citer_unwire(c, it, 1, citer_outstanding(it));
    } else {
      citer_maybe_ack(c, it);
    }
    return 1;
  }
  if (it->term == IT_END) return 0;
  if (it->term == IT_ERROR) {
    if (err) *err = it->err;
    return -1;
  }
  citer_maybe_ack(c, it); /* retries an ack that failed for memory */
  return 2;
}

void lp_client_iter_wait_deadline(lp_client *c, lp_citer *it, uint64_t deadline_ns) {
  (void)c;
  it->deadline = deadline_ns;
  /* the first wait, before any entry, is the open's latency, not a sign of
   * a window too small */
  if (it->consumed > 0) it->starved = 1;
}

int lp_client_iter_ready(lp_client *c, lp_citer *it) {
  (void)c;
  return it->qlen > 0 || it->term != IT_NONE;
}

int lp_client_iter_seek(lp_client *c, lp_citer *it, lp_slice target, int64_t unread) {
  lp_slice t;
  if (it->term == IT_ERROR) return 0;
  if (unread > 0) it->consumed = unread < it->consumed ? it->consumed - unread : 0;
  if (it->r.limit >= 0 && it->consumed >= it->r.limit) return 0; /* at its limit: ended */
  if (lp_slice_dup(target.ptr ? target : (lp_slice){"", 0}, &t)) {
    citer_set_error(c, it, LP_ENOMEM, "iterator: out of memory");
    return -1;
  }
  /* The remote iterator ends (what it still sends is dropped) and a new one
   * starts at the target, with the rest of the range and of the limit. */
  citer_unwire(c, it, 1, it->term == IT_NONE ? citer_outstanding(it) : 0);
  lp_slice_free(&it->seek);
  it->seek = t;
  it->pos = 0;
  it->qlen = it->qhead = 0;
  it->bytes.len = 0;
  it->term = IT_NONE;
  it->term_local = 0;
  it->deadline = 0;
  return citer_reopen(c, it);
}

void lp_client_iter_close(lp_client *c, lp_citer *it) {
  if (!it) return;
  citer_unwire(c, it, 1, it->term == IT_NONE ? citer_outstanding(it) : 0);
  DLIST_UNLINK(c->ihead, c->itail, it);
  c->niters--;
  citer_free(it);
}

/* ------------------------------------------------------------------------ */
/* Incoming replies                                                          */
/* ------------------------------------------------------------------------ */

static int proto_err(lp_err *err, const char *what) {
  if (err) lp_err_set(err, LP_EPROTO, "protocol: %s", what);
  return -1;
}

static void on_reply(lp_client *c, const lp_response *r, lp_slice payload) {
  idslot *s = idmap_get(&c->rids, r->id);
  creq *q;
  int want;
  if (!s) return; /* unknown id: ignored, as Node does */
  q = s->ptr;
  idmap_release(&c->rids, r->id);
  if (!q) return; /* orphan: timed out, failed or forgotten */
  q->on_wire = 0;
  want = q->tag == LP_REQ_GETMANY ? LP_RES_GETMANY : LP_RES_CALLBACK;
  if (r->tag != want) {
    /* A reply of the wrong type under our id: the leader is confused; finish
     * the request with an error rather than let it hang until its timeout. */
    req_fail(c, q, LP_EREMOTE, "protocol: reply type does not match the request");
    return;
  }
  req_unpend(c, q);
  q->res.code = LP_OK;
  if (lp_buf_append(&q->res.payload, payload.ptr, payload.len)) {
    q->res.code = LP_ENOMEM;
    q->res.msg = strdup("reply: out of memory");
  }
}

/* Error text from the leader: "ECODE: detail" keeps its code, anything else is
 * EREMOTE. */
static lp_code code_of_text(const char *t, size_t n) {
  size_t j = 1;
  lp_code code;
  if (n < 4 || t[0] != 'E') return LP_EREMOTE;
  while (j < n && t[j] >= 'A' && t[j] <= 'Z')
    j++;
  if (j < 2 || j + 1 >= n || t[j] != ':' || t[j + 1] != ' ') return LP_EREMOTE;
  code = lp_code_from_name(t, j);
  return code == LP_OK ? LP_EREMOTE : code;
}

static int on_iterdata(lp_client *c, const lp_response *r, lp_err *err) {
  idslot *s = idmap_get(&c->iids, r->id);
  lp_citer *it;
  int is_error = r->error.ptr && r->error.len;
  int is_end = !is_error && !r->key.ptr && !r->value.ptr;
  if (!s) return 0;
  it = s->ptr;
  if (!it) { /* closed early: count down what the server may still send */
    if (is_error || is_end || s->left <= 1)
      idmap_release(&c->iids, r->id);
    else
      s->left--;
    return 0;
  }
  it->deadline = 0;
  if (is_error) {
    size_t n = r->error.len > 400 ? 400 : r->error.len;
    it->term = IT_ERROR;
    it->term_local = 0;
    lp_err_set(&it->err, code_of_text(r->error.ptr, r->error.len), "iterator: %.*s", (int)n,
               r->error.ptr);
    citer_unwire(c, it, 1, 0);
    return 0;
  }
  if (is_end) {
    it->term = IT_END;
    it->term_local = 0;
    citer_unwire(c, it, 1, 0);
    return 0;
  }
  if (!r->key.ptr) return proto_err(err, "iterator entry without a key");
  if (it->recv >= it->granted) return proto_err(err, "iterator entry beyond the window");
  it->recv++;
  if (citer_push(it, r->key, r->value)) {
    citer_set_error(c, it, LP_ENOMEM, "iterator: out of memory");
    return 0;
  }
  if (it->r.limit >= 0 && it->consumed + (int64_t)it->qlen >= it->r.limit) {
    /* Everything the limit allows has arrived: end here (the server's window
     * is exhausted too, since we never grant more than is missing). */
    it->term = IT_END;
    it->term_local = 0;
    citer_unwire(c, it, 1, citer_outstanding(it));
    return 0;
  }
  citer_maybe_ack(c, it);
  return 0;
}

static int on_payload(lp_client *c, lp_slice payload, lp_err *err) {
  lp_response r;
  int d = lp_wire_decode_response(payload, &r);
  if (d == LP_WIRE_EMPTY || d == LP_WIRE_UNKNOWN_TAG) return 0; /* as Node */
  if (d != LP_WIRE_OK) return proto_err(err, "malformed reply");
  switch (r.tag) {
    case LP_RES_CALLBACK:
    case LP_RES_GETMANY: on_reply(c, &r, payload); return 0;
    case LP_RES_ITERDATA: return on_iterdata(c, &r, err);
    default: return 0;
  }
}

/* A reply frame over max_frame starts at p[0..avail): its length prefix is
 * whole and says more than max_frame.  Its request fails with ETOOLARGE as
 * soon as the frame's tag and id are in (a leader that does not check its
 * replies, a Node leader or one with a larger max_frame, sent it), and its
 * bytes are dropped as they arrive, never buffered: the connection stays.
 * Returns 1 with *used (the bytes of the frame present, which c->skip
 * completes), 0 when the tag and id are not all in yet, -1 with err when the
 * frame cannot be told apart from garbage (no id first). */
static int on_oversized(lp_client *c, const char *p, size_t avail, size_t *used, lp_err *err) {
  uint64_t len, id, total;
  size_t pre, idn;
  const char *h;
  char msg[128];
  int tag, r = lp_varint_get(p, avail, &len, &pre);
  if (r < 0 || len > UINT64_MAX - 16) return proto_err(err, "bad reply frame length prefix");
  h = p + pre;
  if (avail - pre < 3) return 0;
  if ((unsigned char)h[1] != 0x08) return proto_err(err, "reply frame over the size limit");
  r = lp_varint_get(h + 2, avail - pre - 2, &id, &idn);
  if (r == 0) return 0;
  if (r < 0) return proto_err(err, "reply frame over the size limit");
  tag = (unsigned char)h[0];
  total = pre + len;
  *used = total < avail ? (size_t)total : avail;
  c->skip = total - *used;
  snprintf(msg, sizeof msg, "%s is %llu bytes, over the frame limit of %zu",
           tag == LP_RES_ITERDATA ? "iterator: the entry" : "the reply", (unsigned long long)len,
           c->o.max_frame);
  if (tag == LP_RES_CALLBACK || tag == LP_RES_GETMANY) {
    idslot *s = idmap_get(&c->rids, (uint32_t)id);
    creq *q = s ? s->ptr : NULL;
    if (s) idmap_release(&c->rids, (uint32_t)id);
    if (q) {
      q->on_wire = 0;
      req_fail(c, q, LP_ETOOLARGE, msg);
    }
  } else if (tag == LP_RES_ITERDATA) {
    idslot *s = idmap_get(&c->iids, (uint32_t)id);
    lp_citer *it = s ? s->ptr : NULL;
    if (s && !it) { /* closed early: one frame fewer to come */
      if (s->left <= 1)
        idmap_release(&c->iids, (uint32_t)id);
      else
        s->left--;
    } else if (it) {
      /* an entry the caller can never have: the iterator fails after what
       * it buffered, and a reopen would meet the same entry, so the error
       * is ours and stays (citer_set_error) */
      if (it->recv < it->granted) it->recv++;
      citer_set_error(c, it, LP_ETOOLARGE, msg);
    }
  }
  return 1;
}

int lp_client_feed(lp_client *c, const char *bytes, size_t len, lp_err *err) {
  const char *p;
  size_t n, off = 0;
  int buffered, rc = 0;
  if (c->skip) { /* the rest of an oversized frame */
    size_t k = (uint64_t)len < c->skip ? len : (size_t)c->skip;
    c->skip -= k;
    bytes += k;
    len -= k;
    if (len == 0) return 0;
  }
  buffered = c->in.len > 0;
  if (buffered) {
    if (lp_buf_append(&c->in, bytes, len)) {
      if (err) lp_err_set(err, LP_ENOMEM, "feed: out of memory");
      return -1;
    }
    p = c->in.ptr;
    n = c->in.len;
  } else {
    p = bytes;
    n = len;
  }
  while (off < n) {
    lp_slice payload;
    size_t used = 0;
    int w = lp_wire_next_frame(p + off, n - off, c->o.max_frame, &payload, &used);
    if (w == LP_WIRE_NEED_MORE) break;
    if (w == LP_WIRE_TOO_BIG) {
      int r = on_oversized(c, p + off, n - off, &used, err);
      if (r == 0) break; /* its tag and id are not all in yet */
      if (r < 0) {
        rc = -1;
        break;
      }
      off += used;
      continue;
    }
    if (w != LP_WIRE_OK && w != LP_WIRE_EMPTY) {
      rc = proto_err(err, "bad frame");
      break;
    }
    off += used;
    if (w == LP_WIRE_EMPTY) continue;
    if (on_payload(c, payload, err)) {
      rc = -1;
      break;
    }
  }
  if (rc) {
    c->in.len = 0;
    return -1;
  }
  if (buffered) {
    lp_buf_consume(&c->in, off);
  } else if (off < n && lp_buf_append(&c->in, p + off, n - off)) {
    if (err) lp_err_set(err, LP_ENOMEM, "feed: out of memory");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                  */
/* ------------------------------------------------------------------------ */

uint64_t lp_client_next_deadline(lp_client *c) {
  uint64_t best = c->ndh ? c->dh[0]->deadline : 0;
  lp_citer *it;
  for (it = c->ihead; it; it = it->next)
    if (it->deadline && it->term == IT_NONE && (!best || it->deadline < best)) best = it->deadline;
  return best;
}

size_t lp_client_expire(lp_client *c, uint64_t now_ns) {
  size_t n = 0;
  lp_citer *it;
  while (c->ndh && c->dh[0]->deadline <= now_ns) {
    req_fail(c, c->dh[0], LP_ETIMEDOUT, TIMEOUT_MSG);
    n++;
  }
  for (it = c->ihead; it; it = it->next) {
    if (!it->deadline || it->deadline > now_ns) continue;
    if (it->term == IT_NONE && it->qlen == 0) {
      citer_set_error(c, it, LP_ETIMEDOUT, TIMEOUT_MSG);
      n++;
    }
    it->deadline = 0;
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Reconnection                                                              */
/* ------------------------------------------------------------------------ */

void lp_client_reset(lp_client *c) {
  creq *q;
  lp_citer *it;
  c->out.len = 0;
  c->in.len = 0;
  c->skip = 0;
  for (q = c->phead; q; q = q->next)
    q->on_wire = 0;
  idmap_clear(&c->rids);
  idmap_clear(&c->iids);
  for (it = c->ihead; it; it = it->next) {
    it->on_wire = 0;
    it->granted = it->recv = 0;
    if (it->qlen) {
      citer_drop_buffer(it);
      /* An end or error the server sent after the dropped entries must be
       * fetched again with them; one we decided locally stays. */
      if (!it->term_local) it->term = IT_NONE;
    }
  }
}

/* Starts from a clean wire state (as lp_client_reset), so it must be called on
 * a fresh connection before anything was written to it; whatever out held
 * (frames of requests submitted since the reset) is re-framed here in token
 * order. */
void lp_client_replay(lp_client *c) {
  creq *q, *nq;
  lp_citer *it;
  lp_client_reset(c);
  for (q = c->phead; q; q = nq) {
    size_t payload = 0;
    int rc;
    nq = q->next;
    rc = frame_req(c, q, &payload);
    if (rc == -1) {
      req_fail(c, q, LP_ENOMEM, "replay: out of memory");
    } else if (rc == -2) { /* a wider id than at submission */
      char msg[128];
      too_large_msg(c, payload, msg, sizeof msg);
      req_fail(c, q, LP_ETOOLARGE, msg);
    }
  }
  for (it = c->ihead; it; it = it->next)
    if (it->term == IT_NONE) citer_reopen(c, it);
}

void lp_client_fail_all(lp_client *c, lp_code code, const char *msg) {
  lp_citer *it;
  if (!msg) msg = "";
  while (c->phead)
    req_fail(c, c->phead, code, msg);
  for (it = c->ihead; it; it = it->next)
    if (it->term == IT_NONE) citer_set_error(c, it, code, msg);
}

/*
 * server.c: lp_server, the leader's server thread.
 *
 * A thread running a private libuv loop that accepts followers on the
 * leader's socket and drives one lp_session (session.c) per connection.
 * LevelDB calls run inline on that thread.
 */
#include "private.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

/* Iterator entries produced per connection per loop turn, and per pump call
 * inside it (the output size is checked between calls). */
#define SRV_TURN_BUDGET 512
#define SRV_PUMP_CHUNK  64
/* Input run through the session between two checks of the output level; the
 * replies of each piece go out before the next piece runs.  The first piece of
 * a read is small, so that a follower with many requests in flight gets its
 * first replies (and sends more) while the leader works on the rest: on two
 * CPUs the two sides then overlap instead of taking turns. */
#define SRV_INPUT_PIECE 4096
#define SRV_FIRST_PIECE 512
/* An input buffer larger than this is released once drained. */
#define SRV_IN_KEEP (1u << 20)
/* Connections accepted per readiness of the listening socket, and how long
 * accepting pauses when accept fails (out of file descriptors): meanwhile new
 * followers wait in the listen backlog, and the failure is logged at most
 * once per SRV_ACCEPT_LOG_NS (docs/ARCHITECTURE.md, "What the code relies on"). */
#define SRV_ACCEPT_BATCH    64
#define SRV_ACCEPT_PAUSE_MS 100
#define SRV_ACCEPT_LOG_NS   (10ull * 1000000000ull)

typedef struct srv_conn srv_conn;

/* Refused peers are logged once per uid per minute, the next line saying how
 * many were not (a refused process that reconnects in a loop must not flood
 * the leader's stderr).  The slot of the uid logged longest ago is reused. */
#define SRV_REFUSAL_SLOTS 8
#define SRV_REFUSAL_QUIET (60ull * 1000000000ull)
typedef struct srv_refusal {
  long uid;
  uint64_t logged_ns;  /* when uid's last line was written; 0: a free slot */
  unsigned long quiet; /* refusals of uid since, not logged */
} srv_refusal;

struct lp_server {
  lp_engine *eng;
  lp_server_opts opts;
  uv_loop_t loop;
  uv_poll_t listener; /* on listen_fd: this file accepts, not libuv (see srv_listen_cb) */
  int listen_fd;      /* owned; closed when the listener is */
  uv_async_t stop_async;
  uv_idle_t pump_idle;
  uv_timer_t accept_timer; /* resumes accepting after a failure */
  uint64_t accept_log_ns;  /* when an accept failure was last logged */
  unsigned accept_quiet;   /* failures since then, not logged */
  int accept_failing;      /* the last accept failed; 2: and that was logged */
  /* Unsent replies over all connections (max_total_buffer).  Each connection
   * counts in unsent_total the bytes it `accounted` when last looked at
   * (conn_account); nholding of them hold some, nheld are held back by the
   * total.  unsent_total is read by lp_server_unsent from other threads. */
  size_t unsent_total;
  size_t nholding, nheld;
  int recheck;           /* the total fell while some were held: look again */
  uint64_t total_log_ns; /* when the total was last logged as over */
  pthread_t thread;
  int thread_started;
  int stopping;    /* server thread only */
  int nconns;      /* atomic: accepted, not yet closed */
  srv_conn *conns; /* every open connection (also refused ones until closed) */
  srv_refusal refused[SRV_REFUSAL_SLOTS]; /* server thread only */
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
  int writing;      /* a uv_write is pending */
  int reading;      /* uv_read_start is active */
  int over;         /* its unsent replies passed max_conn_buffer, not yet below half */
  int held;         /* the total passed max_total_buffer and it holds more than its share */
  int blocked;      /* over or held: not reading, not pumping */
  size_t accounted; /* its unsent bytes as counted in srv->unsent_total */
  int pumping;      /* some iterator window is open */
  int eof;          /* peer finished sending: close after the output drains */
  int in_held;      /* c->in may hold whole frames not yet run (output was full) */
  int closing;
  int counted; /* included in nconns */
  long pid;
  long uid;
  srv_conn *prev, *next;
};

static void srv_log(lp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_log(lp_server *s, const char *fmt, ...) {
  char msg[640];
  va_list ap;
  if (!s->opts.log) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  s->opts.log(s->opts.log_ud, msg);
}

/* Logs the refusal of peer pid/uid unless uid's last line is less than a
 * minute old (then counts it). */
static void srv_log_refused(lp_server *s, long pid, long uid, const char *why) {
  srv_refusal *r = NULL, *oldest = &s->refused[0];
  uint64_t now = lp_now_ns();
  size_t i;
  for (i = 0; i < SRV_REFUSAL_SLOTS && r == NULL; i++) {
    srv_refusal *t = &s->refused[i];
    if (t->logged_ns != 0 && t->uid == uid) r = t;
    if (t->logged_ns < oldest->logged_ns) oldest = t;
  }
  if (r != NULL && now - r->logged_ns < SRV_REFUSAL_QUIET) {
    r->quiet++;
    return;
  }
  if (r == NULL) {
    r = oldest;
    r->uid = uid;
    r->quiet = 0;
  }
  if (r->quiet > 0)
    srv_log(s, "refused peer pid %ld uid %ld: %s (and %lu more of uid %ld since the last line)",
            pid, uid, why, r->quiet, uid);
  else
    srv_log(s, "refused peer pid %ld uid %ld: %s (logged once a minute per uid)", pid, uid, why);
  r->logged_ns = now;
  r->quiet = 0;
}

void lp_server_opts_init(lp_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_frame = LP_DEFAULT_MAX_FRAME;
  o->max_conn_buffer = LP_DEFAULT_CONN_BUFFER;
  o->max_total_buffer = LP_DEFAULT_TOTAL_BUFFER;
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

size_t lp_server_unsent(lp_server *s) {
  return s ? __atomic_load_n(&s->unsent_total, __ATOMIC_RELAXED) : 0;
}

static void pump_idle_cb(uv_idle_t *h);

/* Brings c's share of the total up to date (0 once closing).  When the total
 * falls while connections are held, they are looked at again on the next
 * turn (pump_idle_cb): nothing else would wake one whose peer reads nothing. */
static void conn_account(srv_conn *c) {
  lp_server *s = c->srv;
  size_t now = c->closing ? 0 : conn_unsent(c);
  if (now == c->accounted) return;
  if (c->accounted == 0) s->nholding++;
  if (now == 0) s->nholding--;
  __atomic_store_n(&s->unsent_total, s->unsent_total - c->accounted + now, __ATOMIC_RELAXED);
  if (now < c->accounted && s->nheld > 0 && !s->stopping) {
    s->recheck = 1;
    if (!uv_is_active((uv_handle_t *)&s->pump_idle)) uv_idle_start(&s->pump_idle, pump_idle_cb);
  }
  c->accounted = now;
}

/* 1 when the total is over max_total_buffer and c holds any of it.  Past
 * the limit only a connection whose replies have all gone into its socket
 * produces, one step at a time, so the total stays within the limit plus a
 * step per connection.  A follower that reads drains to nothing and goes
 * on; one that does not keeps what it holds and gets no more.  (Holding
 * back only those above an equal share let each of the others fill up to
 * its share while the total was already over: up to twice the limit.) */
static int conn_over_total(srv_conn *c) {
  lp_server *s = c->srv;
  if (s->unsent_total <= s->opts.max_total_buffer) return 0;
  return c->accounted > 0;
}

/* 1 when c may not produce more now (conn_process, conn_pump). */
static int conn_full(srv_conn *c) {
  conn_account(c);
  return c->accounted > c->srv->opts.max_conn_buffer || conn_over_total(c);
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
  if (c->held) s->nheld--;
  conn_account(c); /* closing: its share leaves the total */
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
  uv_buf_t b;
  lp_buf t;
  int n;
  if (c->closing || c->writing || c->out.len == 0) return;
  b = uv_buf_init(c->out.ptr, (unsigned)c->out.len);
  n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
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
  t = c->inflight;
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
  size_t room;
  (void)suggested;
  if (lp_buf_reserve(&c->in, LP_READ_CHUNK) < 0) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  room = c->in.cap - c->in.len;
  if (room > UINT32_MAX) room = UINT32_MAX;
  *buf = uv_buf_init(c->in.ptr + c->in.len, (unsigned)room);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Logs that the total passed max_total_buffer, at most once per 10 s. */
static void srv_log_total(lp_server *s, const srv_conn *c) {
  uint64_t now = lp_now_ns();
  if (s->total_log_ns != 0 && now - s->total_log_ns < 10ull * 1000000000ull) return;
  s->total_log_ns = now;
  srv_log(s,
          "unsent replies total %zu KiB for %zu connections, over the limit of %zu KiB: the "
          "connections holding some (pid %ld holds %zu KiB) get no more until they drain",
          s->unsent_total / 1024, s->nholding, s->opts.max_total_buffer / 1024, c->pid,
          c->accounted / 1024);
}

/* Output level: over above max_conn_buffer and below half of it again
 * (hysteresis); held while the total is over max_total_buffer and c holds
 * some of it. */
static void conn_level(srv_conn *c) {
  lp_server *s = c->srv;
  size_t max = s->opts.max_conn_buffer;
  int held;
  conn_account(c);
  if (!c->over && c->accounted > max)
    c->over = 1;
  else if (c->over && c->accounted < max / 2)
    c->over = 0;
  held = conn_over_total(c);
  if (held != c->held) {
    c->held = held;
    if (held) {
      s->nheld++;
      srv_log_total(s, c);
    } else {
      s->nheld--;
    }
  }
  c->blocked = c->over || c->held;
}

/* Starts or stops reading and pumping from the output level. */
static void conn_update_flow(srv_conn *c) {
  lp_server *s = c->srv;
  int want_read;
  conn_level(c);
  want_read = !c->blocked && !c->eof && !c->closing && !c->in_held;
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
    size_t rest, piece;
    lp_err err;
    long used;
    if (conn_full(c)) {
      c->in_held = 1;
      break;
    }
    rest = c->in.len - off;
    piece = rest < piece_max ? rest : piece_max;
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
    used = lp_session_input(c->sess, c->in.ptr + off, piece, &c->out, SRV_PUMP_CHUNK, &err);
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
  while (c->pumping && budget > 0 && !conn_full(c)) {
    size_t chunk = budget < SRV_PUMP_CHUNK ? budget : SRV_PUMP_CHUNK;
    c->pumping = lp_session_pump(c->sess, &c->out, chunk);
    budget -= chunk;
  }
}

static void pump_idle_cb(uv_idle_t *h) {
  lp_server *s = h->data;
  srv_conn *c, *next;
  int more = 0;
  if (s->recheck) { /* the total fell: the held may go on */
    s->recheck = 0;
    for (c = s->conns; c; c = next) {
      next = c->next;
      if (c->held && !c->closing) conn_service(c);
    }
  }
  for (c = s->conns; c; c = next) {
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

/* Takes over cfd, a connection just accepted (nonblocking). */
static void srv_connection(lp_server *s, int cfd) {
  srv_conn *c;
  uv_os_fd_t fd = -1;
  struct ucred cred;
  socklen_t clen = sizeof cred;
  int rc;
  c = calloc(1, sizeof *c);
  if (!c) {
    close(cfd);
    srv_log(s, "refused a connection: out of memory");
    return;
  }
  c->srv = s;
  c->pid = -1;
  c->uid = -1;
  if (uv_pipe_init(&s->loop, &c->pipe, 0) < 0) {
    close(cfd);
    free(c);
    return;
  }
  c->pipe.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  rc = uv_pipe_open(&c->pipe, cfd);
  if (rc < 0) {
    close(cfd); /* not the pipe's: uv_pipe_open failed */
    srv_log(s, "accept failed: %s", uv_strerror(rc));
    conn_close(c);
    return;
  }
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && clen == sizeof cred) {
    c->pid = (long)cred.pid;
    c->uid = (long)cred.uid;
  } else if (!s->opts.allow_other_users) {
    srv_log_refused(s, -1, -1, "cannot read its credentials");
    conn_close(c);
    return;
  }
  if (!s->opts.allow_other_users && (uid_t)c->uid != geteuid()) {
    srv_log_refused(s, c->pid, c->uid, "another user, and allow_other_users is off");
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

static void srv_listen_cb(uv_poll_t *h, int status, int events);

static void accept_resume_cb(uv_timer_t *t) {
  lp_server *s = t->data;
  if (!s->stopping) (void)uv_poll_start(&s->listener, UV_READABLE, srv_listen_cb);
}

/* accept failed with err (errno), most likely EMFILE or ENFILE: the pending
 * connection stays in the backlog and the listening socket stays readable, so
 * accepting pauses for SRV_ACCEPT_PAUSE_MS instead of retrying at once (which
 * would spin; libuv's own listener would even drop the pending connections
 * unannounced).  Logged at most once per SRV_ACCEPT_LOG_NS. */
static void srv_accept_failed(lp_server *s, int err) {
  uint64_t now = lp_now_ns();
  if (s->accept_log_ns == 0 || now - s->accept_log_ns >= SRV_ACCEPT_LOG_NS) {
    if (s->accept_quiet)
      srv_log(s,
              "cannot accept connections: %s (%s); they wait, accepting is retried every %d ms "
              "(%u more failures since the last line)",
              uv_strerror(uv_translate_sys_error(err)), uv_err_name(uv_translate_sys_error(err)),
              SRV_ACCEPT_PAUSE_MS, s->accept_quiet);
    else
      srv_log(s, "cannot accept connections: %s (%s); they wait, accepting is retried every %d ms",
              uv_strerror(uv_translate_sys_error(err)), uv_err_name(uv_translate_sys_error(err)),
              SRV_ACCEPT_PAUSE_MS);
    s->accept_log_ns = now;
    s->accept_quiet = 0;
    s->accept_failing = 2;
  } else {
    s->accept_quiet++;
    if (!s->accept_failing) s->accept_failing = 1;
  }
  (void)uv_poll_stop(&s->listener);
  (void)uv_timer_start(&s->accept_timer, accept_resume_cb, SRV_ACCEPT_PAUSE_MS, 0);
}

/* The listening socket is readable: accepts up to SRV_ACCEPT_BATCH
 * connections (the loop then serves the others before it comes back). */
static void srv_listen_cb(uv_poll_t *h, int status, int events) {
  lp_server *s = h->data;
  int i;
  (void)events;
  if (status < 0) {
    srv_accept_failed(s, -status);
    return;
  }
  for (i = 0; i < SRV_ACCEPT_BATCH && !s->stopping; i++) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) srv_accept_failed(s, errno);
      return;
    }
    if (s->accept_failing == 2) srv_log(s, "accepting connections again");
    s->accept_failing = 0;
    srv_connection(s, fd);
  }
}

static void srv_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void srv_stop_cb(uv_async_t *h) {
  lp_server *s = h->data;
  srv_conn *c;
  if (s->stopping) return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->listener, NULL); /* stops watching listen_fd at once */
  close(s->listen_fd);
  s->listen_fd = -1;
  uv_close((uv_handle_t *)&s->accept_timer, NULL);
  uv_close((uv_handle_t *)&s->pump_idle, NULL);
  for (c = s->conns; c; c = c->next)
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
  const char *what;
  sigset_t all, old;
  int rc, prc;
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
  if (s->opts.max_frame == 0) s->opts.max_frame = LP_DEFAULT_MAX_FRAME;
  if (s->opts.max_conn_buffer == 0) s->opts.max_conn_buffer = LP_DEFAULT_CONN_BUFFER;
  if (s->opts.max_total_buffer == 0) s->opts.max_total_buffer = LP_DEFAULT_TOTAL_BUFFER;

  rc = uv_loop_init(&s->loop);
  if (rc < 0) {
    close(listen_fd);
    lp_err_set(err, LP_EIO, "server: uv_loop_init: %s", uv_strerror(rc));
    free(s);
    return NULL;
  }
  s->loop.data = s;
  s->listen_fd = listen_fd;
  /* from here on every failure closes the handles and runs the loop dry */
  what = "uv_poll_init";
  rc = uv_poll_init(&s->loop, &s->listener, listen_fd);
  if (rc < 0) goto fail_loop;
  s->listener.data = s;
  what = "uv_poll_start";
  rc = uv_poll_start(&s->listener, UV_READABLE, srv_listen_cb);
  if (rc < 0) goto fail_handles;
  what = "uv_timer_init";
  rc = uv_timer_init(&s->loop, &s->accept_timer);
  if (rc < 0) goto fail_handles;
  s->accept_timer.data = s;
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
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  prc = pthread_create(&s->thread, NULL, srv_thread, s);
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
  close(listen_fd);
  free(s);
  return NULL;
fail_loop:
  lp_err_set(err, LP_EIO, "server: %s: %s", what, uv_strerror(rc));
  uv_loop_close(&s->loop);
  close(listen_fd);
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

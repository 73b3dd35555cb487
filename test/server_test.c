/*
 * server_test: the leader's server over a real unix socket and a real LevelDB.
 *
 * The test plays the followers with plain blocking sockets, sends frames built
 * with the wire encoders (or copied from docs/PROTOCOL.md, "Example frames")
 * and checks the replies byte for byte where that section gives them.
 */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];

/* ------------------------------------------------------------------------ */
/* Log capture (the callback runs on the server thread)                       */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];
static size_t log_len;

static void log_cb(void *ud, const char *msg) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(msg);
  if (log_len + n + 2 < sizeof log_text) {
    memcpy(log_text + log_len, msg, n);
    log_len += n;
    log_text[log_len++] = '\n';
    log_text[log_len] = 0;
  }
  pthread_mutex_unlock(&log_mu);
}

static int log_has(const char *needle) {
  pthread_mutex_lock(&log_mu);
  int r = strstr(log_text, needle) != NULL;
  pthread_mutex_unlock(&log_mu);
  return r;
}

static int log_wait(const char *needle, int ms) {
  ms = tap_ms(ms);
  for (int i = 0; i < ms / 10; i++) {
    if (log_has(needle)) return 1;
    usleep(10000);
  }
  return log_has(needle);
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                    */
/* ------------------------------------------------------------------------ */

static void sock_path(char *out, size_t n) { snprintf(out, n, "%s/test.sock", tmpdir); }

static int make_listener(void) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  sock_path(a.sun_path, sizeof a.sun_path);
  unlink(a.sun_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

typedef struct client {
  int fd;
  lp_buf rx;
} client;

static int client_open(client *c) {
  struct sockaddr_un a;
  memset(c, 0, sizeof *c);
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  sock_path(a.sun_path, sizeof a.sun_path);
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  return 0;
}

static void client_close(client *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  lp_buf_free(&c->rx);
}

static int send_all(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_buf(client *c, lp_buf *b) {
  int r = send_all(c->fd, b->ptr, b->len);
  b->len = 0;
  return r;
}

/* Reads into c->rx until it holds a whole frame or the time runs out.
 * Returns 1 with *raw set to the whole frame (prefix included; valid until the
 * next call), 0 on timeout, -1 on EOF or error. */
static int read_frame(client *c, lp_slice *raw, lp_slice *payload, int timeout_ms) {
  for (;;) {
    lp_slice pl;
    size_t used;
    int rc =
        lp_wire_next_frame(c->rx.ptr ? c->rx.ptr : "", c->rx.len, LP_DEFAULT_MAX_FRAME, &pl, &used);
    if (rc == LP_WIRE_OK) {
      if (raw) *raw = (lp_slice){c->rx.ptr, used};
      if (payload) *payload = pl;
      return 1;
    }
    if (rc == LP_WIRE_EMPTY) {
      lp_buf_consume(&c->rx, used);
      continue;
    }
    if (rc != LP_WIRE_NEED_MORE) return -1;
    struct pollfd p = {c->fd, POLLIN, 0};
    int pr = poll(&p, 1, timeout_ms);
    if (pr == 0) return 0;
    if (pr < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (lp_buf_reserve(&c->rx, 65536) < 0) return -1;
    ssize_t n = recv(c->fd, c->rx.ptr + c->rx.len, c->rx.cap - c->rx.len, 0);
    if (n <= 0) return -1;
    c->rx.len += (size_t)n;
  }
}

/* Drops the frame returned by the last read_frame. */
static void frame_done(client *c, lp_slice raw) { lp_buf_consume(&c->rx, raw.len); }

static char *hex(const char *p, size_t n) {
  static char out[4096]; /* main thread only */
  size_t o = 0;
  for (size_t i = 0; i < n && o + 4 < sizeof out; i++)
    o += (size_t)snprintf(out + o, sizeof out - o, "%02x", (unsigned char)p[i]);
  out[o] = 0;
  return out;
}

/* Reads one frame and compares it with expected bytes. */
static void expect_frame(client *c, const char *exp, size_t n, const char *what) {
  lp_slice raw;
  int rc = read_frame(c, &raw, NULL, tap_ms(5000));
  if (rc != 1) {
    check(0, what, "no frame (rc %d)", rc);
    return;
  }
  int same = raw.len == n && memcmp(raw.ptr, exp, n) == 0;
  char got[1024];
  snprintf(got, sizeof got, "%s", hex(raw.ptr, raw.len));
  check(same, what, "got %s, want %s", got, hex(exp, n));
  frame_done(c, raw);
}
#define EXPECT(c, lit, what) expect_frame((c), (lit), sizeof(lit) - 1, (what))

/* 1 when nothing arrives within ms. */
static int silent(client *c, int ms) {
  lp_slice raw;
  return read_frame(c, &raw, NULL, ms) == 0;
}

/* 1 when the server closed the connection (EOF) within ms. */
static int closed_by_server(client *c, int ms) {
  for (;;) {
    lp_slice raw;
    int rc = read_frame(c, &raw, NULL, ms);
    if (rc == -1) return 1;
    if (rc == 0) return 0;
    frame_done(c, raw);
  }
}

/* Request builders. */
static void req_key(lp_buf *out, int tag, uint32_t id, const char *key) {
  lp_buf rest = {0};
  lp_wire_rest_key(&rest, S(key));
  lp_wire_frame(out, tag, id, (lp_slice){rest.ptr, rest.len});
  lp_buf_free(&rest);
}

static void req_put(lp_buf *out, uint32_t id, const char *key, const char *val) {
  lp_buf rest = {0};
  lp_wire_rest_put(&rest, S(key), val ? S(val) : LP_SLICE_NONE);
  lp_wire_frame(out, LP_REQ_PUT, id, (lp_slice){rest.ptr, rest.len});
  lp_buf_free(&rest);
}

static void req_iter(lp_buf *out, uint32_t id, uint32_t batch, const lp_range *r) {
  lp_buf rest = {0};
  if (r)
    lp_wire_rest_iter(&rest, batch, r);
  else
    lp_wire_rest_iter_window(&rest, batch);
  lp_wire_frame(out, LP_REQ_ITER, id, (lp_slice){rest.ptr, rest.len});
  lp_buf_free(&rest);
}

static void req_clear(lp_buf *out, uint32_t id, const lp_range *r) {
  lp_buf rest = {0};
  if (r) lp_wire_rest_clear(&rest, r);
  lp_wire_frame(out, LP_REQ_CLEAR, id, (lp_slice){rest.ptr ? rest.ptr : "", rest.len});
  lp_buf_free(&rest);
}

/* One round trip: sends b and decodes the reply into *res (payload kept in
 * c->rx until the next read).  Returns 1 on success. */
static int roundtrip(client *c, lp_buf *b, lp_response *res, lp_slice *rawp) {
  if (send_buf(c, b) < 0) return 0;
  lp_slice raw, pl;
  if (read_frame(c, &raw, &pl, 5000) != 1) return 0;
  if (rawp) *rawp = raw;
  return lp_wire_decode_response(pl, res) == LP_WIRE_OK;
}

static int slice_is(lp_slice s, const char *t) {
  return s.ptr && s.len == strlen(t) && memcmp(s.ptr, t, s.len) == 0;
}

/* GET through a client; returns a malloc'd string ("<missing>" / "<error:..>"). */
static char *get_str(client *c, const char *key) {
  lp_buf b = {0};
  lp_response r;
  lp_slice raw;
  req_key(&b, LP_REQ_GET, 1, key);
  int ok = roundtrip(c, &b, &r, &raw);
  lp_buf_free(&b);
  char *out;
  if (!ok) return strdup("<no reply>");
  if (r.error.ptr) {
    out = malloc(r.error.len + 16);
    snprintf(out, r.error.len + 16, "<error:%.*s>", (int)r.error.len, r.error.ptr);
  } else if (r.value.ptr) {
    out = malloc(r.value.len + 1);
    memcpy(out, r.value.ptr, r.value.len);
    out[r.value.len] = 0;
  } else {
    out = strdup("<none>");
  }
  frame_done(c, raw);
  return out;
}

static void check_get(client *c, const char *key, const char *want, const char *what) {
  char *got = get_str(c, key);
  check(strcmp(got, want) == 0, what, "got '%s', want '%s'", got, want);
  free(got);
}

static void put_ok(client *c, const char *key, const char *val) {
  lp_buf b = {0};
  lp_response r;
  lp_slice raw;
  req_put(&b, 9, key, val);
  if (roundtrip(c, &b, &r, &raw)) frame_done(c, raw);
  lp_buf_free(&b);
}

/* Reads one IteratorData frame; returns 1 entry, 0 end marker, -1 error, -2
 * nothing/other.  Copies key and value (when present) into k/v. */
static int read_iter(client *c, uint32_t *id, char *k, char *v, int timeout_ms) {
  lp_slice raw, pl;
  if (read_frame(c, &raw, &pl, timeout_ms) != 1) return -2;
  lp_response r;
  int rc = -2;
  if (lp_wire_decode_response(pl, &r) == LP_WIRE_OK && r.tag == LP_RES_ITERDATA) {
    if (id) *id = r.id;
    if (r.error.ptr) {
      rc = -1;
      if (k) snprintf(k, 256, "%.*s", (int)r.error.len, r.error.ptr);
    } else if (!r.key.ptr && !r.value.ptr) {
      rc = 0;
    } else {
      rc = 1;
      if (k)
        snprintf(k, 256, "%s%.*s", r.key.ptr ? "" : "<absent>", (int)r.key.len,
                 r.key.ptr ? r.key.ptr : "");
      if (v)
        snprintf(v, 2048, "%s%.*s", r.value.ptr ? "" : "<absent>", (int)r.value.len,
                 r.value.ptr ? r.value.ptr : "");
    }
  }
  frame_done(c, raw);
  return rc;
}

/* Reads iterator frames of one id until the end marker; joins the keys with
 * ','.  Returns the number of entries, or -1. */
static int drain_iter(client *c, char *keys, size_t n, int timeout_ms) {
  int count = 0;
  keys[0] = 0;
  for (;;) {
    char k[256], v[2048];
    int rc = read_iter(c, NULL, k, v, timeout_ms);
    if (rc == 0) return count;
    if (rc != 1) return -1;
    size_t l = strlen(keys);
    snprintf(keys + l, n - l, "%s%s", l ? "," : "", k);
    count++;
  }
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
  fclose(f);
  return v;
}

static double now_s(void) { return (double)lp_now_ns() / 1e9; }

static int wait_conns(lp_server *s, int n, int ms) {
  ms = tap_ms(ms);
  for (int i = 0; i < ms / 5; i++) {
    if (lp_server_connections(s) == n) return 1;
    usleep(5000);
  }
  return lp_server_connections(s) == n;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */
/* ------------------------------------------------------------------------ */

static lp_engine *eng;

static lp_server *start_server(size_t max_frame, size_t max_buf, int allow_other) {
  lp_server_opts o;
  lp_server_opts_init(&o);
  if (max_frame) o.max_frame = max_frame;
  if (max_buf) o.max_conn_buffer = max_buf;
  o.allow_other_users = allow_other;
  o.log = log_cb;
  o.log_ud = NULL;
  int fd = make_listener();
  if (fd < 0) return NULL;
  lp_err err;
  lp_server *s = lp_server_start(eng, fd, &o, &err);
  if (!s) printf("# lp_server_start: %s\n", err.msg);
  return s;
}

static void test_example_frames(void) {
  client c;
  if (client_open(&c) < 0) {
    check(0, "connect", "%s", strerror(errno));
    return;
  }
  /* put('k1',{a:1}) exactly as Node sends it */
  static const char put_k1[] = "\x10\x01\x08\x00\x12\x02k1\x1a\x07{\"a\":1}";
  send_all(c.fd, put_k1, sizeof put_k1 - 1);
  EXPECT(&c, "\x03\x00\x08\x00", "put ok is 03 00 08 00");

  static const char put_x[] = "\x10\x01\x08\x03\x12\x02k1\x1a\x07{\"x\":1}";
  send_all(c.fd, put_x, sizeof put_x - 1);
  EXPECT(&c, "\x03\x00\x08\x03", "put ok echoes id 3");

  static const char get_k1[] = "\x07\x00\x08\x00\x12\x02k1";
  send_all(c.fd, get_k1, sizeof get_k1 - 1);
  EXPECT(&c, "\x0c\x00\x08\x00\x1a\x07{\"x\":1}", "get hit frame matches the example");

  lp_buf b = {0};
  req_key(&b, LP_REQ_GET, 5, "nope");
  send_buf(&c, &b);
  EXPECT(&c, "\x0f\x00\x08\x05\x12\x0aNotFound: ", "get miss is NotFound: with id 5");

  /* batch([put k2=22, del k9]) from the examples */
  static const char batch[] = "\x1d\x03\x08\x00\x12\x0d\x0a\x03put\x12\x02k2\x1a\x02"
                              "22\x12\x09\x0a\x03"
                              "del\x12\x02k9";
  send_all(c.fd, batch, sizeof batch - 1);
  EXPECT(&c, "\x03\x00\x08\x00", "batch ok");
  check_get(&c, "k2", "22", "batch applied its put");
  put_ok(&c, "k2", "2");

  static const char gm[] = "\x11\x06\x08\x07\x12\x02k1\x12\x04nope\x12\x02k2";
  send_all(c.fd, gm, sizeof gm - 1);
  EXPECT(&c,
         "\x15\x02\x08\x07\x1a\x09\x0a\x07{\"x\":1}\x1a\x00\x1a\x03\x0a\x01"
         "2",
         "getMany frame matches the example");

  req_key(&b, LP_REQ_DEL, 4, "never-there");
  send_buf(&c, &b);
  EXPECT(&c, "\x03\x00\x08\x04", "del of a missing key is ok");

  /* value-less put, empty value, empty keys */
  req_put(&b, 6, "k3", NULL);
  send_buf(&c, &b);
  EXPECT(&c, "\x2a\x00\x08\x06\x12\x25value cannot be `null` or `undefined`",
         "put without value is refused with abstract-leveldown's text");
  check_get(&c, "k3", "<error:NotFound: >", "refused put stored nothing");
  req_put(&b, 7, "k3", "");
  send_buf(&c, &b);
  EXPECT(&c, "\x03\x00\x08\x07", "put with an empty value is ok");
  req_key(&b, LP_REQ_GET, 8, "k3");
  send_buf(&c, &b);
  EXPECT(&c, "\x05\x00\x08\x08\x1a\x00", "empty value comes back as a present empty field");
  req_key(&b, LP_REQ_GET, 1, "");
  send_buf(&c, &b);
  EXPECT(&c, "\x22\x00\x08\x01\x12\x1dkey cannot be an empty Buffer", "get of an empty key");
  req_put(&b, 2, "", "v");
  send_buf(&c, &b);
  EXPECT(&c, "\x22\x00\x08\x02\x12\x1dkey cannot be an empty Buffer", "put of an empty key");
  req_key(&b, LP_REQ_DEL, 3, "");
  send_buf(&c, &b);
  EXPECT(&c, "\x22\x00\x08\x03\x12\x1dkey cannot be an empty Buffer", "del of an empty key");

  /* batch with a value-less put: refused, nothing applied */
  {
    lp_buf rest = {0};
    lp_wire_rest_batch_op(&rest, LP_OP_DEL, S("k1"), LP_SLICE_NONE);
    lp_wire_rest_batch_op(&rest, LP_OP_PUT, S("k5"), LP_SLICE_NONE);
    lp_wire_frame(&b, LP_REQ_BATCH, 9, (lp_slice){rest.ptr, rest.len});
    lp_buf_free(&rest);
    send_buf(&c, &b);
    EXPECT(&c, "\x2a\x00\x08\x09\x12\x25value cannot be `null` or `undefined`",
           "batch with a value-less put is refused");
    check_get(&c, "k1", "{\"x\":1}", "refused batch applied none of its ops");
  }

  /* clear({gte:'x', lt:'y'}) from the examples */
  put_ok(&c, "x", "1");
  put_ok(&c, "x1", "1");
  put_ok(&c, "y", "1");
  static const char clr[] = "\x0f\x05\x08\x00\x12\x0a\x22\x01x\x2a\x01y\x38\x01\x40\x00";
  send_all(c.fd, clr, sizeof clr - 1);
  EXPECT(&c, "\x03\x00\x08\x00", "clear ok");
  check_get(&c, "x", "<error:NotFound: >", "clear removed x");
  check_get(&c, "x1", "<error:NotFound: >", "clear removed x1");
  check_get(&c, "y", "1", "clear kept y (lt is exclusive)");

  /* clear options present without limit: nothing deleted */
  static const char clr0[] = "\x05\x05\x08\x01\x12\x00";
  send_all(c.fd, clr0, sizeof clr0 - 1);
  EXPECT(&c, "\x03\x00\x08\x01", "clear with empty options replies ok");
  check_get(&c, "y", "1", "clear with options but no limit deleted nothing");

  /* clear with options absent: whole db */
  req_clear(&b, 2, NULL);
  send_buf(&c, &b);
  EXPECT(&c, "\x03\x00\x08\x02", "clear without options replies ok");
  check_get(&c, "y", "<error:NotFound: >", "clear without options emptied the db");
  check_get(&c, "k1", "<error:NotFound: >", "clear without options removed k1");

  lp_buf_free(&b);
  client_close(&c);
}

static void test_iterators(void) {
  client c;
  if (client_open(&c) < 0) {
    check(0, "connect", "%s", strerror(errno));
    return;
  }
  char k[16], v[16];
  for (int i = 0; i < 10; i++) {
    snprintf(k, sizeof k, "a%d", i);
    snprintf(v, sizeof v, "v%d", i);
    put_ok(&c, k, v);
  }
  lp_buf b = {0};

  /* options absent: whole db, keys and values; window of 2 */
  req_iter(&b, 0, 2, NULL);
  send_buf(&c, &b);
  EXPECT(&c,
         "\x0b\x01\x08\x00\x1a\x02"
         "a0\x22\x02v0",
         "first entry frame");
  EXPECT(&c,
         "\x0b\x01\x08\x00\x1a\x02"
         "a1\x22\x02v1",
         "second entry frame");
  check(silent(&c, 200), "window of 2 sends exactly 2 entries", "more arrived");
  req_iter(&b, 0, 3, NULL);
  send_buf(&c, &b);
  char keys[4096];
  int n = 0;
  keys[0] = 0;
  for (int i = 0; i < 3; i++) {
    char kk[256], vv[2048];
    if (read_iter(&c, NULL, kk, vv, 2000) == 1) {
      n++;
      strcat(keys, kk);
    }
  }
  check(n == 3 && strcmp(keys, "a2a3a4") == 0, "ack of 3 sends 3 more", "%d: %s", n, keys);
  check(silent(&c, 200), "then silence again", "more arrived");
  /* the window is set, not added: ack 1 then ack 2 gives 2 */
  req_iter(&b, 0, 1, NULL);
  req_iter(&b, 0, 2, NULL);
  send_buf(&c, &b);
  n = 0;
  while (read_iter(&c, NULL, NULL, NULL, 300) == 1)
    n++;
  check(n == 3, "each ack sets the window (1 then 2 -> 3 entries in all)", "%d", n);
  /* batch 0 closes; the same id then opens a fresh iterator */
  req_iter(&b, 0, 0, NULL);
  req_iter(&b, 0, 100, NULL);
  send_buf(&c, &b);
  n = drain_iter(&c, keys, sizeof keys, 2000);
  check(n == 10 && strncmp(keys, "a0,a1", 5) == 0, "batch 0 closed it: reopening starts over",
        "%d: %s", n, keys);
  check(silent(&c, 100), "end marker sent once", "more arrived");
  req_iter(&b, 0, 5, NULL);
  send_buf(&c, &b);
  check(silent(&c, 200), "an ack after the end sends nothing and does not reopen",
        "something arrived");
  req_iter(&b, 0, 0, NULL);
  send_buf(&c, &b);

  /* end marker bytes */
  lp_range r;
  lp_range_init(&r);
  r.gte = S("a9");
  req_iter(&b, 0, 32, &r);
  send_buf(&c, &b);
  EXPECT(&c,
         "\x0b\x01\x08\x00\x1a\x02"
         "a9\x22\x02v9",
         "entry a9");
  EXPECT(&c, "\x03\x01\x08\x00", "end marker is 03 01 08 00");
  req_iter(&b, 0, 0, NULL);

  /* options present without limit: immediate end, no entries */
  static const char nolimit[] = "\x0b\x04\x08\x01\x10\x20\x1a\x04\x08\x01\x10\x01";
  send_buf(&c, &b);
  send_all(c.fd, nolimit, sizeof nolimit - 1);
  EXPECT(&c, "\x03\x01\x08\x01", "options without limit give the end marker at once");
  check(silent(&c, 150), "and no entries", "something arrived");
  req_iter(&b, 1, 0, NULL);

  /* keys=false / values=false: the suppressed side is a present empty field */
  lp_range_init(&r);
  r.keys = 0;
  r.gte = S("a5");
  r.limit = 1;
  req_iter(&b, 2, 32, &r);
  send_buf(&c, &b);
  EXPECT(&c, "\x09\x01\x08\x02\x1a\x00\x22\x02v5", "keys=false sends an empty key field");
  EXPECT(&c, "\x03\x01\x08\x02", "limit 1 then end");
  lp_range_init(&r);
  r.values = 0;
  r.gte = S("a5");
  r.limit = 1;
  req_iter(&b, 3, 32, &r);
  send_buf(&c, &b);
  EXPECT(&c,
         "\x09\x01\x08\x03\x1a\x02"
         "a5\x22\x00",
         "values=false sends an empty value field");
  EXPECT(&c, "\x03\x01\x08\x03", "end after it");
  lp_range_init(&r);
  r.values = 0;
  r.keys = 0;
  r.gte = S("a5");
  r.limit = 1;
  req_iter(&b, 4, 32, &r);
  send_buf(&c, &b);
  EXPECT(&c, "\x07\x01\x08\x04\x1a\x00\x22\x00", "keys=values=false: both fields present, empty");
  EXPECT(&c, "\x03\x01\x08\x04", "end after it");
  req_iter(&b, 2, 0, NULL);
  req_iter(&b, 3, 0, NULL);
  req_iter(&b, 4, 0, NULL);
  send_buf(&c, &b);

  /* conjunction: gt a3 and gte a1 -> from a4; lt a7 and lte a8 -> to a6 */
  lp_range_init(&r);
  r.gt = S("a3");
  r.gte = S("a1");
  r.lt = S("a7");
  r.lte = S("a8");
  req_iter(&b, 5, 32, &r);
  send_buf(&c, &b);
  n = drain_iter(&c, keys, sizeof keys, 2000);
  check(n == 3 && strcmp(keys, "a4,a5,a6") == 0, "bounds are a conjunction", "%d: %s", n, keys);

  /* reverse with limit */
  lp_range_init(&r);
  r.reverse = 1;
  r.limit = 3;
  r.lte = S("a8");
  req_iter(&b, 6, 32, &r);
  send_buf(&c, &b);
  n = drain_iter(&c, keys, sizeof keys, 2000);
  check(n == 3 && strcmp(keys, "a8,a7,a6") == 0, "reverse with limit 3", "%d: %s", n, keys);

  /* createReadStream({gte:'k2', limit:3}) from the examples */
  put_ok(&c, "k2", "x");
  put_ok(&c, "k3", "x");
  put_ok(&c, "k4", "x");
  put_ok(&c, "k5", "x");
  static const char rs[] = "\x13\x04\x08\x07\x10\x20\x1a\x0c\x08\x01\x10\x01\x22\x02k2\x38"
                           "\x06\x40\x00";
  send_all(c.fd, rs, sizeof rs - 1);
  n = drain_iter(&c, keys, sizeof keys, 2000);
  check(n == 3 && strcmp(keys, "k2,k3,k4") == 0, "example createReadStream frame", "%d: %s", n,
        keys);

  /* two iterators at once on one connection, interleaved acks */
  lp_range_init(&r);
  r.gte = S("a");
  r.lt = S("b");
  req_iter(&b, 10, 4, &r);
  r.reverse = 1;
  req_iter(&b, 11, 4, &r);
  send_buf(&c, &b);
  int c10 = 0, c11 = 0;
  uint32_t id;
  while (read_iter(&c, &id, NULL, NULL, 300) == 1) {
    if (id == 10) c10++;
    if (id == 11) c11++;
  }
  check(c10 == 4 && c11 == 4, "two iterators each fill their own window", "%d %d", c10, c11);
  req_iter(&b, 10, 0, NULL);
  req_iter(&b, 11, 0, NULL);
  req_iter(&b, 5, 0, NULL);
  req_iter(&b, 6, 0, NULL);
  req_iter(&b, 7, 0, NULL);

  /* huge id */
  lp_range_init(&r);
  r.gte = S("a9");
  r.lt = S("b");
  req_iter(&b, 0xffffffffu, 32, &r);
  send_buf(&c, &b);
  EXPECT(&c,
         "\x0f\x01\x08\xff\xff\xff\xff\x0f\x1a\x02"
         "a9\x22\x02v9",
         "iterator id 2^32-1 works");
  EXPECT(&c, "\x07\x01\x08\xff\xff\xff\xff\x0f", "and ends");
  req_iter(&b, 0xffffffffu, 0, NULL);
  send_buf(&c, &b);

  /* too many open iterators: 4096 ended-but-open records, then one more */
  for (uint32_t i = 0; i < 4096; i++) {
    static const char open0[] = "\x10\x20\x1a\x02\x38\x00";
    lp_wire_frame(&b, LP_REQ_ITER, 1000 + i, (lp_slice){open0, sizeof open0 - 1});
  }
  lp_wire_frame(&b, LP_REQ_ITER, 99999, (lp_slice){"\x10\x20", 2});
  send_buf(&c, &b);
  int ends = 0, errs = 0;
  char emsg[256] = "";
  for (;;) {
    char kk[256];
    int rc = read_iter(&c, &id, kk, NULL, 2000);
    if (rc == 0)
      ends++;
    else if (rc == -1) {
      errs++;
      snprintf(emsg, sizeof emsg, "%s", kk);
      break;
    } else
      break;
  }
  check(ends == 4096 && errs == 1 && strcmp(emsg, "too many open iterators") == 0 && id == 99999,
        "the 4097th open iterator is refused", "%d ends, %d errs, '%s'", ends, errs, emsg);
  for (uint32_t i = 0; i < 4096; i++)
    req_iter(&b, 1000 + i, 0, NULL);
  send_buf(&c, &b);
  lp_range_init(&r);
  r.gte = S("a9");
  r.lt = S("b");
  req_iter(&b, 77, 32, &r);
  send_buf(&c, &b);
  n = drain_iter(&c, keys, sizeof keys, 2000);
  check(n == 1, "after closing them, iterators open again", "%d", n);

  lp_buf_free(&b);
  client_close(&c);
}

static void test_pipelined(void) {
  client c;
  if (client_open(&c) < 0) {
    check(0, "connect", "%s", strerror(errno));
    return;
  }
  lp_buf b = {0};
  for (uint32_t i = 0; i < 64; i++) {
    if (i % 2)
      req_key(&b, LP_REQ_GET, i, "a1");
    else
      req_put(&b, i, "p", "q");
  }
  send_buf(&c, &b);
  uint64_t seen = 0;
  int n = 0, bad = 0;
  for (int i = 0; i < 64; i++) {
    lp_slice raw, pl;
    lp_response r;
    if (read_frame(&c, &raw, &pl, 5000) != 1) break;
    if (lp_wire_decode_response(pl, &r) != LP_WIRE_OK || r.id >= 64)
      bad++;
    else {
      seen |= 1ull << r.id;
      if (r.id % 2 && !slice_is(r.value, "v1")) bad++;
      if (!(r.id % 2) && (r.value.ptr || r.error.ptr)) bad++;
    }
    n++;
    frame_done(&c, raw);
  }
  check(n == 64 && seen == ~0ull && bad == 0, "64 pipelined requests in one write, 64 replies",
        "%d replies, mask %llx, %d bad", n, (unsigned long long)seen, bad);

  /* a request split byte by byte */
  req_key(&b, LP_REQ_GET, 3, "a2");
  for (size_t i = 0; i < b.len; i++) {
    send_all(c.fd, b.ptr + i, 1);
    usleep(2000);
  }
  b.len = 0;
  EXPECT(&c, "\x07\x00\x08\x03\x1a\x02v2", "a request sent one byte at a time");
  /* empty frames are skipped */
  send_all(c.fd, "\x00\x00", 2);
  req_key(&b, LP_REQ_GET, 4, "a2");
  send_buf(&c, &b);
  EXPECT(&c, "\x07\x00\x08\x04\x1a\x02v2", "empty frames are skipped");

  /* getMany edge cases */
  lp_wire_frame(&b, LP_REQ_GETMANY, 5, (lp_slice){"", 0});
  send_buf(&c, &b);
  EXPECT(&c, "\x03\x02\x08\x05", "getMany of no keys");
  {
    lp_buf rest = {0};
    lp_wire_rest_getmany_key(&rest, S("a1"));
    lp_wire_rest_getmany_key(&rest, S(""));
    lp_wire_frame(&b, LP_REQ_GETMANY, 6, (lp_slice){rest.ptr, rest.len});
    lp_buf_free(&rest);
  }
  send_buf(&c, &b);
  EXPECT(&c, "\x22\x02\x08\x06\x12\x1dkey cannot be an empty Buffer",
         "getMany with an empty key is refused");

  /* half-close: requests sent before EOF are still answered, then close */
  for (uint32_t i = 0; i < 10; i++)
    req_key(&b, LP_REQ_GET, i, "a1");
  send_buf(&c, &b);
  shutdown(c.fd, SHUT_WR);
  int replies = 0;
  for (;;) {
    lp_slice raw;
    int rc = read_frame(&c, &raw, NULL, 3000);
    if (rc != 1) {
      check(rc == -1, "server closes after answering a half-closed peer", "rc %d", rc);
      break;
    }
    replies++;
    frame_done(&c, raw);
  }
  check(replies == 10, "a half-closed peer gets its replies", "%d of 10", replies);
  lp_buf_free(&b);
  client_close(&c);
}

typedef struct worker {
  int idx;
  int errors;
} worker;

static void worker_main(worker *w) {
  client c;
  if (client_open(&c) < 0) {
    w->errors = 1000;
    return;
  }
  char key[32], val[32];
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof key, "w%d-%d", w->idx, i);
    snprintf(val, sizeof val, "val-%d-%d", w->idx, i);
    put_ok(&c, key, val);
    char *got = get_str(&c, key);
    if (strcmp(got, val) != 0) w->errors++;
    free(got);
  }
  client_close(&c);
}

/* The clients are processes, as real followers are; each reports its error
 * count through a pipe.  A child re-executes this program (--worker) rather
 * than running after fork(): this process has threads (the server's,
 * LevelDB's), and allocating in a child forked from a threaded process can
 * deadlock (seen under ASan on a loaded machine). */
static void test_concurrent(lp_server *s) {
  int rfd[8];
  pid_t pids[8];
  /* Exec the binary's path, not "/proc/self/exe": under valgrind the kernel
   * resolves that link to the valgrind tool, which will not run as a client,
   * while readlink() of it is answered with this test's path. */
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  self[n > 0 ? n : 0] = '\0';
  for (int i = 0; i < 8; i++) {
    int pfd[2];
    rfd[i] = -1;
    pids[i] = -1;
    if (pipe(pfd) < 0) continue;
    char idx[16], fdnum[16];
    snprintf(idx, sizeof idx, "%d", i);
    snprintf(fdnum, sizeof fdnum, "%d", pfd[1]);
    pids[i] = fork();
    if (pids[i] == 0) {
      close(pfd[0]);
      execl(self, "server_test", "--worker", tmpdir, idx, fdnum, (char *)NULL);
      _exit(127);
    }
    close(pfd[1]);
    rfd[i] = pfd[0];
  }
  int errors = 0;
  for (int i = 0; i < 8; i++) {
    unsigned char e = 255;
    if (rfd[i] < 0 || read(rfd[i], &e, 1) != 1) e = 255;
    errors += e;
    if (rfd[i] >= 0) close(rfd[i]);
    if (pids[i] > 0) waitpid(pids[i], NULL, 0);
  }
  check(errors == 0, "8 concurrent client processes, 200 put+get each", "%d errors", errors);
  check(wait_conns(s, 0, 2000), "connection count back to 0 after they leave", "%d",
        lp_server_connections(s));
}

static void test_protocol_errors(lp_server *s) {
  client good, bad;
  if (client_open(&good) < 0) {
    check(0, "connect", "%s", strerror(errno));
    return;
  }
  check_get(&good, "a1", "v1", "good client works");
  check(wait_conns(s, 1, 2000), "one connection counted", "%d", lp_server_connections(s));

  struct {
    const char *bytes;
    size_t len;
    const char *what;
    const char *logmsg;
  } cases[] = {
      {"\x03\x09\x08\x00", 4, "unknown tag closes the connection", "unknown request tag 9"},
      {"\xff\xff\xff\xff\x0f", 5, "oversized length closes the connection",
       "frame of 4294967295 bytes exceeds the limit of 1048576"},
      {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, "an 11-byte varint closes it",
       "bad frame length prefix"},
      {"\x02\x00\x08", 3, "a malformed get closes it", "malformed get request"},
      {"\x04\x00\x08\x00\xff", 5, "garbage body closes it", "malformed"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (client_open(&bad) < 0) {
      check(0, "connect", "%s", strerror(errno));
      continue;
    }
    /* a valid request first: it is answered before the bad frame */
    lp_buf b = {0};
    req_key(&b, LP_REQ_GET, 1, "a2");
    send_buf(&bad, &b);
    EXPECT(&bad, "\x07\x00\x08\x01\x1a\x02v2", "request before the bad frame answered");
    /* and one in the same write as the bad frame */
    req_key(&b, LP_REQ_GET, 2, "a2");
    lp_buf_append(&b, cases[i].bytes, cases[i].len);
    send_buf(&bad, &b);
    lp_buf_free(&b);
    EXPECT(&bad, "\x07\x00\x08\x02\x1a\x02v2", "reply to the frame before the bad one");
    check(closed_by_server(&bad, 3000), cases[i].what, "still open");
    check(log_wait(cases[i].logmsg, 2000), "logged the reason", "log: %s", log_text);
    client_close(&bad);
    check_get(&good, "a1", "v1", "the other client keeps working");
  }
  char pidmsg[64];
  snprintf(pidmsg, sizeof pidmsg, "closing connection pid %ld: ", (long)getpid());
  check(log_has(pidmsg), "log names the peer pid", "log: %s", log_text);
  check(wait_conns(s, 1, 2000), "bad connections are gone from the count", "%d",
        lp_server_connections(s));
  client_close(&good);
}

/* A client that opens an iterator with a huge window and never reads: the
 * server must not buffer the whole range, and must keep serving others. */
static void test_slow_reader(lp_server *s) {
  client writer;
  if (client_open(&writer) < 0) {
    check(0, "connect", "%s", strerror(errno));
    return;
  }
  /* 48 MiB of values under prefix "big" */
  char *val = malloc(4096);
  memset(val, 'z', 4095);
  val[4095] = 0;
  lp_buf b = {0};
  int pending = 0;
  for (int i = 0; i < 12288; i++) {
    char key[32];
    snprintf(key, sizeof key, "big%06d", i);
    req_put(&b, (uint32_t)pending, key, val);
    if (++pending == 64) {
      send_buf(&writer, &b);
      for (int j = 0; j < pending; j++) {
        lp_slice raw;
        if (read_frame(&writer, &raw, NULL, 10000) == 1) frame_done(&writer, raw);
      }
      pending = 0;
    }
  }
  free(val);

  long rss0 = rss_kib();
  client slow;
  if (client_open(&slow) < 0) {
    check(0, "connect", "%s", strerror(errno));
    client_close(&writer);
    lp_buf_free(&b);
    return;
  }
  lp_range r;
  lp_range_init(&r);
  r.gte = S("big");
  r.lt = S("bih");
  req_iter(&b, 0, 1000000, &r);
  /* and a pile of pipelined gets it never reads either */
  for (uint32_t i = 0; i < 2000; i++)
    req_key(&b, LP_REQ_GET, i, "big000001");
  (void)fcntl(slow.fd, F_SETFL, O_NONBLOCK);
  size_t off = 0;
  double t_end = now_s() + 2.0;
  while (off < b.len && now_s() < t_end) {
    ssize_t w = send(slow.fd, b.ptr + off, b.len - off, MSG_NOSIGNAL);
    if (w > 0)
      off += (size_t)w;
    else
      usleep(10000);
  }
  b.len = 0;

  /* meanwhile another client is served promptly */
  double worst = 0;
  for (int i = 0; i < 50; i++) {
    double t0 = now_s();
    char *got = get_str(&writer, "a3");
    double dt = now_s() - t0;
    if (dt > worst) worst = dt;
    if (strcmp(got, "v3") != 0) worst = 99;
    free(got);
    usleep(20000);
  }
  check(worst < 2.0, "other clients are served while one reader stalls", "worst %.3fs", worst);
  long rss1 = rss_kib();
  size_t unsent = lp_server_unsent(s);
  printf("# stalled reader: %zu KiB unsent, RSS grew %ld KiB, worst latency of the other client "
         "%.1f ms\n",
         unsent / 1024, rss1 - rss0, worst * 1000);
  /* 48 MiB would be buffered without backpressure: the server holds its
   * limit (256 KiB) and what one step made past it (a 4 KiB piece of gets,
   * ~180 replies of 4 KiB, or 64 entries): 1.2 MiB here */
  check(unsent < 2048 * 1024, "the server does not buffer the whole range", "%zu KiB unsent",
        unsent / 1024);
#ifndef __SANITIZE_ADDRESS__
  /* and the process's memory agrees (ASan's quarantine keeps freed memory
   * resident: 17-33 MiB here, which says nothing of the server) */
  check(rss1 - rss0 < 24 * 1024, "nor does the process's memory grow by it", "RSS grew by %ld KiB",
        rss1 - rss0);
#endif

  /* now read everything: all 12288 entries arrive, in order, then the end */
  (void)fcntl(slow.fd, F_SETFL, 0);
  int n = 0, order_ok = 1, got_end = 0, gets = 0;
  for (;;) {
    lp_slice raw, pl;
    lp_response resp;
    if (read_frame(&slow, &raw, &pl, 5000) != 1) break;
    if (lp_wire_decode_response(pl, &resp) == LP_WIRE_OK) {
      if (resp.tag == LP_RES_ITERDATA) {
        if (!resp.key.ptr && !resp.value.ptr)
          got_end = 1;
        else {
          char want[32];
          snprintf(want, sizeof want, "big%06d", n);
          if (!slice_is(resp.key, want) || resp.value.len != 4095) order_ok = 0;
          n++;
        }
      } else if (resp.tag == LP_RES_CALLBACK) {
        gets++;
      }
    }
    frame_done(&slow, raw);
    if (got_end && gets == 2000) break;
  }
  check(n == 12288 && order_ok && got_end, "the stalled reader still gets every entry in order",
        "%d entries, order %d, end %d", n, order_ok, got_end);
  check(gets == 2000, "and every pipelined get reply", "%d of 2000 (sent %zu bytes)", gets, off);
  client_close(&slow);

  /* clean up the big range */
  lp_range_init(&r);
  r.gte = S("big");
  r.lt = S("bih");
  req_clear(&b, 1, &r);
  send_buf(&writer, &b);
  EXPECT(&writer, "\x03\x00\x08\x01", "clear of the big range");
  lp_buf_free(&b);
  client_close(&writer);
}

static void test_stop_with_clients(void) {
  lp_server *s = start_server(0, 64 * 1024, 0);
  if (!s) {
    check(0, "server start", "failed");
    return;
  }
  client a, busy, partial;
  int ok = client_open(&a) == 0 && client_open(&busy) == 0 && client_open(&partial) == 0;
  check(ok, "three clients connect", "%s", strerror(errno));
  if (!ok) {
    lp_server_stop(s);
    return;
  }
  check_get(&a, "a1", "v1", "served before stop");
  check(wait_conns(s, 3, 2000), "three connections counted", "%d", lp_server_connections(s));
  lp_buf b = {0};
  lp_range r;
  lp_range_init(&r);
  req_iter(&b, 0, 1000000, &r);
  send_buf(&busy, &b);
  send_all(partial.fd, "\x20\x00\x08", 3); /* half a frame */
  usleep(50000);
  lp_server_stop(s);
  check(closed_by_server(&a, 2000), "stop closes idle clients", "still open");
  check(closed_by_server(&busy, 2000), "stop closes a client mid-iterator", "still open");
  check(closed_by_server(&partial, 2000), "stop closes a client mid-frame", "still open");
  struct stat st;
  char path[300];
  sock_path(path, sizeof path);
  check(stat(path, &st) == 0, "stop leaves the socket file to the caller", "%s", strerror(errno));
  client_close(&a);
  client_close(&busy);
  client_close(&partial);
  lp_buf_free(&b);
  check(lp_server_connections(NULL) == 0, "connections(NULL) is 0", "no");
  lp_server_stop(NULL);
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int log_count(const char *needle) {
  int n = 0;
  pthread_mutex_lock(&log_mu);
  for (const char *p = strstr(log_text, needle); p; p = strstr(p + 1, needle))
    n++;
  pthread_mutex_unlock(&log_mu);
  return n;
}

/* A leader out of file descriptors: accept fails with EMFILE.  It must say
 * so (once, not per attempt), not spin on the listening socket that stays
 * readable, keep serving the connections it has, and accept the waiting ones
 * once descriptors are free again. */
static void test_emfile(void) {
  enum { NCLIENTS = 24 };
  int fds[NCLIENTS], i, spare, accepted, ok = 1;
  struct rlimit old, low;
  struct sockaddr_un a;
  double cpu0, cpu1;
  lp_server *s;
  if (getenv("TAP_VALGRIND")) {
    /* valgrind emulates RLIMIT_NOFILE: an fd the kernel accepted over the
     * emulated limit is closed and EMFILE returned, so the waiting
     * connection is dropped rather than left in the backlog. */
    skip("EMFILE: a leader out of descriptors", "valgrind closes what it accepts over the limit");
    return;
  }
  s = start_server(0, 0, 0);
  if (!s || getrlimit(RLIMIT_NOFILE, &old) != 0) {
    check(0, "EMFILE setup", "failed");
    lp_server_stop(s);
    return;
  }
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  sock_path(a.sun_path, sizeof a.sun_path);
  for (i = 0; i < NCLIENTS; i++)
    fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* room for 4 more descriptors in the whole process: the server's */
  spare = dup(0);
  close(spare);
  low = old;
  low.rlim_cur = (rlim_t)spare + 4;
  setrlimit(RLIMIT_NOFILE, &low);
  for (i = 0; i < NCLIENTS; i++)
    ok = ok && connect(fds[i], (struct sockaddr *)&a, sizeof a) == 0;
  check(ok, "EMFILE: every client connects (the backlog takes them)", "%s", strerror(errno));
  check(log_wait("cannot accept connections: too many open files (EMFILE)", 3000),
        "EMFILE: the leader says it cannot accept", "log: %s", log_text);
  accepted = lp_server_connections(s);
  cpu0 = cpu_s();
  usleep(600000);
  cpu1 = cpu_s();
  check(cpu1 - cpu0 < 0.15, "EMFILE: the leader does not spin meanwhile", "%.2f s of CPU in 0.6 s",
        cpu1 - cpu0);
  check(log_count("cannot accept connections") == 1, "EMFILE: said once, not at every attempt",
        "%d lines", log_count("cannot accept connections"));
  check(accepted >= 1 && accepted < NCLIENTS && lp_server_connections(s) == accepted,
        "EMFILE: the others wait, none is dropped", "%d accepted", accepted);
  {
    client c0 = {fds[0], {0}};
    check_get(&c0, "a1", "v1", "EMFILE: a connection it has is still served");
    lp_buf_free(&c0.rx);
  }
  setrlimit(RLIMIT_NOFILE, &old);
  check(wait_conns(s, NCLIENTS, 3000), "EMFILE: once descriptors are free, the waiting ones are in",
        "%d of %d", lp_server_connections(s), NCLIENTS);
  check(log_wait("accepting connections again", 1000), "EMFILE: and it says so", "log: %s",
        log_text);
  {
    client cl = {fds[NCLIENTS - 1], {0}};
    check_get(&cl, "a1", "v1", "EMFILE: the last one to connect is served");
    lp_buf_free(&cl.rx);
  }
  for (i = 0; i < NCLIENTS; i++)
    close(fds[i]);
  lp_server_stop(s);
}

/* Followers that open iterators with huge windows and never read: each is
 * bounded by max_conn_buffer, and all of them together by max_total_buffer,
 * every one holding some stopping; a follower that reads is served,
 * and a stopped one that starts reading gets everything, in order. */
static void test_total_buffer(void) {
  enum { NSLOW = 10, NENT = 2048, VLEN = 4096 };
  lp_server_opts o;
  lp_server *s;
  lp_err err;
  client slow[NSLOW], good;
  lp_batch *b = lp_batch_new();
  lp_buf req = {0};
  lp_range r;
  char *val = malloc(VLEN), key[32];
  size_t last = 0, total;
  int i, n = 0, order_ok = 1, got_end = 0, stable = 0;
  memset(val, 'q', VLEN);
  for (i = 0; i < NENT; i++) {
    snprintf(key, sizeof key, "tot%05d", i);
    lp_batch_put(b, S(key), (lp_slice){val, VLEN});
  }
  lp_engine_write(eng, b, 0, &err);
  lp_batch_free(b);
  free(val);
  lp_server_opts_init(&o);
  o.max_conn_buffer = 1u << 20;
  o.max_total_buffer = 2u << 20;
  o.log = log_cb;
  s = lp_server_start(eng, make_listener(), &o, &err);
  if (!s || client_open(&good) < 0) {
    check(0, "total buffer setup", "%s", err.msg);
    lp_server_stop(s);
    return;
  }
  lp_range_init(&r);
  r.gte = S("tot");
  r.lt = S("tou");
  for (i = 0; i < NSLOW; i++) {
    if (client_open(&slow[i]) < 0) slow[i].fd = -1;
    req.len = 0;
    req_iter(&req, 0, 1000000, &r);
    if (slow[i].fd >= 0) send_buf(&slow[i], &req);
  }
  /* until production stops: the total no longer moves */
  for (i = 0; i < 300 && stable < 30; i++) {
    usleep(10000);
    total = lp_server_unsent(s);
    stable = total == last ? stable + 1 : 0;
    last = total;
  }
  total = lp_server_unsent(s);
  printf("# %d readers that never read: %zu KiB unsent in total (limit 2048 KiB, %d x 1024 KiB "
         "per connection)\n",
         NSLOW, total / 1024, NSLOW);
  /* soft by one step (64 entries of 4 KiB) per connection */
  check(total <= (2u << 20) + NSLOW * 300u * 1024u,
        "the total of unsent replies is bounded by max_total_buffer, not per connection", "%zu KiB",
        total / 1024);
  check(log_wait("over the limit of 2048 KiB", 2000), "the leader logs that the total is over",
        "log: %s", log_text);
  check_get(&good, "a1", "v1", "a follower that reads is still served");
  /* one of them reads now: it gets every entry in order, then the end */
  for (;;) {
    lp_slice raw, pl;
    lp_response resp;
    if (read_frame(&slow[0], &raw, &pl, 5000) != 1) break;
    if (lp_wire_decode_response(pl, &resp) == LP_WIRE_OK && resp.tag == LP_RES_ITERDATA) {
      if (!resp.key.ptr && !resp.value.ptr) {
        got_end = 1;
      } else {
        snprintf(key, sizeof key, "tot%05d", n);
        if (!slice_is(resp.key, key) || resp.value.len != VLEN) order_ok = 0;
        n++;
      }
    }
    frame_done(&slow[0], raw);
    if (got_end) break;
  }
  check(n == NENT && order_ok && got_end, "a held follower that reads gets everything, in order",
        "%d entries, order %d, end %d", n, order_ok, got_end);
  for (i = 0; i < NSLOW; i++)
    client_close(&slow[i]);
  client_close(&good);
  lp_buf_free(&req);
  check(wait_conns(s, 0, 3000) && lp_server_unsent(s) == 0, "closed, nothing is left counted",
        "%zu", lp_server_unsent(s));
  lp_server_stop(s);
  lp_range_init(&r);
  r.gte = S("tot");
  r.lt = S("tou");
  {
    lp_clear_state st;
    memset(&st, 0, sizeof st);
    while (lp_engine_clear_step(eng, &r, &st, LP_CLEAR_STEP, 0, &err) == 1) {
    }
    lp_clear_state_free(&st);
  }
}

static void test_start_stop(void) {
  int ok = 1;
  for (int i = 0; i < 20; i++) {
    lp_server *s = start_server(0, 0, 0);
    if (!s) ok = 0;
    lp_server_stop(s);
  }
  check(ok, "start then stop at once, 20 times", "a start failed");
  /* a client connecting while the server stops */
  lp_server *s = start_server(0, 0, 0);
  client c;
  if (s && client_open(&c) == 0) {
    lp_buf b = {0};
    for (int i = 0; i < 100; i++)
      req_key(&b, LP_REQ_GET, (uint32_t)i, "a1");
    send_buf(&c, &b);
    lp_server_stop(s);
    check(closed_by_server(&c, 2000), "stop while requests are in flight", "still open");
    client_close(&c);
    lp_buf_free(&b);
  } else {
    check(0, "stop while requests are in flight", "setup failed");
    lp_server_stop(s);
  }
  lp_err err;
  lp_server *bad = lp_server_start(eng, -1, NULL, &err);
  check(bad == NULL, "start on a bad fd fails", "it started");
  if (bad) lp_server_stop(bad);
}

/* Runs a child that connects as uid 65534 and sends a GET.  Returns the
 * child's verdict (through a pipe, so that valgrind's exit code does not
 * interfere): 0 refused (EOF without reply), 1 served, 2+ setup failure. */
static int foreign_peer(pid_t *pidp) {
  int pfd[2];
  if (pipe(pfd) < 0) return 2;
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    return 2;
  }
  if (pid == 0) {
    char verdict = 2;
    close(pfd[0]);
    if (setgid(65534) == 0 && setuid(65534) == 0) {
      client c;
      verdict = 3;
      if (client_open(&c) == 0) {
        lp_buf b = {0};
        req_key(&b, LP_REQ_GET, 1, "a1");
        send_buf(&c, &b);
        lp_slice raw;
        int rc = read_frame(&c, &raw, NULL, 3000);
        verdict = rc == 1 ? 1 : rc == -1 ? 0 : 4;
      }
    }
    if (write(pfd[1], &verdict, 1) != 1) _exit(1);
    _exit(0);
  }
  close(pfd[1]);
  *pidp = pid;
  char v = 5;
  if (read(pfd[0], &v, 1) != 1) v = 5;
  close(pfd[0]);
  waitpid(pid, NULL, 0);
  return v;
}

static void test_peercred(void) {
  if (geteuid() != 0) {
    printf("ok - SO_PEERCRED refusal # SKIP not root\n");
    return;
  }
  chmod(tmpdir, 0755);
  lp_server *s = start_server(0, 0, 0);
  char path[300];
  sock_path(path, sizeof path);
  chmod(path, 0777);
  pid_t pid = 0;
  int v = foreign_peer(&pid);
  check(v == 0, "a peer of another uid is refused", "child verdict %d", v);
  char msg[96];
  snprintf(msg, sizeof msg, "refused peer pid %ld uid 65534", (long)pid);
  check(log_wait(msg, 1000), "refusal logged with pid and uid", "log: %s", log_text);
  /* the same uid again within the minute: refused, counted, not logged (the
   * child saw its connection closed, so the server has handled it) */
  v = foreign_peer(&pid);
  snprintf(msg, sizeof msg, "refused peer pid %ld", (long)pid);
  check(v == 0 && !log_wait(msg, 200), "a second refusal of one uid within a minute is not logged",
        "verdict %d, log: %s", v, log_text);
  check(lp_server_connections(s) == 0, "a refused peer is not counted", "%d",
        lp_server_connections(s));
  lp_server_stop(s);

  s = start_server(0, 0, 1);
  chmod(path, 0777);
  v = foreign_peer(&pid);
  check(v == 1, "allow_other_users=1 serves another uid", "child verdict %d", v);
  lp_server_stop(s);
  chmod(tmpdir, 0700);
}

/* The session alone, over memory. */
static void test_session_direct(void) {
  for (int i = 0; i < 10; i++) {
    char k[16];
    snprintf(k, sizeof k, "a%d", i);
    lp_err e2;
    lp_engine_put(eng, S(k), S("v"), 0, &e2);
  }
  lp_session *ss = lp_session_new(eng, 1024);
  lp_buf in = {0}, out = {0};
  lp_err err;
  lp_range r;
  lp_range_init(&r);
  r.gte = S("a");
  r.lt = S("b");
  req_iter(&in, 1, 100, &r);
  long used = lp_session_input(ss, in.ptr, in.len - 1, &out, 3, &err);
  check(used == 0 && out.len == 0, "session leaves a partial frame", "used %ld", used);
  used = lp_session_input(ss, in.ptr, in.len, &out, 3, &err);
  check(used == (long)in.len, "session consumes a whole frame", "used %ld", used);
  size_t cur = 0;
  int n = 0;
  lp_slice pl;
  size_t u;
  while (lp_wire_next_frame(out.ptr + cur, out.len - cur, 0, &pl, &u) == LP_WIRE_OK) {
    n++;
    cur += u;
  }
  check(n == 3, "input honours the entry budget", "%d entries", n);
  out.len = 0;
  int more = lp_session_pump(ss, &out, 4);
  cur = 0;
  n = 0;
  while (lp_wire_next_frame(out.ptr + cur, out.len - cur, 0, &pl, &u) == LP_WIRE_OK) {
    n++;
    cur += u;
  }
  check(n == 4 && more == 1, "pump honours the budget and reports more", "%d, %d", n, more);
  out.len = 0;
  more = lp_session_pump(ss, &out, 1000);
  check(more == 0, "pump reports no open window after the end", "%d", more);
  in.len = 0;
  lp_buf_append(&in, "\x90\x10", 2);
  used = lp_session_input(ss, in.ptr, in.len, &out, 3, &err);
  check(used == -1 && err.code == LP_EPROTO &&
            strcmp(err.msg, "frame of 2064 bytes exceeds the limit of 1024") == 0,
        "oversized frame error text", "%ld %s", used, err.msg);
  lp_buf_free(&in);
  lp_buf_free(&out);
  lp_session_free(ss); /* with an open (ended) iterator */
  check(1, "session freed with an iterator still open", "-");
}

/* Decodes the one reply frame of out (the whole buffer). */
static int one_reply(const lp_buf *out, lp_response *r) {
  lp_slice pl;
  size_t used;
  memset(r, 0, sizeof *r); /* a failed check still prints r's fields */
  return lp_wire_next_frame(out->ptr, out->len, 0, &pl, &used) == LP_WIRE_OK && used == out->len &&
         lp_wire_decode_response(pl, r) == LP_WIRE_OK;
}

/* Replies that would exceed max_frame become ETOOLARGE errors for their
 * request alone; an oversized request is answered before the session gives
 * up on the connection. */
static void test_session_too_large(void) {
  char *big = malloc(2000);
  lp_err e2, err;
  lp_session *ss = lp_session_new(eng, 1024);
  lp_buf in = {0}, out = {0}, rest = {0};
  lp_response r = {0};
  lp_range range;
  long used;
  char k[256], v[2048];
  memset(big, 'b', 2000);
  lp_engine_put(eng, S("tl1"), S("small"), 0, &e2);
  lp_engine_put(eng, S("tl2"), (lp_slice){big, 2000}, 0, &e2);
  lp_engine_put(eng, S("tl3"), S("small"), 0, &e2);
  req_key(&in, LP_REQ_GET, 7, "tl2");
  used = lp_session_input(ss, in.ptr, in.len, &out, 10, &err);
  check(used == (long)in.len && one_reply(&out, &r) && r.tag == LP_RES_CALLBACK && r.id == 7 &&
            slice_is(r.error,
                     "ETOOLARGE: get: the value is 2000 bytes, over the frame limit of 1024"),
        "a get whose reply would exceed max_frame is answered with ETOOLARGE", "%.*s",
        (int)r.error.len, r.error.ptr ? r.error.ptr : "");
  in.len = out.len = 0;
  req_key(&in, LP_REQ_GET, 8, "tl1");
  used = lp_session_input(ss, in.ptr, in.len, &out, 10, &err);
  check(used == (long)in.len && one_reply(&out, &r) && slice_is(r.value, "small"),
        "the session goes on serving", "failed");
  in.len = out.len = 0;
  lp_wire_rest_getmany_key(&rest, S("tl1"));
  lp_wire_rest_getmany_key(&rest, S("tl2"));
  lp_wire_frame(&in, LP_REQ_GETMANY, 9, (lp_slice){rest.ptr, rest.len});
  used = lp_session_input(ss, in.ptr, in.len, &out, 10, &err);
  check(used == (long)in.len && one_reply(&out, &r) && r.tag == LP_RES_GETMANY && r.count == 0 &&
            slice_is(r.error, "ETOOLARGE: getMany: the values are 2005 bytes, over the frame "
                              "limit of 1024"),
        "a getMany whose reply would exceed max_frame too", "%.*s", (int)r.error.len,
        r.error.ptr ? r.error.ptr : "");
  in.len = out.len = 0;
  lp_range_init(&range);
  range.gte = S("tl");
  range.lt = S("tm");
  req_iter(&in, 3, 100, &range);
  used = lp_session_input(ss, in.ptr, in.len, &out, 100, &err);
  {
    client fake; /* read_iter reads from a buffer: feed it the output */
    int a, b2;
    memset(&fake, 0, sizeof fake);
    fake.fd = -1;
    lp_buf_append(&fake.rx, out.ptr, out.len);
    a = read_iter(&fake, NULL, k, v, 0);
    check(a == 1 && strcmp(k, "tl1") == 0, "the iterator sends the entry before the big one",
          "%d %s", a, k);
    b2 = read_iter(&fake, NULL, k, v, 0);
    check(b2 == -1 && strcmp(k, "ETOOLARGE: iterator: an entry is 2003 bytes, over the frame limit "
                                "of 1024") == 0,
          "then fails with ETOOLARGE", "%d %s", b2, k);
    check(fake.rx.len == 0 && lp_session_pump(ss, &out, 100) == 0, "and sends nothing after it",
          "%zu left", fake.rx.len);
    lp_buf_free(&fake.rx);
  }
  /* an oversized request: answered, then refused */
  in.len = out.len = 0;
  lp_buf_append(&in, "\x90\x10\x01\x08\x05\x12", 6); /* put, 2064 bytes, id 5 */
  used = lp_session_input(ss, in.ptr, in.len, &out, 10, &err);
  check(used == -1 && err.code == LP_EPROTO && one_reply(&out, &r) && r.id == 5 &&
            slice_is(r.error, "ETOOLARGE: put: the request is 2064 bytes, over the frame "
                              "limit of 1024"),
        "an oversized request is answered with ETOOLARGE before the connection is refused",
        "%ld %.*s", used, (int)r.error.len, r.error.ptr ? r.error.ptr : "");
  in.len = out.len = 0;
  lp_buf_append(&in, "\x90\x10\x01", 3); /* its id not in yet */
  used = lp_session_input(ss, in.ptr, in.len, &out, 10, &err);
  check(used == -1 && out.len == 0, "without its id, it is refused without a reply", "%zu",
        out.len);
  lp_engine_del(eng, S("tl1"), 0, &e2);
  lp_engine_del(eng, S("tl2"), 0, &e2);
  lp_engine_del(eng, S("tl3"), 0, &e2);
  lp_buf_free(&in);
  lp_buf_free(&out);
  lp_buf_free(&rest);
  lp_session_free(ss);
  free(big);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 5 && strcmp(argv[1], "--worker") == 0) { /* see test_concurrent */
    worker w = {atoi(argv[3]), 0};
    unsigned char e;
    snprintf(tmpdir, sizeof tmpdir, "%s", argv[2]);
    worker_main(&w);
    e = w.errors > 255 ? 255 : (unsigned char)w.errors;
    return write(atoi(argv[4]), &e, 1) == 1 ? 0 : 1;
  }
  if (!tap_tmpdir(tmpdir, sizeof tmpdir, "server")) return tap_done();
  char dbpath[300];
  snprintf(dbpath, sizeof dbpath, "%s/db", tmpdir);
  lp_engine_opts eo;
  lp_engine_opts_init(&eo);
  eo.cache_size = 1u << 20;
  lp_err err;
  eng = lp_engine_open(dbpath, &eo, &err);
  if (!check(eng != NULL, "engine open", "%s", err.msg)) {
    rm_rf(tmpdir);
    return tap_done();
  }

  test_session_direct();
  test_session_too_large();

  lp_server *s = start_server(1u << 20, 256 * 1024, 0);
  check(s != NULL, "server starts", "failed");
  if (s) {
    test_example_frames();
    test_iterators();
    test_pipelined();
    test_concurrent(s);
    test_protocol_errors(s);
    test_slow_reader(s);
    lp_server_stop(s);
  }
  test_stop_with_clients();
  test_emfile();
  test_total_buffer();
  test_start_stop();
  test_peercred();

  lp_engine_close(eng);
  rm_rf(tmpdir);
  return tap_done();
}

/*
 * bench/ngx_floor.c: the reference server of the nginx bench (bench/nginx/run.lua).
 *
 * usage: ngx_floor SOCKET DIR
 *
 * What an nginx worker that is not the leader cannot avoid: one round trip over
 * a unix socket to another process that does a LevelDB get or put and answers.
 * bench/nginx/floor.lua sends each request of the /floor/ location here over a
 * pooled cosocket, as levelparty's follower workers send theirs to the leader.
 * This server does nothing else: no protocol beyond fixed-size frames, no
 * sessions, no replay, no encodings; one thread waiting in epoll_wait (as the
 * leader's server thread does), level-triggered, answering every whole request
 * of each read with one write.
 *
 * Frames (keys are exactly 16 bytes, values exactly 100, as in the bench):
 *   'G' key            -> 'V' value | 'N' and 100 zero bytes (absent)
 *   'P' key value      -> 'K' (leveldb_put, sync off)
 * DIR is opened with levelparty's default options (bench/bench.h:
 * snappy, LevelDB's default block cache, a 10-bit bloom filter).  "ready"
 * goes to stdout once SOCKET listens; the server runs until killed.  Exit
 * status 1 on any error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench.h"

#define KEY_LEN   16
#define VAL_LEN   100
#define GET_LEN   (1 + KEY_LEN)
#define PUT_LEN   (1 + KEY_LEN + VAL_LEN)
#define MAX_CONNS 4096
#define IN_CAP    65536

/* One connection's unread bytes: owned by the server loop, freed on close. */
typedef struct {
  size_t len;
  char buf[IN_CAP];
} conn_in;

static conn_in *conns[MAX_CONNS];
static bench_ldb ldb; /* open until the process is killed */

static void die(const char *what) {
  fprintf(stderr, "ngx_floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Writes all of buf to fd (a blocking socket: replies are small, clients read them). */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Answers every whole request in c; returns -1 when the connection must close. */
static int serve(int fd, conn_in *c) {
  static char out[IN_CAP / GET_LEN * (1 + VAL_LEN) + 1];
  size_t used = 0, olen = 0;
  while (c->len - used >= GET_LEN) {
    const char *r = c->buf + used;
    char *err = NULL;
    if (r[0] == 'G') {
      size_t vlen = 0;
      char *v = leveldb_get(ldb.db, ldb.ro, r + 1, KEY_LEN, &vlen, &err);
      if (err != NULL) {
        fprintf(stderr, "ngx_floor: get: %s\n", err);
        exit(1);
      }
      out[olen] = v != NULL && vlen == VAL_LEN ? 'V' : 'N';
      if (out[olen] == 'V')
        memcpy(out + olen + 1, v, VAL_LEN);
      else
        memset(out + olen + 1, 0, VAL_LEN);
      leveldb_free(v);
      olen += 1 + VAL_LEN;
      used += GET_LEN;
    } else if (r[0] == 'P') {
      if (c->len - used < PUT_LEN) break;
      leveldb_put(ldb.db, ldb.wo, r + 1, KEY_LEN, r + 1 + KEY_LEN, VAL_LEN, &err);
      if (err != NULL) {
        fprintf(stderr, "ngx_floor: put: %s\n", err);
        exit(1);
      }
      out[olen++] = 'K';
      used += PUT_LEN;
    } else {
      return -1;
    }
  }
  memmove(c->buf, c->buf + used, c->len - used);
  c->len -= used;
  return olen > 0 ? write_all(fd, out, olen) : 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: ngx_floor SOCKET DIR\n");
    return 2;
  }
  bench_ldb_init(&ldb, 1);
  if (bench_ldb_open(&ldb, "ngx_floor", argv[2]) != 0) return 1;

  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof sa.sun_path) {
    fprintf(stderr, "ngx_floor: socket path too long\n");
    return 1;
  }
  strcpy(sa.sun_path, argv[1]);
  unlink(argv[1]);
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 512) != 0)
    die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0) die("epoll");
  printf("ready\n");
  fflush(stdout);

  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int cfd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) continue;
        if (cfd >= MAX_CONNS || (conns[cfd] = calloc(1, sizeof(conn_in))) == NULL) {
          close(cfd);
          continue;
        }
        struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev) != 0) die("epoll_ctl");
        continue;
      }
      conn_in *c = conns[fd];
      ssize_t r = recv(fd, c->buf + c->len, IN_CAP - c->len, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0 || (c->len += (size_t)r, serve(fd, c) != 0)) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
        free(c);
        conns[fd] = NULL;
      }
    }
  }
}

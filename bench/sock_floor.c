/*
 * bench/sock_floor.c: the unix-socket floor for bench/run.lua: what two
 * processes can do over one AF_UNIX stream socket with no LevelDB, no
 * protocol decoding and no event loop.  A follower can never beat it.
 *
 * usage: sock_floor [--pin none|same|split] [-n RTT_OPS] [--stream-size B] [--epoll]
 *
 * The server is a forked process (the Lua bench measures a follower talking to
 * a leader in another process); the pair is a socketpair, which is the same
 * kernel path as a connected named unix socket.  Phases, in this order:
 *   rtt         one request at a time: a 30-byte request frame, a 20-byte reply
 *               frame (the size of a get of a 16-byte key and of its reply)
 *   pipelined64 64 requests written with one write(), then their 64 replies
 *               read; the server replies to every whole request of each read()
 *               with one write()
 *   stream      the server writes frames of B bytes (default 124: one iterator
 *               entry for a 16-byte key and a 100-byte value) as fast as it
 *               can, packed into 64 KiB writes; the client reads 64 KiB at a
 *               time and walks every frame's length prefix
 * Frames are a one-byte varint length and that many bytes, as on the wire.
 *
 * --epoll: the server waits for each request in epoll_wait before it reads, as
 * any server with an event loop does (levelparty's leader waits in libuv's),
 * instead of in a blocking read.  The difference across CPUs: a blocking read
 * is woken early, as soon as the client consumed the previous reply (the
 * write-space wake-up), so that wake-up's latency overlaps the client's work;
 * an epoll wait for input is woken only by the next request.
 *
 * --pin: none (default), same (both processes on the first allowed CPU), split
 * (server on the first allowed CPU, client on the second).
 *
 * --leveldb DIR --keys K: instead of the phases above, "rtt_leveldb" and
 * "pipelined64_leveldb": as rtt and pipelined64, but each request carries a key
 * (key%013d, uniformly random below K) and the server answers with the value it
 * reads from the LevelDB database in DIR (opened with levelparty's default
 * options, bench/bench.h: snappy, LevelDB's 8 MiB block cache, a 10-bit
 * bloom filter; DIR must hold a database already).  That
 * is the least any leader must do per get, so it bounds what a follower can
 * reach.
 *
 * Output on stdout, one "floor <name> <value>" line each:
 *   floor pin <none|same:C|split:S,C>
 *   floor rtt_ops_per_sec X
 *   floor pipelined64_ops_per_sec Y
 *   floor stream_frames_per_sec Z
 *   floor rtt_leveldb_ops_per_sec W, floor pipelined64_leveldb_ops_per_sec V
 *                                        (with --leveldb, instead of the others)
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define REQ_LEN 30
#define REP_LEN 20
#define DEPTH   64
#define CHUNK   (64 * 1024)

static long rtt_ops = 100000;
static int server_epoll;        /* --epoll */
static long pipe_rounds = 2000; /* x DEPTH requests */
static long stream_frames = 2000000;
static int frame_len = 124;

static void die(const char *who, const char *what) {
  fprintf(stderr, "sock_floor %s: %s: %s\n", who, what, errno ? strerror(errno) : "peer closed");
  exit(1);
}

static void write_all(int fd, const char *p, size_t n, const char *who) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die(who, "write");
    p += w;
    n -= (size_t)w;
  }
}

static void read_all(int fd, char *p, size_t n, const char *who) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      die(who, "read");
    }
    p += r;
    n -= (size_t)r;
  }
}

static void fill_frame(char *p, int len) {
  p[0] = (char)(len - 1);
  for (int i = 1; i < len; i++)
    p[i] = (char)('a' + i % 26);
}

static void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) die("pin", "sched_setaffinity");
}

/* --leveldb's requests: 1-byte length, 16-byte key (see serve_leveldb). */
#define KEY_LEN  16
#define LREQ_LEN (1 + KEY_LEN)
#define MAX_REP  256 /* the largest reply an answer function writes */

/* Writes the reply to one request at out; returns its length (<= MAX_REP). */
typedef size_t answer_fn(void *ctx, const char *req, char *out);

/* Serves rtt_ops + pipe_rounds * DEPTH requests of req_len bytes: answers
 * every whole request of a read, then writes all those replies at once. */
static void serve_requests(int fd, size_t req_len, answer_fn *answer, void *ctx) {
  static char in[CHUNK + REQ_LEN], out[(CHUNK / LREQ_LEN + 1) * MAX_REP];
  long todo = rtt_ops + pipe_rounds * DEPTH;
  size_t have = 0;
  int ep = -1;
  if (server_epoll) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("server", "epoll");
  }
  while (todo > 0) {
    if (ep >= 0) {
      struct epoll_event ev;
      if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR) die("server", "epoll_wait");
    }
    ssize_t r = read(fd, in + have, CHUNK);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      die("server", "read");
    }
    have += (size_t)r;
    size_t reqs = have / req_len, olen = 0;
    for (size_t i = 0; i < reqs; i++)
      olen += answer(ctx, in + i * req_len, out + olen);
    write_all(fd, out, olen, "server");
    memmove(in, in + reqs * req_len, have - reqs * req_len);
    have -= reqs * req_len;
    todo -= (long)reqs;
  }
  if (ep >= 0) close(ep);
}

static size_t answer_floor(void *ctx, const char *req, char *out) {
  (void)req;
  memcpy(out, ctx, REP_LEN);
  return REP_LEN;
}

/* Replies to every whole request it reads, one write per read, then streams. */
static void serve(int fd) {
  static char chunk[CHUNK];
  char rep[REP_LEN];
  fill_frame(rep, REP_LEN);
  serve_requests(fd, REQ_LEN, answer_floor, rep);
  char go;
  read_all(fd, &go, 1, "server");
  int per_chunk = CHUNK / frame_len;
  for (int i = 0; i < per_chunk; i++)
    fill_frame(chunk + (size_t)i * (size_t)frame_len, frame_len);
  for (long left = stream_frames; left > 0;) {
    long k = left < per_chunk ? left : per_chunk;
    write_all(fd, chunk, (size_t)k * (size_t)frame_len, "server");
    left -= k;
  }
}

static void client(int fd) {
  char req[REQ_LEN * DEPTH], rep[REP_LEN * DEPTH];
  for (int i = 0; i < DEPTH; i++)
    fill_frame(req + i * REQ_LEN, REQ_LEN);

  double t0 = bench_now_sec();
  for (long i = 0; i < rtt_ops; i++) {
    write_all(fd, req, REQ_LEN, "client");
    read_all(fd, rep, REP_LEN, "client");
  }
  printf("floor rtt_ops_per_sec %.1f\n", (double)rtt_ops / (bench_now_sec() - t0));
  fflush(stdout);

  t0 = bench_now_sec();
  for (long i = 0; i < pipe_rounds; i++) {
    write_all(fd, req, sizeof req, "client");
    read_all(fd, rep, sizeof rep, "client");
  }
  printf("floor pipelined64_ops_per_sec %.1f\n",
         (double)(pipe_rounds * DEPTH) / (bench_now_sec() - t0));
  fflush(stdout);

  static char buf[CHUNK];
  long frames = 0;
  size_t skip = 0; /* bytes of the current frame still to pass; 0: at a prefix */
  write_all(fd, "S", 1, "client");
  t0 = bench_now_sec();
  while (frames < stream_frames) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      die("client", "stream read");
    }
    for (size_t pos = 0; pos < (size_t)r;) {
      if (skip == 0) {
        skip = (unsigned char)buf[pos++]; /* one-byte varint: frames are < 128 */
        frames++;
      } else {
        size_t step = (size_t)r - pos < skip ? (size_t)r - pos : skip;
        pos += step;
        skip -= step;
      }
    }
  }
  printf("floor stream_frames_per_sec %.1f\n", (double)frames / (bench_now_sec() - t0));
  fflush(stdout);
}

/* --leveldb: a get per request.  Request: 1-byte length, 16-byte key.  Reply:
 * 1-byte length (0xff: not found), the value (< 255 bytes).  The server
 * answers every whole request of a read with one write, as serve() does. */
static size_t answer_leveldb(void *ctx, const char *req, char *out) {
  bench_ldb *l = ctx;
  char *err = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(l->db, l->ro, req + 1, KEY_LEN, &vlen, &err);
  if (err != NULL) die("server", err);
  if (v == NULL || vlen > MAX_REP - 2) {
    out[0] = (char)0xff;
    vlen = 0;
  } else {
    out[0] = (char)vlen;
    memcpy(out + 1, v, vlen);
  }
  leveldb_free(v);
  return 1 + vlen;
}

static void serve_leveldb(int fd, const char *dir) {
  bench_ldb l;
  bench_ldb_init(&l, 1);
  leveldb_options_set_create_if_missing(l.options, 0); /* bench/run.lua filled DIR */
  if (bench_ldb_open(&l, "sock_floor", dir) != 0) exit(1);
  serve_requests(fd, LREQ_LEN, answer_leveldb, &l);
  bench_ldb_close(&l);
}

static uint64_t key_rng = 88172645;

static void put_request(char *p, long keys) {
  char k[32];
  key_rng ^= key_rng << 13;
  key_rng ^= key_rng >> 7;
  key_rng ^= key_rng << 17;
  snprintf(k, sizeof k, "key%013ld", (long)(key_rng % (uint64_t)keys) % 10000000000000L);
  p[0] = KEY_LEN;
  memcpy(p + 1, k, KEY_LEN);
}

/* Reads n replies. */
static void read_replies(int fd, int n) {
  static char buf[CHUNK];
  static size_t have = 0;
  while (n > 0) {
    size_t pos = 0;
    while (n > 0 && pos < have) {
      unsigned char len = (unsigned char)buf[pos];
      if (len == 0xff) die("client", "a key of the set was not found");
      if (pos + 1 + len > have) break;
      pos += 1 + (size_t)len;
      n--;
    }
    memmove(buf, buf + pos, have - pos);
    have -= pos;
    if (n == 0) break;
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      die("client", "read");
    }
    have += (size_t)r;
  }
}

static void client_leveldb(int fd, long keys) {
  char req[LREQ_LEN * DEPTH];
  double t0 = bench_now_sec();
  for (long i = 0; i < rtt_ops; i++) {
    put_request(req, keys);
    write_all(fd, req, LREQ_LEN, "client");
    read_replies(fd, 1);
  }
  printf("floor rtt_leveldb_ops_per_sec %.1f\n", (double)rtt_ops / (bench_now_sec() - t0));
  fflush(stdout);
  t0 = bench_now_sec();
  for (long i = 0; i < pipe_rounds; i++) {
    for (int j = 0; j < DEPTH; j++)
      put_request(req + j * LREQ_LEN, keys);
    write_all(fd, req, sizeof req, "client");
    read_replies(fd, DEPTH);
  }
  printf("floor pipelined64_leveldb_ops_per_sec %.1f\n",
         (double)(pipe_rounds * DEPTH) / (bench_now_sec() - t0));
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr,
          "usage: sock_floor [--pin none|same|split] [-n RTT_OPS] [--stream-size B (2..128)]\n"
          "                  [--leveldb DIR --keys K] [--epoll]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *pin = "none", *ldb_dir = NULL;
  long ldb_keys = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--pin") == 0 && i + 1 < argc) {
      pin = argv[++i];
    } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      rtt_ops = strtol(argv[++i], NULL, 10);
      if (rtt_ops <= 0) usage();
      pipe_rounds = rtt_ops / 50 > 0 ? rtt_ops / 50 : 1;
      stream_frames = rtt_ops * 20;
    } else if (strcmp(argv[i], "--leveldb") == 0 && i + 1 < argc) {
      ldb_dir = argv[++i];
    } else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
      ldb_keys = strtol(argv[++i], NULL, 10);
      if (ldb_keys <= 0) usage();
    } else if (strcmp(argv[i], "--epoll") == 0) {
      server_epoll = 1;
    } else if (strcmp(argv[i], "--stream-size") == 0 && i + 1 < argc) {
      frame_len = atoi(argv[++i]);
      if (frame_len < 2 || frame_len > 128) usage();
    } else {
      usage();
    }
  }

  if ((ldb_dir == NULL) != (ldb_keys == 0)) usage();
  int server_cpu = -1, client_cpu = -1;
  if (strcmp(pin, "none") != 0) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) die("pin", "sched_getaffinity");
    int cpus[2] = {-1, -1}, found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
      if (CPU_ISSET(c, &set)) cpus[found++] = c;
    if (strcmp(pin, "same") == 0) {
      server_cpu = client_cpu = cpus[0];
    } else if (strcmp(pin, "split") == 0) {
      if (found < 2) {
        fprintf(stderr, "sock_floor: --pin split needs two CPUs\n");
        return 2;
      }
      server_cpu = cpus[0];
      client_cpu = cpus[1];
    } else {
      usage();
    }
  }
  if (server_cpu < 0)
    printf("floor pin none\n");
  else if (server_cpu == client_cpu)
    printf("floor pin same:%d\n", server_cpu);
  else
    printf("floor pin split:%d,%d\n", server_cpu, client_cpu);
  fflush(stdout);

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("main", "socketpair");
  pid_t pid = fork();
  if (pid < 0) die("main", "fork");
  if (pid == 0) {
    close(sv[0]);
    if (server_cpu >= 0) pin_to(server_cpu);
    if (ldb_dir != NULL)
      serve_leveldb(sv[1], ldb_dir);
    else
      serve(sv[1]);
    _exit(0);
  }
  close(sv[1]);
  if (client_cpu >= 0) pin_to(client_cpu);
  if (ldb_dir != NULL)
    client_leveldb(sv[0], ldb_keys);
  else
    client(sv[0]);
  close(sv[0]);
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "sock_floor: server process failed\n");
    return 1;
  }
  return 0;
}

/*
 * party.c: lp_party, one per (process, directory): the role, the election,
 * the follower's connection, promotion (contract: private.h).
 *
 * The election is event driven: it probes the LOCK before it opens LevelDB
 * and waits on the directory watch, with a timer only as a back-up
 * (docs/ARCHITECTURE.md, "The election").  Only the thread of the Lua state
 * that owns a party drives it; the server and worker threads never touch it.
 *
 * A party belongs to one owner (one lua_State, or NULL for C callers) and
 * one directory.  What may exist once per process, the lead (LOCK, engine,
 * server thread, socket file), is an lp_lead shared by every party of the
 * directory that leads, refcounted under lead_lock
 * (docs/ARCHITECTURE.md, "Threads and ownership").
 */
#include "private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

enum { P_ELECTING, P_FOLLOWER, P_LEADER, P_CLOSED };

#define BACKOFF_MIN_NS  (1000000ull)   /* 1 ms */
#define BACKOFF_MAX_NS  (200000000ull) /* 200 ms */
#define LOOPBACK_BUDGET 1024           /* iterator entries per loopback turn */
/* Turns (client -> session -> client) per loopback step: one lp_party_step
 * stays short, so the caller's loop keeps turning; loop_busy then asks for
 * the next step at once. */
#define LOOPBACK_ROUNDS 8
/* A blocking wait with neither an fd nor a deadline (no state gives one)
 * looks again after this long rather than sleeping for ever. */
#define WAIT_IDLE_MS 100

struct lp_party {
  char *path; /* realpath of the directory; registry key */
  dev_t dev;  /* the directory's identity, the other registry key: a bind */
  ino_t ino;  /* mount gives one directory two realpaths (0, 0: unknown) */
  int refs;
  int state;
  int opened; /* the first election has ended */
  lp_party_opts opts;
  uint64_t progress;
  int role_changed;   /* a role change not yet reported */
  int polled;         /* an event loop polls this party (the luv driver) */
  int epfd;           /* what such a loop polls: an epoll set of ours that
                       * holds the one fd the party waits on; -1 until
                       * lp_party_pollinfo first runs */
  int ep_fd;          /* the fd in epfd (-1: none); leaves it before it
                       * is closed (drop_fd) */
  unsigned ep_events; /* its EPOLLIN / EPOLLOUT */

  /* leader: attached to the process's lead of the directory (one ref) */
  struct lp_lead *lead;
  lp_engine *engine; /* lead->engine, read without the lock: set by this
                      * party's thread, and the lead outlives the party's ref */
  int joined;        /* this party attached to a lead another party made */

  /* follower */
  lp_client *client;
  int fd;        /* connection to the leader, -1 when none */
  int fd_blocks; /* fd is in blocking mode (no O_NONBLOCK): every
                  * send/recv but a blocking call's wait passes
                  * MSG_DONTWAIT */
  lp_buf inbuf;  /* scratch for reads */
  /* the leader's credentials (SO_PEERCRED), checked before anything is sent
   * on fd (check_leader) */
  int peer_known;
  pid_t peer_pid;
  uid_t peer_uid;
  int peer_replied; /* a byte came back on this connection */
  uint64_t probe;   /* opening: the empty-key get asking a leader of another
                     * uid whether it serves us (it refuses by closing at
                     * once); 0 when none is in flight */

  /* electing */
  lp_watch watch;       /* fd -1 when closed */
  uint64_t next_try_ns; /* backup timer for the next election step */
  uint64_t backoff_ns;
  uint64_t open_deadline_ns; /* first election only */
  pid_t holder;              /* last seen LOCK holder */
  lp_err fatal;              /* first election failed for good */
  int has_fatal;
  uint64_t neither_since_ns; /* the LOCK free, this process unable to lead,
                              * no leader serving: since when (0: not so) */
  int blocked;               /* the last election failed for a reason that
                              * retrying cannot fix (elect_fail): no election
                              * until a new request or iterator asks for one */

  /* loopback after promotion: the client's leftovers run on our own engine */
  lp_session *loop_session;
  lp_buf loop_out;
  int loop_busy; /* loopback has more to do right now */

  lp_worker *worker; /* the leader's long writes; NULL until first used */

  int dirfd; /* O_PATH descriptor of the directory for lp_party_address; -1 */

  /* an external transport's connection being vetted: the socket file seen
   * right before it connected (lp_party_sock_mark; mark_ok 0: none) */
  int mark_ok;
  dev_t mark_dev;
  ino_t mark_ino;
  struct timespec mark_ctim;
  pid_t pid; /* the process that opened it: any other (a fork) may not use it */

  struct lp_party *next; /* registry */
};

/* The process's lead of one directory: what a process can hold once only,
 * since LevelDB's LOCK is an fcntl lock (per process; closing any fd of the
 * LOCK drops it).  Every field is under lead_lock, and so is every probe and
 * take of a LOCK, after a look for the directory's lead.  LevelDB's open and
 * close, which can take seconds (a long log to replay, a compaction to
 * finish), run outside it with the lead in `leads` marked busy: a party of
 * the same directory that would lead waits on lead_cond meanwhile and
 * probes nothing, while the other directories' elections and fork() (whose
 * handlers take lead_lock) go on. */
typedef struct lp_lead {
  char *path; /* realpath; the socket's directory; the server's log_ud */
  dev_t dev;
  ino_t ino;
  pid_t pid; /* the process that made it: a fork's child never uses it */
  int refs;  /* parties attached */
  lp_engine *engine;
  lp_server *server;
  int lock_fd; /* our own fcntl lock on LOCK, taken before leveldb_open
                * (lp_lock_take) and closed after lp_engine_close */
  int busy;    /* being opened or closed outside lead_lock: wait on lead_cond */
  struct lp_lead *next;
} lp_lead;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static lp_party *registry;
/* Never held together with registry_lock (except by the fork handlers, in
 * this order: lead_lock, then registry_lock). */
static pthread_mutex_t lead_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lead_cond = PTHREAD_COND_INITIALIZER; /* a lead stopped being busy */
static lp_lead *leads;

/* This process's pid, kept by a fork handler: getpid() is a system call,
 * and every call of a handle compares it with its party's. */
static pid_t self_pid;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) {
  pthread_mutex_lock(&lead_lock);
  pthread_mutex_lock(&registry_lock);
}
static void fork_parent(void) {
  pthread_mutex_unlock(&registry_lock);
  pthread_mutex_unlock(&lead_lock);
}
static void fork_child(void) {
  self_pid = getpid();
  /* the parent's threads waiting on it are not here, but a condition
   * variable may still count them */
  lead_cond = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
  pthread_mutex_unlock(&registry_lock);
  pthread_mutex_unlock(&lead_lock);
}
static void self_init(void) {
  self_pid = getpid();
  (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

pid_t lp_self_pid(void) {
  pthread_once(&self_once, self_init);
  return self_pid;
}

int lp_party_forked(const lp_party *p) { return p->pid != lp_self_pid(); }
pid_t lp_party_pid(const lp_party *p) { return p->pid; }

void lp_party_opts_init(lp_party_opts *o) {
  lp_engine_opts_init(&o->engine);
  lp_server_opts_init(&o->server);
  lp_client_opts_init(&o->client);
  o->retry = 1;
  o->open_timeout_ns = LP_DEFAULT_OPEN_TIMEOUT_NS;
  o->engine.bloom_bits = LP_DEFAULT_BLOOM_BITS;
  o->log = 1;
  o->lead = 1;
  o->external = 0;
  o->owner = NULL;
}

int lp_party_role(const lp_party *p) {
  switch (p->state) {
    case P_LEADER: return LP_ROLE_LEADER;
    case P_CLOSED: return LP_ROLE_CLOSED;
    default: return LP_ROLE_FOLLOWER;
  }
}

int lp_party_opened(const lp_party *p) { return p->opened; }
const char *lp_party_path(const lp_party *p) { return p->path; }
lp_engine *lp_party_engine(lp_party *p) { return p->state == P_LEADER ? p->engine : NULL; }
lp_client *lp_party_client(lp_party *p) { return p->client; }
uint64_t lp_party_progress(const lp_party *p) { return p->progress; }

int lp_party_take_role_change(lp_party *p) {
  if (!p->role_changed) return -1;
  p->role_changed = 0;
  return lp_party_role(p);
}

static void set_state(lp_party *p, int state) {
  int before = lp_party_role(p);
  p->state = state;
  if (lp_party_role(p) != before) p->role_changed = 1;
  p->progress++;
}

/* mkdir -p: creates dir and the parents it lacks, each with mode (less the
 * umask).  0, or -1 with errno. */
static int mkdir_parents(const char *dir, mode_t mode) {
  char *copy, *slash;
  int rc;
  if (mkdir(dir, mode) == 0 || errno == EEXIST) return 0;
  if (errno != ENOENT || (copy = strdup(dir)) == NULL) return -1;
  slash = strrchr(copy, '/');
  while (slash != NULL && slash > copy && slash[-1] == '/')
    slash--; /* "a//b" */
  rc = -1;
  if (slash != NULL && slash != copy) {
    *slash = '\0';
    if (mkdir_parents(copy, mode) == 0) rc = mkdir(dir, mode) == 0 || errno == EEXIST ? 0 : -1;
  } else {
    errno = ENOENT;
  }
  free(copy);
  return rc;
}

/* Resolves dir to its realpath, creating it (and its missing parents) when
 * allowed, so that every spelling of one directory finds one party. */
static char *resolve_dir(const char *dir, const lp_engine_opts *eo, lp_err *err) {
  struct stat st;
  char *real;
  if (stat(dir, &st) != 0) {
    if (errno != ENOENT) {
      lp_code c = errno == EACCES ? LP_EACCES : errno == ENOTDIR ? LP_ENOTDIR : LP_EIO;
      lp_err_set(err, c, "open: %s: %s", dir, strerror(errno));
      return NULL;
    }
    if (!eo->create_if_missing) {
      lp_err_set(err, LP_ENOENT, "open: %s does not exist (create_if_missing is false)", dir);
      return NULL;
    }
    if (mkdir_parents(dir, 0755) != 0) {
      lp_code c = errno == ENOENT    ? LP_ENOENT
                  : errno == EACCES  ? LP_EACCES
                  : errno == ENOTDIR ? LP_ENOTDIR
                                     : LP_EIO;
      lp_err_set(err, c, "open: cannot create %s: %s", dir, strerror(errno));
      return NULL;
    }
  } else if (!S_ISDIR(st.st_mode)) {
    lp_err_set(err, LP_ENOTDIR, "open: %s is not a directory", dir);
    return NULL;
  }
  real = realpath(dir, NULL);
  if (real == NULL) lp_err_set(err, LP_EIO, "open: %s: %s", dir, strerror(errno));
  return real;
}

/* 1 when the directory recorded as (path, dev, ino) is the one real and st
 * describe: same realpath, or the same (st_dev, st_ino) while path still
 * names that directory (so that a removed directory's reused inode never
 * finds an old entry). */
static int dir_is(const char *path, dev_t dev, ino_t ino, const char *real, const struct stat *st) {
  struct stat now;
  if (strcmp(path, real) == 0) return 1;
  if (st == NULL || dev != st->st_dev || ino != st->st_ino) return 0;
  return stat(path, &now) == 0 && now.st_dev == dev && now.st_ino == ino;
}

/* Under lead_lock: this process's lead of p's directory, or NULL. */
static lp_lead *find_lead(const lp_party *p) {
  struct stat st;
  int known = stat(p->path, &st) == 0;
  lp_lead *l;
  for (l = leads; l != NULL; l = l->next)
    if (l->pid == self_pid && dir_is(l->path, l->dev, l->ino, p->path, known ? &st : NULL))
      return l;
  return NULL;
}

/* The LOCK's holder (lp_lock_holder), probed only when this process does
 * not lead the directory: a probe there would drop our own lock.  Under
 * lead_lock, so that no other party takes or releases the LOCK meanwhile. */
static pid_t holder_probe(const lp_party *p) {
  pid_t h;
  pthread_mutex_lock(&lead_lock);
  h = find_lead(p) != NULL ? self_pid : lp_lock_holder(p->path);
  pthread_mutex_unlock(&lead_lock);
  return h;
}

pid_t lp_party_lock_holder(lp_party *p) { return holder_probe(p); }

/* An fd we are about to close leaves our epoll set first, so that the set
 * never holds a closed (or reused) number. */
static void ep_forget(lp_party *p, int fd) {
  if (fd >= 0 && fd == p->ep_fd) {
    (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
    p->ep_fd = -1;
  }
}

static void drop_fd(lp_party *p, int fd) {
  ep_forget(p, fd);
  close(fd);
}

/* Clears O_NONBLOCK on the follower's connection, so that a blocking call's
 * wait is one recv (follower_wait_recv).  Every other send/recv passes
 * MSG_DONTWAIT, and no event loop ever sees this fd (it polls epfd). */
static void conn_blocking(lp_party *p) {
  /* A receive timeout makes a signal handler interrupt that recv even when
   * it was installed with SA_RESTART (luajit's SIGINT handler is: signal(7)),
   * so the wait returns LP_EINTR; its expiry only makes the wait recv again. */
  struct timeval tv = {3600, 0};
  int fl;
  p->fd_blocks = 0;
  if (p->fd < 0 || (fl = fcntl(p->fd, F_GETFL)) < 0) return;
  if (setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return;
  if ((fl & O_NONBLOCK) == 0 || fcntl(p->fd, F_SETFL, fl & ~O_NONBLOCK) == 0) p->fd_blocks = 1;
}

void lp_party_set_polled(lp_party *p, int polled) {
  polled = polled != 0;
  /* the log restarts only on a change: another handle of the party joining
   * the driver must not drop tokens its waiters need */
  if (p->client != NULL && polled != p->polled) lp_client_log_finished(p->client, polled);
  p->polled = polled;
}

static void close_watch(lp_party *p) {
  ep_forget(p, p->watch.fd);
  lp_watch_close(&p->watch);
}

static void close_conn(lp_party *p) {
  if (p->fd >= 0) drop_fd(p, p->fd);
  p->fd = -1;
  p->fd_blocks = 0;
}

static int ensure_client(lp_party *p) {
  if (p->client == NULL) {
    p->client = lp_client_new(&p->opts.client);
    if (p->client != NULL) lp_client_log_finished(p->client, p->polled);
  }
  return p->client != NULL ? 0 : -1;
}

lp_client *lp_party_ensure_client(lp_party *p) {
  if (p->state != P_LEADER && p->state != P_CLOSED) (void)ensure_client(p);
  return p->client;
}

static void enter_electing(lp_party *p) {
  set_state(p, P_ELECTING);
  p->backoff_ns = BACKOFF_MIN_NS;
  p->next_try_ns = 0; /* try at once */
}

/* The op a failed election names: the open, or the leader a follower lost. */
static const char *elect_op(const lp_party *p) { return p->opened ? "leader" : "open"; }

/* "uid U's, mode M" for <dir>/name (name NULL: dir itself), for messages. */
static const char *describe(const lp_party *p, const char *name, char *buf, size_t n) {
  char path[PATH_MAX];
  struct stat st;
  snprintf(path, sizeof path, "%s%s%s", p->path, name ? "/" : "", name ? name : "");
  if (lstat(path, &st) != 0)
    snprintf(buf, n, "%s", strerror(errno));
  else
    snprintf(buf, n, "uid %ld's, mode %04o", (long)st.st_uid, (unsigned)(st.st_mode & 07777));
  return buf;
}

/* 0 when this process may not read <dir>/LOCK (so lp_lock_holder cannot
 * tell whether it is held). */
static int lock_readable(const lp_party *p) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/LOCK", p->path);
  return faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) == 0 || errno != EACCES;
}

/* An election ended with a failure that retrying cannot fix (see
 * elect_step).  At open it fails the open.  After, every pending request and
 * open iterator fails with it at once, and the party stays blocked: it elects
 * again only when a new request or iterator puts bytes in the client's out
 * buffer (the next call), never in a loop of its own. */
static void elect_fail(lp_party *p, const lp_err *err) {
  p->neither_since_ns = 0;
  if (!p->opened) {
    p->fatal = *err;
    p->has_fatal = 1;
    return;
  }
  if (p->client != NULL) {
    lp_client_fail_all(p->client, err->code, err->msg);
    lp_client_reset(p->client); /* out stays empty until a new request */
  }
  p->blocked = 1;
  p->progress++;
}

/* 1 when a leader running as uid may be followed without allow_other_users:
 * it is our own uid, or it owns both the directory and its LOCK (the user
 * who made the database).  docs/RELIABILITY.md, "Trust model". */
static int trusted_uid(const lp_party *p, uid_t uid) {
  char lock[PATH_MAX];
  struct stat d, l;
  if (uid == geteuid()) return 1;
  snprintf(lock, sizeof lock, "%s/LOCK", p->path);
  return stat(p->path, &d) == 0 && d.st_uid == uid && lstat(lock, &l) == 0 && l.st_uid == uid;
}

/* Reads the credentials of the process that serves fd (the leader), before
 * anything is sent on it, and refuses one this process must not trust:
 * 0, or -1 with err (EACCES naming its pid and uid). */
static int check_leader(lp_party *p, int fd, lp_err *err) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  char dd[64], ld[64];
  p->peer_known = p->peer_replied = 0;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    if (p->opts.server.allow_other_users) return 0;
    lp_err_set(err, LP_EACCES,
               "%s: cannot read the credentials of the process serving %s/%s (%s); nothing "
               "was sent to it",
               elect_op(p), p->path, LP_SOCKET_NAME, strerror(errno));
    return -1;
  }
  p->peer_known = 1;
  p->peer_pid = cred.pid;
  p->peer_uid = cred.uid;
  if (p->opts.server.allow_other_users || trusted_uid(p, cred.uid)) return 0;
  lp_err_set(err, LP_EACCES,
             "%s: %s/%s is served by pid %ld running as uid %ld, which is neither this "
             "process's uid %ld nor the owner of both the directory (%s) and its LOCK (%s); "
             "nothing was sent to it (allow_other_users = true follows a leader of another user)",
             elect_op(p), p->path, LP_SOCKET_NAME, (long)cred.pid, (long)cred.uid, (long)geteuid(),
             describe(p, NULL, dd, sizeof dd), describe(p, "LOCK", ld, sizeof ld));
  return -1;
}

/* A leader of another uid that does not serve us (no allow_other_users on
 * its side) closes the connection at accept, unread.  Told apart from a
 * leader that died or closed: nothing came back, the same process still
 * holds the LOCK, and the socket file is still there (a closing leader
 * removes it first).  1 with err (EACCES) when so. */
static int leader_refused(lp_party *p, lp_err *err) {
  char sock[PATH_MAX];
  struct stat st;
  if (!p->peer_known || p->peer_replied || p->peer_uid == geteuid() || p->peer_pid <= 0) return 0;
  if (holder_probe(p) != p->peer_pid) return 0; /* we hold no LOCK: a follower */
  snprintf(sock, sizeof sock, "%s/%s", p->path, LP_SOCKET_NAME);
  if (lstat(sock, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  lp_err_set(err, LP_EACCES,
             "%s: the leader of %s (pid %ld, uid %ld) closed the connection before any reply: "
             "it does not serve uid %ld (a leader serves other users only with "
             "allow_other_users = true)",
             elect_op(p), p->path, (long)p->peer_pid, (long)p->peer_uid, (long)geteuid());
  return 1;
}

/* The connection to the leader is gone (EOF, reset, protocol error). */
static void on_leader_lost(lp_party *p) {
  lp_err err;
  int refused = leader_refused(p, &err);
  close_conn(p);
  if (p->probe != 0) { /* the open's question dies with the connection */
    lp_client_forget(p->client, p->probe);
    p->probe = 0;
  }
  if (p->client != NULL) {
    lp_client_reset(p->client);
    if (!p->opts.retry && !refused)
      lp_client_fail_all(
          p->client, LP_ELEADERLOST,
          "leader lost: the connection to the leader closed with the request in flight");
  }
  enter_electing(p);
  if (refused) elect_fail(p, &err); /* no retry: it would refuse us again */
}

/* The server thread's log: one line per event, written with a single write(2)
 * so that lines from several threads never interleave.  ud is the party's
 * path, which outlives the server. */
static void log_stderr(void *ud, const char *msg) {
  char line[1024];
  int n = snprintf(line, sizeof line, "levelparty[%ld] leader %s: %s\n", (long)getpid(),
                   (const char *)ud, msg);
  if (n > 0) {
    ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
  }
}

/* Under lead_lock: l leaves `leads`; the parties waiting for it look again. */
static void lead_unlist(lp_lead *l) {
  lp_lead **pp;
  for (pp = &leads; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  }
  pthread_cond_broadcast(&lead_cond);
}

/* Under lead_lock: p's directory's lead, listed busy, for lock_fd (our lock
 * on LOCK, which it then owns); NULL with err (lock_fd closed) when out of
 * memory. */
static lp_lead *lead_new(lp_party *p, int lock_fd, lp_err *err) {
  lp_lead *l = calloc(1, sizeof *l);
  if (l == NULL || (l->path = strdup(p->path)) == NULL) {
    lp_err_set(err, LP_ENOMEM, "%s: out of memory", elect_op(p));
    close(lock_fd);
    free(l);
    return NULL;
  }
  l->dev = p->dev;
  l->ino = p->ino;
  l->pid = self_pid;
  l->lock_fd = lock_fd;
  l->busy = 1;
  l->next = leads;
  leads = l;
  return l;
}

/* Under lead_lock: the busy lead l was not made (its socket, its open or
 * its server failed; the socket's name, if any, is gone): releases the
 * LOCK, unlists and frees l. */
static void lead_abandon(lp_lead *l) {
  close(l->lock_fd);
  lead_unlist(l);
  free(l->path);
  free(l);
}

/* Under lead_lock: starts serving e on lfd (the socket already published)
 * for the busy lead l, which is then ready.  On failure removes the socket,
 * closes LevelDB, abandons l and returns -1 with err. */
static int lead_start(lp_party *p, lp_lead *l, lp_engine *e, int lfd, lp_err *err) {
  lp_server_opts so = p->opts.server;
  /* a server that fails closes lfd; hold keeps the listener open until the
   * name is gone (see lead_or_probe) */
  int hold = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
  if (p->opts.log && so.log == NULL) {
    so.log = log_stderr;
    so.log_ud = l->path; /* outlives the server */
  }
  l->server = lp_server_start(e, lfd, &so, err); /* owns lfd */
  if (l->server == NULL) lp_sock_unlink(p->path);
  if (hold >= 0) close(hold);
  if (l->server == NULL) {
    lp_engine_close(e);
    lead_abandon(l);
    return -1;
  }
  l->engine = e;
  l->busy = 0;
  pthread_cond_broadcast(&lead_cond);
  return 0;
}

/* Under lead_lock (released meanwhile): drops p's ref on its lead; the last
 * one stops serving and releases the LOCK, the lead busy until then. */
static void lead_release(lp_party *p) {
  lp_lead *l = p->lead;
  p->lead = NULL;
  p->engine = NULL;
  if (l == NULL || --l->refs > 0) return;
  l->busy = 1;
  pthread_mutex_unlock(&lead_lock);
  /* Remove the name first so that no one connects to a leader that is
   * leaving; then stop serving; then close LevelDB, which releases the LOCK
   * and wakes the followers' watches. */
  lp_sock_unlink(l->path);
  lp_server_stop(l->server);
  lp_engine_close(l->engine);
  /* LevelDB's close released the process's lock; this fd only held it */
  close(l->lock_fd);
  pthread_mutex_lock(&lead_lock);
  lead_unlist(l);
  free(l->path);
  free(l);
}

/* Under lead_lock: p leads, attached to l (one more ref).  What p's client
 * still had in flight now runs on the engine, in submission order, through
 * an in-memory session of its own (the loopback). */
static void become_leader(lp_party *p, lp_lead *l) {
  l->refs++;
  p->lead = l;
  p->engine = l->engine;
  p->neither_since_ns = 0;
  close_watch(p);
  set_state(p, P_LEADER);
  p->opened = 1;
  p->holder = 0;
  if (p->client != NULL && (lp_client_pending(p->client) || lp_client_iterators(p->client))) {
    p->loop_session = lp_session_new(l->engine, p->opts.client.max_frame);
    if (p->loop_session != NULL) {
      lp_client_reset(p->client);
      lp_client_replay(p->client);
      p->loop_busy = 1;
    } else {
      lp_client_fail_all(p->client, LP_ENOMEM, "promote: out of memory");
    }
  }
}

/* Under lead_lock (released during LevelDB's open): the lead of p's
 * directory, made when the LOCK is free and p may lead: 1 with p attached;
 * 0 when the LOCK is not free (or p may not lead), *holder its holder, *why
 * the take's failure (LP_OK: none); -1 with err when leveldb_open or serving
 * failed. */
static int lead_or_probe(lp_party *p, pid_t *holder, lp_err *why, lp_err *err) {
  lp_lead *l;
  /* a lead being opened or closed by another thread: one that would lead
   * waits for it (a probe now could drop our own lock) */
  while ((l = find_lead(p)) != NULL && l->busy && p->opts.lead)
    pthread_cond_wait(&lead_cond, &lead_lock);
  why->code = LP_OK;
  if (l != NULL) { /* this process leads: attach, or (never to lead) connect to it */
    *holder = self_pid;
    if (!p->opts.lead) return 0;
    if (!p->opened && p->opts.engine.error_if_exists) {
      lp_err_set(err, LP_EEXIST, "open: %s exists (error_if_exists is true)", p->path);
      return -1;
    }
    p->joined = 1;
    become_leader(p, l);
    return 1;
  }
  *holder = lp_lock_holder(p->path);
  if (*holder == 0 && p->opts.lead) {
    int lock_fd = lp_lock_take(p->path, why);
    if (lock_fd >= 0) {
      /* The socket goes up before LevelDB's open: followers connect at
       * once and their requests wait in the kernel until the server
       * starts, instead of polling for a socket while the open runs (most
       * of a failover).  If the open fails, the name goes first, so that a
       * follower whose connection is then refused finds no socket, which
       * is not a refusal of its uid (leader_refused) but a leader gone. */
      int lfd;
      lp_engine *e;
      if ((l = lead_new(p, lock_fd, err)) == NULL) return -1;
      if ((lfd = lp_sock_listen(p->path, err)) < 0) {
        lead_abandon(l);
        return -1;
      }
      /* LevelDB's open replays the log: the lead is busy, lead_lock free */
      pthread_mutex_unlock(&lead_lock);
      e = lp_engine_open(p->path, &p->opts.engine, err);
      pthread_mutex_lock(&lead_lock);
      if (e == NULL) {
        lp_sock_unlink(p->path);
        close(lfd);
        lead_abandon(l);
        return -1;
      }
      if (lead_start(p, l, e, lfd, err) < 0) return -1;
      become_leader(p, l);
      return 1;
    }
    *holder = lp_lock_holder(p->path); /* taken meanwhile, or not ours to take */
  }
  return 0;
}

/* At open a leader of another uid may refuse us, which it does by closing
 * the connection at accept: ask it something (a get of the empty key, which
 * any leader answers, with an error) and count the open done only when the
 * answer came (probe_done).  It gets open_timeout, and at least this. */
#define PROBE_MIN_NS (1000000000ull)

static void become_follower(lp_party *p, int fd) {
  p->fd = fd;
  conn_blocking(p);
  close_watch(p);
  set_state(p, P_FOLLOWER);
  if (p->client != NULL) lp_client_replay(p->client);
  if (!p->opened && p->peer_known && p->peer_uid != geteuid() && ensure_client(p) == 0) {
    lp_buf rest = {NULL, 0, 0};
    uint64_t deadline = lp_now_ns() + PROBE_MIN_NS;
    if (p->open_deadline_ns > deadline) deadline = p->open_deadline_ns;
    if (lp_wire_rest_key(&rest, (lp_slice){"", 0}) == 0)
      p->probe = lp_client_submit(p->client, LP_REQ_GET, (lp_slice){rest.ptr, rest.len}, deadline);
    lp_buf_free(&rest);
  }
  if (p->probe == 0) p->opened = 1;
  lp_party_flush(p);
}

/* The open's question was answered: any reply says that the leader serves
 * us; a local failure (its deadline) fails the open. */
static void probe_done(lp_party *p) {
  lp_result res;
  int took = lp_client_take(p->client, p->probe, &res) == 0;
  p->probe = 0;
  if (!took || res.code == LP_OK) {
    p->opened = 1;
    p->progress++;
  } else {
    lp_err_set(&p->fatal, res.code, "open: the leader of %s (pid %ld, uid %ld) did not answer: %s",
               p->path, (long)p->peer_pid, (long)p->peer_uid, res.msg ? res.msg : "");
    p->has_fatal = 1;
  }
  if (took) lp_result_free(&res);
}

/* One election attempt.  Never blocks (but leveldb_open may take the time
 * LevelDB needs to recover its log).
 *
 * leveldb_open runs only when the probe finds the LOCK free and this process
 * has taken it itself (lp_lock_take): a failed open never renames a living
 * leader's LOG (LevelDB renames LOG before it locks), and a process that may
 * not write the directory or the LOCK never calls it.  A process that can
 * neither lead nor reach a leader fails at once at open; after open it waits
 * (on the watch, never spinning) up to open_timeout for another process to
 * lead, then fails what is pending (elect_fail). */
static void elect_step(lp_party *p) {
  lp_err err, why;
  pid_t holder;
  int fd, r, cannot_lead = 0;
  uint64_t now = lp_now_ns();

  if (p->watch.fd < 0) {
    if (lp_watch_open(&p->watch, p->path, &err) != 0) p->watch.fd = -1;
  }
  if (p->watch.fd >= 0) lp_watch_drain(&p->watch);

  pthread_mutex_lock(&lead_lock);
  r = lead_or_probe(p, &holder, &why, &err);
  pthread_mutex_unlock(&lead_lock);
  if (r > 0) return;
  if (r < 0) {
    if (!p->opened) {
      p->fatal = err;
      p->has_fatal = 1;
      return;
    }
    why = err;
    cannot_lead = 1;
  } else if (why.code != LP_OK && why.code != LP_ELOCKED) {
    cannot_lead = 1;
  }
  if (why.code != LP_OK || r < 0) {
    /* what our own attempt raised (LOCK closed for writing, LevelDB's
     * files) must not wake us: a socket published meanwhile is found by
     * the connect below */
    if (p->watch.fd >= 0) lp_watch_drain(&p->watch);
  }
  p->holder = holder > 0 ? holder : 0;
  fd = lp_sock_connect(p->path);
  if (fd >= 0) {
    p->neither_since_ns = 0;
    if (check_leader(p, fd, &err) != 0) {
      close(fd); /* nothing was sent */
      elect_fail(p, &err);
      return;
    }
    become_follower(p, fd);
    return;
  }
  if (fd == -EACCES || fd == -EPERM) { /* the socket's mode keeps us out */
    char sd[64], dd[64];
    lp_err_set(&err, LP_EACCES,
               "%s: cannot connect to %s/%s (%s): %s; a leader's socket lets in only the users "
               "who may write %s (%s)",
               elect_op(p), p->path, LP_SOCKET_NAME, describe(p, LP_SOCKET_NAME, sd, sizeof sd),
               strerror(-fd), p->path, describe(p, NULL, dd, sizeof dd));
    elect_fail(p, &err);
    return;
  }
  if (holder > 0 && !p->opts.server.allow_other_users) {
    uid_t uid;
    char ld[64];
    /* a holder we would not follow: waiting for its socket is pointless */
    if (lp_proc_uid(holder, &uid) == 0 && !trusted_uid(p, uid)) {
      lp_err_set(&err, LP_EACCES,
                 "%s: %s/LOCK (%s) is held by pid %ld running as uid %ld, which is neither this "
                 "process's uid %ld nor the owner of both the directory and its LOCK; it would "
                 "not be followed (allow_other_users = true follows a leader of another user)",
                 elect_op(p), p->path, describe(p, "LOCK", ld, sizeof ld), (long)holder, (long)uid,
                 (long)geteuid());
      elect_fail(p, &err);
      return;
    }
  }
  if (cannot_lead && holder == 0) {
    if (p->neither_since_ns == 0) p->neither_since_ns = now;
    if (!p->opened || now - p->neither_since_ns >= p->opts.open_timeout_ns) {
      lp_err_set(&err, why.code, "%s: no leader serves %s/%s, and this process cannot lead: %s",
                 elect_op(p), p->path, LP_SOCKET_NAME, why.msg);
      elect_fail(p, &err);
      return;
    }
  } else {
    p->neither_since_ns = 0;
  }
  p->next_try_ns = now + p->backoff_ns;
  p->backoff_ns = p->backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : p->backoff_ns * 2;
}

int lp_party_elect(lp_party *p, pid_t *holder, lp_err *err) {
  lp_err why;
  pid_t h;
  int r;
  *holder = 0;
  if (p->state == P_LEADER) return LP_ROLE_LEADER;
  if (p->state == P_CLOSED) {
    lp_err_set(err, LP_ECLOSED, "elect: the database is closed");
    return -1;
  }
  pthread_mutex_lock(&lead_lock);
  r = lead_or_probe(p, &h, &why, err);
  pthread_mutex_unlock(&lead_lock);
  if (r != 0) return r > 0 ? LP_ROLE_LEADER : -1;
  *holder = h > 0 ? h : 0;
  p->holder = *holder;
  p->opened = 1;
  if (p->state != P_FOLLOWER) set_state(p, P_FOLLOWER);
  return LP_ROLE_FOLLOWER;
}

/* The identity of <dir>/level-party.sock: 0 and *st, or -1 when it is no
 * socket (gone). */
static int sock_stat(const lp_party *p, struct stat *st) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", p->path, LP_SOCKET_NAME);
  return lstat(path, st) == 0 && S_ISSOCK(st->st_mode) ? 0 : -1;
}

static int sock_same(const lp_party *p, const struct stat *st) {
  return p->mark_ok && st->st_dev == p->mark_dev && st->st_ino == p->mark_ino &&
         st->st_ctim.tv_sec == p->mark_ctim.tv_sec && st->st_ctim.tv_nsec == p->mark_ctim.tv_nsec;
}

void lp_party_sock_mark(lp_party *p) {
  struct stat st;
  p->mark_ok = sock_stat(p, &st) == 0;
  if (!p->mark_ok) return;
  p->mark_dev = st.st_dev;
  p->mark_ino = st.st_ino;
  p->mark_ctim = st.st_ctim;
}

int lp_party_sock_vet(lp_party *p, lp_err *err) {
  struct stat st;
  int fd, r;
  if (p->state == P_CLOSED) {
    lp_err_set(err, LP_ECLOSED, "leader: the database is closed");
    return -1;
  }
  if (sock_stat(p, &st) != 0 || !sock_same(p, &st)) return 1;
  /* a unix connect completes at once or fails: never waits for the accept */
  fd = lp_sock_connect(p->path);
  if (fd < 0) return 1;
  r = check_leader(p, fd, err);
  close(fd); /* nothing was sent on it */
  p->peer_known = 0;
  if (r != 0) return -1;
  /* the name still names the socket vetted, so the caller's connection,
   * made between the mark and now, reached that socket too */
  return sock_stat(p, &st) == 0 && sock_same(p, &st) ? 0 : 1;
}

int lp_party_address(lp_party *p, char *buf, size_t n, lp_err *err) {
  struct sockaddr_un sa;
  size_t need = strlen(p->path) + 1 + strlen(LP_SOCKET_NAME);
  if (need < sizeof sa.sun_path) {
    snprintf(buf, n, "unix:%s/%s", p->path, LP_SOCKET_NAME);
    return 0;
  }
  if (p->dirfd < 0) p->dirfd = open(p->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (p->dirfd < 0) {
    lp_err_set(err, LP_EIO, "address: %s: %s", p->path, strerror(errno));
    return -1;
  }
  snprintf(buf, n, "unix:/proc/self/fd/%d/%s", p->dirfd, LP_SOCKET_NAME);
  return 0;
}

void lp_party_flush(lp_party *p) {
  lp_buf *out;
  /* A promoted leader's client talks to the loopback: what it queued (an
   * iterator's window ack, a seek's reopen) is for the next step to run. */
  if (p->loop_session != NULL && p->client != NULL && lp_client_out(p->client)->len > 0)
    p->loop_busy = 1;
  if (p->state != P_FOLLOWER || p->fd < 0 || p->client == NULL) return;
  out = lp_client_out(p->client);
  while (out->len > 0) {
    ssize_t n = send(p->fd, out->ptr, out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      lp_buf_consume(out, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      on_leader_lost(p);
      return;
    }
  }
}

/* Reads everything available from the leader.  Returns 1 if bytes arrived.
 * wait: the first recv may block (the fd must be in blocking mode), and an
 * interrupted one returns -1. */
static int follower_read(lp_party *p, int wait) {
  int got = 0;
  int flags = wait ? 0 : MSG_DONTWAIT;
  if (lp_party_ensure_client(p) == NULL) return 0;
  if (p->inbuf.cap < LP_READ_CHUNK && lp_buf_reserve(&p->inbuf, LP_READ_CHUNK) != 0) return 0;
  for (;;) {
    ssize_t n = recv(p->fd, p->inbuf.ptr, p->inbuf.cap, flags);
    flags = MSG_DONTWAIT;
    if (n < 0 && errno == EINTR && wait) return -1; /* the first recv: got is 0 */
    if (n > 0) {
      lp_err err;
      got = 1;
      p->peer_replied = 1;
      if (lp_client_feed(p->client, p->inbuf.ptr, (size_t)n, &err) != 0) {
        on_leader_lost(p);
        return got;
      }
      if ((size_t)n < p->inbuf.cap) break;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* the receive timeout expired; or the fd is not in blocking mode after
       * all: then blocking waits go through poll */
      if (wait && !got && (fcntl(p->fd, F_GETFL) & O_NONBLOCK)) p->fd_blocks = 0;
      break;
    } else {
      on_leader_lost(p); /* EOF or reset */
      break;
    }
  }
  return got;
}

/* Moves bytes between the client and the loopback session. */
static void loopback_run(lp_party *p) {
  int rounds;
  lp_err err;
  p->loop_busy = 0;
  for (rounds = 0; rounds < LOOPBACK_ROUNDS; rounds++) {
    lp_buf *out = lp_client_out(p->client);
    int more = 0;
    p->loop_out.len = 0;
    if (out->len > 0) {
      long used = lp_session_input(p->loop_session, out->ptr, out->len, &p->loop_out,
                                   LOOPBACK_BUDGET, &err);
      if (used < 0) { /* our own client broke the protocol: cannot happen */
        lp_client_fail_all(p->client, LP_EPROTO, err.msg);
        lp_buf_consume(out, out->len);
      } else {
        lp_buf_consume(out, (size_t)used);
      }
    }
    more = lp_session_pump(p->loop_session, &p->loop_out, LOOPBACK_BUDGET);
    if (p->loop_out.len > 0) {
      p->progress++;
      if (lp_client_feed(p->client, p->loop_out.ptr, p->loop_out.len, &err) != 0)
        lp_client_fail_all(p->client, LP_EPROTO, err.msg);
    }
    if (lp_client_out(p->client)->len == 0 && !more) return;
    if (p->loop_out.len == 0 && lp_client_out(p->client)->len == 0) {
      p->loop_busy = more;
      return;
    }
  }
  p->loop_busy = 1;
}

uint64_t lp_party_write_job(lp_party *p, lp_batch *b, int sync) {
  if (p->state != P_LEADER) return 0;
  if (p->worker == NULL && (p->worker = lp_worker_start(p->engine)) == NULL) return 0;
  return lp_worker_submit(p->worker, b, sync);
}

lp_worker *lp_party_worker(lp_party *p, int start) {
  if (p->state != P_LEADER) return NULL;
  if (p->worker == NULL && start) p->worker = lp_worker_start(p->engine);
  return p->worker;
}

int lp_party_job_done(lp_party *p, uint64_t token) {
  return p->worker == NULL || lp_worker_done(p->worker, token);
}

int lp_party_job_take(lp_party *p, uint64_t token, lp_err *err) {
  return p->worker != NULL ? lp_worker_take(p->worker, token, err) : -2;
}

int lp_party_step(lp_party *p, lp_err *err) {
  uint64_t now;
  switch (p->state) {
    case P_FOLLOWER:
      lp_party_flush(p);
      if (p->state == P_FOLLOWER && follower_read(p, 0)) p->progress++;
      if (p->state == P_FOLLOWER) lp_party_flush(p);
      break;
    case P_ELECTING:
      if (p->blocked) {
        /* only a new request or iterator (bytes queued) elects again */
        if (p->client == NULL || lp_client_out(p->client)->len == 0) break;
        p->blocked = 0;
        p->next_try_ns = 0;
      }
      if (p->watch.fd >= 0) {
        struct pollfd pf = {p->watch.fd, POLLIN, 0};
        if (poll(&pf, 1, 0) > 0) p->next_try_ns = 0;
      }
      if (lp_now_ns() >= p->next_try_ns) elect_step(p);
      if (p->has_fatal && !p->opened) {
        *err = p->fatal;
        return -1;
      }
      break;
    case P_LEADER:
      if (p->loop_session != NULL && p->client != NULL) loopback_run(p);
      if (p->worker != NULL && lp_worker_collect(p->worker)) p->progress++;
      break;
    default: break;
  }
  now = lp_now_ns();
  if (p->client != NULL && lp_client_expire(p->client, now) > 0) p->progress++;
  if (p->probe != 0 && lp_client_done(p->client, p->probe)) probe_done(p);
  if (p->has_fatal && !p->opened) { /* also a refusal or a probe's end */
    *err = p->fatal;
    return -1;
  }
  if (p->state == P_ELECTING && !p->opened && now >= p->open_deadline_ns) {
    if (p->holder > 0)
      lp_err_set(err, LP_ELOCKED,
                 "open: %s/LOCK is held by pid %ld, which serves no %s there (a plain LevelDB "
                 "program, or a leader that cannot listen); stop that process or wait for it, "
                 "then open again",
                 p->path, (long)p->holder, LP_SOCKET_NAME);
    else if (!lock_readable(p)) { /* the probe could not tell: say why */
      char ld[64];
      lp_err_set(err, LP_EACCES,
                 "open: no leader serves %s/%s, and uid %ld may not read %s/LOCK (%s) to tell "
                 "whether anyone holds it",
                 p->path, LP_SOCKET_NAME, (long)geteuid(), p->path,
                 describe(p, "LOCK", ld, sizeof ld));
    } else
      lp_err_set(err, LP_ELOCKED,
                 "open: %s/LOCK is held by another process that serves no %s there; stop that "
                 "process or wait for it, then open again",
                 p->path, LP_SOCKET_NAME);
    return -1;
  }
  return 0;
}

/* What the party waits for now: fd (-1: none), events (POLLIN/POLLOUT),
 * timeout_ms (-1: none; 0: step again at once). */
static void party_wants(lp_party *p, int *fd, int *events, int *timeout_ms) {
  uint64_t now = lp_now_ns(), deadline = 0;
  *fd = -1;
  *events = 0;
  *timeout_ms = -1;
  switch (p->state) {
    case P_FOLLOWER:
      *fd = p->fd;
      *events = POLLIN;
      if (p->client != NULL && lp_client_out(p->client)->len > 0) *events |= POLLOUT;
      break;
    case P_ELECTING:
      if (p->blocked) { /* nothing to wait for until a new request */
        if (p->client != NULL && lp_client_out(p->client)->len > 0) *timeout_ms = 0;
        return;
      }
      *fd = p->watch.fd;
      *events = POLLIN;
      if (p->next_try_ns == 0) { /* an election step is due now */
        *timeout_ms = 0;
        return;
      }
      deadline = p->next_try_ns;
      if (!p->opened && (deadline == 0 || p->open_deadline_ns < deadline))
        deadline = p->open_deadline_ns;
      break;
    case P_LEADER:
      if (p->loop_busy) {
        *timeout_ms = 0;
        return;
      }
      if (p->worker != NULL) { /* the worker's eventfd, idle or not */
        *fd = lp_worker_fd(p->worker);
        *events = POLLIN;
      }
      break;
    default: return;
  }
  if (p->client != NULL) {
    uint64_t d = lp_client_next_deadline(p->client);
    if (d != 0 && (deadline == 0 || d < deadline)) deadline = d;
  }
  if (deadline != 0) {
    uint64_t ms = deadline <= now ? 0 : (deadline - now + 999999) / 1000000;
    *timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
  }
}

/* With no epoll set (epoll_create1 or epoll_ctl failed: EMFILE, ENOMEM), the
 * loop looks in this often instead. */
#define EPOLL_FALLBACK_MS 10

static int ep_ctl(lp_party *p, int op, int fd, unsigned events) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events;
  ev.data.fd = fd;
  return epoll_ctl(p->epfd, op, fd, &ev);
}

void lp_party_pollinfo(lp_party *p, int *fd, int *timeout_ms) {
  int want, events;
  unsigned ep;
  party_wants(p, &want, &events, timeout_ms);
  *fd = -1;
  if (p->epfd < 0 && p->state != P_CLOSED) p->epfd = epoll_create1(EPOLL_CLOEXEC);
  ep = (events & POLLIN ? EPOLLIN : 0u) | (events & POLLOUT ? EPOLLOUT : 0u);
  if (p->epfd >= 0 && want != p->ep_fd) {
    if (p->ep_fd >= 0) (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->ep_fd, NULL);
    p->ep_fd = -1;
    if (want >= 0 && ep_ctl(p, EPOLL_CTL_ADD, want, ep) == 0) {
      p->ep_fd = want;
      p->ep_events = ep;
    }
  } else if (p->epfd >= 0 && want >= 0 && ep != p->ep_events) {
    if (ep_ctl(p, EPOLL_CTL_MOD, want, ep) == 0) p->ep_events = ep;
  }
  if (p->epfd >= 0) *fd = p->epfd;
  if (want >= 0 && want != p->ep_fd && (*timeout_ms < 0 || *timeout_ms > EPOLL_FALLBACK_MS))
    *timeout_ms = EPOLL_FALLBACK_MS;
}

uint64_t lp_party_submit(lp_party *p, int tag, lp_slice rest, uint64_t deadline_ns) {
  uint64_t token;
  if (ensure_client(p) != 0) return 0;
  token = lp_client_submit(p->client, tag, rest, deadline_ns);
  /* Latency first: a lone request goes out now.  With others in flight it
   * waits for the batch: the poller flushes once per turn (and the fd is
   * polled for POLLOUT meanwhile), so N requests cost one write, not N. */
  if (token != 0 && p->state == P_FOLLOWER && (!p->polled || lp_client_pending(p->client) <= 1))
    lp_party_flush(p);
  if (token != 0 && p->loop_session != NULL) p->loop_busy = 1;
  return token;
}

/* A blocking call's wait as a follower with nothing to send and no deadline
 * to keep: one blocking recv, which returns with the reply (or the leader's
 * end), where poll then recv would cost two system calls per request.
 * Returns 0 when that does not apply, -1 when a signal interrupted it. */
static int follower_wait_recv(lp_party *p) {
  int r;
  if (p->state != P_FOLLOWER || !p->fd_blocks || p->client == NULL) return 0;
  if (lp_client_out(p->client)->len > 0 || lp_client_next_deadline(p->client) != 0) return 0;
  r = follower_read(p, 1);
  if (r < 0) return -1;
  if (r) p->progress++;
  return 1;
}

/* One blocking wait on whatever the party waits for: 0, or -1 when a signal
 * interrupted it. */
static int wait_once(lp_party *p) {
  int fd, events, timeout;
  struct pollfd pf;
  party_wants(p, &fd, &events, &timeout);
  if (fd < 0 && timeout < 0) timeout = WAIT_IDLE_MS;
  pf.fd = fd;
  pf.events = (short)events;
  pf.revents = 0;
  return poll(fd >= 0 ? &pf : NULL, fd >= 0 ? 1 : 0, timeout) < 0 && errno == EINTR ? -1 : 0;
}

static int interrupted(lp_err *err) {
  lp_err_set(err, LP_EINTR, "interrupted");
  return -1;
}

int lp_party_wait_opened(lp_party *p, lp_err *err) {
  for (;;) {
    if (lp_party_step(p, err) != 0) return -1;
    if (p->opened) return 0;
    if (wait_once(p) != 0) return interrupted(err);
  }
}

int lp_party_wait_token(lp_party *p, uint64_t token, lp_err *err) {
  for (;;) {
    int w;
    if (lp_client_done(p->client, token)) return 0;
    if ((w = follower_wait_recv(p)) < 0) return interrupted(err);
    if (w > 0) continue;
    if (lp_party_step(p, err) != 0) return -1;
    if (lp_client_done(p->client, token)) return 0;
    if (wait_once(p) != 0) return interrupted(err);
  }
}

int lp_party_wait_iter(lp_party *p, lp_citer *it, lp_err *err) {
  for (;;) {
    int w;
    if (lp_client_iter_ready(p->client, it)) return 0;
    if ((w = follower_wait_recv(p)) < 0) return interrupted(err);
    if (w > 0) continue;
    if (lp_party_step(p, err) != 0) return -1;
    if (lp_client_iter_ready(p->client, it)) return 0;
    if (wait_once(p) != 0) return interrupted(err);
  }
}

int lp_party_open(const char *dir, const lp_party_opts *o, lp_party **out, lp_err *err) {
  char *real = resolve_dir(dir, &o->engine, err);
  struct stat st;
  int known;
  lp_party *p;
  if (real == NULL) return -1;
  known = stat(real, &st) == 0;
  (void)lp_self_pid(); /* installs the fork handler before the lock is taken */
  pthread_mutex_lock(&registry_lock);
  for (p = registry; p != NULL; p = p->next) {
    /* a party inherited through fork() is the parent's: never shared.  The
     * owner, pid, path and identity never change once the party is listed;
     * its state belongs to its owner's thread, so it is read only when the
     * owner is ours */
    if (p->opts.owner == o->owner && p->pid == self_pid && p->state != P_CLOSED &&
        dir_is(p->path, p->dev, p->ino, real, known ? &st : NULL)) {
      p->refs++;
      pthread_mutex_unlock(&registry_lock);
      free(real);
      if (o->engine.error_if_exists) {
        lp_party_unref(p);
        lp_err_set(err, LP_EEXIST, "open: %s exists (error_if_exists is true)", dir);
        return -1;
      }
      *out = p;
      return 0;
    }
  }
  p = calloc(1, sizeof *p);
  if (p == NULL) {
    pthread_mutex_unlock(&registry_lock);
    free(real);
    lp_err_set(err, LP_ENOMEM, "open: out of memory");
    return -1;
  }
  p->path = real;
  if (known) {
    p->dev = st.st_dev;
    p->ino = st.st_ino;
  }
  p->refs = 1;
  p->pid = self_pid;
  p->opts = *o;
  p->fd = -1;
  p->watch.fd = -1;
  p->epfd = p->ep_fd = -1;
  p->dirfd = -1;
  p->open_deadline_ns = lp_now_ns() + o->open_timeout_ns;
  enter_electing(p);
  p->role_changed = 0;
  p->next = registry;
  registry = p;
  pthread_mutex_unlock(&registry_lock);

  if (o->external) {
    pid_t holder;
    if (lp_party_elect(p, &holder, err) < 0) {
      lp_party_unref(p);
      return -1;
    }
  } else if (lp_party_step(p, err) != 0) {
    lp_party_unref(p);
    return -1;
  }
  /* A follower found the db served by someone else, or another party of
   * this process leads it: it exists. */
  if ((p->state == P_FOLLOWER || p->joined) && o->engine.error_if_exists) {
    lp_party_unref(p);
    lp_err_set(err, LP_EEXIST, "open: %s exists (error_if_exists is true)", dir);
    return -1;
  }
  *out = p;
  return 0;
}

static void party_close(lp_party *p) {
  if (p->client != NULL)
    lp_client_fail_all(p->client, LP_ECLOSED, "closed: the database was closed");
  if (p->loop_session != NULL) lp_session_free(p->loop_session);
  p->loop_session = NULL;
  if (p->worker != NULL) {
    ep_forget(p, lp_worker_fd(p->worker));
    lp_worker_stop(p->worker);
    p->worker = NULL;
  }
  if (p->lead != NULL) { /* the worker and the loopback, on its engine, went first */
    pthread_mutex_lock(&lead_lock);
    lead_release(p);
    pthread_mutex_unlock(&lead_lock);
  }
  close_conn(p);
  close_watch(p);
  if (p->dirfd >= 0) close(p->dirfd);
  p->dirfd = -1;
  if (p->epfd >= 0) close(p->epfd); /* the loop's poll handle on it went first */
  p->epfd = -1;
  if (p->client != NULL) lp_client_free(p->client);
  p->client = NULL;
  lp_buf_free(&p->inbuf);
  lp_buf_free(&p->loop_out);
  p->state = P_CLOSED;
}

/* The last handle of a party this process inherited through fork() goes:
 * nothing of it is ours.  The engine, the server and worker threads (absent
 * here), the LOCK's descriptors (closing one would drop a lock this process
 * took since on the same file) and the epoll set's registrations (shared with
 * the parent) are left alone; only the follower's connection and the watch,
 * which are plain descriptors, are closed, and the client's memory freed. */
static void party_abandon(lp_party *p) {
  if (p->fd >= 0) close(p->fd);
  if (p->watch.fd >= 0) close(p->watch.fd);
  if (p->epfd >= 0) close(p->epfd);
  if (p->dirfd >= 0) close(p->dirfd);
  if (p->client != NULL) lp_client_free(p->client);
  lp_buf_free(&p->inbuf);
  lp_buf_free(&p->loop_out);
  free(p->path);
  free(p);
}

void lp_party_unref(lp_party *p) {
  lp_party **pp;
  pthread_mutex_lock(&registry_lock);
  if (--p->refs > 0) {
    pthread_mutex_unlock(&registry_lock);
    return;
  }
  for (pp = &registry; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  if (lp_party_forked(p)) {
    party_abandon(p);
    return;
  }
  party_close(p);
  free(p->path);
  free(p);
}

/*
 * sockfile.c: the socket file, the LOCK holder probe and the directory watch.
 *
 * A thin, synchronous layer over system calls (contract: private.h); nothing
 * here decides who leads, party.c does (docs/ARCHITECTURE.md, "The
 * election").  A socket path longer than sun_path holds goes through
 * /proc/self/fd/<N>/<name>, N an O_PATH descriptor of the directory: the
 * kernel resolves the magic link, so the file is made (or found) in the real
 * directory.  No path is ever truncated, unlike libuv's uv_pipe_bind.
 */
#include "private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Longest path we put in sun_path: one byte is kept for the NUL, because a
 * 108-byte unterminated sun_path is a Linux extension we don't rely on. */
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* Makes temporary socket names unique within this process (the pid makes
 * them unique between processes of one pid namespace).  Atomic because any
 * thread may call lp_sock_listen. */
static unsigned long tmp_counter;

/* Joins dir and name with exactly one '/' between them.  Returns a malloc'd
 * string, or NULL when out of memory. */
static char *path_join(const char *dir, const char *name) {
  size_t dl = strlen(dir), nl = strlen(name);
  int slash = dl > 0 && dir[dl - 1] == '/';
  char *p = malloc(dl + nl + 2);
  if (p == NULL) return NULL;
  memcpy(p, dir, dl);
  if (!slash) p[dl++] = '/';
  memcpy(p + dl, name, nl + 1);
  return p;
}

static size_t joined_len(const char *dir, const char *name) {
  size_t dl = strlen(dir);
  return dl + (dl > 0 && dir[dl - 1] == '/' ? 0 : 1) + strlen(name);
}

/* The error code for a failed system call on the socket path. */
static lp_code code_from_errno(int e) {
  switch (e) {
    case EACCES:
    case EPERM: return LP_EACCES;
    case ENOENT: return LP_ENOENT;
    case ENOTDIR: return LP_ENOTDIR;
    case ENOMEM: return LP_ENOMEM;
    default: return LP_EIO;
  }
}

/* 1 when /proc/self/fd can be used to reach a directory by descriptor. */
static int proc_fd_available(void) { return access("/proc/self/fd", X_OK) == 0; }

/* 1 when dir/name does not fit in sun_path and must go through /proc. */
static int needs_proc(const char *dir, const char *name) {
  return joined_len(dir, name) > SUN_PATH_MAX;
}

/* Fills addr with a path for `name` in the directory: dir/name when that fits
 * in sun_path, else /proc/self/fd/<dirfd>/name.  Returns the address length,
 * or 0 when neither fits (which only a very long name could cause). */
static socklen_t make_addr(struct sockaddr_un *addr, const char *dir, int dirfd, const char *name) {
  size_t n;
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (!needs_proc(dir, name)) {
    size_t dl = strlen(dir), nl = strlen(name);
    memcpy(addr->sun_path, dir, dl);
    n = dl;
    if (!(dl > 0 && dir[dl - 1] == '/')) addr->sun_path[n++] = '/';
    memcpy(addr->sun_path + n, name, nl);
    n += nl;
  } else {
    int r = snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", dirfd, name);
    if (r < 0 || (size_t)r > SUN_PATH_MAX) return 0;
    n = (size_t)r;
  }
  addr->sun_path[n] = '\0';
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* The directory as an O_PATH descriptor: enough for *at calls, fstat and the
 * /proc/self/fd magic link, and needs no read permission on the directory. */
static int open_dir(const char *dir) {
  int fd;
  do {
    fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

/* Socket file mode from the directory's mode: the socket can be reached only
 * by users who may write the data directory.  (connect() needs write
 * permission on the socket file.) */
static mode_t sock_mode(mode_t dirmode) {
  mode_t m = S_IRUSR | S_IWUSR;
  if (dirmode & S_IWGRP) m |= S_IRGRP | S_IWGRP;
  if (dirmode & S_IWOTH) m |= S_IROTH | S_IWOTH;
  return m;
}

static void set_too_long(lp_err *err, const char *op, const char *path) {
  lp_err_set(err, LP_EIO,
             "%s: socket path %s is %zu bytes, more than the %zu a unix socket address "
             "can hold, and /proc/self/fd is unavailable",
             op, path, strlen(path), (size_t)SUN_PATH_MAX);
}

int lp_sock_listen(const char *dir, lp_err *err) {
  char *final = path_join(dir, LP_SOCKET_NAME);
  char tmp[64];
  struct sockaddr_un addr;
  socklen_t alen;
  struct stat st;
  int dirfd = -1, fd = -1, bound = 0, attempt, e;

  if (final == NULL) {
    lp_err_set(err, LP_ENOMEM, "listen: out of memory");
    return -1;
  }
  dirfd = open_dir(dir);
  if (dirfd < 0 || fstat(dirfd, &st) != 0) goto sys_fail;

  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) goto sys_fail;

  /* Bind a private temporary name.  A name left behind by a crashed process
   * whose pid we now have (EADDRINUSE) is skipped, not removed: in a directory
   * shared between pid namespaces it might belong to a live process. */
  for (attempt = 0;; attempt++) {
    unsigned long n = __atomic_fetch_add(&tmp_counter, 1, __ATOMIC_RELAXED);
    snprintf(tmp, sizeof(tmp), ".level-party.%ld.%lu.tmp", (long)getpid(), n);
    alen = make_addr(&addr, dir, dirfd, tmp);
    if (alen == 0) {
      errno = ENAMETOOLONG;
      goto sys_fail;
    }
    if (bind(fd, (struct sockaddr *)&addr, alen) == 0) break;
    if (errno == EADDRINUSE && attempt < 16) continue;
    if (errno == ENOENT && needs_proc(dir, tmp) && !proc_fd_available()) {
      char *tmppath = path_join(dir, tmp);
      set_too_long(err, "listen", tmppath ? tmppath : final);
      free(tmppath);
      goto fail;
    }
    goto sys_fail;
  }
  bound = 1;

  if (listen(fd, 128) != 0) goto sys_fail;
  /* bind() applied the umask; set the exact mode.  The descriptor refers to
   * the socket, not the file, so this must go by name. */
  if (fchmodat(dirfd, tmp, sock_mode(st.st_mode), 0) != 0) goto sys_fail;
  /* Atomically replaces a stale socket file (or none): at every instant the
   * name is either the old file or our listening socket. */
  if (renameat(dirfd, tmp, dirfd, LP_SOCKET_NAME) != 0) {
    struct stat old;
    e = errno;
    /* another user's file in a sticky directory: say whose */
    if ((e == EPERM || e == EACCES) &&
        fstatat(dirfd, LP_SOCKET_NAME, &old, AT_SYMLINK_NOFOLLOW) == 0 && old.st_uid != geteuid()) {
      lp_err_set(err, LP_EACCES, "listen: cannot replace %s, a file of uid %ld: %s", final,
                 (long)old.st_uid, strerror(e));
      goto fail;
    }
    errno = e;
    goto sys_fail;
  }

  close(dirfd);
  free(final);
  return fd;

sys_fail:
  e = errno;
  lp_err_set(err, code_from_errno(e), "listen: %s: %s", final, strerror(e));
fail:
  if (bound) unlinkat(dirfd, tmp, 0);
  if (fd >= 0) close(fd);
  if (dirfd >= 0) close(dirfd);
  free(final);
  return -1;
}

/* The caller must still hold the LOCK: afterwards the name may already be a
 * new leader's socket. */
void lp_sock_unlink(const char *dir) {
  int dirfd = open_dir(dir);
  if (dirfd >= 0) {
    unlinkat(dirfd, LP_SOCKET_NAME, 0); /* ENOENT and others: nothing to do */
    close(dirfd);
  } else {
    char *p = path_join(dir, LP_SOCKET_NAME);
    if (p != NULL) unlink(p);
    free(p);
  }
}

int lp_sock_connect(const char *dir) {
  struct sockaddr_un addr;
  socklen_t alen;
  int dirfd = -1, fd, e = 0;

  if (needs_proc(dir, LP_SOCKET_NAME)) {
    dirfd = open_dir(dir);
    if (dirfd < 0) return -errno;
  }
  alen = make_addr(&addr, dir, dirfd, LP_SOCKET_NAME);
  if (alen == 0) {
    if (dirfd >= 0) close(dirfd);
    return -ENAMETOOLONG;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    e = errno;
  } else if (connect(fd, (struct sockaddr *)&addr, alen) != 0) {
    /* A unix stream connect completes at once or fails; EAGAIN means the
     * listener's backlog is full and the caller should retry later. */
    e = errno;
    if (e == EINPROGRESS) e = EAGAIN;
    if (e == ENOENT && dirfd >= 0 && !proc_fd_available()) e = ENAMETOOLONG;
    close(fd);
  }
  if (dirfd >= 0) close(dirfd);
  return e ? -e : fd;
}

/* Why read-only, and why never on a LOCK this process holds: private.h and
 * docs/ARCHITECTURE.md, "The election".  The kernel reports l_pid 0 for a
 * holder outside our pid namespace and -1 for an open-file-description lock:
 * both are "held, by whom we can't tell" (-1), never "free". */
pid_t lp_lock_holder(const char *dir) {
  char *p = path_join(dir, "LOCK");
  struct flock fl;
  int fd, r;

  if (p == NULL) return -1;
  do {
    /* O_NONBLOCK: never hang opening something that is not a regular file. */
    fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  free(p);
  if (fd < 0) return errno == ENOENT ? 0 : -1; /* no file: nobody holds it */

  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0; /* the whole file */
  r = fcntl(fd, F_GETLK, &fl);
  close(fd);
  if (r != 0) return -1;
  if (fl.l_type == F_UNLCK) return 0;
  return fl.l_pid > 0 ? fl.l_pid : -1;
}

/* Why the directory is checked first, and why the lock is taken before
 * LevelDB opens: private.h and docs/ARCHITECTURE.md, "The election". */
int lp_lock_take(const char *dir, lp_err *err) {
  char *p = path_join(dir, "LOCK");
  struct stat st;
  struct flock fl;
  int fd, e;

  if (p == NULL) {
    lp_err_set(err, LP_ENOMEM, "out of memory");
    return -1;
  }
  if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0) {
    e = errno;
    if (stat(dir, &st) == 0)
      lp_err_set(err, code_from_errno(e),
                 "%s (uid %ld's, mode %04o) is not writable by uid %ld: %s", dir, (long)st.st_uid,
                 (unsigned)(st.st_mode & 07777), (long)geteuid(), strerror(e));
    else
      lp_err_set(err, code_from_errno(e), "%s: %s", dir, strerror(e));
    free(p);
    return -1;
  }
  do {
    /* O_NOFOLLOW: a LOCK planted as a symbolic link leads nowhere else */
    fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    e = errno;
    if (e == ELOOP)
      lp_err_set(err, LP_EACCES, "%s is a symbolic link", p);
    else if (stat(p, &st) == 0)
      lp_err_set(err, code_from_errno(e),
                 "%s (uid %ld's, mode %04o) cannot be opened for writing by uid %ld: %s", p,
                 (long)st.st_uid, (unsigned)(st.st_mode & 07777), (long)geteuid(), strerror(e));
    else
      lp_err_set(err, code_from_errno(e), "%s: %s", p, strerror(e));
    free(p);
    return -1;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    lp_err_set(err, LP_EACCES, "%s is not a regular file", p);
    close(fd);
    free(p);
    return -1;
  }
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &fl) != 0) {
    e = errno;
    lp_err_set(err, e == EAGAIN || e == EACCES ? LP_ELOCKED : LP_EIO, "%s: %s", p, strerror(e));
    close(fd);
    free(p);
    return -1;
  }
  free(p);
  return fd;
}

int lp_proc_uid(pid_t pid, uid_t *uid) {
  char path[64], line[256];
  FILE *f;
  int found = 0;
  unsigned long r, eff;
  snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
  f = fopen(path, "re");
  if (f == NULL) return -1;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (sscanf(line, "Uid: %lu %lu", &r, &eff) == 2) {
      *uid = (uid_t)eff;
      found = 1;
      break;
    }
  }
  fclose(f);
  return found ? 0 : -1;
}

/* The watch only wakes the caller, and any wakeup may be spurious (LevelDB
 * closes written files all the time).  The events that matter:
 *   IN_CLOSE_WRITE on LOCK: a dying holder's lock is released before its fd
 *     is closed, so once this is readable the LOCK can be taken;
 *   IN_MOVED_TO of level-party.sock: a new leader published its socket;
 *   IN_CREATE: LOCK or the directory's first files appeared;
 *   IN_DELETE_SELF / IN_MOVE_SELF: the directory itself went away. */
int lp_watch_open(lp_watch *w, const char *dir, lp_err *err) {
  int fd, e;
  w->fd = -1;
  fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    e = errno;
    lp_err_set(err, code_from_errno(e), "watch: %s: %s", dir, strerror(e));
    return -1;
  }
  if (inotify_add_watch(fd, dir,
                        IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                            IN_ONLYDIR) < 0) {
    e = errno;
    close(fd);
    lp_err_set(err, code_from_errno(e), "watch: %s: %s", dir, strerror(e));
    return -1;
  }
  w->fd = fd;
  return 0;
}

void lp_watch_drain(lp_watch *w) {
  /* Aligned for struct inotify_event; big enough for several events. */
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  if (w->fd < 0) return;
  for (;;) {
    ssize_t n = read(w->fd, buf, sizeof(buf));
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    break; /* EAGAIN: empty; anything else: nothing more to read either */
  }
}

void lp_watch_close(lp_watch *w) {
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
}

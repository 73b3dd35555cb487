/*
 * sockfile_test: the socket file (short and long paths, stale files, modes), the
 * LOCK probe and the directory watch, against real processes and LevelDB.
 */
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <leveldb/c.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *p = malloc(la + lb + 2);
  if (p == NULL) abort(); /* test code: out of memory is fatal */
  memcpy(p, a, la);
  p[la] = '/';
  memcpy(p + la + 1, b, lb + 1);
  return p;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor */
}

/* Describes the entries of dir (sorted, space separated) into out. */
static void list_dir(const char *dir, char *out, size_t cap) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort), i;
  size_t used = 0;
  out[0] = '\0';
  if (n < 0) {
    snprintf(out, cap, "<scandir: %s>", strerror(errno));
    return;
  }
  for (i = 0; i < n; i++) {
    const char *nm = names[i]->d_name;
    if (strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0) {
      int r = snprintf(out + used, cap - used, "%s%s", used ? " " : "", nm);
      if (r > 0 && (size_t)r < cap - used) used += (size_t)r;
    }
    free(names[i]);
  }
  free(names);
}

static int readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  return r == 1 && (p.revents & POLLIN);
}

/* Reads every pending inotify event; 1 when one of them has a mask bit of
 * `mask` and the name `name`. */
static int saw_event(int fd, uint32_t mask, const char *name) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  int found = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf)), off = 0;
    if (n <= 0) break;
    while (off < n) {
      const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
      if ((ev->mask & mask) && ev->len > 0 && strcmp(ev->name, name) == 0) found = 1;
      off += (ssize_t)(sizeof(*ev) + ev->len);
    }
  }
  return found;
}

/* Waits up to timeout_ms for an event with `mask` on `name`, reading (and
 * dropping) every other event meanwhile.  A dying process closes its files
 * one after the other, so the first wakeup may come from another file. */
static int wait_event(int fd, uint32_t mask, const char *name, int timeout_ms) {
  int waited = 0;
  while (waited <= timeout_ms) {
    if (readable(fd, 50) && saw_event(fd, mask, name)) return 1;
    waited += 50;
  }
  return 0;
}

static int is_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
  return fl >= 0 && (fl & O_NONBLOCK) && fdfl >= 0 && (fdfl & FD_CLOEXEC);
}

/* Listens in dir, connects, accepts, and sends bytes both ways. */
static void roundtrip(const char *dir, const char *label) {
  char what[160], got[16];
  lp_err err;
  int lfd, cfd, afd = -1;
  ssize_t n;
  struct stat st;
  char *sock = join(dir, LP_SOCKET_NAME);

  memset(&err, 0, sizeof(err));
  lfd = lp_sock_listen(dir, &err);
  snprintf(what, sizeof(what), "%s: listen", label);
  check(lfd >= 0, what, "%s", err.msg);
  if (lfd < 0) goto out;
  snprintf(what, sizeof(what), "%s: listening fd is nonblocking and close-on-exec", label);
  check(is_nonblock_cloexec(lfd), what, "flags %#x", fcntl(lfd, F_GETFL));
  snprintf(what, sizeof(what), "%s: socket file is a socket named level-party.sock", label);
  check(lstat(sock, &st) == 0 && S_ISSOCK(st.st_mode), what, "lstat: %s", strerror(errno));

  cfd = lp_sock_connect(dir);
  snprintf(what, sizeof(what), "%s: connect", label);
  check(cfd >= 0, what, "%s", strerror(-cfd));
  if (cfd >= 0) {
    snprintf(what, sizeof(what), "%s: connected fd is nonblocking and close-on-exec", label);
    check(is_nonblock_cloexec(cfd), what, "flags %#x", fcntl(cfd, F_GETFL));
    if (readable(lfd, 2000)) afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    snprintf(what, sizeof(what), "%s: accept", label);
    check(afd >= 0, what, "%s", strerror(errno));
    if (afd >= 0) {
      memset(got, 0, sizeof(got));
      n = write(cfd, "hello", 5);
      if (n == 5 && readable(afd, 2000)) n = read(afd, got, sizeof(got));
      snprintf(what, sizeof(what), "%s: bytes flow follower -> leader", label);
      check(n == 5 && memcmp(got, "hello", 5) == 0, what, "n=%zd got '%s'", n, got);
      memset(got, 0, sizeof(got));
      n = write(afd, "world!", 6);
      if (n == 6 && readable(cfd, 2000)) n = read(cfd, got, sizeof(got));
      snprintf(what, sizeof(what), "%s: bytes flow leader -> follower", label);
      check(n == 6 && memcmp(got, "world!", 6) == 0, what, "n=%zd got '%s'", n, got);
      close(afd);
    }
    close(cfd);
  }
  close(lfd);
out:
  free(sock);
}

/* ------------------------------------------------------------------------ */

static void test_short_and_long(const char *base, const char *shortdir, const char *longdir) {
  char list[4096], what[160];
  char *p, *sock;
  struct stat st;
  lp_err err;
  int fds0 = count_fds(), lfd;

  roundtrip(shortdir, "short dir");
  list_dir(shortdir, list, sizeof(list));
  check(strcmp(list, LP_SOCKET_NAME) == 0, "short dir: only level-party.sock in the dir",
        "dir holds '%s'", list);
  lp_sock_unlink(shortdir);
  sock = join(shortdir, LP_SOCKET_NAME);
  check(lstat(sock, &st) != 0 && errno == ENOENT, "short dir: lp_sock_unlink removes the file",
        "still there");
  free(sock);
  lp_sock_unlink(shortdir); /* ENOENT is ignored */

  snprintf(what, sizeof(what), "long dir: path is %zu bytes, past sun_path",
           strlen(longdir) + 1 + strlen(LP_SOCKET_NAME));
  check(strlen(longdir) + 1 + strlen(LP_SOCKET_NAME) > 107, what, "too short for the test");
  roundtrip(longdir, "long dir");
  list_dir(longdir, list, sizeof(list));
  check(strcmp(list, LP_SOCKET_NAME) == 0,
        "long dir: socket created inside the long dir as level-party.sock, nothing else",
        "dir holds '%s'", list);
  /* Every parent up to base holds only the next component: no truncated name. */
  {
    char *parent = strdup(longdir);
    int clean = 1;
    char bad[8400] = "";
    while (parent != NULL && strlen(parent) > strlen(base)) {
      char *slash = strrchr(parent, '/');
      const char *child = slash + 1;
      char expect[512];
      snprintf(expect, sizeof(expect), "%s", child);
      *slash = '\0';
      list_dir(parent, list, sizeof(list));
      if (strlen(parent) > strlen(base) && strcmp(list, expect) != 0) {
        clean = 0;
        snprintf(bad, sizeof(bad), "%s holds '%s'", parent, list);
      }
    }
    check(clean, "long dir: nothing appears in parent directories", "%s", bad);
    free(parent);
  }

  /* Stale socket files: a bound socket whose listener was closed. */
  {
    const char *dirs[2] = {shortdir, longdir};
    const char *labels[2] = {"short dir", "long dir"};
    int i;
    for (i = 0; i < 2; i++) {
      int r, l2;
      memset(&err, 0, sizeof(err));
      lfd = lp_sock_listen(dirs[i], &err);
      if (lfd >= 0) close(lfd); /* no unlink: the file goes stale */
      r = lp_sock_connect(dirs[i]);
      snprintf(what, sizeof(what), "%s: connect to a stale socket file gives -ECONNREFUSED",
               labels[i]);
      check(r == -ECONNREFUSED, what, "got %d (%s)", r, r < 0 ? strerror(-r) : "an fd");
      if (r >= 0) close(r);
      snprintf(what, sizeof(what), "%s: stale socket replaced", labels[i]);
      roundtrip(dirs[i], what);
      list_dir(dirs[i], list, sizeof(list));
      snprintf(what, sizeof(what), "%s: no temporary names left behind", labels[i]);
      check(strcmp(list, LP_SOCKET_NAME) == 0, what, "dir holds '%s'", list);

      /* A second listener takes over the name from a live first one. */
      lfd = lp_sock_listen(dirs[i], &err);
      l2 = lp_sock_listen(dirs[i], &err);
      r = lp_sock_connect(dirs[i]);
      snprintf(what, sizeof(what), "%s: a new listen replaces a live socket's name", labels[i]);
      check(lfd >= 0 && l2 >= 0 && r >= 0 && readable(l2, 2000) && !readable(lfd, 0), what,
            "lfd=%d l2=%d r=%d", lfd, l2, r);
      if (r >= 0) close(r);
      if (lfd >= 0) close(lfd);
      if (l2 >= 0) close(l2);

      lp_sock_unlink(dirs[i]);
      r = lp_sock_connect(dirs[i]);
      snprintf(what, sizeof(what), "%s: connect to a missing socket file gives -ENOENT", labels[i]);
      check(r == -ENOENT, what, "got %d", r);
      if (r >= 0) close(r);
      list_dir(dirs[i], list, sizeof(list));
      snprintf(what, sizeof(what), "%s: lp_sock_unlink leaves the dir empty", labels[i]);
      check(list[0] == '\0', what, "dir holds '%s'", list);
    }
  }

  /* Errors. */
  p = join(base, "missing");
  memset(&err, 0, sizeof(err));
  lfd = lp_sock_listen(p, &err);
  check(lfd == -1 && err.code == LP_ENOENT && strncmp(err.msg, "listen: ", 8) == 0 &&
            strstr(err.msg, "/missing/level-party.sock: ") != NULL,
        "listen in a missing dir: LP_ENOENT, 'listen: <path>: <strerror>'", "fd %d code %d '%s'",
        lfd, (int)err.code, err.msg);
  check(lp_sock_connect(p) == -ENOENT, "connect in a missing dir gives -ENOENT", "wrong");
  free(p);
  {
    char *lm = join(longdir, "missing");
    check(lp_sock_connect(lm) == -ENOENT, "connect in a missing long dir gives -ENOENT", "wrong");
    free(lm);
  }

  /* The rename fails (the name is a non-empty directory): no temp file stays. */
  sock = join(shortdir, LP_SOCKET_NAME);
  p = join(sock, "x");
  mkdir(sock, 0700);
  close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  memset(&err, 0, sizeof(err));
  lfd = lp_sock_listen(shortdir, &err);
  list_dir(shortdir, list, sizeof(list));
  check(lfd == -1 && err.code == LP_EIO && strncmp(err.msg, "listen: ", 8) == 0,
        "listen fails cleanly when the name cannot be replaced", "fd %d code %d '%s'", lfd,
        (int)err.code, err.msg);
  check(strcmp(list, LP_SOCKET_NAME) == 0, "failed listen removes its temporary file",
        "dir holds '%s'", list);
  unlink(p);
  rmdir(sock);
  free(p);
  free(sock);

  check(count_fds() == fds0, "socket calls leak no descriptors", "%d before, %d after", fds0,
        count_fds());
}

/* ------------------------------------------------------------------------ */

static void test_modes(const char *shortdir, const char *longdir) {
  static const struct {
    mode_t dir, sock;
  } cases[] = {{0700, 0600}, {0770, 0660}, {0777, 0666}, {0755, 0600},
               {0730, 0660}, {0703, 0606}, {01777, 0666}};
  static const mode_t masks[] = {0, 022, 077, 0777};
  size_t i, j;
  mode_t old = umask(0);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int all = 1;
    char why[256] = "", what[128];
    for (j = 0; j < sizeof(masks) / sizeof(masks[0]); j++) {
      const char *dirs[2] = {shortdir, longdir};
      int k;
      for (k = 0; k < 2; k++) {
        lp_err err;
        struct stat st;
        char *sock = join(dirs[k], LP_SOCKET_NAME);
        int fd;
        chmod(dirs[k], cases[i].dir);
        umask(masks[j]);
        fd = lp_sock_listen(dirs[k], &err);
        umask(0);
        if (fd < 0 || lstat(sock, &st) != 0 || (st.st_mode & 07777) != cases[i].sock) {
          all = 0;
          snprintf(why, sizeof(why), "%s dir, umask %03o: fd %d mode %04o", k ? "long" : "short",
                   (unsigned)masks[j], fd, fd < 0 ? 0 : (unsigned)(st.st_mode & 07777));
        }
        if (fd >= 0) close(fd);
        lp_sock_unlink(dirs[k]);
        free(sock);
      }
    }
    snprintf(what, sizeof(what), "dir %04o gives socket %04o whatever the umask",
             (unsigned)cases[i].dir, (unsigned)cases[i].sock);
    check(all, what, "%s", why);
  }
  umask(old);
  chmod(shortdir, 0700);
  chmod(longdir, 0700);
}

/* As another user (root only): the mode decides who may connect, and a dir
 * we cannot write refuses listen with LP_EACCES. */
static void test_other_user(const char *base, const char *shortdir) {
  const uid_t nobody = 65534;
  lp_err err;
  int lfd, st;
  pid_t pid;
  char *nowrite = join(base, "nowrite");

  mkdir(nowrite, 0755);
  chmod(nowrite, 0755);
  if (geteuid() != 0) {
    chmod(nowrite, 0555);
    memset(&err, 0, sizeof(err));
    lfd = lp_sock_listen(nowrite, &err);
    check(lfd == -1 && err.code == LP_EACCES, "listen in an unwritable dir gives LP_EACCES",
          "fd %d code %d '%s'", lfd, (int)err.code, err.msg);
    if (lfd >= 0) close(lfd);
    skip("another user cannot connect to a 0600 socket", "not root");
    skip("another user can connect to a 0666 socket", "not root");
    rmdir(nowrite);
    free(nowrite);
    return;
  }
  chmod(base, 0711);
  chmod(shortdir, 0700);
  lfd = lp_sock_listen(shortdir, &err);
  pid = fork();
  if (pid == 0) {
    int r, code = 0;
    lp_err e2;
    if (setgid(nobody) != 0 || setuid(nobody) != 0) _exit(77);
    r = lp_sock_connect(shortdir);
    if (r != -EACCES) code |= 1;
    memset(&e2, 0, sizeof(e2));
    r = lp_sock_listen(nowrite, &e2);
    if (!(r == -1 && e2.code == LP_EACCES && strncmp(e2.msg, "listen: ", 8) == 0)) code |= 2;
    _exit(code);
  }
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
    skip("another user cannot connect to a 0600 socket", "setuid failed");
  } else {
    check(WIFEXITED(st) && !(WEXITSTATUS(st) & 1),
          "another user cannot connect to a socket in a 0700 dir (-EACCES)", "status %#x", st);
    check(WIFEXITED(st) && !(WEXITSTATUS(st) & 2), "listen in an unwritable dir gives LP_EACCES",
          "status %#x", st);
  }
  if (lfd >= 0) close(lfd);
  lp_sock_unlink(shortdir);

  /* The same user in a 0777 directory: the socket is 0666 and reachable.  The
   * directory is 0777 only so that its mode lets 'nobody' in. */
  chmod(shortdir, 0777);
  lfd = lp_sock_listen(shortdir, &err);
  pid = fork();
  if (pid == 0) {
    int r;
    if (setgid(nobody) != 0 || setuid(nobody) != 0) _exit(77);
    r = lp_sock_connect(shortdir);
    _exit(r >= 0 ? 0 : 1);
  }
  waitpid(pid, &st, 0);
  check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another user can connect to a socket in a 0777 dir",
        "status %#x", st);
  if (lfd >= 0) close(lfd);
  lp_sock_unlink(shortdir);
  chmod(shortdir, 0700);
  chmod(base, 0700);
  rmdir(nowrite);
  free(nowrite);
}

/* Without /proc, a long path is refused with a clear message, not truncated.
 * Runs in a child with a private mount namespace where /proc is unmounted. */
static void test_no_proc(const char *longdir) {
  int pfd[2], st;
  pid_t pid;
  char msg[600];
  ssize_t n;

  if (pipe(pfd) != 0) return;
  pid = fork();
  if (pid == 0) {
    lp_err err;
    int r, c;
    close(pfd[0]);
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
        umount2("/proc", MNT_DETACH) != 0)
      _exit(77);
    memset(&err, 0, sizeof(err));
    r = lp_sock_listen(longdir, &err);
    c = lp_sock_connect(longdir);
    if (write(pfd[1], err.msg, strlen(err.msg) + 1) < 0) _exit(3);
    _exit((r == -1 && err.code == LP_EIO ? 0 : 1) | (c == -ENAMETOOLONG ? 0 : 2));
  }
  close(pfd[1]);
  memset(msg, 0, sizeof(msg));
  n = read(pfd[0], msg, sizeof(msg) - 1);
  (void)n;
  close(pfd[0]);
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
    skip("long path without /proc: clear listen error", "cannot unmount /proc here");
    return;
  }
  check(WIFEXITED(st) && !(WEXITSTATUS(st) & 1) && strncmp(msg, "listen: socket path ", 20) == 0 &&
            strstr(msg, "more than the 107 a unix socket address can hold, and /proc/self/fd "
                        "is unavailable") != NULL,
        "long path without /proc: listen fails with LP_EIO and says why", "status %#x msg '%s'", st,
        msg);
  check(WIFEXITED(st) && !(WEXITSTATUS(st) & 2),
        "long path without /proc: connect gives -ENAMETOOLONG", "status %#x", st);
  {
    char list[4096];
    list_dir(longdir, list, sizeof(list));
    check(list[0] == '\0', "long path without /proc: nothing created", "dir holds '%s'", list);
  }
}

/* ------------------------------------------------------------------------ */

/* LevelDB objects alive when a forked child _exit()s: kept reachable here so
 * that valgrind does not count them as leaks of the child. */
static leveldb_t *volatile child_db;
static leveldb_options_t *volatile child_opts;

/* A child that takes an fcntl write lock on dir/LOCK through an O_RDWR fd
 * (as LevelDB does), or opens LevelDB itself, then waits.  It writes one byte
 * to `ready` once it holds the lock, and _exit()s when `go` becomes readable
 * (or is killed before that). */
static pid_t spawn_holder(const char *dir, int use_leveldb, int *go_w) {
  int ready[2], go[2];
  pid_t pid;
  char c = 0;

  if (pipe(ready) != 0) return -1;
  if (pipe(go) != 0) {
    close(ready[0]);
    close(ready[1]);
    return -1;
  }
  pid = fork();
  if (pid == 0) {
    close(ready[0]);
    close(go[1]);
    if (use_leveldb) {
      /* The handle stays open: _exit() leaves the closing to the kernel.
       * Static, so that valgrind sees it reachable rather than lost. */
      char *e = NULL;
      child_opts = leveldb_options_create();
      leveldb_options_set_create_if_missing(child_opts, 1);
      child_db = leveldb_open(child_opts, dir, &e);
      if (child_db == NULL) _exit(1);
    } else {
      char *p = join(dir, "LOCK");
      struct flock fl;
      int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      free(p);
      memset(&fl, 0, sizeof(fl));
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      if (fd < 0 || fcntl(fd, F_SETLK, &fl) != 0) _exit(1);
    }
    if (write(ready[1], &c, 1) != 1) _exit(1);
    if (read(go[0], &c, 1) < 0) _exit(1);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  if (pid < 0 || read(ready[0], &c, 1) != 1) {
    close(ready[0]);
    close(go[1]);
    if (pid > 0) waitpid(pid, NULL, 0);
    return -1;
  }
  close(ready[0]);
  *go_w = go[1];
  return pid;
}

static void test_lock_and_watch(const char *base) {
  static const struct {
    int leveldb, kill;
    const char *label;
  } cases[] = {{0, 1, "fcntl holder SIGKILLed"},
               {0, 0, "fcntl holder _exit()s"},
               {1, 1, "LevelDB holder SIGKILLed"},
               {1, 0, "LevelDB holder _exit()s"}};
  char what[160];
  char *dir = join(base, "lockdir"), *lock = join(dir, "LOCK");
  lp_watch w;
  lp_err err;
  size_t i;
  int fds0 = count_fds(), r;

  mkdir(dir, 0700);
  check(lp_lock_holder(dir) == 0, "lock probe: no LOCK file means free", "got %d",
        (int)lp_lock_holder(dir));
  close(open(lock, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  check(lp_lock_holder(dir) == 0, "lock probe: unlocked LOCK file is free", "got %d",
        (int)lp_lock_holder(dir));

  memset(&err, 0, sizeof(err));
  r = lp_watch_open(&w, dir, &err);
  check(r == 0 && w.fd >= 0 && is_nonblock_cloexec(w.fd),
        "watch opens (nonblocking, close-on-exec)", "%s", err.msg);
  if (r != 0) goto out;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int go = -1, st = 0, woke, sawlock;
    pid_t holder, pid = spawn_holder(dir, cases[i].leveldb, &go);
    snprintf(what, sizeof(what), "%s: holder started", cases[i].label);
    check(pid > 0, what, "fork or lock failed");
    if (pid <= 0) continue;

    lp_watch_drain(&w);
    check(!readable(w.fd, 0), "watch drained: no event pending", "still readable");
    holder = lp_lock_holder(dir);
    snprintf(what, sizeof(what), "%s: probe reports the child's pid", cases[i].label);
    check(holder == pid, what, "got %d, child %d", (int)holder, (int)pid);
    /* The probe's read-only close raises IN_CLOSE_NOWRITE, which we don't watch. */
    snprintf(what, sizeof(what), "%s: the probe itself raises no watch event", cases[i].label);
    check(!readable(w.fd, 100), what, "watch readable after lp_lock_holder");
    holder = lp_lock_holder(dir);
    snprintf(what, sizeof(what), "%s: probing twice still sees the holder", cases[i].label);
    check(holder == pid, what, "got %d", (int)holder);

    if (cases[i].kill)
      kill(pid, SIGKILL);
    else
      close(go); /* EOF: the child _exit()s */
    /* The first wakeup may come from another file the child had open (LevelDB
     * writes LOG, the log and MANIFEST), but the lock is released before any
     * of the dying child's files is closed: so the probe must say free as soon
     * as the watch wakes, whatever woke it. */
    woke = readable(w.fd, 5000);
    holder = lp_lock_holder(dir); /* before reaping the child */
    sawlock = woke && wait_event(w.fd, IN_CLOSE_WRITE, "LOCK", 5000);
    snprintf(what, sizeof(what), "%s: watch becomes readable with IN_CLOSE_WRITE on LOCK",
             cases[i].label);
    check(woke && sawlock, what, "woke %d, LOCK close-write seen %d", woke, sawlock);
    snprintf(what, sizeof(what), "%s: probe reports free at the first wakeup", cases[i].label);
    check(holder == 0, what, "got %d", (int)holder);
    if (cases[i].kill) close(go);
    waitpid(pid, &st, 0);
    snprintf(what, sizeof(what), "%s: child ended as planned", cases[i].label);
    check(cases[i].kill ? (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
                        : (WIFEXITED(st) && WEXITSTATUS(st) == 0),
          what, "status %#x", st);
    lp_watch_drain(&w);
  }

  /* After the LevelDB holder died, this process can open the db. */
  {
    char *e = NULL;
    leveldb_options_t *o = leveldb_options_create();
    leveldb_t *db = leveldb_open(o, dir, &e);
    child_db = db; /* reachable from the probing child below */
    child_opts = o;
    check(db != NULL, "LevelDB opens here once the probe says free", "%s", e ? e : "?");
    /* While this process holds it, the probe must not be used (lp_lock_holder, private.h);
     * a child may, and sees us. */
    if (db != NULL) {
      int st;
      pid_t me = getpid(), pid = fork();
      if (pid == 0) _exit(lp_lock_holder(dir) == me ? 0 : 1);
      waitpid(pid, &st, 0);
      check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "another process's probe sees this process holding LevelDB", "status %#x", st);
      leveldb_close(db);
      child_db = NULL;
    }
    leveldb_free(e);
    leveldb_options_destroy(o);
    child_opts = NULL;
  }
  lp_watch_drain(&w);

  /* A new leader's socket appears by rename: IN_MOVED_TO level-party.sock. */
  {
    int lfd = lp_sock_listen(dir, &err), woke, moved;
    woke = readable(w.fd, 2000);
    moved = woke && wait_event(w.fd, IN_MOVED_TO, LP_SOCKET_NAME, 2000);
    check(lfd >= 0 && woke && moved, "watch sees the socket renamed into place (IN_MOVED_TO)",
          "fd %d woke %d moved %d", lfd, woke, moved);
    if (lfd >= 0) close(lfd);
    lp_sock_unlink(dir);
    lp_watch_drain(&w);
    check(!readable(w.fd, 0), "lp_watch_drain empties the queue", "still readable");
  }
  lp_watch_close(&w);
  check(w.fd == -1, "lp_watch_close resets the fd", "fd %d", w.fd);
  lp_watch_close(&w); /* twice is harmless */

  {
    char *m = join(base, "missing");
    memset(&err, 0, sizeof(err));
    r = lp_watch_open(&w, m, &err);
    check(r == -1 && w.fd == -1 && err.code == LP_ENOENT && strncmp(err.msg, "watch: ", 7) == 0,
          "watch on a missing dir: LP_ENOENT", "r %d code %d '%s'", r, (int)err.code, err.msg);
    r = lp_watch_open(&w, lock, &err);
    check(r == -1 && w.fd == -1 && err.code == LP_ENOTDIR, "watch on a file: LP_ENOTDIR",
          "r %d code %d '%s'", r, (int)err.code, err.msg);
    free(m);
  }
out:
  check(count_fds() == fds0, "probe and watch leak no descriptors", "%d before, %d after", fds0,
        count_fds());
  free(lock);
  free(dir);
}

/* lp_lock_take: the lock LevelDB takes, taken first by us, and why not. */
static void test_lock_take(const char *base) {
  char *dir = join(base, "takedir"), *lock = join(dir, "LOCK"), *ldir = join(base, "linkdir");
  char *llock = join(ldir, "LOCK");
  lp_err err;
  int fd, st, fds0 = count_fds();
  pid_t pid, me = getpid();

  mkdir(dir, 0700);
  memset(&err, 0, sizeof(err));
  fd = lp_lock_take(dir, &err);
  check(fd >= 0 && is_nonblock_cloexec(fd) && access(lock, F_OK) == 0,
        "lock take: creates LOCK and returns a close-on-exec fd", "fd %d '%s'", fd, err.msg);
  pid = fork();
  if (pid == 0) {
    lp_err e2;
    int code = lp_lock_holder(dir) == me ? 0 : 1;
    if (!(lp_lock_take(dir, &e2) == -1 && e2.code == LP_ELOCKED && strstr(e2.msg, lock) != NULL))
      code |= 2;
    _exit(code);
  }
  waitpid(pid, &st, 0);
  check(WIFEXITED(st) && !(WEXITSTATUS(st) & 1), "lock take: another process's probe sees us",
        "status %#x", st);
  check(WIFEXITED(st) && !(WEXITSTATUS(st) & 2),
        "lock take: another process is told LP_ELOCKED, naming the file", "status %#x", st);
  if (fd >= 0) close(fd);
  check(lp_lock_holder(dir) == 0, "lock take: closing the fd releases the lock", "holder %d",
        (int)lp_lock_holder(dir));

  mkdir(ldir, 0700);
  if (symlink(lock, llock) != 0) perror("symlink");
  memset(&err, 0, sizeof(err));
  fd = lp_lock_take(ldir, &err);
  check(fd == -1 && err.code == LP_EACCES && strstr(err.msg, "symbolic link") != NULL,
        "lock take: a LOCK planted as a symbolic link is refused (EACCES)", "fd %d code %d '%s'",
        fd, (int)err.code, err.msg);
  if (fd >= 0) close(fd);

  if (geteuid() != 0) {
    skip("lock take as another user: LOCK not writable", "not root");
    skip("lock take as another user: directory not writable", "not root");
  } else {
    /* root's LOCK (0644) in a directory everyone may write, then in a 0755 one */
    chmod(base, 0711);
    chmod(dir, 0777);
    pid = fork();
    if (pid == 0) {
      lp_err e2;
      int code = 0, r;
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(77);
      memset(&e2, 0, sizeof(e2));
      r = lp_lock_take(dir, &e2);
      if (!(r == -1 && e2.code == LP_EACCES && strstr(e2.msg, lock) && strstr(e2.msg, "uid 0's") &&
            strstr(e2.msg, "mode 0644") && strstr(e2.msg, "uid 65534")))
        code |= 1;
      _exit(code);
    }
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "lock take as another user: root's 0644 LOCK gives EACCES naming file, owner, mode, uid",
          "status %#x", st);
    chmod(dir, 0755);
    unlink(lock);
    pid = fork();
    if (pid == 0) {
      lp_err e2;
      int r;
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(77);
      memset(&e2, 0, sizeof(e2));
      r = lp_lock_take(dir, &e2);
      _exit(r == -1 && e2.code == LP_EACCES && strstr(e2.msg, "not writable by uid 65534") &&
                    access(lock, F_OK) != 0
                ? 0
                : 1);
    }
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "lock take as another user: a 0755 directory gives EACCES, and no LOCK is created",
          "status %#x", st);
    chmod(dir, 0700);
    chmod(base, 0700);
  }
  check(count_fds() == fds0, "lock take leaks no descriptors", "%d before, %d after", fds0,
        count_fds());
  free(llock);
  free(ldir);
  free(lock);
  free(dir);
}

/* One directory reached through a bind mount has two realpaths; the party
 * registry must still give one party (root only: a private mount namespace). */
static void test_bind_mount(const char *base) {
  char *a = join(base, "bind-a"), *b = join(base, "bind-b");
  int st;
  pid_t pid;

  if (geteuid() != 0) {
    skip("a bind mount of a party's directory shares the party", "not root");
    free(a);
    free(b);
    return;
  }
  mkdir(a, 0700);
  mkdir(b, 0700);
  pid = fork();
  if (pid == 0) {
    lp_party_opts o;
    lp_party *p1 = NULL, *p2 = NULL;
    lp_err err;
    int code = 0, cst;
    pid_t me = getpid(), probe;
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(a, b, NULL, MS_BIND, NULL) != 0)
      _exit(77);
    lp_party_opts_init(&o);
    o.log = 0;
    if (lp_party_open(a, &o, &p1, &err) != 0 || lp_party_role(p1) != LP_ROLE_LEADER) _exit(78);
    if (lp_party_open(b, &o, &p2, &err) != 0) _exit(79);
    if (p2 != p1) code |= 1;
    probe = fork();
    if (probe == 0) _exit(lp_lock_holder(a) == me ? 0 : 1);
    waitpid(probe, &cst, 0);
    if (!WIFEXITED(cst) || WEXITSTATUS(cst) != 0) code |= 2;
    lp_party_unref(p2);
    lp_party_unref(p1);
    umount2(b, MNT_DETACH);
    _exit(code);
  }
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
    skip("a bind mount of a party's directory shares the party", "no private mount namespace");
  } else {
    check(WIFEXITED(st) && WEXITSTATUS(st) < 64 && !(WEXITSTATUS(st) & 1),
          "a bind mount of a party's directory shares the party", "status %#x", st);
    check(WIFEXITED(st) && WEXITSTATUS(st) < 64 && !(WEXITSTATUS(st) & 2),
          "opening it through the bind mount keeps this process's LOCK", "status %#x", st);
  }
  free(a);
  free(b);
}

/* ------------------------------------------------------------------------ */

int main(void) {
  char base[64], longdir[400], *shortdir;
  int fds0 = count_fds();
  size_t len;

  if (!tap_tmpdir(base, sizeof base, "sockfile")) return tap_done();
  shortdir = join(base, "s");
  mkdir(shortdir, 0700);

  /* A real nested directory whose path is about 250 bytes. */
  len = (size_t)snprintf(longdir, sizeof(longdir), "%s/long", base);
  mkdir(longdir, 0700);
  while (len < 250) {
    size_t k = 250 - len - 1, at = len;
    if (k > 100) k = 100;
    if (k == 0) break;
    longdir[len++] = '/';
    memset(longdir + len, "abc"[at % 3], k);
    len += k;
    longdir[len] = '\0';
    mkdir(longdir, 0700);
  }
  check(strlen(longdir) >= 245 && access(longdir, F_OK) == 0, "long dir created", "%zu bytes",
        strlen(longdir));

  test_short_and_long(base, shortdir, longdir);
  test_modes(shortdir, longdir);
  test_other_user(base, shortdir);
  test_no_proc(longdir);
  test_lock_and_watch(base);
  test_lock_take(base);
  test_bind_mount(base);

  check(count_fds() == fds0, "no descriptor leaked overall", "%d before, %d after", fds0,
        count_fds());
  rm_rf(base);
  check(access(base, F_OK) != 0, "temporary directory removed", "%s remains", base);
  free(shortdir);
  return tap_done();
}

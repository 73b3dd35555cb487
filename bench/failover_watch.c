/*
 * bench/failover_watch.c: the timeline of a failover, seen from outside, for
 * the failover part of bench/nginx/run.lua.
 *
 * usage: failover_watch DIR MS
 *
 * Prints "ready", then for MS milliseconds looks every 200 us at who holds
 * DIR/LOCK (F_GETLK: the pid of a process holding a conflicting lock, 0 when
 * none) and at the inode of DIR/level-party.sock (lstat, 0 when absent), and
 * prints a line at the start and at every change:
 *   lock <CLOCK_MONOTONIC ns> <pid>
 *   sock <CLOCK_MONOTONIC ns> <inode>
 * The bench kills the leader right after "ready": the LOCK's holder changes
 * when the kernel has torn the killed process down and a survivor has taken
 * it; the socket's inode when the new leader has put its socket in place.
 * Looking changes nothing: F_GETLK takes no lock, and this process holds
 * none to drop when it closes its descriptor.  Nor does it take CPU from the
 * failover it watches: it runs under SCHED_IDLE, so any other runnable thread
 * goes first (at normal priority, its wakeups every 200 us cost the stall
 * about 1 ms on two vCPUs: docs/BENCHMARKS.md); its readings can then lag
 * while both CPUs are busy.  Exit status 1 on an error.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h" /* bench_now_sec: CLOCK_MONOTONIC, as reopen_leveldb's times */

static long long now_ns(void) { return (long long)(bench_now_sec() * 1e9); }

/* The pid holding a lock on fd's file that a write lock would conflict
 * with, 0 when none, -1 on an error. */
static long lock_holder(int fd) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_GETLK, &fl) != 0) return -1;
  return fl.l_type == F_UNLCK ? 0 : (long)fl.l_pid;
}

int main(int argc, char **argv) {
  char lock_path[4096], sock_path[4096];
  if (argc != 3) {
    fprintf(stderr, "usage: failover_watch DIR MS\n");
    return 2;
  }
  long long until = now_ns() + atoll(argv[2]) * 1000000LL;
  if (snprintf(lock_path, sizeof lock_path, "%s/LOCK", argv[1]) >= (int)sizeof lock_path ||
      snprintf(sock_path, sizeof sock_path, "%s/level-party.sock", argv[1]) >=
          (int)sizeof sock_path) {
    fprintf(stderr, "failover_watch: path too long\n");
    return 1;
  }
  int fd = open(lock_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    perror("failover_watch: open LOCK");
    return 1;
  }
  struct sched_param idle;
  memset(&idle, 0, sizeof idle);
  if (sched_setscheduler(0, SCHED_IDLE, &idle) != 0) {
    perror("failover_watch: SCHED_IDLE");
    return 1;
  }
  long last_pid = -2;
  unsigned long long last_ino = ~0ULL;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    long long t = now_ns();
    long pid = lock_holder(fd);
    struct stat st;
    unsigned long long ino = lstat(sock_path, &st) == 0 ? (unsigned long long)st.st_ino : 0;
    if (pid < 0) {
      perror("failover_watch: F_GETLK");
      return 1;
    }
    if (pid != last_pid) printf("lock %lld %ld\n", t, pid);
    if (ino != last_ino) printf("sock %lld %llu\n", t, ino);
    last_pid = pid;
    last_ino = ino;
    if (t >= until) break;
    usleep(200);
  }
  fflush(stdout);
  return 0;
}

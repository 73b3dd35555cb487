/*
 * party_test.c: the process-wide leads of party.c, from threads of one
 * process (docs/ARCHITECTURE.md, "Threads and ownership").
 *
 * LevelDB's open of a directory with a long log to replay runs without the
 * process's lead_lock, its lead listed busy: meanwhile another thread elects
 * and leads another directory, and the process forks; a third thread that
 * opens the same directory (another owner: another party) waits for that
 * open, since a probe of the LOCK the process is taking would drop it, and
 * then leads through the same lead.  The LOCK stays this process's until the
 * last party of the directory closes.
 */
#include "tap.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];

typedef struct opener {
  const char *dir;
  const void *owner;
  lp_party *p;
  int rc, role;
  lp_err err;
  uint64_t done_ns; /* atomic: 0 until lp_party_open returned */
} opener;

/* lp_party_open as nginx's adaptor calls it (external: the election runs
 * at once, nothing connects). */
static void *open_party(void *arg) {
  opener *o = arg;
  lp_party_opts po;
  lp_party_opts_init(&po);
  po.external = 1;
  po.log = 0;
  po.owner = o->owner;
  o->rc = lp_party_open(o->dir, &po, &o->p, &o->err);
  o->role = o->rc == 0 ? lp_party_role(o->p) : -1;
  __atomic_store_n(&o->done_ns, lp_now_ns(), __ATOMIC_RELEASE);
  return NULL;
}

static uint64_t done_at(opener *o) { return __atomic_load_n(&o->done_ns, __ATOMIC_ACQUIRE); }

/* n values of vsize bytes written to dir's log only (a write buffer larger
 * than all of them, and LevelDB's close leaves its memtable in the log): the
 * next open replays them.  0, or -1 after a diagnostic. */
static int fill_log(const char *dir, int n, size_t vsize) {
  lp_engine_opts eo;
  lp_err err;
  lp_engine *e;
  char key[32], *val = malloc(vsize);
  int rc = 0;
  lp_engine_opts_init(&eo);
  eo.write_buffer_size = (size_t)n * vsize * 2;
  if (val == NULL || (e = lp_engine_open(dir, &eo, &err)) == NULL) {
    printf("# fill_log: %s\n", val ? err.msg : "out of memory");
    free(val);
    return -1;
  }
  for (int i = 0; i < n && rc == 0; i++) {
    snprintf(key, sizeof key, "k%06d", i);
    memset(val, 'a' + i % 26, vsize);
    rc = lp_engine_put(e, S(key), (lp_slice){val, vsize}, 0, &err);
  }
  if (rc != 0) printf("# fill_log: %s\n", err.msg);
  lp_engine_close(e);
  free(val);
  return rc;
}

/* The exit status of a child that runs fn(arg); -1 when fork failed. */
static int in_child(int (*fn)(const char *), const char *arg) {
  int st;
  pid_t k = fork();
  if (k == 0) _exit(fn(arg));
  if (k < 0 || waitpid(k, &st, 0) != k || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

/* 0 when the parent holds dir's LOCK (probed from a child, which holds no
 * lock on it to drop). */
static int parent_holds(const char *dir) { return lp_lock_holder(dir) == getppid() ? 0 : 1; }
static int nothing(const char *dir) {
  (void)dir;
  return 0;
}

static void test_open_outside_the_lock(void) {
  char dir_a[128], dir_b[128], sock_a[160];
  int owner_a, owner_c; /* their addresses name the owners */
  opener a = {0}, b = {0}, c = {0};
  pthread_t ta, tc;
  struct stat st;
  int up = 0;
  snprintf(dir_a, sizeof dir_a, "%s/a", tmpdir);
  snprintf(dir_b, sizeof dir_b, "%s/b", tmpdir);
  snprintf(sock_a, sizeof sock_a, "%s/level-party.sock", dir_a);
  if (!check(fill_log(dir_a, 1024, 16384) == 0, "a directory with 16 MiB in its log", "failed"))
    return;
  a.dir = c.dir = dir_a;
  b.dir = dir_b;
  a.owner = b.owner = &owner_a;
  c.owner = &owner_c;
  if (!check(pthread_create(&ta, NULL, open_party, &a) == 0, "a thread opens it", "failed")) return;
  /* the winner puts its socket in place right before LevelDB's open */
  for (int i = 0; i < tap_ms(20000) && !(up = stat(sock_a, &st) == 0); i++)
    usleep(1000);
  check(up && done_at(&a) == 0, "its election took the LOCK and LevelDB's open runs",
        up ? "the open had ended" : "no socket");
  check(pthread_create(&tc, NULL, open_party, &c) == 0, "another owner's thread opens it too",
        "failed");
  open_party(&b);
  check(b.rc == 0 && b.role == LP_ROLE_LEADER, "another directory's election leads meanwhile",
        "rc %d role %d: %s", b.rc, b.role, b.rc ? b.err.msg : "");
  check(done_at(&a) == 0, "while the slow open still runs",
        "it ended first: another directory waited for it");
  check(done_at(&c) == 0, "the same directory's other party waits for that open", "it returned");
  check(in_child(nothing, NULL) == 0 && done_at(&a) == 0, "and fork() does not wait for it",
        "it ended first");
  pthread_join(ta, NULL);
  pthread_join(tc, NULL);
  check(a.rc == 0 && a.role == LP_ROLE_LEADER, "the slow open leads", "rc %d role %d: %s", a.rc,
        a.role, a.rc ? a.err.msg : "");
  check(c.rc == 0 && c.role == LP_ROLE_LEADER,
        "the same directory's other party leads through its lead", "rc %d role %d: %s", c.rc,
        c.role, c.rc ? c.err.msg : "");
  check(in_child(parent_holds, dir_a) == 0, "the LOCK is this process's", "it is not");
  if (a.rc == 0) lp_party_unref(a.p);
  check(in_child(parent_holds, dir_a) == 0, "and stays so while a party of it is open",
        "it is not");
  if (c.rc == 0) lp_party_unref(c.p);
  if (b.rc == 0) lp_party_unref(b.p);
  check(lp_lock_holder(dir_a) == 0 && stat(sock_a, &st) != 0,
        "the last party's close releases it and removes the socket", "still held or present");
}

int main(void) {
  if (!tap_tmpdir(tmpdir, sizeof tmpdir, "party")) return tap_done();
  test_open_outside_the_lock();
  rm_rf(tmpdir);
  return tap_done();
}

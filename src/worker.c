/*
 * worker.c: the leader's worker thread for long writes.
 *
 * One per leader party, started on the first job.  The Lua thread queues
 * batches; the worker writes them in order, one engine write each, and
 * signals an eventfd per finished job.  The queue is under the lock: the
 * Lua thread links and unlinks jobs, the worker reads a job's b and sync and
 * writes its rc, err and done.  See docs/ARCHITECTURE.md, "Threads and
 * ownership".
 *
 * The worker also keeps the state of the hand-off of the leader's coroutine
 * writes ("The loop never stalls" there): how many jobs are not finished
 * (inflight: the Lua thread adds, the worker subtracts once a job's write
 * returned, release/acquire, so a Lua thread that reads 0 sees every queued
 * write applied) and how long the last job's write took (took_ns: written by
 * the worker while a job is in flight, by the Lua thread only when none is).
 * handoff and handed are the Lua thread's alone.
 */
#include "private.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct lp_job {
  uint64_t token;
  lp_batch *b;
  int sync, done, rc;
  lp_err err;
  struct lp_job *next;
} lp_job;

struct lp_worker {
  lp_engine *engine;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  lp_job *jobs; /* every job not yet taken, oldest first */
  int stop;     /* under lock: run what is queued, then exit */
  int fd;       /* eventfd the worker signals */
  uint64_t next_job;
  pthread_cond_t drained; /* broadcast when inflight falls to 0 */
  unsigned inflight;      /* atomic: jobs submitted and not yet written */
  uint64_t took_ns;       /* atomic: how long the last job's write took */
  uint64_t handed;        /* Lua thread: jobs submitted, ever */
  int handoff;            /* Lua thread: coroutine writes go to the worker */
};

/* The worker: runs queued jobs in order, one engine write each. */
static void *worker_main(void *arg) {
  lp_worker *w = arg;
  pthread_mutex_lock(&w->lock);
  for (;;) {
    lp_job *j;
    for (j = w->jobs; j != NULL && j->done; j = j->next) {
    }
    while (j == NULL && !w->stop) {
      pthread_cond_wait(&w->cond, &w->lock);
      for (j = w->jobs; j != NULL && j->done; j = j->next) {
      }
    }
    if (j == NULL) break; /* stopping, nothing left */
    pthread_mutex_unlock(&w->lock);
    {
      lp_err err;
      uint64_t delay = __atomic_load_n(&lp_handoff.delay_ns, __ATOMIC_RELAXED), t0;
      int rc;
      uint64_t one = 1;
      ssize_t n;
      if (delay > 0) lp_sleep_ns(delay); /* tests: keep the job queued that long */
      t0 = lp_now_ns();
      rc = lp_engine_write(w->engine, j->b, j->sync, &err);
      __atomic_store_n(&w->took_ns, lp_now_ns() - t0, __ATOMIC_RELAXED);
      pthread_mutex_lock(&w->lock);
      j->rc = rc;
      if (rc != 0) j->err = err;
      j->done = 1;
      /* the write is in the engine: a reader of inflight == 0 may go inline */
      if (__atomic_sub_fetch(&w->inflight, 1, __ATOMIC_RELEASE) == 0)
        pthread_cond_broadcast(&w->drained);
      pthread_mutex_unlock(&w->lock);
      n = write(w->fd, &one, sizeof one);
      (void)n;
    }
    pthread_mutex_lock(&w->lock);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

lp_worker *lp_worker_start(lp_engine *e) {
  lp_worker *w = calloc(1, sizeof *w);
  sigset_t all, old;
  int prc;
  if (w == NULL) return NULL;
  w->engine = e;
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0) {
    free(w);
    return NULL;
  }
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  pthread_cond_init(&w->drained, NULL);
  /* the thread takes no signals: they go to the host's own threads (an nginx
   * worker relies on its main thread getting them) */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  prc = pthread_create(&w->thread, NULL, worker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    close(w->fd);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->drained);
    free(w);
    return NULL;
  }
  return w;
}

uint64_t lp_worker_submit(lp_worker *w, lp_batch *b, int sync) {
  lp_job *j = calloc(1, sizeof *j), **tail;
  if (j == NULL) return 0;
  j->token = LP_JOB_TOKEN | ++w->next_job;
  j->b = b;
  j->sync = sync;
  w->handed++;
  pthread_mutex_lock(&w->lock);
  __atomic_add_fetch(&w->inflight, 1, __ATOMIC_RELAXED); /* published by the lock */
  for (tail = &w->jobs; *tail != NULL; tail = &(*tail)->next) {
  }
  *tail = j;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  return j->token;
}

int lp_worker_done(lp_worker *w, uint64_t token) {
  lp_job *j;
  int done = 1;
  pthread_mutex_lock(&w->lock);
  for (j = w->jobs; j != NULL; j = j->next)
    if (j->token == token) {
      done = j->done;
      break;
    }
  pthread_mutex_unlock(&w->lock);
  return done;
}

int lp_worker_take(lp_worker *w, uint64_t token, lp_err *err) {
  lp_job **pj, *j = NULL;
  int rc;
  pthread_mutex_lock(&w->lock);
  for (pj = &w->jobs; *pj != NULL; pj = &(*pj)->next) {
    if ((*pj)->token == token && (*pj)->done) {
      j = *pj;
      *pj = j->next;
      break;
    }
  }
  pthread_mutex_unlock(&w->lock);
  if (j == NULL) return -2;
  rc = j->rc;
  if (rc != 0) *err = j->err;
  lp_batch_free(j->b);
  free(j);
  return rc;
}

int lp_worker_fd(const lp_worker *w) { return w->fd; }

int lp_worker_collect(lp_worker *w) {
  uint64_t n;
  return read(w->fd, &n, sizeof n) == (ssize_t)sizeof n;
}

/* Runs the jobs queued first: close must not lose a write it may already
 * have acknowledged. */
void lp_worker_stop(lp_worker *w) {
  lp_job *j;
  if (w == NULL) return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  while ((j = w->jobs) != NULL) {
    w->jobs = j->next;
    lp_batch_free(j->b);
    free(j);
  }
  close(w->fd);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  pthread_cond_destroy(&w->drained);
  free(w);
}

unsigned lp_worker_inflight(lp_worker *w) {
  return __atomic_load_n(&w->inflight, __ATOMIC_ACQUIRE);
}

void lp_worker_drain(lp_worker *w) {
  if (lp_worker_inflight(w) == 0) return;
  pthread_mutex_lock(&w->lock);
  while (__atomic_load_n(&w->inflight, __ATOMIC_ACQUIRE) != 0)
    pthread_cond_wait(&w->drained, &w->lock);
  pthread_mutex_unlock(&w->lock);
}

/* ---------------------------------------------------------------- hand-off */

lp_handoff_tuning lp_handoff = {
    .slow_ns = 2000000,  /* an inline write this long held the loop: hand off */
    .fast_ns = 1000000,  /* a job at most this long (and no risk): back inline */
    .check_ns = 1000000, /* ask LevelDB about the risk this often per handle */
    .l0 = 8,             /* LevelDB's kL0_SlowdownWritesTrigger: it slows writers */
    .mem_pct = 100,      /* % of write_buffer_size written since a flush ended */
    .delay_ns = 0,       /* tests only: the worker sleeps this long before a job */
};

uint64_t lp_worker_handed(const lp_worker *w) { return w->handed; }

int lp_worker_in_handoff(const lp_worker *w) { return w->handoff; }

/* Entering, took_ns is set past any fast_ns: until a job says otherwise,
 * LevelDB is slow (the worker writes took_ns only while a job is in
 * flight). */
void lp_worker_set_handoff(lp_worker *w, int on) {
  w->handoff = on;
  if (on && __atomic_load_n(&w->inflight, __ATOMIC_ACQUIRE) == 0)
    __atomic_store_n(&w->took_ns, UINT64_MAX, __ATOMIC_RELAXED);
}

uint64_t lp_worker_last_took(const lp_worker *w) {
  return __atomic_load_n(&w->took_ns, __ATOMIC_RELAXED);
}

uint64_t lp_engine_number(lp_engine *e, const char *property) {
  char *v = lp_engine_property(e, property);
  uint64_t n = v != NULL ? strtoull(v, NULL, 10) : 0;
  free(v);
  return n;
}

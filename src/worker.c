/*
 * worker.c: the leader's worker thread for long writes.
 *
 * One per leader party, started on the first job.  The Lua thread queues
 * batches; the worker writes them in order, one engine write each, and
 * signals an eventfd per finished job.  The queue is under the lock: the
 * Lua thread links and unlinks jobs, the worker reads a job's b and sync and
 * writes its rc, err and done.  See docs/ARCHITECTURE.md, "Threads and
 * ownership".
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
      int rc = lp_engine_write(w->engine, j->b, j->sync, &err);
      uint64_t one = 1;
      ssize_t n;
      pthread_mutex_lock(&w->lock);
      j->rc = rc;
      if (rc != 0) j->err = err;
      j->done = 1;
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
  pthread_mutex_lock(&w->lock);
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
  free(w);
}

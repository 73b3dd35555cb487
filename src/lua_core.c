/*
 * levelparty: the Lua binding, module levelparty.core.
 *
 * This is the raw layer under lua/levelparty/init.lua: keys and values are
 * already-encoded strings, options are already validated, and every call says
 * whether it may return instead of blocking (`async`).  The Lua layer decides
 * that (inside a coroutine under a running luv loop) and does the waiting.
 *
 * Results of a call:
 *   - its values (done inline: the leader's own calls, or a blocking follower);
 *   - PENDING, token: a follower request in flight; wait until db:done(token)
 *     (db:pollinfo/db:step drive it), then db:result(token, op);
 *   - YIELD: the caller has held the loop for a whole time slice; let the loop
 *     run once, then make the same call again.
 *
 * Lifetimes: a db userdata holds one of its party's refs.  An iterator
 * userdata keeps its db userdata alive through its user value, and sits in the
 * db's list of open iterators so that db:close() closes it before the party can
 * close the engine under it.  close, __gc and __close are one idempotent path.
 */
#include "private.h"
#include "compat.h"

#include <dlfcn.h>
#include <leveldb/c.h>
#include <limits.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_MT    "levelparty.db"
#define ITER_MT  "levelparty.iterator"
#define CLEAR_MT "levelparty.clearer"

static char pending_tag, yield_tag;
#define PENDING ((void *)&pending_tag)
#define YIELD   ((void *)&yield_tag)

/* The time slice: async leader calls return YIELD once the coroutine that
 * runs them has had the loop for slice_ns.  Per OS thread, like a lua_State. */
static __thread uint64_t slice_start_ns;
static uint64_t slice_ns = 2000000; /* 2 ms */

static int slice_over(void) { return lp_now_ns() - slice_start_ns > slice_ns; }

typedef struct liter liter_t;

typedef struct ldb {
  lp_party *party;     /* NULL once closed */
  lp_buf scratch;      /* encodes get/put/del requests; reused, freed at close */
  liter_t *iters;      /* open iterators of this handle */
  uint64_t timeout_ns; /* per follower request; 0: none */
  uint64_t check_ns;   /* leader: when LevelDB was last asked about stalls */
  uint64_t mem_base;   /* leader: its memory usage after the last flush seen */
  uint64_t mem_prev;   /* leader: its memory usage last seen, + 1; 0: never */
  uint64_t wbs;        /* LevelDB's write_buffer_size (this handle's option) */
  int sync;            /* default for writes */
} ldb_t;

struct liter {
  ldb_t *db; /* valid while open: the user value keeps it alive */
  lp_engine_iter *local;
  lp_citer *remote;
  int keys, values;
  int open;
  int has_err;    /* a failure met after a page's entries: next page */
  unsigned steps; /* direct steps since the last time-slice check */
  lp_err err;
  liter_t *prev, *next;
};

#define PAGE_ENTRIES    256
#define BIG_BATCH_OPS   2000
#define BIG_BATCH_BYTES (256u * 1024u)

typedef struct lclear {
  ldb_t *db;
  lp_range range; /* bounds owned (lp_slice_dup) */
  lp_clear_state st;
  int done;
} lclear_t;

enum { OP_GET, OP_WRITE, OP_GETMANY };

/* ---------------------------------------------------------------- helpers */

static int push_err(lua_State *L, lp_code code, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, lp_code_name(code));
  return 3;
}

static int push_lperr(lua_State *L, const lp_err *e) { return push_err(L, e->code, e->msg); }

static int push_closed(lua_State *L, const char *op) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: the database is closed", op);
  lua_pushstring(L, "ECLOSED");
  return 3;
}

/* Each class's metatable is also in the registry under the address of its key,
 * so that checking `self` is a pointer lookup: luaL_checkudata looks the class
 * name up as a string on every call, which is most of a cheap method's cost. */
static char db_key, liter_key, clear_key;

/* The owner token of this lua_State's parties (lp_party_opts.owner): the
 * address of a userdata kept in the registry under owner_key, made when the
 * module is loaded.  Handles of one state share a party; states on other
 * threads get parties of their own (docs/ARCHITECTURE.md, "Threads and
 * ownership").  Every party of a state is released by its handles' __gc
 * before lua_close frees the token, so a later state that gets the same
 * address finds none of them. */
static char owner_key;

static const void *state_owner(lua_State *L) {
  const void *o;
  lua_pushlightuserdata(L, &owner_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  o = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return o;
}

static void *check_class(lua_State *L, void *key, const char *name) {
  void *p = lua_touserdata(L, 1);
  if (p != NULL && lua_getmetatable(L, 1)) {
    int same;
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return p;
  }
  return luaL_checkudata(L, 1, name); /* raises the usual error */
}

/* A handle used in a child of the process that opened it (any fork) refuses
 * the call: misuse, raised (README, "Fork safety"). */
static void check_owner(lua_State *L, lp_party *p) {
  if (p != NULL && lp_party_forked(p))
    luaL_error(L,
               "levelparty: this handle of %s was opened by process %d and this process (%d) is "
               "a fork of it: a handle never crosses a fork; open the directory again in this "
               "process (in nginx: in init_worker_by_lua* or lazily, never in init_by_lua*)",
               lp_party_path(p), (int)lp_party_pid(p), (int)lp_self_pid());
}

/* Any handle, even one a fork inherited (close, __gc, __tostring). */
static ldb_t *check_db_any(lua_State *L) { return (ldb_t *)check_class(L, &db_key, DB_MT); }

static ldb_t *check_db(lua_State *L) {
  ldb_t *d = check_db_any(L);
  check_owner(L, d->party);
  return d;
}

static lp_slice check_slice(lua_State *L, int i) {
  lp_slice s;
  s.ptr = luaL_checklstring(L, i, &s.len);
  return s;
}

static lp_slice opt_field_slice(lua_State *L, int t, const char *name) {
  lp_slice s = LP_SLICE_NONE;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TSTRING) s.ptr = lua_tolstring(L, -1, &s.len);
  lua_pop(L, 1); /* the table keeps the string alive */
  return s;
}

static int field_bool(lua_State *L, int t, const char *name, int dflt) {
  int v = dflt;
  lua_getfield(L, t, name);
  if (!lua_isnil(L, -1)) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static double field_num(lua_State *L, int t, const char *name, double dflt) {
  double v = dflt;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Reads a validated range table at index t (the strings stay owned by it). */
static void read_range(lua_State *L, int t, lp_range *r) {
  double limit;
  lp_range_init(r);
  if (lua_type(L, t) != LUA_TTABLE) return;
  r->gt = opt_field_slice(L, t, "gt");
  r->gte = opt_field_slice(L, t, "gte");
  r->lt = opt_field_slice(L, t, "lt");
  r->lte = opt_field_slice(L, t, "lte");
  r->reverse = field_bool(L, t, "reverse", 0);
  r->keys = field_bool(L, t, "keys", 1);
  r->values = field_bool(L, t, "values", 1);
  limit = field_num(L, t, "limit", -1);
  r->limit = !(limit >= 0) ? -1 : limit > 9e18 ? INT64_MAX : (int64_t)limit; /* NaN: none */
}

static uint64_t deadline_of(const ldb_t *d) {
  return d->timeout_ns ? lp_now_ns() + d->timeout_ns : 0;
}

/* Ctrl-C during a blocking wait.  lua.c's (and luajit's) SIGINT handler only
 * sets a hook on the main thread, for the interpreter to raise "interrupted!"
 * at its next instruction; it runs when the wait returns.  The party's waits
 * return LP_EINTR whenever a signal handler ran: when the hook changed since
 * the wait began, the call returns "op: interrupted" (EINTR) and the hook
 * fires; any other signal (libuv's SIGCHLD, ...) resumes the wait.  (Lua 5.4
 * keeps a hook per thread: the main thread's is the one to watch; LuaJIT has
 * one for all.) */
typedef struct hookstate {
  lua_Hook hook;
  int mask, count;
} hookstate;

static hookstate hook_of(lua_State *L) {
  hookstate h;
#if LUA_VERSION_NUM >= 502
  lua_State *m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  m = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (m != NULL) L = m;
#endif
  h.hook = lua_gethook(L);
  h.mask = lua_gethookmask(L);
  h.count = lua_gethookcount(L);
  return h;
}

enum { WAIT_TOKEN, WAIT_ITER, WAIT_OPEN };

/* A blocking wait of party p for a request's token, an iterator's entries or
 * the first election: 0, or -1 with err (LP_EINTR: "op: interrupted"). */
static int wait_blocking(lua_State *L, lp_party *p, int what, uint64_t token, lp_citer *it,
                         const char *op, lp_err *err) {
  hookstate before = hook_of(L), now;
  for (;;) {
    int rc = what == WAIT_TOKEN  ? lp_party_wait_token(p, token, err)
             : what == WAIT_ITER ? lp_party_wait_iter(p, it, err)
                                 : lp_party_wait_opened(p, err);
    if (rc == 0) return 0;
    if (err->code != LP_EINTR) return -1;
    now = hook_of(L);
    if (now.hook != before.hook || now.mask != before.mask || now.count != before.count) {
      lp_err_set(err, LP_EINTR, "%s: interrupted", op);
      return -1;
    }
  }
}

/* Splits a remote error text "ECODE: detail" into code and detail; texts
 * without a known code (a Node leader's) become EREMOTE. */
static int push_remote_err(lua_State *L, const char *op, lp_slice text) {
  size_t i = 0;
  lp_code code = LP_OK;
  while (i < text.len && text.ptr[i] >= 'A' && text.ptr[i] <= 'Z')
    i++;
  if (i > 1 && i + 1 < text.len && text.ptr[0] == 'E' && text.ptr[i] == ':' &&
      text.ptr[i + 1] == ' ')
    code = lp_code_from_name(text.ptr, i);
  lua_pushnil(L);
  if (code != LP_OK) {
    lua_pushlstring(L, text.ptr + i + 2, text.len - i - 2);
  } else {
    code = LP_EREMOTE;
    lua_pushfstring(L, "%s: ", op);
    lua_pushlstring(L, text.ptr, text.len);
    lua_concat(L, 2);
  }
  lua_pushstring(L, lp_code_name(code));
  return 3;
}

static int is_notfound(lp_slice text) {
  size_t i;
  for (i = 0; i + 8 <= text.len; i++)
    if (strncasecmp(text.ptr + i, "notfound", 8) == 0) return 1;
  return 0;
}

/* Pushes the outcome of a finished follower request. */
static int push_result(lua_State *L, lp_client *c, uint64_t token, int op, const char *opname) {
  lp_result res;
  lp_response r;
  int n;
  memset(&res, 0, sizeof res);
  if (lp_client_take(c, token, &res) != 0) return push_err(L, LP_EIO, "result: unknown request");
  if (res.code != LP_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", opname, res.msg ? res.msg : lp_code_name(res.code));
    lua_pushstring(L, lp_code_name(res.code));
    lp_result_free(&res);
    return 3;
  }
  if (lp_wire_decode_response((lp_slice){res.payload.ptr, res.payload.len}, &r) != LP_WIRE_OK) {
    lp_result_free(&res);
    return push_err(L, LP_EPROTO, "result: the leader sent a reply that does not decode");
  }
  if (r.error.ptr != NULL && r.error.len > 0) {
    if (op == OP_GET && is_notfound(r.error)) {
      lua_pushnil(L);
      n = 1;
    } else {
      n = push_remote_err(L, opname, r.error);
    }
  } else if (op == OP_GET) {
    if (r.value.ptr != NULL)
      lua_pushlstring(L, r.value.ptr, r.value.len);
    else
      lua_pushliteral(L, "");
    n = 1;
  } else if (op == OP_GETMANY) {
    size_t cur = 0, i = 0;
    lp_slice v;
    lua_createtable(L, (int)r.count, 1);
    while (lp_wire_next_value(&r, &cur, &v)) {
      i++;
      if (v.ptr != NULL) {
        lua_pushlstring(L, v.ptr, v.len);
        lua_rawseti(L, -2, (int)i);
      }
    }
    lua_pushinteger(L, (lua_Integer)i);
    lua_setfield(L, -2, "n");
    n = 1;
  } else {
    lua_pushboolean(L, 1);
    n = 1;
  }
  lp_result_free(&res);
  return n;
}

/* Submits a follower request; returns PENDING, token in async mode while it
 * is in flight, else (blocking mode: after waiting) pushes the result. */
/* rest is copied by the client: the caller keeps (and frees, or reuses) it. */
static int submit(lua_State *L, ldb_t *d, int tag, const lp_buf *rest, int op, const char *opname,
                  int async) {
  lp_err err;
  uint64_t token = lp_party_submit(d->party, tag, (lp_slice){rest->ptr, rest->len}, deadline_of(d));
  if (token == 0) return push_err(L, LP_ENOMEM, "out of memory");
  /* PENDING only while not done (a send that lost the leader with retry off
   * finishes the request at once): the luv driver parks on it unasked */
  if (async && !lp_client_done(lp_party_client(d->party), token)) {
    lua_pushlightuserdata(L, PENDING);
    lua_pushinteger(L, (lua_Integer)token);
    return 2;
  }
  if (!async && wait_blocking(L, d->party, WAIT_TOKEN, token, NULL, opname, &err) != 0) {
    lp_client_forget(lp_party_client(d->party), token);
    return push_lperr(L, &err);
  }
  return push_result(L, lp_party_client(d->party), token, op, opname);
}

static int push_yield(lua_State *L) {
  lua_pushlightuserdata(L, YIELD);
  return 1;
}

/* ---------------------------------------------------------------- module */

/* The Lua layer refuses option values that do not fit; these keep a raw
 * caller of the core clear of undefined conversions all the same. */

/* A count or size option: absent, negative or NaN gives dflt, past max max. */
static size_t field_size(lua_State *L, int t, const char *name, size_t dflt, size_t max) {
  double v = field_num(L, t, name, -1);
  if (!(v >= 0)) return dflt;
  if (v >= (double)max) return max;
  return (size_t)v;
}

/* Seconds from this on (math.huge included) mean no limit. */
#define NO_LIMIT_S  1e9
#define NO_LIMIT_NS (UINT64_C(1) << 62) /* a deadline now + this never comes */

/* A timeout in seconds as ns: 0 (or less, or NaN) gives 0; a positive one is
 * at least 1 ms, never 0; from NO_LIMIT_S on it is `none`. */
static uint64_t seconds_ns(double t, uint64_t none) {
  if (!(t > 0)) return 0;
  if (t >= NO_LIMIT_S) return none;
  if (t < 1e-3) return 1000000;
  return (uint64_t)(t * 1e9);
}

static int open_db(lua_State *L) {
  size_t dirlen;
  const char *dir = luaL_checklstring(L, 1, &dirlen);
  int blocking;
  lp_party_opts o;
  lp_err err;
  lp_party *party;
  ldb_t *d;
  double t;
  luaL_argcheck(L, strlen(dir) == dirlen, 1, "directory path must not contain a NUL byte");
  luaL_checktype(L, 2, LUA_TTABLE);
  blocking = !lua_toboolean(L, 3);
  lp_party_opts_init(&o);
  /* every field the table leaves out keeps what lp_party_opts_init set */
  o.engine.create_if_missing = field_bool(L, 2, "create_if_missing", o.engine.create_if_missing);
  o.engine.error_if_exists = field_bool(L, 2, "error_if_exists", o.engine.error_if_exists);
  o.engine.compression = field_bool(L, 2, "compression", o.engine.compression);
  o.engine.paranoid_checks = field_bool(L, 2, "paranoid_checks", o.engine.paranoid_checks);
  o.engine.cache_size = field_size(L, 2, "cache_size", o.engine.cache_size, SIZE_MAX / 2);
  o.engine.write_buffer_size =
      field_size(L, 2, "write_buffer_size", o.engine.write_buffer_size, SIZE_MAX / 2);
  o.engine.block_size = field_size(L, 2, "block_size", o.engine.block_size, SIZE_MAX / 2);
  o.engine.max_open_files =
      (int)field_size(L, 2, "max_open_files", (size_t)o.engine.max_open_files, INT_MAX);
  o.engine.bloom_bits = (int)field_size(L, 2, "bloom_bits", (size_t)o.engine.bloom_bits, INT_MAX);
  o.server.allow_other_users = field_bool(L, 2, "allow_other_users", o.server.allow_other_users);
  o.server.max_frame = field_size(L, 2, "max_frame", o.server.max_frame, SIZE_MAX / 2);
  o.server.max_total_buffer =
      field_size(L, 2, "max_send_buffer", o.server.max_total_buffer, SIZE_MAX / 2);
  o.client.max_frame = o.server.max_frame;
  o.client.window = (uint32_t)field_size(L, 2, "window", o.client.window, UINT32_MAX);
  o.retry = field_bool(L, 2, "retry", o.retry);
  o.log = field_bool(L, 2, "log", o.log);
  o.lead = field_bool(L, 2, "lead", o.lead);
  o.external = field_bool(L, 2, "external", o.external);
  o.owner = state_owner(L);
  t = field_num(L, 2, "open_timeout", -1); /* seconds; the Lua layer refuses < 0 */
  if (t >= 0) o.open_timeout_ns = seconds_ns(t, NO_LIMIT_NS);
  if (lp_party_open(dir, &o, &party, &err) != 0) return push_lperr(L, &err);
  if (blocking && !lp_party_opened(party) &&
      wait_blocking(L, party, WAIT_OPEN, 0, NULL, "open", &err) != 0) {
    lp_party_unref(party);
    return push_lperr(L, &err);
  }
  d = (ldb_t *)lp_newuserdata(L, sizeof *d);
  memset(d, 0, sizeof *d);
  d->party = party;
  d->timeout_ns = seconds_ns(field_num(L, 2, "timeout", 0), 0);
  d->sync = field_bool(L, 2, "sync", 0);
  d->wbs = o.engine.write_buffer_size > 0 ? o.engine.write_buffer_size : 4u << 20;
  luaL_setmetatable(L, DB_MT);
  return 1;
}

static int slice_begin(lua_State *L) {
  (void)L;
  slice_start_ns = lp_now_ns();
  return 0;
}

static int set_slice(lua_State *L) {
  double ms = luaL_checknumber(L, 1);
  slice_ns = !(ms > 0) ? 0 : ms > 1e9 ? UINT64_C(1) << 62 : (uint64_t)(ms * 1e6);
  return 0;
}

/* core.write_handoff([t]) -> the settings before: tunes the hand-off of a
 * leader's coroutine writes to its worker (lp_handoff): t.slow_ms, t.fast_ms,
 * t.check_ms, t.l0, t.mem_pct, each optional; t.delay_ms (tests) makes the
 * worker sleep that long before each job.  For tests and bench/loopgap.lua. */
static void handoff_ms(lua_State *L, const char *name, uint64_t *ns) {
  double ms;
  lua_getfield(L, 1, name);
  ms = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
  lua_pop(L, 1);
  if (ms >= 0) *ns = ms > 1e9 ? UINT64_C(1) << 62 : (uint64_t)(ms * 1e6);
}

static void handoff_int(lua_State *L, const char *name, int *v) {
  double n;
  lua_getfield(L, 1, name);
  n = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
  lua_pop(L, 1);
  if (n >= 0) *v = n < INT_MAX ? (int)n : INT_MAX;
}

static int write_handoff(lua_State *L) {
  lua_createtable(L, 0, 6);
  lua_pushnumber(L, (lua_Number)lp_handoff.slow_ns / 1e6);
  lua_setfield(L, -2, "slow_ms");
  lua_pushnumber(L, (lua_Number)lp_handoff.fast_ns / 1e6);
  lua_setfield(L, -2, "fast_ms");
  lua_pushnumber(L, (lua_Number)lp_handoff.check_ns / 1e6);
  lua_setfield(L, -2, "check_ms");
  lua_pushinteger(L, lp_handoff.l0);
  lua_setfield(L, -2, "l0");
  lua_pushinteger(L, lp_handoff.mem_pct);
  lua_setfield(L, -2, "mem_pct");
  lua_pushnumber(L, (lua_Number)lp_handoff.delay_ns / 1e6);
  lua_setfield(L, -2, "delay_ms");
  if (lua_istable(L, 1)) {
    handoff_ms(L, "slow_ms", &lp_handoff.slow_ns);
    handoff_ms(L, "fast_ms", &lp_handoff.fast_ns);
    handoff_ms(L, "check_ms", &lp_handoff.check_ns);
    {
      uint64_t delay = lp_handoff.delay_ns;
      handoff_ms(L, "delay_ms", &delay);
      __atomic_store_n(&lp_handoff.delay_ns, delay, __ATOMIC_RELAXED);
    }
    handoff_int(L, "l0", &lp_handoff.l0);
    handoff_int(L, "mem_pct", &lp_handoff.mem_pct);
  }
  return 1;
}

/* ---------------------------------------------------------------- db */

static void liter_release(liter_t *it) {
  ldb_t *d = it->db;
  int forked = d->party != NULL && lp_party_forked(d->party);
  if (!it->open) return;
  it->open = 0;
  /* a fork's copy: LevelDB's iterator and the connection are the parent's */
  if (it->local != NULL && !forked) lp_engine_iter_close(it->local);
  if (it->remote != NULL && d->party != NULL && !forked) {
    lp_client *c = lp_party_client(d->party);
    if (c != NULL) {
      lp_client_iter_close(c, it->remote);
      lp_party_flush(d->party);
    }
  }
  it->local = NULL;
  it->remote = NULL;
  if (it->prev)
    it->prev->next = it->next;
  else
    d->iters = it->next;
  if (it->next) it->next->prev = it->prev;
  it->prev = it->next = NULL;
}

static int db_close(lua_State *L) {
  ldb_t *d = check_db_any(L);
  if (d->party != NULL) {
    while (d->iters != NULL)
      liter_release(d->iters);
    lp_party_unref(d->party);
    d->party = NULL;
  }
  lp_buf_free(&d->scratch);
  lua_pushboolean(L, 1);
  return 1;
}

/* The names db:role() reports (LP_ROLE_*). */
static const char *role_name(int role) {
  switch (role) {
    case LP_ROLE_LEADER: return "leader";
    case LP_ROLE_FOLLOWER: return "follower";
    default: return "closed";
  }
}

static int db_role(lua_State *L) {
  ldb_t *d = check_db(L);
  lua_pushstring(L, role_name(d->party ? lp_party_role(d->party) : LP_ROLE_CLOSED));
  return 1;
}

static int db_role_change(lua_State *L) {
  ldb_t *d = check_db(L);
  int role = d->party ? lp_party_take_role_change(d->party) : -1;
  if (role < 0) return 0;
  lua_pushstring(L, role_name(role));
  return 1;
}

/* db:forked() -> true in a child of the process that opened the handle */
static int db_forked(lua_State *L) {
  ldb_t *d = check_db_any(L);
  lua_pushboolean(L, d->party != NULL && lp_party_forked(d->party));
  return 1;
}

static int db_opened(lua_State *L) {
  ldb_t *d = check_db(L);
  lua_pushboolean(L, d->party != NULL && lp_party_opened(d->party));
  return 1;
}

static int db_party(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party == NULL) return 0;
  lua_pushlightuserdata(L, d->party);
  return 1;
}

static int db_path(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party == NULL) return 0;
  lua_pushstring(L, lp_party_path(d->party));
  return 1;
}

/* db:step() -> progress counter | nil, msg, code (the first election failed) */
static int db_step(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_err err;
  if (d->party == NULL) return push_closed(L, "open");
  if (lp_party_step(d->party, &err) != 0) return push_lperr(L, &err);
  lua_pushnumber(L, (lua_Number)lp_party_progress(d->party));
  return 1;
}

/* db:pollinfo() -> fd (-1 none; poll it for reading), timeout_ms (-1 none) */
static int db_pollinfo(lua_State *L) {
  ldb_t *d = check_db(L);
  int fd = -1, tmo = -1;
  if (d->party != NULL) lp_party_pollinfo(d->party, &fd, &tmo);
  lua_pushinteger(L, fd);
  lua_pushinteger(L, tmo);
  return 2;
}

static int db_done(lua_State *L) {
  ldb_t *d = check_db(L);
  uint64_t token = (uint64_t)luaL_checkinteger(L, 2);
  lp_client *c;
  if (token & LP_JOB_TOKEN) {
    lua_pushboolean(L, d->party == NULL || lp_party_job_done(d->party, token));
    return 1;
  }
  c = d->party ? lp_party_client(d->party) : NULL;
  lua_pushboolean(L, c == NULL || lp_client_done(c, token));
  return 1;
}

/* db:finished(t) -> n: stores in t[1..n] the tokens of the requests that
 * finished since the last call (while the luv driver polls: see
 * lp_client_log_finished), or returns -1 when the log lost some: the driver
 * then asks after every token it waits for.  Worker jobs are not logged. */
static int db_finished(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_client *c = d->party ? lp_party_client(d->party) : NULL;
  const uint64_t *tokens;
  size_t n = 0, i;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (c != NULL && lp_client_finished(c, &tokens, &n) != 0) {
    lua_pushinteger(L, -1);
    return 1;
  }
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)tokens[i]);
    lua_rawseti(L, 2, (int)i + 1);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int db_result(lua_State *L) {
  ldb_t *d = check_db(L);
  uint64_t token = (uint64_t)luaL_checkinteger(L, 2);
  const char *opname = luaL_checkstring(L, 3);
  int op = strcmp(opname, "get") == 0        ? OP_GET
           : strcmp(opname, "get_many") == 0 ? OP_GETMANY
                                             : OP_WRITE;
  if (token & LP_JOB_TOKEN) {
    lp_err err;
    int rc;
    if (d->party == NULL) return push_closed(L, opname);
    rc = lp_party_job_take(d->party, token, &err);
    if (rc == -2) return push_err(L, LP_EIO, "result: unknown request");
    if (rc != 0) return push_lperr(L, &err);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (d->party == NULL || lp_party_ensure_client(d->party) == NULL) return push_closed(L, opname);
  return push_result(L, lp_party_client(d->party), token, op, opname);
}

/* db:set_polled(bool): the luv driver polls this party (db:pollinfo's fd) */
static int db_set_polled(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party != NULL) lp_party_set_polled(d->party, lua_toboolean(L, 2));
  return 0;
}

static int db_flush(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party != NULL) lp_party_flush(d->party);
  return 0;
}

/* db:get(async, key) */
static int db_get(lua_State *L) {
  ldb_t *d = check_db(L);
  int async = lua_toboolean(L, 2);
  lp_slice key = check_slice(L, 3);
  lp_engine *e;
  if (d->party == NULL) return push_closed(L, "get");
  e = lp_party_engine(d->party);
  if (e != NULL) {
    char *v;
    size_t vl;
    lp_err err;
    int r;
    if (async && slice_over()) return push_yield(L);
    r = lp_engine_get(e, key, &v, &vl, &err);
    if (r == 1) {
      lua_pushlstring(L, v, vl);
      free(v);
      return 1;
    }
    if (r == 0) {
      lua_pushnil(L);
      return 1;
    }
    return push_lperr(L, &err);
  }
  d->scratch.len = 0;
  if (lp_wire_rest_key(&d->scratch, key) != 0) return push_err(L, LP_ENOMEM, "get: out of memory");
  return submit(L, d, LP_REQ_GET, &d->scratch, OP_GET, "get", async);
}

/* ------------------------------------------------- the leader's own writes
 *
 * A leader's put, del and batch run LevelDB inline, on this thread, unless
 * they come from a coroutine (async) while LevelDB is slowing writers down:
 * then they go to the party's worker and the coroutine waits by yielding
 * (lp_handoff in private.h; docs/ARCHITECTURE.md, "The loop never stalls").
 * Order: a write never overtakes a job in flight.  A coroutine's write goes
 * behind the jobs (handoff_now is 1 while any is in flight); a blocking
 * write waits for them first (inline_after_jobs).  A write is acknowledged
 * only once it is in the engine, so a read after it sees it. */

/* 1 when LevelDB makes writers wait, or is about to: level 0 has l0 files
 * or more (LevelDB sleeps 1 ms in each write from 8 and stops writes at 12),
 * or a memtable is being flushed while the next one fills (once that one is
 * full, the write that finds it so waits for the flush: the 100 ms to 1 s
 * stalls bench/loopgap.lua shows).  The second is read off LevelDB's
 * approximate memory usage (block cache + memtables): it drops by about a
 * write buffer when a flush ends.  mem_pct (100) of a write buffer more than
 * after the last drop, the memtable, which held less than a buffer then, has
 * been switched since: a flush is pending and the next memtable fills, which
 * stalls the write that finds it full before the flush ends (the usage
 * stands near two buffers then).  Less than 100 hands off writes while no
 * flush is pending, each paying two wake-ups for nothing: at 75, a
 * coroutine's flat-out puts ran at 0.33x raw LevelDB, at 100 0.6x (make
 * bench).  A block cache that grows
 * reads as risk too until the next flush ends: writes go to the worker
 * meanwhile, slower, never wrong. */
static int write_risky(ldb_t *d, lp_engine *e) {
  uint64_t u = lp_engine_number(e, "leveldb.approximate-memory-usage");
  if (d->mem_prev == 0 || u + d->wbs / 2 < d->mem_prev || u < d->mem_base) d->mem_base = u;
  d->mem_prev = u + 1; /* never 0 once seen */
  if (u - d->mem_base >= d->wbs / 100 * (uint64_t)lp_handoff.mem_pct) return 1;
  return lp_engine_number(e, "leveldb.num-files-at-level0") >= (uint64_t)lp_handoff.l0;
}

/* 1: this coroutine write (at time now) goes to the worker: jobs are in
 * flight (it goes behind them), or hand-off mode holds (it ends once the
 * queue drained after a job that took at most fast_ns, with no risk left),
 * or LevelDB is at risk (asked at most every check_ns per handle). */
static int handoff_now(ldb_t *d, lp_engine *e, uint64_t now) {
  lp_worker *w = lp_party_worker(d->party, 0);
  if (w != NULL) {
    if (lp_worker_inflight(w) != 0) return 1;
    if (lp_worker_in_handoff(w)) {
      if (lp_worker_last_took(w) > lp_handoff.fast_ns || write_risky(d, e)) return 1;
      lp_worker_set_handoff(w, 0);
      d->check_ns = now;
      return 0;
    }
  }
  if (now - d->check_ns < lp_handoff.check_ns) return 0;
  d->check_ns = now;
  if (!write_risky(d, e)) return 0;
  w = lp_party_worker(d->party, 1);
  if (w == NULL) return 0; /* no thread: inline, as before */
  lp_worker_set_handoff(w, 1);
  return 1;
}

/* After an inline coroutine write that began at t0: one that took slow_ns
 * or more held the loop that long (a stall nothing foretold, or the disk),
 * so the next ones go to the worker. */
static void timed_inline(ldb_t *d, uint64_t t0) {
  lp_worker *w;
  if (lp_now_ns() - t0 < lp_handoff.slow_ns) return;
  if ((w = lp_party_worker(d->party, 1)) != NULL) lp_worker_set_handoff(w, 1);
}

/* Before a blocking write: the jobs in flight go first. */
static void inline_after_jobs(ldb_t *d) {
  lp_worker *w = lp_party_worker(d->party, 0);
  if (w != NULL) lp_worker_drain(w);
}

/* Hands batch b to the worker: pushes PENDING, token and returns 2, or
 * returns 0 with b still the caller's (no worker: write it inline). */
static int push_job(lua_State *L, ldb_t *d, lp_batch *b, int sync) {
  uint64_t token = lp_party_write_job(d->party, b, sync);
  if (token == 0) return 0;
  lua_pushlightuserdata(L, PENDING);
  lua_pushinteger(L, (lua_Integer)token);
  return 2;
}

/* A leader's own put (value present) or del (value.ptr NULL) of one key:
 * inline on this thread; from a coroutine (async) it first yields when the
 * time slice is over, and goes to the worker while LevelDB stalls writers
 * (handoff_now: docs/ARCHITECTURE.md, "The loop never stalls"). */
static int leader_write(lua_State *L, ldb_t *d, lp_engine *e, int async, lp_slice key,
                        lp_slice value, int sync) {
  lp_err err;
  uint64_t now = 0; /* async: when the write began (one clock read for both) */
  int r;
  if (!async)
    inline_after_jobs(d);
  else if ((now = lp_now_ns()) - slice_start_ns > slice_ns)
    return push_yield(L);
  else if (handoff_now(d, e, now)) {
    lp_batch *b = lp_batch_new();
    if (b == NULL)
      return push_err(L, LP_ENOMEM,
                      value.ptr != NULL ? "put: out of memory" : "del: out of memory");
    if (value.ptr != NULL)
      lp_batch_put(b, key, value);
    else
      lp_batch_del(b, key);
    r = push_job(L, d, b, sync);
    if (r != 0) return r;
    lp_batch_free(b);
    inline_after_jobs(d);
  }
  r = value.ptr != NULL ? lp_engine_put(e, key, value, sync, &err)
                        : lp_engine_del(e, key, sync, &err);
  if (async) timed_inline(d, now);
  if (r != 0) return push_lperr(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:put(async, key, value, sync) */
static int db_put(lua_State *L) {
  ldb_t *d = check_db(L);
  int async = lua_toboolean(L, 2);
  lp_slice key = check_slice(L, 3), value = check_slice(L, 4);
  int sync = lua_isnil(L, 5) ? d->sync : lua_toboolean(L, 5);
  lp_engine *e;
  if (d->party == NULL) return push_closed(L, "put");
  e = lp_party_engine(d->party);
  if (e != NULL) return leader_write(L, d, e, async, key, value, sync);
  d->scratch.len = 0;
  if (lp_wire_rest_put(&d->scratch, key, value) != 0 || (sync && lp_wire_rest_sync(&d->scratch)))
    return push_err(L, LP_ENOMEM, "put: out of memory");
  return submit(L, d, LP_REQ_PUT, &d->scratch, OP_WRITE, "put", async);
}

/* db:del(async, key, sync) */
static int db_del(lua_State *L) {
  ldb_t *d = check_db(L);
  int async = lua_toboolean(L, 2);
  lp_slice key = check_slice(L, 3);
  int sync = lua_isnil(L, 4) ? d->sync : lua_toboolean(L, 4);
  lp_engine *e;
  if (d->party == NULL) return push_closed(L, "del");
  e = lp_party_engine(d->party);
  if (e != NULL) return leader_write(L, d, e, async, key, LP_SLICE_NONE, sync);
  d->scratch.len = 0;
  if (lp_wire_rest_key(&d->scratch, key) != 0 || (sync && lp_wire_rest_sync(&d->scratch)))
    return push_err(L, LP_ENOMEM, "del: out of memory");
  return submit(L, d, LP_REQ_DEL, &d->scratch, OP_WRITE, "del", async);
}

/* db_batch keeps these strings at fixed stack slots, so reading an op costs
 * no C-string lookups: the names of an op's fields and its two types. */
enum { OPS_ARG = 3, S_TYPE = 6, S_KEY, S_VALUE, S_PUT, S_DEL };

static void push_op_strings(lua_State *L) {
  lua_settop(L, S_TYPE - 1);
  lua_pushliteral(L, "type");
  lua_pushliteral(L, "key");
  lua_pushliteral(L, "value");
  lua_pushliteral(L, "put");
  lua_pushliteral(L, "del");
}

/* Pushes the field named at stack slot name of the op table at absolute
 * index op, and points *s at it when it is a string (or a number when
 * numbers_ok).  Returns 0, or -1 for any other type. */
static int op_bytes(lua_State *L, int op, int name, int numbers_ok, lp_slice *s) {
  int t;
  lua_pushvalue(L, name);
  lua_gettable(L, op);
  t = lua_type(L, -1);
  if (t != LUA_TSTRING && !(numbers_ok && t == LUA_TNUMBER)) return -1;
  s->ptr = lua_tolstring(L, -1, &s->len);
  return 0;
}

/* Reads operation i of the ops table (argument OPS_ARG): leaves the stack as
 * it was, fills *is_put, *k, *v.  numbers_ok: the key encoding turns numbers
 * into strings (utf8).  Returns NULL, or the reason the operation is misuse.
 * String fields stay alive in the op table; a number converted to a
 * string lives only in a popped slot, so callers copy k and v before the next
 * call that can allocate (and so collect). */
static const char *read_op(lua_State *L, size_t i, int numbers_ok, int *is_put, lp_slice *k,
                           lp_slice *v) {
  int top = lua_gettop(L), op = top + 1;
  const char *why = NULL;
  v->ptr = NULL;
  v->len = 0;
  lua_rawgeti(L, OPS_ARG, (int)i);
  if (!lua_istable(L, op)) {
    why = "table expected";
  } else {
    lua_pushvalue(L, S_TYPE);
    lua_gettable(L, op);
    *is_put = lua_rawequal(L, -1, S_PUT);
    if (!*is_put && !lua_rawequal(L, -1, S_DEL))
      why = "type must be \"put\" or \"del\"";
    else if (op_bytes(L, op, S_KEY, numbers_ok, k) != 0)
      why = "key must be a string";
    else if (k->len == 0)
      why = "key must not be empty";
    else if (*is_put && op_bytes(L, op, S_VALUE, numbers_ok, v) != 0)
      why = "value must be a string";
  }
  lua_settop(L, top);
  return why;
}

static int batch_misuse(lua_State *L, size_t i, const char *why) {
  lua_pushboolean(L, 0);
  lua_pushfstring(L, "batch: bad operation #%d (%s)", (int)i, why);
  return 2;
}

/* Encodes the n operations of the ops table (argument OPS_ARG, after
 * push_op_strings) into rest: 0, or the number of results pushed (misuse as
 * false, msg; or an error). */
static int encode_batch(lua_State *L, size_t n, int numbers_ok, lp_buf *rest) {
  size_t i;
  for (i = 1; i <= n; i++) {
    lp_slice k, v;
    int is_put;
    const char *why = read_op(L, i, numbers_ok, &is_put, &k, &v);
    if (why != NULL) return batch_misuse(L, i, why);
    if (lp_wire_rest_batch_op(rest, is_put ? LP_OP_PUT : LP_OP_DEL, k, v) != 0)
      return push_err(L, LP_ENOMEM, "batch: out of memory");
  }
  return 0;
}

/* Encodes the keys of the table at index t into a GETMANY rest: 0, or raises
 * (a key that is not a string), or pushes an error and returns its count. */
static int encode_getmany(lua_State *L, int t, lp_buf *rest) {
  size_t n = lua_rawlen(L, t), i;
  for (i = 1; i <= n; i++) {
    lp_slice k;
    lua_rawgeti(L, t, (int)i);
    k.ptr = lua_tolstring(L, -1, &k.len);
    if (k.ptr == NULL) {
      lp_buf_free(rest);
      return luaL_error(L, "get_many: key %d is not a string", (int)i);
    }
    if (lp_wire_rest_getmany_key(rest, k) != 0)
      return push_err(L, LP_ENOMEM, "get_many: out of memory");
    lua_pop(L, 1);
  }
  return 0;
}

/* db:batch(async, ops, sync, numbers_ok): ops is an array of {type, key,
 * value} with string keys and values (or numbers when numbers_ok); type "put"
 * or "del".  Misuse returns false, msg (the Lua layer raises it at the
 * caller's line). */
static int db_batch(lua_State *L) {
  ldb_t *d = check_db(L);
  int sync, async, numbers_ok;
  size_t n, i;
  lp_engine *e;
  async = lua_toboolean(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  sync = lua_isnil(L, 4) ? d->sync : lua_toboolean(L, 4);
  numbers_ok = lua_toboolean(L, 5);
  if (d->party == NULL) return push_closed(L, "batch");
  n = lua_rawlen(L, OPS_ARG);
  push_op_strings(L);
  e = lp_party_engine(d->party);
  if (e != NULL) {
    lp_batch *b;
    lp_err err;
    int r;
    if (async && slice_over()) return push_yield(L);
    b = lp_batch_new();
    if (b == NULL) return push_err(L, LP_ENOMEM, "batch: out of memory");
    for (i = 1; i <= n; i++) {
      lp_slice k, v;
      int is_put;
      const char *why = read_op(L, i, numbers_ok, &is_put, &k, &v);
      if (why != NULL) {
        lp_batch_free(b);
        return batch_misuse(L, i, why);
      }
      if (is_put)
        lp_batch_put(b, k, v);
      else
        lp_batch_del(b, k);
    }
    /* A batch that takes LevelDB about a time slice or more goes to the
     * party's worker when the caller can wait by yielding, and so does any
     * while the hand-off says so. */
    if (!async)
      inline_after_jobs(d);
    else if (lp_batch_count(b) >= BIG_BATCH_OPS || lp_batch_bytes(b) >= BIG_BATCH_BYTES ||
             handoff_now(d, e, lp_now_ns())) {
      r = push_job(L, d, b, sync);
      if (r != 0) return r;
      inline_after_jobs(d);
    }
    {
      uint64_t t0 = async ? lp_now_ns() : 0;
      r = lp_engine_write(e, b, sync, &err);
      if (async) timed_inline(d, t0);
    }
    lp_batch_free(b);
    if (r != 0) return push_lperr(L, &err);
    lua_pushboolean(L, 1);
    return 1;
  } else {
    lp_buf rest = {NULL, 0, 0};
    int nres = encode_batch(L, n, numbers_ok, &rest);
    if (nres == 0 && sync && lp_wire_rest_sync(&rest) != 0)
      nres = push_err(L, LP_ENOMEM, "batch: out of memory");
    if (nres == 0) nres = submit(L, d, LP_REQ_BATCH, &rest, OP_WRITE, "batch", async);
    lp_buf_free(&rest);
    return nres;
  }
}

/* db:get_many(async, keys) -> array with n */
static int db_get_many(lua_State *L) {
  ldb_t *d = check_db(L);
  int async;
  size_t n, i;
  lp_engine *e;
  async = lua_toboolean(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (d->party == NULL) return push_closed(L, "get_many");
  n = lua_rawlen(L, 3);
  e = lp_party_engine(d->party);
  if (e != NULL) {
    if (async && slice_over()) return push_yield(L);
    lua_createtable(L, (int)n, 1);
    for (i = 1; i <= n; i++) {
      lp_slice k;
      char *v;
      size_t vl;
      lp_err err;
      int r;
      lua_rawgeti(L, 3, (int)i);
      k.ptr = lua_tolstring(L, -1, &k.len);
      if (k.ptr == NULL) return luaL_error(L, "get_many: key %d is not a string", (int)i);
      r = lp_engine_get(e, k, &v, &vl, &err);
      lua_pop(L, 1);
      if (r < 0) return push_lperr(L, &err);
      if (r == 1) {
        lua_pushlstring(L, v, vl);
        free(v);
        lua_rawseti(L, -2, (int)i);
      }
    }
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "n");
    return 1;
  } else {
    lp_buf rest = {NULL, 0, 0};
    int nres = encode_getmany(L, 3, &rest);
    if (nres == 0) nres = submit(L, d, LP_REQ_GETMANY, &rest, OP_GETMANY, "get_many", async);
    lp_buf_free(&rest);
    return nres;
  }
}

/* db:clear(async, range, sync): follower only (a request); the leader uses
 * db:clear_begin(range) and steps it. */
static int db_clear(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_range r;
  lp_buf rest = {NULL, 0, 0};
  int async = lua_toboolean(L, 2);
  int sync = lua_isnoneornil(L, 4) ? d->sync : lua_toboolean(L, 4);
  if (d->party == NULL) return push_closed(L, "clear");
  read_range(L, 3, &r);
  if (lp_wire_rest_clear(&rest, &r) != 0 || (sync && lp_wire_rest_sync(&rest) != 0)) {
    lp_buf_free(&rest);
    return push_err(L, LP_ENOMEM, "clear: out of memory");
  }
  {
    int n = submit(L, d, LP_REQ_CLEAR, &rest, OP_WRITE, "clear", async);
    lp_buf_free(&rest);
    return n;
  }
}

static int db_is_leader(lua_State *L) {
  ldb_t *d = check_db(L);
  lua_pushboolean(L, d->party != NULL && lp_party_engine(d->party) != NULL);
  return 1;
}

/* db:property(name) -> LevelDB's property | nil (unknown name, or not the
 * leader: followers have no engine, and the protocol no request for it) */
static int db_property(lua_State *L) {
  ldb_t *d = check_db(L);
  const char *name = luaL_checkstring(L, 2);
  lp_engine *e = d->party ? lp_party_engine(d->party) : NULL;
  char *v = e ? lp_engine_property(e, name) : NULL;
  if (v == NULL) return 0;
  lua_pushstring(L, v);
  free(v);
  return 1;
}

/* db:approximate_size([start [, limit]]) -> bytes | nil (not the leader) |
 * nil, msg, code */
static int db_approximate_size(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_slice start = {"", 0}, limit = LP_SLICE_NONE;
  lp_engine *e = d->party ? lp_party_engine(d->party) : NULL;
  uint64_t size;
  if (!lua_isnoneornil(L, 2)) start = check_slice(L, 2);
  if (!lua_isnoneornil(L, 3)) limit = check_slice(L, 3);
  if (e == NULL) return 0;
  if (lp_engine_approximate_size(e, start, limit, &size) != 0)
    return push_err(L, LP_ENOMEM, "approximate_size: out of memory");
  lua_pushinteger(L, (lua_Integer)size);
  return 1;
}

/* db:leader_pid() -> pid of the process that holds LevelDB's LOCK (this one
 * when leader), 0 when nobody does, -1 when it cannot be told (a holder in
 * another pid namespace) | nil when closed */
static int db_leader_pid(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party == NULL) return 0;
  /* Never probe a LOCK this process holds, through this party or another
   * state's: closing the probe's descriptor would drop our own lock
   * (ARCHITECTURE.md, "The election"); lp_party_lock_holder knows. */
  lua_pushinteger(L, (lua_Integer)lp_party_lock_holder(d->party));
  return 1;
}

/* db:handed() -> how many writes this party's leader has handed to its
 * worker thread (0: none, or not the leader) */
static int db_handed(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_worker *w = d->party != NULL ? lp_party_worker(d->party, 0) : NULL;
  lua_pushinteger(L, w != NULL ? (lua_Integer)lp_worker_handed(w) : 0);
  return 1;
}

/* ---------------------------------------------------------------- clear */

static lclear_t *check_clear_any(lua_State *L) {
  return (lclear_t *)check_class(L, &clear_key, CLEAR_MT);
}

static lclear_t *check_clear(lua_State *L) {
  lclear_t *c = check_clear_any(L);
  if (!c->done) check_owner(L, c->db->party);
  return c;
}

static void clear_release(lclear_t *c) {
  lp_slice_free(&c->range.gt);
  lp_slice_free(&c->range.gte);
  lp_slice_free(&c->range.lt);
  lp_slice_free(&c->range.lte);
  lp_clear_state_free(&c->st);
  c->done = 1;
}

static int db_clear_begin(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_range r;
  lclear_t *c;
  if (d->party == NULL) return push_closed(L, "clear");
  read_range(L, 2, &r);
  c = (lclear_t *)lp_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  c->db = d;
  c->range = r;
  c->range.gt = c->range.gte = c->range.lt = c->range.lte = LP_SLICE_NONE;
  luaL_setmetatable(L, CLEAR_MT);
  if (lp_slice_dup(r.gt, &c->range.gt) || lp_slice_dup(r.gte, &c->range.gte) ||
      lp_slice_dup(r.lt, &c->range.lt) || lp_slice_dup(r.lte, &c->range.lte)) {
    clear_release(c);
    return push_err(L, LP_ENOMEM, "clear: out of memory");
  }
  lua_newtable(L); /* keep the db alive while the clearer lives */
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lp_setuservalue(L, -2);
  return 1;
}

/* c:step(async, sync) -> true (done) | YIELD | nil, msg, code; sync nil:
 * the handle's */
static int clear_step(lua_State *L) {
  lclear_t *c = check_clear(L);
  int async = lua_toboolean(L, 2);
  int sync = lua_isnoneornil(L, 3) ? c->db->sync : lua_toboolean(L, 3);
  lp_engine *e;
  lp_err err;
  if (c->done) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (c->db->party == NULL || (e = lp_party_engine(c->db->party)) == NULL) {
    clear_release(c);
    return push_closed(L, "clear");
  }
  inline_after_jobs(c->db); /* its deletes go after the writes in flight */
  for (;;) {
    int r = lp_engine_clear_step(e, &c->range, &c->st, LP_CLEAR_STEP, sync, &err);
    if (r < 0) {
      clear_release(c);
      return push_lperr(L, &err);
    }
    if (r == 0) {
      clear_release(c);
      lua_pushboolean(L, 1);
      return 1;
    }
    if (async && slice_over()) return push_yield(L);
  }
}

static int clear_gc(lua_State *L) {
  lclear_t *c = check_clear_any(L);
  if (!c->done) clear_release(c);
  return 0;
}

/* ---------------------------------------------------------------- iterators */

static liter_t *check_iter_any(lua_State *L) {
  return (liter_t *)check_class(L, &liter_key, ITER_MT);
}

static liter_t *check_iter(lua_State *L) {
  liter_t *it = check_iter_any(L);
  check_owner(L, it->db->party);
  return it;
}

/* db:iter(range) -> iterator | nil, msg, code */
static int db_iter(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_range r;
  liter_t *it;
  lp_engine *e;
  lp_err err;
  if (d->party == NULL) return push_closed(L, "iter");
  read_range(L, 2, &r);
  it = (liter_t *)lp_newuserdata(L, sizeof *it);
  memset(it, 0, sizeof *it);
  it->db = d;
  it->keys = r.keys;
  it->values = r.values;
  luaL_setmetatable(L, ITER_MT);
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lp_setuservalue(L, -2);
  e = lp_party_engine(d->party);
  if (e != NULL) {
    it->local = lp_engine_iter_open(e, &r, &err);
    if (it->local == NULL) return push_lperr(L, &err);
  } else {
    lp_client *c = lp_party_ensure_client(d->party);
    if (c == NULL || (it->remote = lp_client_iter_open(c, &r)) == NULL)
      return push_err(L, LP_ENOMEM, "iter: out of memory");
    lp_party_flush(d->party);
  }
  it->open = 1;
  it->next = d->iters;
  if (d->iters) d->iters->prev = it;
  d->iters = it;
  return 1;
}

/* Stores one entry in the page table (argument 3) after slot: the sides the
 * caller asked for, or `true` when neither.  Returns the last slot used. */
static int page_put(lua_State *L, const liter_t *it, lp_slice k, lp_slice v, int slot) {
  if (it->keys) {
    lua_pushlstring(L, k.ptr ? k.ptr : "", k.len);
    lua_rawseti(L, 3, ++slot);
  }
  if (it->values) {
    lua_pushlstring(L, v.ptr ? v.ptr : "", v.len);
    lua_rawseti(L, 3, ++slot);
  }
  if (!it->keys && !it->values) {
    lua_pushboolean(L, 1);
    lua_rawseti(L, 3, ++slot);
  }
  return slot;
}

/* A remote iterator has nothing buffered.  Async: sets its deadline and
 * returns 1 (the caller returns PENDING and the driver waits for it:ready()).
 * Blocking: waits for entries (or the end) and returns 0, or -1 with err. */
static int remote_wait(lua_State *L, liter_t *it, int async, lp_err *err) {
  lp_party *p = it->db->party;
  lp_client_iter_wait_deadline(lp_party_client(p), it->remote, deadline_of(it->db));
  if (async) return 1;
  return wait_blocking(L, p, WAIT_ITER, 0, it->remote, "iterator", err) != 0 ? -1 : 0;
}

/* it:page(async, t) -> n | PENDING | YIELD | nil, msg, code
 * Fills t[1..] with up to PAGE_ENTRIES entries (k, v, k, v... or one side per
 * entry when the caller asked for one; `true` when neither) and returns how
 * many entries; 0 at the end.  One call per page keeps the per-entry cost of
 * crossing into C and of deciding how to wait off the iteration. */
static int liter_page(lua_State *L) {
  liter_t *it = check_iter(L);
  int async = lua_toboolean(L, 2);
  int n = 0, slot = 0, r = 1;
  lp_slice k, v;
  lp_err err;
  luaL_checktype(L, 3, LUA_TTABLE);
  if (it->has_err) {
    it->has_err = 0;
    return push_lperr(L, &it->err);
  }
  if (!it->open) {
    if (it->db->party == NULL) return push_closed(L, "iterator");
    lua_pushinteger(L, 0);
    return 1;
  }
  if (it->local != NULL) {
    if (async && slice_over()) return push_yield(L);
    while (n < PAGE_ENTRIES && (r = lp_engine_iter_next(it->local, &k, &v, &err)) == 1) {
      slot = page_put(L, it, k, v, slot);
      n++;
    }
  } else {
    lp_party *p = it->db->party;
    lp_client *c = lp_party_client(p);
    for (;;) {
      while (n < PAGE_ENTRIES && (r = lp_client_iter_next(c, it->remote, &k, &v, &err)) == 1) {
        slot = page_put(L, it, k, v, slot);
        n++;
      }
      if (lp_client_out(c)->len > 0) lp_party_flush(p);
      if (r != 2 || n > 0) break;
      r = remote_wait(L, it, async, &err);
      if (r > 0) {
        lua_pushlightuserdata(L, PENDING);
        return 1;
      }
      if (r < 0) break;
    }
  }
  /* A full page, or what was buffered, or the last entries: the iterator
   * ends at the next call, so that a seek meanwhile may still move it. */
  if (r == 1 || r == 2 || (r == 0 && n > 0)) {
    lua_pushinteger(L, n);
    return 1;
  }
  liter_release(it);
  if (r < 0) {
    if (n == 0) return push_lperr(L, &err);
    it->has_err = 1;
    it->err = err;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* Advances a local iterator: pushes key and value and returns 1; otherwise
 * releases the iterator and returns 0 at the end, -1 on failure (err). */
static int local_next(lua_State *L, liter_t *it, lp_err *err) {
  lp_slice k, v;
  int r = lp_engine_iter_next(it->local, &k, &v, err);
  if (r == 1) {
    lua_pushlstring(L, k.ptr ? k.ptr : "", k.len);
    lua_pushlstring(L, v.ptr ? v.ptr : "", v.len);
    return 1;
  }
  liter_release(it);
  return r;
}

/* Advances a remote iterator over what is buffered: pushes key and value and
 * returns 1; 2 when nothing is buffered yet (the caller waits); otherwise
 * releases the iterator and returns 0 at the end, -1 on failure (err).  The
 * window acks that consuming entries queues go out at once. */
static int remote_next(lua_State *L, liter_t *it, lp_err *err) {
  lp_party *p = it->db->party;
  lp_client *c = lp_party_client(p);
  lp_slice k, v;
  int r = lp_client_iter_next(c, it->remote, &k, &v, err);
  if (r == 1) {
    lua_pushlstring(L, k.ptr ? k.ptr : "", k.len);
    lua_pushlstring(L, v.ptr ? v.ptr : "", v.len);
  }
  if (lp_client_out(c)->len > 0) lp_party_flush(p);
  if (r == 1 || r == 2) return r;
  liter_release(it);
  return r;
}

/* it:step(async) -> key, value | nil at the end | nil, msg, code | YIELD |
 * PENDING (a remote iterator with nothing buffered, in async mode: wait for
 * it:ready()).  One entry of an iterator asked for both sides: the slow half
 * of the direct step (liter_call) and it:next() of such iterators. */
static int liter_step(lua_State *L) {
  liter_t *it = check_iter(L);
  int async = lua_toboolean(L, 2);
  lp_err err;
  if (it->has_err) {
    it->has_err = 0;
    return push_lperr(L, &it->err);
  }
  if (!it->open) {
    if (it->db->party == NULL) return push_closed(L, "iterator");
    lua_pushnil(L);
    return 1;
  }
  luaL_argcheck(L, it->keys && it->values, 1, "step: not an iterator of keys and values");
  if (async && slice_over()) return push_yield(L);
  it->steps = 0;
  for (;;) { /* local_next never returns 2 */
    int r = it->local != NULL ? local_next(L, it, &err) : remote_next(L, it, &err);
    if (r == 1) return 2;
    if (r == 0) {
      lua_pushnil(L);
      return 1;
    }
    if (r < 0) return push_lperr(L, &err);
    r = remote_wait(L, it, async, &err);
    if (r > 0) {
      lua_pushlightuserdata(L, PENDING);
      return 1;
    }
    if (r < 0) {
      liter_release(it);
      return push_lperr(L, &err);
    }
  }
}

#if LUA_VERSION_NUM >= 503
/* Direct steps check the time slice once per DIRECT_SLICE_STEPS entries. */
#define DIRECT_SLICE_STEPS 64

/* The slow step's results are the whole stack once it returns. */
static int liter_call_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* __call of iterator objects the generic for steps without a Lua frame
 * (Lua 5.3+; iterators of keys and values under identity encodings, the
 * leader's own LevelDB or a follower's buffered entries):
 * iterator object (a table) -> key, value | nothing at the end.  The object
 * holds its core iterator at [1].  Anything but a ready entry (a time slice
 * to give back, the end after a failure, a closed db) goes to the Lua slow
 * step, upvalue 1, which may yield: hence lua_callk.  Upvalue 2 is the core
 * iterator metatable. */
static int liter_call(lua_State *L) {
  liter_t *it = NULL;
  if (lua_type(L, 1) == LUA_TTABLE && lua_rawgeti(L, 1, 1) == LUA_TUSERDATA &&
      lua_getmetatable(L, -1)) {
    if (lua_rawequal(L, -1, lua_upvalueindex(2))) it = (liter_t *)lua_touserdata(L, -2);
  }
  lua_settop(L, 1);
  if (it != NULL && it->open && !it->has_err && !lp_party_forked(it->db->party) &&
      (++it->steps % DIRECT_SLICE_STEPS != 0 || !lua_isyieldable(L) || !slice_over())) {
    lp_err err;
    int r = it->local != NULL ? local_next(L, it, &err) : remote_next(L, it, &err);
    if (r == 1) return 2;
    if (r == 0) return 0;
    if (r < 0) {
      it->has_err = 1; /* the slow step raises it */
      it->err = err;
    } /* 2: nothing buffered; the slow step waits */
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_callk(L, 1, LUA_MULTRET, 0, liter_call_done);
  return liter_call_done(L, LUA_OK, 0);
}

/* core.direct_call(slow) -> the __call function of direct iterators */
static int direct_call(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  luaL_getmetatable(L, ITER_MT);
  lua_pushcclosure(L, liter_call, 2);
  return 1;
}
#endif

/* it:seek(key [, unread]) -> true: the next entry is the first of the range
 * >= key (forward) or <= key (reverse); `unread` entries of the caller's
 * page go back to the limit.  An iterator that ended (or was closed, or
 * failed) stays so; out of memory shows at its next step. */
static int liter_seek(lua_State *L) {
  liter_t *it = check_iter(L);
  lp_slice target = check_slice(L, 2);
  int64_t unread = (int64_t)luaL_optnumber(L, 3, 0);
  if (it->open && !it->has_err) {
    if (it->local != NULL) {
      if (lp_engine_iter_seek(it->local, target, unread) != 0) {
        it->has_err = 1;
        lp_err_set(&it->err, LP_ENOMEM, "iterator: out of memory");
      }
    } else {
      lp_party *p = it->db->party;
      lp_client *c = lp_party_client(p);
      (void)lp_client_iter_seek(c, it->remote, target, unread);
      if (lp_client_out(c)->len > 0) lp_party_flush(p);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* it:ready() -> true when next() would not return PENDING */
static int liter_ready(lua_State *L) {
  liter_t *it = check_iter(L);
  lua_pushboolean(L, !it->open || it->local != NULL || it->db->party == NULL ||
                         lp_client_iter_ready(lp_party_client(it->db->party), it->remote));
  return 1;
}

static int liter_close(lua_State *L) {
  liter_t *it = check_iter_any(L);
  if (it->open) liter_release(it);
  lua_pushboolean(L, 1);
  return 1;
}

static int db_gc(lua_State *L) {
  db_close(L);
  return 0;
}

static int db_tostring(lua_State *L) {
  ldb_t *d = check_db_any(L);
  if (d->party == NULL)
    lua_pushfstring(L, "levelparty.db{closed}: %p", (void *)d);
  else
    lua_pushfstring(L, "levelparty.db{path=%s;role=%s}: %p", lp_party_path(d->party),
                    role_name(lp_party_role(d->party)), (void *)d);
  return 1;
}

/* ---------------------------------------------------------------- elect, client
 *
 * For a transport that lives in Lua (the nginx adaptor, levelparty/ngx.lua):
 * none of these connects, waits or yields.  db:elect() is one election step;
 * core.client() is a sans-IO follower client of its own (one per call in
 * nginx), whose bytes Lua moves over its own socket. */

/* db:elect() -> "leader" | "follower", address, holder pid | nil, msg, code */
static int db_elect(lua_State *L) {
  ldb_t *d = check_db(L);
  pid_t holder = 0;
  lp_err err;
  char addr[4200];
  int role;
  if (d->party == NULL) return push_closed(L, "elect");
  role = lp_party_elect(d->party, &holder, &err);
  if (role < 0) return push_lperr(L, &err);
  if (role == LP_ROLE_LEADER) {
    lua_pushliteral(L, "leader");
    return 1;
  }
  if (lp_party_address(d->party, addr, sizeof addr, &err) != 0) return push_lperr(L, &err);
  lua_pushliteral(L, "follower");
  lua_pushstring(L, addr);
  lua_pushinteger(L, (lua_Integer)holder);
  return 3;
}

/* db:sock_mark(): right before the transport's connect (lp_party_sock_mark) */
static int db_sock_mark(lua_State *L) {
  ldb_t *d = check_db(L);
  if (d->party == NULL) return push_closed(L, "leader");
  lp_party_sock_mark(d->party);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:sock_vet() -> true (trusted) | false (the socket changed: elect again)
 * | nil, msg, code (refused: send nothing).  Never waits. */
static int db_sock_vet(lua_State *L) {
  ldb_t *d = check_db(L);
  lp_err err;
  int r;
  if (d->party == NULL) return push_closed(L, "leader");
  r = lp_party_sock_vet(d->party, &err);
  if (r < 0) return push_lperr(L, &err);
  lua_pushboolean(L, r == 0);
  return 1;
}

typedef struct lcit lcit_t;

typedef struct lcl {
  lp_client *c;        /* NULL once freed */
  uint64_t timeout_ns; /* per request and iterator wait; 0: none */
  lp_buf scratch;
  lcit_t *iters; /* open iterators, cut loose when the client goes */
} lcl_t;

struct lcit {
  lcl_t *cl;
  lp_citer *it; /* NULL once closed */
  int has_err;
  lp_err err;
  lcit_t *prev, *next;
};

static char client_key, citer_key;
#define CLIENT_MT "levelparty.client"
#define CITER_MT  "levelparty.client_iterator"

static lcl_t *check_client(lua_State *L) {
  lcl_t *cl = (lcl_t *)check_class(L, &client_key, CLIENT_MT);
  if (cl->c == NULL) luaL_error(L, "client: used after it was freed");
  return cl;
}

static uint64_t client_deadline(const lcl_t *cl) {
  return cl->timeout_ns ? lp_now_ns() + cl->timeout_ns : 0;
}

/* core.client{ window =, max_frame =, timeout = } -> client */
static int new_client(lua_State *L) {
  lp_client_opts o;
  lcl_t *cl;
  double t;
  luaL_checktype(L, 1, LUA_TTABLE);
  lp_client_opts_init(&o);
  o.window = (uint32_t)field_num(L, 1, "window", o.window);
  o.max_frame = (size_t)field_num(L, 1, "max_frame", (double)o.max_frame);
  t = field_num(L, 1, "timeout", 0);
  cl = (lcl_t *)lp_newuserdata(L, sizeof *cl);
  memset(cl, 0, sizeof *cl);
  cl->timeout_ns = t > 0 ? (uint64_t)(t * 1e9) : 0;
  cl->c = lp_client_new(&o);
  if (cl->c == NULL) return luaL_error(L, "client: out of memory");
  luaL_setmetatable(L, CLIENT_MT);
  return 1;
}

static int client_token(lua_State *L, lcl_t *cl, int tag, const lp_buf *rest) {
  uint64_t token =
      lp_client_submit(cl->c, tag, (lp_slice){rest->ptr, rest->len}, client_deadline(cl));
  if (token == 0) return push_err(L, LP_ENOMEM, "out of memory");
  lua_pushinteger(L, (lua_Integer)token);
  return 1;
}

/* c:get(key), c:del(key) -> token */
static int client_get(lua_State *L) {
  lcl_t *cl = check_client(L);
  cl->scratch.len = 0;
  if (lp_wire_rest_key(&cl->scratch, check_slice(L, 2)) != 0)
    return push_err(L, LP_ENOMEM, "get: out of memory");
  return client_token(L, cl, LP_REQ_GET, &cl->scratch);
}

static int client_del(lua_State *L) {
  lcl_t *cl = check_client(L);
  cl->scratch.len = 0;
  if (lp_wire_rest_key(&cl->scratch, check_slice(L, 2)) != 0 ||
      (lua_toboolean(L, 3) && lp_wire_rest_sync(&cl->scratch) != 0))
    return push_err(L, LP_ENOMEM, "del: out of memory");
  return client_token(L, cl, LP_REQ_DEL, &cl->scratch);
}

/* c:put(key, value [, sync]) -> token (c:del(key [, sync]) above) */
static int client_put(lua_State *L) {
  lcl_t *cl = check_client(L);
  cl->scratch.len = 0;
  if (lp_wire_rest_put(&cl->scratch, check_slice(L, 2), check_slice(L, 3)) != 0 ||
      (lua_toboolean(L, 4) && lp_wire_rest_sync(&cl->scratch) != 0))
    return push_err(L, LP_ENOMEM, "put: out of memory");
  return client_token(L, cl, LP_REQ_PUT, &cl->scratch);
}

/* c:batch(_, ops, sync, numbers_ok) -> token | false, msg (misuse): the
 * arguments of db:batch, so that the ops sit where read_op reads them */
static int client_batch(lua_State *L) {
  lcl_t *cl = check_client(L);
  int numbers_ok = lua_toboolean(L, 5), nres;
  size_t n;
  lp_buf rest = {NULL, 0, 0};
  luaL_checktype(L, OPS_ARG, LUA_TTABLE);
  n = lua_rawlen(L, OPS_ARG);
  push_op_strings(L);
  nres = encode_batch(L, n, numbers_ok, &rest);
  if (nres == 0 && lua_toboolean(L, 4) && lp_wire_rest_sync(&rest) != 0)
    nres = push_err(L, LP_ENOMEM, "batch: out of memory");
  if (nres == 0) nres = client_token(L, cl, LP_REQ_BATCH, &rest);
  lp_buf_free(&rest);
  return nres;
}

/* c:get_many(keys) -> token */
static int client_get_many(lua_State *L) {
  lcl_t *cl = check_client(L);
  lp_buf rest = {NULL, 0, 0};
  int nres;
  luaL_checktype(L, 2, LUA_TTABLE);
  nres = encode_getmany(L, 2, &rest);
  if (nres == 0) nres = client_token(L, cl, LP_REQ_GETMANY, &rest);
  lp_buf_free(&rest);
  return nres;
}

/* c:clear(range [, sync]) -> token */
static int client_clear(lua_State *L) {
  lcl_t *cl = check_client(L);
  lp_range r;
  lp_buf rest = {NULL, 0, 0};
  int nres;
  read_range(L, 2, &r);
  if (lp_wire_rest_clear(&rest, &r) != 0 ||
      (lua_toboolean(L, 3) && lp_wire_rest_sync(&rest) != 0)) {
    lp_buf_free(&rest);
    return push_err(L, LP_ENOMEM, "clear: out of memory");
  }
  nres = client_token(L, cl, LP_REQ_CLEAR, &rest);
  lp_buf_free(&rest);
  return nres;
}

/* c:out() -> the bytes to send (taken out of the client), or nil */
static int client_out(lua_State *L) {
  lcl_t *cl = check_client(L);
  lp_buf *out = lp_client_out(cl->c);
  if (out->len == 0) return 0;
  lua_pushlstring(L, out->ptr, out->len);
  lp_buf_consume(out, out->len);
  return 1;
}

/* c:feed(bytes) -> true | nil, msg, code (the leader broke the protocol:
 * close the connection, then c:reset()) */
static int client_feed(lua_State *L) {
  lcl_t *cl = check_client(L);
  lp_slice b = check_slice(L, 2);
  lp_err err;
  if (lp_client_feed(cl->c, b.ptr, b.len, &err) != 0) return push_lperr(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int client_done(lua_State *L) {
  lcl_t *cl = check_client(L);
  lua_pushboolean(L, lp_client_done(cl->c, (uint64_t)luaL_checkinteger(L, 2)));
  return 1;
}

/* c:result(token, op) -> the call's results, as db:result */
static int client_result(lua_State *L) {
  lcl_t *cl = check_client(L);
  uint64_t token = (uint64_t)luaL_checkinteger(L, 2);
  const char *opname = luaL_checkstring(L, 3);
  int op = strcmp(opname, "get") == 0        ? OP_GET
           : strcmp(opname, "get_many") == 0 ? OP_GETMANY
                                             : OP_WRITE;
  return push_result(L, cl->c, token, op, opname);
}

static int client_reset(lua_State *L) {
  lp_client_reset(check_client(L)->c);
  return 0;
}

static int client_replay(lua_State *L) {
  lp_client_replay(check_client(L)->c);
  return 0;
}

/* c:fail_all(code, msg) */
static int client_fail_all(lua_State *L) {
  lcl_t *cl = check_client(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  lp_code code = lp_code_from_name(name, len);
  lp_client_fail_all(cl->c, code == LP_OK ? LP_EIO : code, luaL_checkstring(L, 3));
  return 0;
}

/* c:expire() -> how many requests and iterator waits timed out now */
static int client_expire(lua_State *L) {
  lcl_t *cl = check_client(L);
  lua_pushinteger(L, (lua_Integer)lp_client_expire(cl->c, lp_now_ns()));
  return 1;
}

/* c:remaining() -> seconds to the earliest deadline (>= 0), or nil */
static int client_remaining(lua_State *L) {
  lcl_t *cl = check_client(L);
  uint64_t d = lp_client_next_deadline(cl->c), now = lp_now_ns();
  if (d == 0) return 0;
  lua_pushnumber(L, d <= now ? 0 : (lua_Number)(d - now) / 1e9);
  return 1;
}

/* c:idle() -> true when nothing is pending and no iterator is open */
static int client_idle(lua_State *L) {
  lcl_t *cl = check_client(L);
  lua_pushboolean(L, lp_client_pending(cl->c) == 0 && lp_client_iterators(cl->c) == 0);
  return 1;
}

static void citer_release(lcit_t *ci) {
  if (ci->it == NULL) return;
  if (ci->cl->c != NULL) lp_client_iter_close(ci->cl->c, ci->it);
  ci->it = NULL;
  if (ci->prev)
    ci->prev->next = ci->next;
  else
    ci->cl->iters = ci->next;
  if (ci->next) ci->next->prev = ci->prev;
  ci->prev = ci->next = NULL;
}

static int client_free(lua_State *L) {
  lcl_t *cl = (lcl_t *)check_class(L, &client_key, CLIENT_MT);
  while (cl->iters != NULL)
    citer_release(cl->iters);
  if (cl->c != NULL) lp_client_free(cl->c);
  cl->c = NULL;
  lp_buf_free(&cl->scratch);
  return 0;
}

/* c:iter(range) -> iterator; keys are always asked for (the bookmark) */
static int client_iter(lua_State *L) {
  lcl_t *cl = check_client(L);
  lp_range r;
  lcit_t *ci;
  read_range(L, 2, &r);
  ci = (lcit_t *)lp_newuserdata(L, sizeof *ci);
  memset(ci, 0, sizeof *ci);
  ci->cl = cl;
  luaL_setmetatable(L, CITER_MT);
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lp_setuservalue(L, -2);
  ci->it = lp_client_iter_open(cl->c, &r);
  if (ci->it == NULL) return push_err(L, LP_ENOMEM, "iter: out of memory");
  ci->next = cl->iters;
  if (cl->iters) cl->iters->prev = ci;
  cl->iters = ci;
  return 1;
}

/* it:page(t) -> n | PENDING (nothing buffered: feed more) | nil, msg, code
 * Fills t[1..2n] with key, value pairs (value false when not asked for);
 * 0 at the end.  Acks go to the client's out. */
static int citer_page(lua_State *L) {
  lcit_t *ci = (lcit_t *)check_class(L, &citer_key, CITER_MT);
  int n = 0, r = 1;
  lp_slice k, v;
  lp_err err;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (ci->has_err) {
    ci->has_err = 0;
    return push_lperr(L, &ci->err);
  }
  if (ci->it == NULL || ci->cl->c == NULL) {
    lua_pushinteger(L, 0);
    return 1;
  }
  while (n < PAGE_ENTRIES && (r = lp_client_iter_next(ci->cl->c, ci->it, &k, &v, &err)) == 1) {
    lua_pushlstring(L, k.ptr ? k.ptr : "", k.len);
    lua_rawseti(L, 2, 2 * n + 1);
    if (v.ptr != NULL)
      lua_pushlstring(L, v.ptr, v.len);
    else
      lua_pushboolean(L, 0);
    lua_rawseti(L, 2, 2 * n + 2);
    n++;
  }
  if (r == 2 && n == 0) {
    lp_client_iter_wait_deadline(ci->cl->c, ci->it, client_deadline(ci->cl));
    lua_pushlightuserdata(L, PENDING);
    return 1;
  }
  if (r == 1 || r == 2) {
    lua_pushinteger(L, n);
    return 1;
  }
  citer_release(ci);
  if (r < 0) {
    if (n == 0) return push_lperr(L, &err);
    ci->has_err = 1;
    ci->err = err;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* it:ready() -> true when it:page would not answer PENDING */
static int citer_ready(lua_State *L) {
  lcit_t *ci = (lcit_t *)check_class(L, &citer_key, CITER_MT);
  lua_pushboolean(L, ci->has_err || ci->it == NULL || ci->cl->c == NULL ||
                         lp_client_iter_ready(ci->cl->c, ci->it));
  return 1;
}

static int citer_close(lua_State *L) {
  citer_release((lcit_t *)check_class(L, &citer_key, CITER_MT));
  return 0;
}

static const luaL_Reg client_methods[] = {{"get", client_get},
                                          {"put", client_put},
                                          {"del", client_del},
                                          {"batch", client_batch},
                                          {"get_many", client_get_many},
                                          {"clear", client_clear},
                                          {"out", client_out},
                                          {"feed", client_feed},
                                          {"done", client_done},
                                          {"result", client_result},
                                          {"reset", client_reset},
                                          {"replay", client_replay},
                                          {"fail_all", client_fail_all},
                                          {"expire", client_expire},
                                          {"remaining", client_remaining},
                                          {"idle", client_idle},
                                          {"iter", client_iter},
                                          {"free", client_free},
                                          {NULL, NULL}};

static const luaL_Reg citer_methods[] = {
    {"page", citer_page}, {"ready", citer_ready}, {"close", citer_close}, {NULL, NULL}};

static const luaL_Reg db_methods[] = {{"close", db_close},
                                      {"role", db_role},
                                      {"role_change", db_role_change},
                                      {"opened", db_opened},
                                      {"forked", db_forked},
                                      {"elect", db_elect},
                                      {"sock_mark", db_sock_mark},
                                      {"sock_vet", db_sock_vet},
                                      {"party", db_party},
                                      {"path", db_path},
                                      {"step", db_step},
                                      {"pollinfo", db_pollinfo},
                                      {"done", db_done},
                                      {"result", db_result},
                                      {"flush", db_flush},
                                      {"set_polled", db_set_polled},
                                      {"finished", db_finished},
                                      {"get", db_get},
                                      {"put", db_put},
                                      {"del", db_del},
                                      {"batch", db_batch},
                                      {"get_many", db_get_many},
                                      {"clear", db_clear},
                                      {"clear_begin", db_clear_begin},
                                      {"is_leader", db_is_leader},
                                      {"iter", db_iter},
                                      {"property", db_property},
                                      {"approximate_size", db_approximate_size},
                                      {"leader_pid", db_leader_pid},
                                      {"handed", db_handed},
                                      {NULL, NULL}};

static const luaL_Reg liter_methods[] = {{"page", liter_page},   {"step", liter_step},
                                         {"ready", liter_ready}, {"seek", liter_seek},
                                         {"close", liter_close}, {NULL, NULL}};

static const luaL_Reg clear_methods[] = {{"step", clear_step}, {NULL, NULL}};

static const luaL_Reg module_funcs[] = {{"open", open_db},
                                        {"client", new_client},
                                        {"slice_begin", slice_begin},
                                        {"set_slice", set_slice},
                                        {"write_handoff", write_handoff},
#if LUA_VERSION_NUM >= 503
                                        {"direct_call", direct_call},
#endif
                                        {NULL, NULL}};

static void new_class(lua_State *L, const char *name, void *key, const luaL_Reg *methods,
                      lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_pushlightuserdata(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
#endif
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

static int liter_gc(lua_State *L) {
  liter_t *it = check_iter_any(L);
  if (it->open) liter_release(it);
  return 0;
}

/* LevelDB's background compaction thread never exits.  If lua_close() unloaded
 * this module (and with it libleveldb) while that thread still runs, the
 * process would crash at exit; so the module pins itself in memory. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)pin_module, &info) && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_levelparty_core(lua_State *L);
int luaopen_levelparty_core(lua_State *L) {
  pin_module();
  if (state_owner(L) == NULL) {
    lua_pushlightuserdata(L, &owner_key);
    (void)lua_newuserdata(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  new_class(L, DB_MT, &db_key, db_methods, db_gc);
  luaL_getmetatable(L, DB_MT);
  lua_pushcfunction(L, db_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  new_class(L, ITER_MT, &liter_key, liter_methods, liter_gc);
  new_class(L, CLEAR_MT, &clear_key, clear_methods, clear_gc);
  new_class(L, CLIENT_MT, &client_key, client_methods, client_free);
  new_class(L, CITER_MT, &citer_key, citer_methods, citer_close);
  lua_newtable(L);
  luaL_setfuncs(L, module_funcs, 0);
  lua_pushlightuserdata(L, PENDING);
  lua_setfield(L, -2, "PENDING");
  lua_pushlightuserdata(L, YIELD);
  lua_setfield(L, -2, "YIELD");
  lua_pushnumber(L, (lua_Number)LP_JOB_TOKEN);
  lua_setfield(L, -2, "JOB_TOKEN");
  lua_pushfstring(L, "leveldb %d.%d", leveldb_major_version(), leveldb_minor_version());
  lua_setfield(L, -2, "leveldb_version");
  slice_start_ns = lp_now_ns();
  return 1;
}

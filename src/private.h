/*
 * levelparty: the private header shared by every C file of the core.
 *
 * One section per file, in layer order: each file calls only into the
 * sections above its own (docs/ARCHITECTURE.md draws the graph).
 *   buf.c       slices, buffers, errors, the clock, ranges
 *   wire.c      the multileveldown 5.0.1 codec: pure, bytes in, messages out
 *   engine.c    LevelDB: get/put/del/batch, the conjunction-range iterator, clear
 *   session.c   one follower connection's protocol state, over the engine; no I/O
 *   server.c    the leader's thread and libuv loop driving sessions on sockets
 *   sockfile.c  the socket file, the LOCK holder probe, the directory watch
 *   client.c    the follower's request table, replay and bookmarks; no I/O
 *   worker.c    the leader's thread for long writes
 *   party.c     one per (process, directory): the election, the roles, the
 *               follower's connection, promotion; uses all of the above
 *   lua_core.c  the binding (levelparty.core): the only file that sees a
 *               lua_State, and only on the thread that owns it
 *
 * Nothing declared here is exported from the shared object (mk/exports.map
 * exports luaopen_levelparty_core alone).
 */
#ifndef LEVELPARTY_PRIVATE_H
#define LEVELPARTY_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- Base: slices, buffers, errors, clock, ranges (buf.c) ---- */

/* A borrowed byte range.  ptr == NULL means "absent" (a protobuf field that was
 * not sent); ptr != NULL with len == 0 is a present, empty value. */
typedef struct lp_slice {
  const char *ptr;
  size_t len;
} lp_slice;

#define LP_SLICE_NONE ((lp_slice){NULL, 0})

/* A growable owned buffer.  ptr may be NULL while cap == 0. */
typedef struct lp_buf {
  char *ptr;
  size_t len, cap;
} lp_buf;

int lp_buf_reserve(lp_buf *b, size_t extra);           /* 0 ok, -1 ENOMEM */
int lp_buf_append(lp_buf *b, const void *p, size_t n); /* 0 ok, -1 ENOMEM */
void lp_buf_consume(lp_buf *b, size_t n);              /* drop n bytes from the front */
void lp_buf_free(lp_buf *b);
/* Copies s into a fresh malloc'd block; an absent slice stays absent. */
int lp_slice_dup(lp_slice s, lp_slice *out);
void lp_slice_free(lp_slice *s);
int lp_slice_cmp(lp_slice a, lp_slice b); /* bytewise, like LevelDB's comparator */

/* Stable error codes.  Their names (lp_code_name) are what Lua sees. */
typedef enum lp_code {
  LP_OK = 0,
  LP_EIO,         /* any other storage or system failure */
  LP_ECORRUPT,    /* LevelDB reported corruption */
  LP_ENOENT,      /* directory missing and create_if_missing=false, or parent missing */
  LP_EEXIST,      /* error_if_exists=true and the db exists */
  LP_EACCES,      /* permission denied */
  LP_ENOTDIR,     /* the path is not a directory */
  LP_ELOCKED,     /* the LOCK is held by someone who serves no socket */
  LP_ECLOSED,     /* the handle (or iterator) was closed */
  LP_ETIMEDOUT,   /* the operation's timeout expired */
  LP_EINTR,       /* a blocking wait was interrupted by a signal (Ctrl-C) */
  LP_ELEADERLOST, /* retry=false and the leader went away with the request in flight */
  LP_EPROTO,      /* the peer broke the wire protocol */
  LP_ENOMEM,
  LP_EINVAL,    /* a value the storage layer refuses (e.g. empty key) */
  LP_EREMOTE,   /* the leader reported an error we cannot classify */
  LP_ETOOLARGE, /* a request or its reply does not fit in a frame (max_frame) */
  LP_CODE_MAX
} lp_code;

const char *lp_code_name(lp_code code);                  /* "EIO", "ECLOSED", ... */
lp_code lp_code_from_name(const char *name, size_t len); /* LP_OK when unknown */

/* An error result: a code and a message "op: detail". */
typedef struct lp_err {
  lp_code code;
  char msg[512];
} lp_err;

void lp_err_set(lp_err *e, lp_code code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Classifies a LevelDB status string (e.g. "IO error: lock ...") into a code. */
lp_code lp_code_from_leveldb(const char *status);

/* Monotonic clock in nanoseconds. */
uint64_t lp_now_ns(void);
/* Sleeps ns nanoseconds (a signal may cut it short); tests' delays only. */
void lp_sleep_ns(uint64_t ns);

/* A key range with options.  Bounds are a conjunction: a key is in range when it
 * satisfies every bound that is present.  limit < 0 means no limit. */
typedef struct lp_range {
  lp_slice gt, gte, lt, lte;
  int64_t limit;
  int reverse;
  int keys, values; /* iterators only: which sides the caller wants */
} lp_range;

/* keys = values = 1, limit = -1, forward, unbounded. */
void lp_range_init(lp_range *r);
/* Drops the looser bound of each side that has two (gt and gte, lt and lte;
 * on a tie the inclusive one), leaving a range of the same keys.  Every
 * request leaves with at most one bound per side: given both, a Node leader
 * (leveldown) starts from gte (lte in reverse) and ends at the first key gt
 * (lt) rejects, at once when gt >= gte (docs/PROTOCOL.md, "Ranges"). */
void lp_range_one_bound(lp_range *r);

/* Used by the C tests only */
int lp_range_contains(const lp_range *r, lp_slice key); /* 1: key satisfies every bound */

/* ---- Wire codec: multileveldown 5.0.1 (wire.c) ---- */

/* The format is docs/PROTOCOL.md's ("Framing", "Requests", "Responses"). */

/* Largest frame (tag + body) either side accepts; the varint length is extra. */
#define LP_DEFAULT_MAX_FRAME (64u * 1024u * 1024u)

/* client -> server tags */
enum {
  LP_REQ_GET = 0,
  LP_REQ_PUT = 1,
  LP_REQ_DEL = 2,
  LP_REQ_BATCH = 3,
  LP_REQ_ITER = 4,
  LP_REQ_CLEAR = 5,
  LP_REQ_GETMANY = 6
};
/* server -> client tags */
enum { LP_RES_CALLBACK = 0, LP_RES_ITERDATA = 1, LP_RES_GETMANY = 2 };

/* Decoder results. */
enum {
  LP_WIRE_OK = 0,
  LP_WIRE_EMPTY = 1,        /* zero-length payload: skip it */
  LP_WIRE_NEED_MORE = 2,    /* lp_wire_next_frame: not a whole frame yet */
  LP_WIRE_UNKNOWN_TAG = -1, /* tag outside the table */
  LP_WIRE_MALFORMED = -2,   /* body does not decode, or a required field is missing */
  LP_WIRE_TOO_BIG = -3      /* length prefix over the limit, or a varint over 10 bytes */
};

/* Batch operation types, on the wire and in every batch API. */
enum { LP_OP_PUT = 0, LP_OP_DEL = 1 };

/* One batch operation. */
typedef struct lp_batch_op {
  int type;            /* LP_OP_PUT or LP_OP_DEL */
  lp_slice key, value; /* value.ptr == NULL for del, or a put without value */
} lp_batch_op;

/* Iterator/clear options as they arrived: every field has its own presence so
 * that the server can apply Node's decode defaults (docs/PROTOCOL.md, "Fields
 * and defaults"). */
typedef struct lp_wire_opts {
  int present; /* the options sub-message was sent at all */
  int has_keys, keys;
  int has_values, values;
  lp_slice gt, gte, lt, lte; /* ptr == NULL when absent */
  int has_limit;
  int32_t limit;
  int has_reverse, reverse;
} lp_wire_opts;

/* A decoded request.  Slices point into the payload that was decoded; they are
 * valid as long as that memory is.  Repeated fields are kept as the raw body
 * region and walked with lp_wire_next_op / lp_wire_next_key, which never fail
 * on a request that lp_wire_decode_request accepted. */
typedef struct lp_request {
  int tag;
  uint32_t id;
  lp_slice key, value; /* GET, PUT, DEL (value absent when not sent) */
  uint32_t batch;      /* ITER: window; 0 means end the iterator */
  int has_batch;
  lp_wire_opts opts; /* ITER, CLEAR */
  size_t count;      /* BATCH: number of ops; GETMANY: number of keys */
  lp_slice repeated; /* BATCH, GETMANY: the body, for the walkers */
  int sync;          /* PUT, DEL, BATCH, CLEAR: levelparty's sync flag (field 15) */
} lp_request;

/* A decoded response.  Same lifetime rule as lp_request. */
typedef struct lp_response {
  int tag;
  uint32_t id;
  lp_slice error;      /* absent when no error field */
  lp_slice key, value; /* CALLBACK: value; ITERDATA: key and value */
  size_t count;        /* GETMANY: number of values */
  lp_slice repeated;   /* GETMANY: the body, for lp_wire_next_value */
} lp_response;

/* Finds the next frame in buf[0..len).
 * Returns LP_WIRE_OK with *payload (tag + body) and *consumed (prefix + payload
 * bytes), LP_WIRE_EMPTY with *consumed = 1 for a zero-length frame,
 * LP_WIRE_NEED_MORE, or LP_WIRE_TOO_BIG when the length exceeds max_frame. */
int lp_wire_next_frame(const char *buf, size_t len, size_t max_frame, lp_slice *payload,
                       size_t *consumed);

/* Decode a payload (tag byte + protobuf body).  LP_WIRE_OK, LP_WIRE_EMPTY,
 * LP_WIRE_UNKNOWN_TAG or LP_WIRE_MALFORMED. */
int lp_wire_decode_request(lp_slice payload, lp_request *out);
int lp_wire_decode_response(lp_slice payload, lp_response *out);

/* Walkers over repeated fields.  *cursor starts at 0.  Return 1 with the next
 * element, 0 at the end. */
int lp_wire_next_op(const lp_request *r, size_t *cursor, lp_batch_op *op);
int lp_wire_next_key(const lp_request *r, size_t *cursor, lp_slice *key);
int lp_wire_next_value(const lp_response *r, size_t *cursor,
                       lp_slice *value); /* value.ptr NULL = not found */

/* Encoders.  A request is built in two steps so that it can be replayed under a
 * new id: first its "rest" (every field after the id, in field order) is
 * encoded once, then lp_wire_frame() writes varint(len) tag 08 varint(id) rest.
 * All return 0, or -1 when out of memory (the buffer is left as it was). */
int lp_wire_frame(lp_buf *out, int tag, uint32_t id, lp_slice rest);
/* The payload length (tag + body, the size max_frame bounds) of the frame
 * lp_wire_frame would write for that id and rest. */
size_t lp_wire_frame_payload(uint32_t id, size_t restlen);
/* The size of a length-delimited field of n bytes (key, length, bytes): with
 * lp_wire_frame_payload, what a reply of a value of n bytes takes. */
size_t lp_wire_bytes_field_len(size_t n);
int lp_wire_rest_key(lp_buf *rest, lp_slice key);                 /* GET, DEL */
int lp_wire_rest_put(lp_buf *rest, lp_slice key, lp_slice value); /* PUT */
int lp_wire_rest_batch_op(lp_buf *rest, int type, lp_slice key,
                          lp_slice value);                /* one BATCH op; call per op */
int lp_wire_rest_getmany_key(lp_buf *rest, lp_slice key); /* one GETMANY key; call per key */
/* PUT, DEL, BATCH, CLEAR: the sync flag (field 15 = true), appended last
 * (fields go in ascending order); write it only when true, so that a write
 * without it is byte for byte what Node's client sends. */
int lp_wire_rest_sync(lp_buf *rest);
/* ITER open: batch window then options, always with keys, values, limit and
 * reverse explicit (docs/PROTOCOL.md, "Fields and defaults"). */
int lp_wire_rest_iter(lp_buf *rest, uint32_t batch, const lp_range *r);
/* ITER ack / end: just the window (0 = end). */
int lp_wire_rest_iter_window(lp_buf *rest, uint32_t batch);
/* CLEAR: options with the bounds (one per side, lp_range_one_bound), limit
 * and reverse explicit. */
int lp_wire_rest_clear(lp_buf *rest, const lp_range *r);

/* Server side: lp_wire_enc_* encode a whole reply frame (varint length, tag,
 * id and fields) onto out.  err: NULL for none. */
int lp_wire_enc_callback(lp_buf *out, uint32_t id, const char *err, size_t errlen,
                         lp_slice value /* absent = none */);
int lp_wire_enc_iterdata(lp_buf *out, uint32_t id, lp_slice key, lp_slice value);
int lp_wire_enc_iterend(lp_buf *out, uint32_t id);
int lp_wire_enc_itererror(lp_buf *out, uint32_t id, const char *err, size_t errlen);
/* GetManyCallback: the caller appends each value with lp_wire_rest_getmany_value
 * into a scratch buffer, then frames it with this. */
int lp_wire_rest_getmany_value(lp_buf *rest, lp_slice value /* absent = not found */);
int lp_wire_enc_getmany(lp_buf *out, uint32_t id, const char *err, size_t errlen,
                        lp_slice values_rest);

/* Varint helpers, exposed for tests. */
size_t lp_varint_put(uint8_t out[10], uint64_t v);
int lp_varint_get(const char *buf, size_t len, uint64_t *v,
                  size_t *used); /* 1 ok, 0 need more, -1 bad */

/* ---- Engine: LevelDB access (engine.c) ---- */

typedef struct lp_engine lp_engine;

typedef struct lp_engine_opts {
  int create_if_missing;    /* default 1 */
  int error_if_exists;      /* default 0 */
  int compression;          /* default 1 (snappy) */
  size_t cache_size;        /* 0 = LevelDB default (8 MiB) */
  size_t write_buffer_size; /* 0 = default (4 MiB) */
  size_t block_size;        /* 0 = default (4 KiB) */
  int max_open_files;       /* 0 = default (1000) */
  int bloom_bits;           /* bits per key of a bloom filter; 0 = none */
  int paranoid_checks;      /* default 0: LevelDB's paranoid_checks */
} lp_engine_opts;

void lp_engine_opts_init(lp_engine_opts *o);

/* Opens LevelDB at path (already realpath'd by the caller, which also guarantees
 * that no LevelDB handle of this process has it open: see party.c, which
 * takes the LOCK's fcntl lock itself first, lp_lock_take; LevelDB's lock is
 * then the same process's lock).  On failure returns NULL and
 * fills err; a lock held by another process gives LP_ELOCKED with the LevelDB
 * text.  A directory with tables (or a MANIFEST and a log) but no CURRENT is
 * refused with LP_ECORRUPT before LevelDB sees it (it would delete the
 * tables).  Thread-safe. */
lp_engine *lp_engine_open(const char *path, const lp_engine_opts *o, lp_err *err);
/* Closes LevelDB and releases the LOCK.  No other call may be in progress or
 * follow; iterators must have been closed. */
void lp_engine_close(lp_engine *e);
/* Tests only: how long the first open's thread that starts LevelDB's
 * background thread waits before it does (engine.c, bg_ready). */
extern uint64_t lp_engine_starter_delay_ns;

/* All of these may be called from any thread concurrently (LevelDB is
 * thread-safe).  Return 0 ok, -1 with err filled. */
/* get: 1 found (*val malloc'd, free with free()), 0 missing, -1 error */
int lp_engine_get(lp_engine *e, lp_slice key, char **val, size_t *vlen, lp_err *err);
int lp_engine_put(lp_engine *e, lp_slice key, lp_slice value, int sync, lp_err *err);
int lp_engine_del(lp_engine *e, lp_slice key, int sync, lp_err *err);

typedef struct lp_batch lp_batch; /* wraps leveldb_writebatch_t; not thread-safe */
lp_batch *lp_batch_new(void);
void lp_batch_put(lp_batch *b, lp_slice key, lp_slice value);
void lp_batch_del(lp_batch *b, lp_slice key);
size_t lp_batch_count(const lp_batch *b);
size_t lp_batch_bytes(const lp_batch *b);
void lp_batch_free(lp_batch *b);
int lp_engine_write(lp_engine *e, lp_batch *b, int sync, lp_err *err);

/* A range iterator with conjunction semantics, reverse and limit.  Each
 * iterator is an implicit snapshot.  Not thread-safe itself. */
typedef struct lp_engine_iter lp_engine_iter;
lp_engine_iter *lp_engine_iter_open(lp_engine *e, const lp_range *r, lp_err *err);
/* 1 with the next entry (slices valid until the next call on it), 0 at the end
 * (also once the limit is reached), -1 with err. */
int lp_engine_iter_next(lp_engine_iter *it, lp_slice *key, lp_slice *value, lp_err *err);
/* Moves the iterator: the next entry is the first of its range >= target
 * (forward) or <= target (reverse), on the same snapshot; the limit counts
 * on, less `unread` entries the caller took and did not use (a page).  Any
 * later seek may move it back.  0, or -1 out of memory (nothing changed). */
int lp_engine_iter_seek(lp_engine_iter *it, lp_slice target, int64_t unread);
void lp_engine_iter_close(lp_engine_iter *it);

/* Deletes up to max_ops keys of the range (limit and reverse honoured across
 * calls through *state, which starts zeroed).  Returns 1 when more remain, 0 when
 * done, -1 on error.  Lets callers clear huge ranges in slices. */
typedef struct lp_clear_state {
  int64_t deleted;
  lp_slice resume;
  int started;
} lp_clear_state;
int lp_engine_clear_step(lp_engine *e, const lp_range *r, lp_clear_state *st, size_t max_ops,
                         int sync, lp_err *err);
void lp_clear_state_free(lp_clear_state *st);
/* max_ops of the callers that clear a whole range step by step (a session's
 * CLEAR, a leader's db:clear): small enough to check the clock between. */
#define LP_CLEAR_STEP 1024

/* LevelDB's property `name` (e.g. "leveldb.stats"): malloc'd, or NULL. */
char *lp_engine_property(lp_engine *e, const char *name);
/* LevelDB's estimate of the bytes on disk for the keys in [start, limit); an
 * absent limit means to the end.  0, or -1 out of memory. */
int lp_engine_approximate_size(lp_engine *e, lp_slice start, lp_slice limit, uint64_t *size);

/* ---- Session: one follower connection's protocol state, no I/O (session.c) ---- */

/* The protocol half of a follower connection: decodes requests, runs them on
 * the engine, encodes replies, and keeps that connection's open iterators with
 * their windows.  server.c drives one per socket; party.c drives one over
 * memory when a follower is promoted, so that requests and iterators it had in
 * flight are finished by its own engine exactly as a new leader would (this
 * replaces level-party's self-connection).  Not thread-safe; owned by whoever
 * drives it. */
typedef struct lp_session lp_session;

lp_session *lp_session_new(lp_engine *e, size_t max_frame);
void lp_session_free(lp_session *s); /* closes its iterators */
/* Consumes as many whole frames of in[0..len) as there are and appends every
 * reply to out.  Iterator entries are produced here too, but at most `budget`
 * of them in this call.  Returns the number of bytes consumed (a partial frame
 * at the end is left for the next call), or -1 with err filled when the peer
 * broke the protocol (oversized frame, unknown tag, malformed body): the
 * connection must then be closed (out may then hold an ETOOLARGE answer to
 * the oversized request, to write first).  No reply exceeds max_frame: one
 * that would is replaced by an ETOOLARGE error for its request. */
long lp_session_input(lp_session *s, const char *in, size_t len, lp_buf *out, size_t budget,
                      lp_err *err);
/* Produces up to `budget` more iterator entries for iterators whose window is
 * still open.  Returns 1 when some window is still open (call again), else 0. */
int lp_session_pump(lp_session *s, lp_buf *out, size_t budget);

/* ---- Server: the leader's thread, its libuv loop and sockets (server.c) ---- */

/* Bytes asked of one read of a connection (the follower's reads too). */
#define LP_READ_CHUNK 65536

typedef struct lp_server lp_server;

typedef struct lp_server_opts {
  size_t max_frame;                       /* LP_DEFAULT_MAX_FRAME */
  size_t max_conn_buffer;                 /* bytes of unsent replies per connection before the
                                             server stops reading that connection */
  int allow_other_users;                  /* 0: refuse peers whose uid differs (SO_PEERCRED);
                                             party.c also reads it as the follower's: 1 follows
                                             a leader of any uid */
  void (*log)(void *ud, const char *msg); /* called on the server thread; may be NULL */
  void *log_ud;
  size_t max_total_buffer; /* bytes of unsent replies over all connections beyond which the
                              connections holding any stop likewise, until they drain */
} lp_server_opts;

/* Sets LP_DEFAULT_MAX_FRAME, LP_DEFAULT_CONN_BUFFER and
 * LP_DEFAULT_TOTAL_BUFFER, 0 and NULL elsewhere; lp_server_start takes a 0 in
 * any limit for its default too.  Both buffer bounds are soft by what one
 * step produces (a piece of input's replies, 64 iterator entries). */
#define LP_DEFAULT_CONN_BUFFER  (8u * 1024u * 1024u)
#define LP_DEFAULT_TOTAL_BUFFER (64u * 1024u * 1024u)
void lp_server_opts_init(lp_server_opts *o);

/* Starts the server thread on an already listening socket (ownership of
 * listen_fd passes to the server).  The engine must outlive the server. */
lp_server *lp_server_start(lp_engine *e, int listen_fd, const lp_server_opts *o, lp_err *err);
/* Stops accepting, closes every connection, joins the thread. Idempotent on NULL. */
void lp_server_stop(lp_server *s);

/* Used by the C tests only */
int lp_server_connections(lp_server *s); /* followers connected now; 0 for NULL */
size_t lp_server_unsent(lp_server *s);   /* unsent reply bytes over all connections */

/* ---- Socket file, LOCK holder probe, directory watch (sockfile.c) ---- */

#define LP_SOCKET_NAME "level-party.sock"

/* Creates <dir>/level-party.sock listening, with no window in which the name
 * refers to a socket that does not accept: binds a temporary name in dir
 * (through /proc/self/fd/N when the path would not fit in sun_path), sets its
 * mode from the directory's write permissions, listens, then renames it over
 * LP_SOCKET_NAME (replacing any stale file).  Returns a nonblocking fd or -1. */
int lp_sock_listen(const char *dir, lp_err *err);
/* Removes <dir>/level-party.sock (the leader's clean close). */
void lp_sock_unlink(const char *dir);
/* Connects to <dir>/level-party.sock (long paths through /proc/self/fd).
 * Returns a nonblocking fd, or -errno (ENOENT, ECONNREFUSED, ...). */
int lp_sock_connect(const char *dir);

/* Asks who holds <dir>/LOCK without taking it: F_GETLK on a read-only fd,
 * whose close wakes no watch.  This process must not hold that LOCK itself:
 * closing any fd of the file would drop its own lock (party.c only probes
 * directories it has not opened).  Returns the holder's pid, 0 when free, -1
 * when it cannot tell (a holder in another pid namespace, an open file
 * description lock, a LOCK it cannot read): party.c counts -1 as held. */
pid_t lp_lock_holder(const char *dir);
/* Takes <dir>/LOCK for this process, as LevelDB will: checks that this
 * process may create files in dir (faccessat, effective ids), opens LOCK for
 * writing (created 0644 when missing; never through a symbolic link), and
 * takes an fcntl write lock on the whole file.  Returns the fd, which holds
 * the lock until it is closed or the process's lock on the file is released
 * (LevelDB's own close releases it too: fcntl locks belong to the process);
 * or -1 with err: LP_ELOCKED when another process holds it, LP_EACCES (or
 * the errno's code) when this process may not take it, err->msg then naming
 * the file, its owner and mode, and our uid, as a clause without an "op: "
 * prefix (the caller's message says what it was doing).  The same rule as
 * lp_lock_holder applies: never on a LOCK this process may hold already. */
int lp_lock_take(const char *dir, lp_err *err);
/* The effective uid of process pid (from /proc/<pid>/status, which stays
 * readable when the process is not dumpable): 0, or -1 when unknown. */
int lp_proc_uid(pid_t pid, uid_t *uid);

/* A watch on the directory that becomes readable when LOCK is closed by a
 * writer (its holder exited or closed the db) or the socket name appears. */
typedef struct lp_watch {
  int fd;
} lp_watch;
int lp_watch_open(lp_watch *w, const char *dir, lp_err *err); /* 0 / -1 */
void lp_watch_drain(lp_watch *w);                             /* read and discard pending events */
void lp_watch_close(lp_watch *w);

/* ---- Client: the follower's request table, no I/O (client.c) ---- */

/* The request table of one follower connection.  Requests are identified by a
 * token that grows with submission order; wire ids are small and dense (the
 * lowest free slot, as Node does) and never decide replay order.  Bytes to send
 * accumulate in lp_client_out(); received bytes go in through lp_client_feed().
 * On a lost connection lp_client_reset() forgets the wire state and
 * lp_client_replay() re-frames every pending request in token order, then
 * reopens every iterator right after its bookmark. */
typedef struct lp_client lp_client;
typedef struct lp_citer lp_citer;

typedef struct lp_client_opts {
  uint32_t window;  /* the largest iterator window (entries) asked for */
  size_t max_frame; /* largest frame sent or accepted */
} lp_client_opts;
/* Sets LP_DEFAULT_WINDOW and LP_DEFAULT_MAX_FRAME; lp_client_new takes a 0 in
 * either for its default too.  An iterator's window starts at
 * LP_FIRST_WINDOW (or `window` when smaller) and doubles, up to `window`, at
 * each refill after the caller had to wait for entries: a reader that keeps
 * up gets large windows, one that does not never asks a leader for large
 * bursts (docs/PROTOCOL.md, "Iterators and windows"). */
#define LP_DEFAULT_WINDOW 1024
#define LP_FIRST_WINDOW   32
void lp_client_opts_init(lp_client_opts *o);

lp_client *lp_client_new(const lp_client_opts *o);
void lp_client_free(lp_client *c); /* frees pending requests and iterators */

/* Queues a request.  rest is the encoded body after the id (lp_wire_rest_*),
 * copied.  deadline_ns: absolute lp_now_ns() time, or 0 for none.  Returns the
 * token (> 0) or 0 when out of memory.  A request whose frame would exceed
 * max_frame is never sent: it is finished at once with LP_ETOOLARGE (no
 * leader could take it, so no retry could help). */
uint64_t lp_client_submit(lp_client *c, int tag, lp_slice rest, uint64_t deadline_ns);

/* Bytes waiting to be written; the transport writes a prefix and then calls
 * lp_buf_consume on it. */
lp_buf *lp_client_out(lp_client *c);

/* Feeds received bytes.  Completes requests and fills iterator buffers.  Returns
 * 0, or -1 with err (LP_EPROTO) when the peer broke the protocol: a body that
 * does not decode, a bad length prefix, an iterator entry without a key or
 * beyond the window (the caller then closes the connection and calls
 * lp_client_reset).  Unknown ids, unknown reply tags and empty frames are
 * ignored, as Node does; a reply of the wrong type for its request finishes
 * the request with LP_EREMOTE.  A frame over max_frame finishes the request
 * (or fails the iterator) it answers with LP_ETOOLARGE once its tag and id
 * are in, and its bytes are dropped as they come, never buffered. */
int lp_client_feed(lp_client *c, const char *bytes, size_t len, lp_err *err);

/* State of a request.  0 pending, 1 done.  A token that is unknown (already
 * taken) counts as done. */
int lp_client_done(lp_client *c, uint64_t token);

/* The outcome of a finished request, owned by the caller after take:
 * code != LP_OK for a local failure (ETIMEDOUT, ELEADERLOST, ECLOSED) with msg;
 * else payload holds the reply frame's payload (tag + body), to decode with
 * lp_wire_decode_response. */
typedef struct lp_result {
  lp_code code;
  char *msg; /* malloc'd or NULL */
  lp_buf payload;
} lp_result;
/* Moves the result of a finished request out of the table (0), or -1 when the
 * token is not finished or unknown. */
int lp_client_take(lp_client *c, uint64_t token, lp_result *res);
void lp_result_free(lp_result *res);

/* Drops a request the caller no longer waits for (e.g. its coroutine was
 * collected).  Its wire id stays reserved until its reply arrives or a reset. */
void lp_client_forget(lp_client *c, uint64_t token);

/* The finished-token log, for a poller that resumes exactly the waiters of
 * the requests that finished instead of asking after each one.  While on,
 * every request that finishes (reply, failure, expiry, forget) has its token
 * appended; switching it on or off empties it.  lp_client_finished hands
 * over the tokens logged since its last call (valid until the next call
 * into c) and empties the log; it returns -1 when some token was not logged
 * (out of memory, or the log was full): the caller must then check every
 * token it waits for.  The log never holds more than LP_FINISHED_LOG_MAX
 * tokens: a poller that is not drained (luv loaded, its loop not running,
 * every call blocking) costs a bounded 32 KiB, never memory per request. */
#define LP_FINISHED_LOG_MAX 4096
void lp_client_log_finished(lp_client *c, int on);
int lp_client_finished(lp_client *c, const uint64_t **tokens, size_t *n);

/* Number of requests (not forgotten) still waiting for a reply, and of open
 * iterators; both zero means "flushed". */
size_t lp_client_pending(lp_client *c);
size_t lp_client_iterators(lp_client *c);

/* Timeouts: earliest deadline among pending requests and iterator waits, or 0.
 * lp_client_expire finishes every request and iterator wait whose deadline
 * <= now with LP_ETIMEDOUT and returns how many it finished. */
uint64_t lp_client_next_deadline(lp_client *c);
size_t lp_client_expire(lp_client *c, uint64_t now_ns);

/* The connection is gone.  The out buffer is cleared, every wire id is freed,
 * iterators drop entries received but not consumed (and an end or error the
 * leader sent after them: the reopen fetches it again; one decided locally
 * stays).  Pending requests stay. */
void lp_client_reset(lp_client *c);
/* A new connection (or a loopback session) is ready: appends to out every
 * pending request in token order, then every open iterator's reopen (options
 * rewritten from its bookmark: forward drops gt/gte and sends gt = last key
 * consumed; reverse drops lt/lte and sends lt = it; limit = limit - consumed).
 * It starts with lp_client_reset, so it is right on a first connection too;
 * call it before anything is written on the new connection. */
void lp_client_replay(lp_client *c);
/* retry=false: finish every pending request with code/msg, and put every open
 * iterator into the error state with them. */
void lp_client_fail_all(lp_client *c, lp_code code, const char *msg);

/* Remote iterators.  The range is copied; keys are always requested on the wire
 * (for the bookmark) and stripped by lp_client_iter_next when the caller did not
 * ask for them. */
lp_citer *lp_client_iter_open(lp_client *c, const lp_range *r);
/* 1 with the next entry (slices valid until the next call on this iterator
 * or the next lp_client_feed, which may move the iterator's buffer; a side
 * the caller did not ask for is an absent slice), 0 at the end, -1 with
 * err (remote error, ECLOSED, ETIMEDOUT, ELEADERLOST), 2 when no entry is
 * buffered yet: the caller must wait for input (and may set a deadline with
 * lp_client_iter_wait_deadline).  Consuming entries appends acks to out. */
int lp_client_iter_next(lp_client *c, lp_citer *it, lp_slice *key, lp_slice *value, lp_err *err);
/* The caller found nothing buffered and waits for it now: sets the wait's
 * deadline (0: none), and counts as a reader that keeps up (the next refill
 * doubles the window, see LP_FIRST_WINDOW). */
void lp_client_iter_wait_deadline(lp_client *c, lp_citer *it, uint64_t deadline_ns);
/* 1 when lp_client_iter_next would not return 2. */
int lp_client_iter_ready(lp_client *c, lp_citer *it);
/* Moves the iterator to the first entry of its range >= target (forward) or
 * <= target (reverse): drops what is buffered, ends the remote iterator and
 * opens a new one from the target, with the rest of the range and of the
 * limit.  The bookmark starts again there, so a reopen after a failover
 * resumes from the target, or from the last entry consumed since.  `unread`
 * entries the caller took and did not use (a page) go back to the limit.  An
 * iterator in error or at its limit stays so.  0, or -1 out of memory (the
 * iterator is then in error). */
int lp_client_iter_seek(lp_client *c, lp_citer *it, lp_slice target, int64_t unread);
/* Ends the iterator (sends batch:0 when it is open on the wire) and frees it. */
void lp_client_iter_close(lp_client *c, lp_citer *it);

/* ---- Worker: the leader's thread for long writes (worker.c) ---- */

/* Writes queued batches on the engine, in order, on a thread of its own, and
 * signals an eventfd for each one finished.  Driven from one thread (the
 * party's); the engine must outlive it. */
typedef struct lp_worker lp_worker;
/* Set in every job token, never in a client request token; exact in a double
 * (LuaJIT's numbers). */
#define LP_JOB_TOKEN (1ull << 48)
lp_worker *lp_worker_start(lp_engine *e); /* NULL: out of memory or threads */
/* Queues a batch and takes it (freed when its outcome is taken, or at stop).
 * Returns a token with LP_JOB_TOKEN set, or 0 when out of memory (the batch
 * is then still the caller's). */
uint64_t lp_worker_submit(lp_worker *w, lp_batch *b, int sync);
int lp_worker_done(lp_worker *w, uint64_t token); /* 1 finished (or unknown) */
/* A finished job's outcome: 0 ok, -1 with err; -2 unknown or unfinished. */
int lp_worker_take(lp_worker *w, uint64_t token, lp_err *err);
int lp_worker_fd(const lp_worker *w); /* the eventfd: readable once a job finished */
int lp_worker_collect(lp_worker *w);  /* drains the eventfd; 1 when a job finished */
/* Runs every queued job, joins the thread, frees what was not taken and
 * closes the eventfd.  No-op on NULL. */
void lp_worker_stop(lp_worker *w);
/* Jobs submitted and not yet written.  0 (acquire): every queued write is in
 * the engine, so a write made now on the caller's thread applies after them. */
unsigned lp_worker_inflight(lp_worker *w);
void lp_worker_drain(lp_worker *w); /* waits until lp_worker_inflight is 0 */

/* The hand-off of a leader's coroutine writes (lua_core.c; docs/
 * ARCHITECTURE.md, "The loop never stalls"): the worker keeps whether the
 * party is in hand-off mode (the Lua thread's alone) and how long the last
 * job's write took.  lp_handoff tunes it, process-wide (core.write_handoff:
 * tests and bench/loopgap.lua). */
typedef struct lp_handoff_tuning {
  uint64_t slow_ns, fast_ns, check_ns;
  int l0, mem_pct;
  uint64_t delay_ns; /* atomic (the worker reads it) */
} lp_handoff_tuning;
extern lp_handoff_tuning lp_handoff;
int lp_worker_in_handoff(const lp_worker *w);
void lp_worker_set_handoff(lp_worker *w, int on);
uint64_t lp_worker_last_took(const lp_worker *w); /* ns; UINT64_MAX: none yet */
uint64_t lp_worker_handed(const lp_worker *w);    /* jobs submitted, ever */
/* A numeric LevelDB property ("leveldb.num-files-at-level0"); 0 unknown. */
uint64_t lp_engine_number(lp_engine *e, const char *property);

/* ---- Party: one per (process, directory) (party.c) ---- */

/* Every handle one owner (a lua_State, or NULL for C callers: opts.owner)
 * opens on one directory shares one party, found by the owner and the
 * directory's realpath or its (st_dev, st_ino) (a bind mount gives one
 * directory two realpaths).  Parties of different owners on one directory
 * are independent followers (their own client, connection, watch, epoll
 * set, worker), but the process leads a directory once: the lead (LOCK,
 * engine, server thread, socket file) is process-wide, keyed the same way,
 * refcounted by the parties attached to it, and every probe and take of a
 * LOCK runs under its mutex after checking that no lead of the directory
 * exists (LevelDB's open and close run outside it, the lead listed busy,
 * and a party of that directory that would lead waits).  That is what keeps
 * two spellings of a path, or two owners, from giving two LevelDB handles,
 * and keeps a process from ever probing or calling leveldb_open on a
 * directory whose LOCK it holds (closing any fd of the LOCK, or a failed
 * second open, would drop that lock).
 *
 * States: ELECTING (no leader known: the election runs in lp_party_step),
 * FOLLOWER (connected), LEADER (engine + server thread), CLOSED.  A follower
 * that wins an election keeps its client and finishes what it had in flight
 * through an in-memory lp_session on its own engine (the loopback).
 *
 * A party is driven from one thread at a time (the thread of the Lua state that
 * owns it); other parties, the server and worker threads run concurrently,
 * and share only the lead's engine, which LevelDB makes thread-safe. */
typedef struct lp_party lp_party;

enum { LP_ROLE_CLOSED = 0, LP_ROLE_LEADER = 1, LP_ROLE_FOLLOWER = 2 };

typedef struct lp_party_opts {
  lp_engine_opts engine;
  lp_server_opts server;
  lp_client_opts client;
  int retry;                /* replay in-flight requests across leader changes */
  uint64_t open_timeout_ns; /* how long open waits for a leader that serves */
  int log;                  /* as leader, log refused peers and protocol errors to stderr */
  int lead;                 /* 0: never take the LOCK (a follower-only handle) */
  int external;             /* the follower's transport lives outside the party (nginx
                             * cosockets): the party never connects, and elects only in
                             * lp_party_elect */
  const void *owner;        /* whose party: handles share a party only with handles of
                             * the same owner (lua_core.c: one per lua_State); NULL */
} lp_party_opts;

/* The parts' own defaults, then: retry and log on, LP_DEFAULT_OPEN_TIMEOUT_NS,
 * and a bloom filter of LP_DEFAULT_BLOOM_BITS (a bare engine has none). */
#define LP_DEFAULT_OPEN_TIMEOUT_NS (10ull * 1000000000ull)
#define LP_DEFAULT_BLOOM_BITS      10
void lp_party_opts_init(lp_party_opts *o);

/* Finds this process's party for dir or starts one (the first election step
 * runs at once, without waiting).  *out holds one more of the party's refs. */
int lp_party_open(const char *dir, const lp_party_opts *o, lp_party **out, lp_err *err);
/* Drops one ref; the last one closes: a leader detaches from the lead (the
 * last party attached stops the server, removes the socket and closes
 * LevelDB); a follower disconnects.  Pending requests of a closed party
 * finish with LP_ECLOSED. */
void lp_party_unref(lp_party *p);

int lp_party_role(const lp_party *p);
/* One election step for an external transport: never connects and never
 * waits (leveldb_open takes what LevelDB's recovery takes).  A leader stays
 * leader.  Otherwise: takes the LOCK when it is free (unless opts.lead is 0)
 * and leads; else is a follower, with *holder the LOCK's holder (0: none or
 * unknown), and the transport connects to lp_party_address.  Returns
 * LP_ROLE_LEADER, LP_ROLE_FOLLOWER, or -1 with err. */
int lp_party_elect(lp_party *p, pid_t *holder, lp_err *err);
/* "unix:<dir>/level-party.sock", or for a path longer than a socket address
 * holds "unix:/proc/self/fd/N/level-party.sock" over an O_PATH descriptor of
 * the directory the party keeps.  0, or -1 with err. */
int lp_party_address(lp_party *p, char *buf, size_t n, lp_err *err);
/* The leader-credential check for an external transport, which cannot read
 * SO_PEERCRED of its own connection (a cosocket).  lp_party_sock_mark, right
 * before the transport connects to lp_party_address, records the socket
 * file's (st_dev, st_ino, st_ctim).  lp_party_sock_vet, once it has
 * connected and before it sends anything: when the file is still that one,
 * connects a socket of its own (a unix connect never waits), reads the
 * leader's SO_PEERCRED and applies the party's trust rule (our uid, or the
 * owner of both the directory and LOCK, or allow_other_users), then checks
 * that the file is still that one.  0: trusted; 1: the socket was replaced or
 * is gone meanwhile (drop the connection unused and elect again); -1 with err
 * (EACCES naming the leader's pid and uid): refused, send nothing. */
void lp_party_sock_mark(lp_party *p);
int lp_party_sock_vet(lp_party *p, lp_err *err);
/* Fork safety: a party belongs to the process that opened it.  In a child
 * of a fork lp_party_forked is 1: the binding refuses every call, and the
 * last unref frees the child's copy without touching the parent's LevelDB,
 * socket or threads.  lp_party_open never hands a child its parent's party. */
pid_t lp_self_pid(void); /* getpid(), cached across forks */
int lp_party_forked(const lp_party *p);
pid_t lp_party_pid(const lp_party *p); /* the process that opened it */
/* 1 once the first election has ended (leader, or follower that connected to
 * a leader it trusts; one of another uid must also have answered a first
 * request, since it refuses a uid it does not serve by closing at once). */
int lp_party_opened(const lp_party *p);
const char *lp_party_path(const lp_party *p);
lp_engine *lp_party_engine(lp_party *p); /* NULL unless leader */
/* The LOCK's holder as lp_lock_holder reports it, but never probed while
 * this process leads the directory (through any party): then getpid(). */
pid_t lp_party_lock_holder(lp_party *p);
/* The follower client (a promoted leader keeps it while its loopback runs),
 * or NULL when there is none. */
lp_client *lp_party_client(lp_party *p);
/* lp_party_client, creating the client first unless leader or closed; NULL
 * when leader without leftovers, closed, or out of memory. */
lp_client *lp_party_ensure_client(lp_party *p);
/* Incremented whenever a request or iterator may have progressed. */
uint64_t lp_party_progress(const lp_party *p);
/* Role changes observed since the last call (for on_role); returns the new role
 * once per change, else -1. */
int lp_party_take_role_change(lp_party *p);

/* Queues a request on the follower client (creating it if needed) and tries to
 * send it at once.  Returns the token, 0 on ENOMEM. */
uint64_t lp_party_submit(lp_party *p, int tag, lp_slice rest, uint64_t deadline_ns);
/* Sends what the client has queued, without blocking. */
void lp_party_flush(lp_party *p);

/* Does all work that is due without blocking: writes, reads, election steps,
 * the loopback, deadlines.  Returns 0, or -1 with err when the *first* election
 * failed for good (LP_ELOCKED after open_timeout, LP_EACCES for a leader this
 * process does not trust, that refuses it or that it may not reach, or for a
 * free LOCK it may not take, or an open error).  After open, such failures
 * fail every pending request and iterator instead (docs/ARCHITECTURE.md, "The
 * election"). */
int lp_party_step(lp_party *p, lp_err *err);
/* What an event loop polls for reading before the next step: fd (-1: none) is
 * the party's own epoll set, which holds whatever the party waits on now (the
 * follower's connection, the election's watch, the worker's eventfd) with
 * the events it needs; timeout_ms (-1: none; 0: step again at once).  The fd
 * stays the same for the party's life, and no loop ever polls the party's
 * sockets themselves (a reset connection is the party's business). */
void lp_party_pollinfo(lp_party *p, int *fd, int *timeout_ms);
/* Blocking mode: steps and polls until the condition holds.  Returns 0, or -1
 * with err when the first election failed, or with LP_EINTR when a signal
 * handler interrupted the wait (the caller decides whether to wait again). */
int lp_party_wait_opened(lp_party *p, lp_err *err);
int lp_party_wait_token(lp_party *p, uint64_t token, lp_err *err);
int lp_party_wait_iter(lp_party *p, lp_citer *it, lp_err *err);

/* An event loop polls the fd lp_party_pollinfo names (1) or not (0): while
 * it does, finished requests are logged for it and requests submitted in one
 * turn go out in one write. */
void lp_party_set_polled(lp_party *p, int polled);
/* A leader's long writes (big batches) from a coroutine run on the party's
 * worker (started on first use), so the Lua thread's loop keeps running.
 * Job tokens live apart from the client's request tokens (LP_JOB_TOKEN); the
 * worker's eventfd is what lp_party_pollinfo names while jobs run.
 * lp_party_write_job takes the batch and returns the token, or returns 0
 * without it (ENOMEM, or not leader: the caller then writes inline). */
uint64_t lp_party_write_job(lp_party *p, lp_batch *b, int sync);
/* The leader's worker, started when `start` and not yet running; NULL when
 * not leader, not started, or it could not start. */
lp_worker *lp_party_worker(lp_party *p, int start);
/* 1 when the job is finished (or unknown). */
int lp_party_job_done(lp_party *p, uint64_t token);
/* Takes a finished job's outcome: 0 ok, -1 with err; -2 unknown token. */
int lp_party_job_take(lp_party *p, uint64_t token, lp_err *err);

#endif

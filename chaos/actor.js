'use strict'

// chaos/actor.js DIR NAME SEED TIMEOUT LOG: a Node level-party 5.1.1 process of the chaos soak.
//
// The same log format as chaos/actor.lua (see there), the same workload without iterators
// (Node followers resume iterators with duplicates after a failover, a known level-party
// behaviour levelparty does not change for them). level-party has no timeout: a watchdog of
// 3 x TIMEOUT ends a call's wait ("err WATCHDOG", outcome unknown) so the loop goes on.
// stdin: "close" closes the handle and exits 0 (the driver starts a new incarnation),
// "idle" stops issuing operations ("Z" once the calls in flight returned).

const path = require('path')
const fs = require('fs')
const readline = require('readline')

let level
try {
  level = require('level-party')
} catch (err) {
  level = require(path.join(__dirname, '..', 'node_modules', 'level-party'))
}

const [dir, name, seedArg, timeoutArg, logfile] = process.argv.slice(2)
const timeoutMs = Math.round(Number(timeoutArg) * 1000)
const M = 2147483647
let x = Math.floor(Number(seedArg)) % M
if (x === 0) x = 1
function r (a, b) {
  x = (x * 48271) % M
  const f = (x - 1) / (M - 1)
  if (a === undefined) return f
  if (b === undefined) { b = a; a = 1 }
  return a + Math.floor(f * (b - a + 1))
}
const NKEYS = 80
const key = (i) => 'k' + String(i).padStart(2, '0')
const rkey = () => key(r(0, NKEYS - 1))
const now = () => String(process.hrtime.bigint() / 1000n)

const fd = fs.openSync(logfile, 'a')
function rec (...parts) { fs.writeSync(fd, parts.join(' ') + '\n') }

let seq = 0
let opid = 0
let idle = false
let inflight = 0
const value = () => name + '.' + (++seq)
function distinctKeys (n) {
  const out = []
  while (out.length < n) {
    const k = rkey()
    if (!out.includes(k)) out.push(k)
  }
  return out
}

const t0 = now()
const db = level(dir)
let role = 'follower'
db.on('leader', () => { role = 'leader'; rec('R', now(), 'leader') })
db.on('error', (err) => process.stderr.write('level-party error: ' + String(err && err.message) + '\n'))

// call(id, start, finish): start(cb) issues the request; finish(value) -> result words.
function call (id, start, finish, next) {
  let over = false
  inflight++
  const dog = setTimeout(() => {
    over = true
    inflight--
    rec('D', id, now(), 'err', 'WATCHDOG')
    next()
  }, timeoutMs * 3)
  start((err, v) => {
    if (over) return
    over = true
    clearTimeout(dog)
    inflight--
    if (err && !(err.notFound && finish)) {
      rec('D', id, now(), 'err', (err.code || err.name || 'ERR').replace(/\s+/g, '_'))
    } else {
      rec('D', id, now(), 'ok', ...(finish ? [finish(err ? undefined : v)] : []))
    }
    next()
  })
}

function batchOps () {
  const ops = []
  const words = []
  for (const k of distinctKeys(r(2, 5))) {
    if (r() < 0.7) {
      const v = value()
      ops.push({ type: 'put', key: k, value: v })
      words.push('p:' + k + ':' + v)
    } else {
      ops.push({ type: 'del', key: k })
      words.push('d:' + k)
    }
  }
  return [ops, words.join(' ')]
}

function oneOp (next) {
  const w = r(100)
  const id = ++opid
  if (w <= 33) {
    const k = rkey(); const v = value()
    rec('I', id, now(), 1, 'put', k, v)
    call(id, (cb) => db.put(k, v, cb), null, next)
  } else if (w <= 43) {
    const k = rkey()
    rec('I', id, now(), 1, 'del', k)
    call(id, (cb) => db.del(k, cb), null, next)
  } else if (w <= 51) {
    const [ops, words] = batchOps()
    rec('I', id, now(), 1, 'batch', words)
    call(id, (cb) => db.batch(ops, cb), null, next)
  } else if (w <= 57) {
    const [ops, words] = batchOps()
    const b = db.batch()
    for (const o of ops) { if (o.type === 'put') b.put(o.key, o.value); else b.del(o.key) }
    rec('I', id, now(), 1, 'chain', words)
    call(id, (cb) => b.write(cb), null, next)
  } else if (w <= 62) {
    const lo = r(0, NKEYS - 1); const hi = lo + r(1, 4)
    rec('I', id, now(), 1, 'clear', key(lo), key(hi))
    call(id, (cb) => db.clear({ gte: key(lo), lt: key(hi) }, cb), null, next)
  } else if (w <= 80) {
    const k = rkey()
    rec('I', id, now(), 1, 'get', k)
    call(id, (cb) => db.get(k, cb), (v) => (v === undefined ? '-' : v), next)
  } else if (w <= 94) {
    const keys = distinctKeys(r(1, 5))
    rec('I', id, now(), 1, 'getm', keys.join(' '))
    call(id, (cb) => db.getMany(keys, cb),
      (vs) => keys.map((_, i) => (vs && vs[i] !== undefined ? vs[i] : '-')).join(' '), next)
  } else {
    opid--
    setTimeout(next, r(5, 60))
  }
}

function loop () {
  if (idle) {
    if (inflight === 0) { idle = 'said'; rec('Z', now()) }
    return
  }
  oneOp(loop)
}

db.get('\u0000probe', () => {
  rec('O', now(), role, 1, t0)
  loop()
  loop()
})

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line === 'idle' && !idle) {
    idle = true
    if (inflight === 0) { idle = 'said'; rec('Z', now()) }
  } else if (line === 'close') {
    rec('C', now(), 1)
    db.close(() => process.exit(0))
  }
})
rl.on('close', () => process.exit(0))

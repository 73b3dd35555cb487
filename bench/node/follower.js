'use strict'

// Node level-party follower benchmark for `make bench`:
//   node bench/node/follower.js <dir> [N] [M] [valueSize]
// Against whatever process leads <dir> (Lua or Node), it measures, one request at a time
// (each waits for its reply):
//   N puts, N gets of those keys, and one read stream of M entries (preloaded by a batch).
// Output, one line each (numbers are per second, latencies in microseconds):
//   node_follower role follower
//   node_follower put_ops_per_sec X
//   node_follower put_p50_us X / put_p99_us X
//   node_follower get_ops_per_sec X
//   node_follower get_p50_us X / get_p99_us X
//   node_follower stream_entries_per_sec X
// Exits 1 with "node_follower error <msg>" if anything fails, 2 if this process became
// leader (nobody led <dir>: the numbers would not measure a follower).

const path = require('path')
let level
try {
  level = require('level-party')
} catch (err) {
  level = require(path.join(__dirname, '..', '..', 'node_modules', 'level-party'))
}

const dir = process.argv[2]
const N = parseInt(process.argv[3] || '20000', 10)
const M = parseInt(process.argv[4] || '100000', 10)
const valueSize = parseInt(process.argv[5] || '100', 10)
if (!dir) {
  process.stderr.write('usage: follower.js <dir> [N] [M] [valueSize]\n')
  process.exit(2)
}

const out = (name, value) => process.stdout.write('node_follower ' + name + ' ' + value + '\n')
const fail = (err) => {
  out('error', String((err && err.message) || err))
  process.exit(1)
}

let leader = false
const db = level(dir, { keyEncoding: 'utf8', valueEncoding: 'binary' })
db.on('leader', () => { leader = true })

const value = Buffer.alloc(valueSize, 0x61)
const key = (prefix, i) => prefix + String(i).padStart(9, '0')
const now = () => process.hrtime.bigint()

function percentile (sorted, p) {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

// Runs op(i, cb) n times sequentially; resolves with [opsPerSec, p50us, p99us].
function sequential (n, op) {
  return new Promise((resolve, reject) => {
    const lat = new Float64Array(n)
    const start = now()
    let i = 0
    const next = () => {
      if (i === n) {
        const secs = Number(now() - start) / 1e9
        const sorted = Array.from(lat).sort((a, b) => a - b)
        return resolve([n / secs, percentile(sorted, 0.5), percentile(sorted, 0.99)])
      }
      const t0 = now()
      op(i, (err) => {
        if (err) return reject(err)
        lat[i] = Number(now() - t0) / 1e3
        i++
        // setImmediate keeps deep recursion (and a synchronous reply path) off the stack
        setImmediate(next)
      })
    }
    next()
  })
}

function preload (m) {
  return new Promise((resolve, reject) => {
    let i = 0
    const step = () => {
      if (i >= m) return resolve()
      const ops = []
      for (let j = 0; j < 1000 && i < m; j++, i++) ops.push({ type: 'put', key: key('s', i), value })
      db.batch(ops, (err) => (err ? reject(err) : step()))
    }
    step()
  })
}

function stream (m) {
  return new Promise((resolve, reject) => {
    let count = 0
    const start = now()
    db.createReadStream({ gte: 's', lt: 't' })
      .on('data', () => { count++ })
      .on('error', reject)
      .on('end', () => {
        if (count !== m) return reject(new Error('stream gave ' + count + ' entries, expected ' + m))
        resolve(count / (Number(now() - start) / 1e9))
      })
  })
}

async function main () {
  await new Promise((resolve, reject) => db.get('\u0000bench-probe', (err) => {
    if (err && !err.notFound) return reject(err)
    resolve()
  }))
  if (leader) {
    out('error', 'this process became leader: start a leader on ' + dir + ' first')
    process.exit(2)
  }
  out('role', 'follower')
  const [putOps, putP50, putP99] = await sequential(N, (i, cb) => db.put(key('k', i), value, cb))
  out('put_ops_per_sec', putOps.toFixed(0))
  out('put_p50_us', putP50.toFixed(1))
  out('put_p99_us', putP99.toFixed(1))
  const [getOps, getP50, getP99] = await sequential(N, (i, cb) => db.get(key('k', i), (err, v) => {
    if (!err && v.length !== valueSize) err = new Error('bad value length ' + v.length)
    cb(err)
  }))
  out('get_ops_per_sec', getOps.toFixed(0))
  out('get_p50_us', getP50.toFixed(1))
  out('get_p99_us', getP99.toFixed(1))
  await preload(M)
  const eps = await stream(M)
  out('stream_entries_per_sec', eps.toFixed(0))
  db.close(() => process.exit(0))
}

main().catch(fail)

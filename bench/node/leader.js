'use strict'

// Node level-party leader for `make bench`:
//   node bench/node/leader.js <dir>
// Opens level-party on <dir>, prints "ready" (and "role leader" or "role follower") once a
// first round trip finished, then stays up until stdin closes, and closes the handle.
// Prints "error <message>" and exits 1 when it cannot become leader within 10 s: the bench
// measures followers against a *Node* leader, so another process holding the directory is
// an error.

const path = require('path')
let level
try {
  level = require('level-party')
} catch (err) {
  level = require(path.join(__dirname, '..', '..', 'node_modules', 'level-party'))
}

const dir = process.argv[2]
if (!dir) {
  process.stderr.write('usage: leader.js <dir>\n')
  process.exit(2)
}

let leader = false
const db = level(dir, { valueEncoding: 'binary', keyEncoding: 'binary' })
db.on('leader', () => { leader = true })

const timer = setTimeout(() => {
  process.stdout.write('error not leader after 10 s (another process holds ' + dir + ')\n')
  process.exit(1)
}, 10000)

db.get(Buffer.from('\u0000bench-probe'), (err) => {
  if (err && !err.notFound) {
    process.stdout.write('error ' + err.message + '\n')
    process.exit(1)
  }
  if (!leader) return // keep waiting for the timer: not our directory to lead
  clearTimeout(timer)
  process.stdout.write('ready\nrole leader\n')
})

process.stdin.resume()
process.stdin.on('end', () => {
  db.close(() => process.exit(0))
})

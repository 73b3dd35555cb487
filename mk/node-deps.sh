#!/bin/sh
# Make the Node side of the interop specs and benchmarks available: node, npm,
# node_modules/level-party (5.1.1) and node_modules/subleveldown (5.0.1), pinned by
# package-lock.json, in the repository root.
#
# Exit status: 0 when Node and level-party are usable; 3 (after printing
# "node unavailable: <reason>" on stdout) when they cannot be had, so that the
# specs can mark themselves pending with that reason. node_modules/ is build
# output (ignored by git); a copy of package-lock.json next to it records what
# was installed, so a changed lock file triggers a fresh `npm ci`.
set -u

root=$(cd "$(dirname "$0")/.." && pwd) || { echo "node unavailable: cannot find the repository root"; exit 3; }
cd "$root" || { echo "node unavailable: cannot cd to $root"; exit 3; }

unavailable() {
  echo "node unavailable: $*"
  exit 3
}

# LEVELPARTY_NO_NODE=1 simulates a machine without Node (checks the specs' pending path).
[ "${LEVELPARTY_NO_NODE:-0}" = 1 ] && unavailable "disabled by LEVELPARTY_NO_NODE=1"

# Never replace a node that is already installed (it may come from elsewhere than apt).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "node-deps: installing nodejs and npm with apt-get" >&2
    if ! command -v node >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm >&2; } ||
        unavailable "apt-get install nodejs npm failed"
    else
      DEBIAN_FRONTEND=noninteractive apt-get install -y npm >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y npm >&2; } ||
        unavailable "apt-get install npm failed"
    fi
  fi
  command -v node >/dev/null 2>&1 || unavailable "no node executable (and cannot apt-get it)"
  command -v npm >/dev/null 2>&1 || unavailable "no npm executable (and cannot apt-get it)"
fi

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || unavailable "node does not run"
[ "$major" -ge 12 ] 2>/dev/null || unavailable "node $major is too old (level-party 5 needs node >= 12)"

[ -f package-lock.json ] || unavailable "package-lock.json is missing"

stamp=node_modules/.levelparty-package-lock.json
if [ ! -f node_modules/level-party/package.json ] || ! cmp -s package-lock.json "$stamp"; then
  echo "node-deps: npm ci" >&2
  npm ci --no-audit --no-fund >&2 || unavailable "npm ci failed (registry unreachable?)"
  cp package-lock.json "$stamp" || unavailable "cannot write $stamp"
fi

# leveldown must load (prebuilt binary for this platform, or a compiled one).
node -e 'require("level-party")' >/dev/null 2>&1 ||
  unavailable "require('level-party') fails: $(node -e 'require("level-party")' 2>&1 | grep -m1 -i error)"
node -e 'require("subleveldown")' >/dev/null 2>&1 ||
  unavailable "require('subleveldown') fails: $(node -e 'require("subleveldown")' 2>&1 | grep -m1 -i error)"

echo "node available: $(node --version), level-party $(node -p 'require("level-party/package.json").version'),\
 subleveldown $(node -p 'require("subleveldown/package.json").version')"
exit 0

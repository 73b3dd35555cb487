#!/bin/sh
# Installs the Debian 12 packages levelparty needs to build, test and bench.
# A quick no-op (dpkg -s only) when everything is present; otherwise one
# `apt-get update` and one `apt-get install` of just the missing packages.
# nodejs/npm are asked for only when no `node`/`npm` is on PATH: an existing
# (possibly non-Debian) Node is never replaced.
set -eu

PKGS="build-essential pkg-config strace lua5.4 liblua5.4-dev libleveldb-dev libuv1-dev
lua-luv lua-luv-dev lua-busted luarocks luajit2 libluajit2-5.1-dev lua-cjson
nginx libnginx-mod-http-lua curl valgrind clang libclang-rt-14-dev python3 util-linux
lua-check clang-format zip unzip"

missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

[ -z "$missing" ] && exit 0

echo "deps: missing:$missing"
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "deps: not root and no sudo; install these as root:" >&2
  echo "  apt-get install -y$missing" >&2
  exit 1
fi
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing

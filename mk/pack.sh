#!/usr/bin/env bash
# mk/pack.sh [OUTDIR]   (`make rock`; mk/rockcheck.sh)
#
# Packs the source rock of the versioned rockspec (levelparty-X.Y.Z-N.rockspec)
# from the working tree, offline: a .src.rock is a zip of the rockspec and the
# source archive its source.url names, which is what `luarocks pack` would
# download.  Here the archive is made from the files of this checkout (tracked
# or new, minus what git ignores), under the directory source.dir names, so
# `luarocks install ./levelparty-X.Y.Z-N.src.rock` builds exactly this tree.
# Prints the path of the rock.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cd "$root"
spec=$(ls levelparty-*-*.rockspec | grep -v -- '-scm-' | head -n 1)
[ -n "$spec" ] || { echo "pack: no versioned rockspec" >&2; exit 1; }
# what the rockspec says: the archive's file name and its top directory
read -r archive topdir version < <(lua5.4 - "$spec" <<'LUA'
local s = {}
assert(loadfile(arg[1], "t", s))()
print(s.source.url:match("[^/]+$"), s.source.dir, s.version)
LUA
)
tmp=$(mktemp -d /tmp/levelparty-pack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/$topdir"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
  done | tar --null -T - -cf - | (cd "$tmp/$topdir" && tar xf -)
else
  tar --exclude=./build --exclude=./node_modules --exclude='*.rock' --exclude='*.o' --exclude='*.so' -cf - . |
    (cd "$tmp/$topdir" && tar xf -)
fi
(cd "$tmp" && tar czf "$archive" "$topdir")
cp "$spec" "$tmp/"
rock="$out/levelparty-$version.src.rock"
rm -f "$rock"
(cd "$tmp" && zip -q -X "$rock" "$(basename "$spec")" "$archive")
echo "$rock"

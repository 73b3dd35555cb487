#!/usr/bin/env bash
# mk/lint.sh [CHECK...]   (`make lint`; mk/runtests.sh runs each CHECK as one test)
#
# Checks that the tree keeps its one style:
#   clang-format  every C file is as clang-format 14 formats it (.clang-format)
#   luacheck      every Lua file passes luacheck (.luacheckrc)
#   indentation   no Lua file indents with tabs (.editorconfig: 2 spaces)
# No CHECK runs all three.  Each prints "lint: CHECK: ok" or its offending
# output; the exit status is 1 when any failed.
# Environment: CLANG_FORMAT (default clang-format-14, else clang-format),
# LUACHECK (default luacheck).
set -u
cd "$(dirname "$0")/.."
shopt -s nullglob

C_FILES=(src/*.c src/*.h include/*.h examples/embed/*.c test/*.c test/*.h test/lua/*.c fuzz/*.c fuzz/*.h bench/*.c)

# The Lua files of the checkout: tracked and new ones, minus what git ignores
# (node_modules, build output); every *.lua outside those without git.
lua_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files --cached --others --exclude-standard -- '*.lua'
  else
    find . -name '*.lua' -not -path './node_modules/*' -not -path './build/*' \
      -not -path './.luarocks/*' -not -path './lua_modules/*' | sed 's|^\./||'
  fi
}

check_clang_format() {
  local cf=${CLANG_FORMAT:-}
  if [ -z "$cf" ]; then
    cf=clang-format
    command -v clang-format-14 >/dev/null 2>&1 && cf=clang-format-14
  fi
  if ! command -v "$cf" >/dev/null 2>&1; then
    echo "$cf not found (make deps installs clang-format)"
    return 1
  fi
  # Other versions format some constructs differently: their verdict is noise.
  if ! "$cf" --version | grep -q 'version 14\.'; then
    echo "needs clang-format 14, found: $("$cf" --version)"
    return 1
  fi
  "$cf" --dry-run --Werror "${C_FILES[@]}" 2>&1
}

check_luacheck() {
  local lc=${LUACHECK:-luacheck}
  if ! command -v "$lc" >/dev/null 2>&1; then
    echo "$lc not found (make deps installs lua-check)"
    return 1
  fi
  "$lc" --formatter plain --no-color . 2>&1
}

check_indentation() {
  local files=() f rc
  while IFS= read -r f; do [ -f "$f" ] && files+=("$f"); done < <(lua_files)
  [ ${#files[@]} -eq 0 ] && return 0
  grep -nH -P '^ *\t' "${files[@]}"
  rc=$?
  # grep finds no tab-indented line (1): the pass; 2 is grep's own error
  [ "$rc" -eq 1 ]
}

checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(clang-format luacheck indentation)
status=0
for check in "${checks[@]}"; do
  case $check in
    clang-format) fn=check_clang_format ;;
    luacheck) fn=check_luacheck ;;
    indentation) fn=check_indentation ;;
    *) echo "lint: unknown check '$check' (clang-format, luacheck, indentation)" >&2; exit 2 ;;
  esac
  out=$($fn)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "lint: $check: ok"
  else
    status=1
    echo "lint: $check: FAILED"
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/  | /'
  fi
done
exit $status

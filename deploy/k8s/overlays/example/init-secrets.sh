#!/bin/sh
# Write secrets.env (beside this script) from secrets.env.example: every empty *_PASSWORD /
# *_SECRET_KEY / *_TOKEN gets 32 random bytes in hex (URL-safe), and ${NAME} in later lines is
# replaced by the value of NAME (the database and Redis URLs). Refuses to overwrite.
# Usage: sh init-secrets.sh [TARGET]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
example="$here/secrets.env.example"
target=${1:-"$here/secrets.env"}

if [ -e "$target" ]; then
  echo "init-secrets: $target exists; edit it, or remove it to start over" >&2
  exit 1
fi

random_hex() {
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

umask 077
tmp="$target.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: >"$tmp"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    '#'* | '')
      printf '%s\n' "$line" >>"$tmp"
      continue
      ;;
  esac
  name=${line%%=*}
  value=${line#*=}
  case "$name" in
    *_PASSWORD | *_SECRET_KEY | *_TOKEN)
      if [ -z "$value" ]; then
        value=$(random_hex)
      fi
      ;;
  esac
  # Expand ${VAR} references to values already written.
  while :; do
    # shellcheck disable=SC2016  # a literal ${...} pattern, not an expansion
    case "$value" in
      *'${'*'}'*)
        ref=${value#*\$\{}
        ref=${ref%%\}*}
        ref_value=$(sed -n "s/^${ref}=//p" "$tmp" | head -n 1)
        if [ -z "$ref_value" ]; then
          echo "init-secrets: $name refers to \${$ref}, which has no value above it" >&2
          exit 1
        fi
        value=$(printf '%s' "$value" | sed "s|\${${ref}}|${ref_value}|g")
        ;;
      *) break ;;
    esac
  done
  printf '%s=%s\n' "$name" "$value" >>"$tmp"
done <"$example"
mv "$tmp" "$target"
trap - EXIT
echo "init-secrets: wrote $target (mode 0600)"

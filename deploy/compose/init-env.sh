#!/bin/sh
# Create deploy/compose/.env from .env.example, filling every empty secret with 32 random
# bytes in hex (URL-safe, as the database and Redis URLs need). Refuses to overwrite an
# existing .env. Usage: sh deploy/compose/init-env.sh [TARGET]   (default: .env beside it)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
example="$here/.env.example"
target=${1:-"$here/.env"}

if [ -e "$target" ]; then
  echo "init-env: $target exists; edit it, or remove it to start over" >&2
  exit 1
fi

random_hex() {
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

umask 077
tmp="$target.tmp.$$"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    *_PASSWORD= | *_SECRET_KEY=)
      printf '%s%s\n' "$line" "$(random_hex)" >>"$tmp"
      ;;
    *)
      printf '%s\n' "$line" >>"$tmp"
      ;;
  esac
done <"$example"
mv "$tmp" "$target"
trap - EXIT
echo "init-env: wrote $target (mode 0600); review it before \`docker compose up\`"

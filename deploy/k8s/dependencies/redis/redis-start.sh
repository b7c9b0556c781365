#!/bin/sh
# Start Redis for TuneForge's job queue (arq) with the password from $REDIS_PASSWORD.
# The password goes into a config file readable only by the redis user, never onto the
# command line (where `ps` on the host would show it). Queue data must never be evicted
# (noeviction) and survives restarts (append-only file on the data volume).
set -eu

: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"

conf=/tmp/tuneforge-redis.conf
umask 077
printf 'requirepass "%s"\n' "$REDIS_PASSWORD" >"$conf"
if [ "$(id -u)" = 0 ]; then
  chown redis:redis "$conf"
fi
unset REDIS_PASSWORD

# The image's entrypoint drops root for the redis user, then execs redis-server.
exec docker-entrypoint.sh redis-server "$conf" \
  --appendonly yes \
  --maxmemory-policy noeviction \
  --protected-mode yes

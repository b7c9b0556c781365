#!/bin/sh
# One-shot MinIO set-up for TuneForge (idempotent; safe to run on every `up`):
#   - the bucket TuneForge uses ($S3_BUCKET),
#   - a policy that allows object operations on that bucket only,
#   - a user ($S3_ACCESS_KEY / $S3_SECRET_KEY) with that policy: TuneForge never holds the
#     MinIO root credentials.
# Runs in the minio/minio image (which ships `mc`). The root credentials reach `mc` through
# MC_HOST_local (an environment variable), not the command line. Shared by the compose file
# and the Kubernetes dependency under deploy/k8s/dependencies/minio (kept identical; a test
# checks it).
set -eu

: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
: "${S3_ACCESS_KEY:?S3_ACCESS_KEY is required}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY is required}"
S3_BUCKET=${S3_BUCKET:-tuneforge}
MINIO_URL=${MINIO_URL:-http://minio:9000}

scheme=${MINIO_URL%%://*}
hostport=${MINIO_URL#*://}
MC_HOST_local="${scheme}://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@${hostport}"
export MC_HOST_local

attempt=0
until mc ready local >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "minio-init: MinIO at ${MINIO_URL} is not ready" >&2
    exit 1
  fi
  sleep 2
done

mc mb --ignore-existing "local/${S3_BUCKET}"

policy_file=$(mktemp)
trap 'rm -f "$policy_file"' EXIT
cat >"$policy_file" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::${S3_BUCKET}"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::${S3_BUCKET}/*"]
    }
  ]
}
EOF
mc admin policy create local tuneforge-bucket "$policy_file"
# `mc admin user add` takes the secret as an argument: this one-shot container is the only
# place it appears, for the instant the command runs.
mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
if ! mc admin policy entities local --user "$S3_ACCESS_KEY" 2>/dev/null \
    | grep -q tuneforge-bucket; then
  mc admin policy attach local tuneforge-bucket --user "$S3_ACCESS_KEY"
fi
echo "minio-init: bucket ${S3_BUCKET} and user ${S3_ACCESS_KEY} ready"

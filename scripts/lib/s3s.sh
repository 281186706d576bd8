# Sourced by scripts/: an s3s-fs S3 server on loopback for the test suite.
#
# s3s_start: installs s3s-fs (from crates.io) if missing, starts it on a
# free port over a fresh directory with a bucket bk-test and random
# credentials, and exports what the integration tests read in S3 mode
# (BK_TEST_BACKEND=s3 BK_TEST_S3_ENDPOINT BK_TEST_S3_ROOT
# BK_TEST_S3_BUCKET, AWS_*). The caller's EXIT trap should call s3s_stop.
S3S_VERSION=0.14.1

s3s_start() {
  if ! command -v s3s-fs >/dev/null 2>&1 || ! s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
    cargo install --locked --quiet s3s-fs --version "$S3S_VERSION" --features binary
  fi
  s3s_root=$(mktemp -d /tmp/bk-s3test.XXXXXX)
  mkdir -p "$s3s_root/bk-test"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export AWS_ACCESS_KEY_ID=bk-test-access-key
  AWS_SECRET_ACCESS_KEY=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  export AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1
  s3s-fs --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$s3s_root" >"$s3s_root.log" 2>&1 &
  s3s_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export BK_TEST_BACKEND=s3 BK_TEST_S3_ENDPOINT="http://127.0.0.1:$port" \
    BK_TEST_S3_ROOT="$s3s_root" BK_TEST_S3_BUCKET=bk-test
}

s3s_stop() {
  [ -n "${s3s_pid:-}" ] && kill "$s3s_pid" 2>/dev/null
  [ -n "${s3s_root:-}" ] && rm -rf "$s3s_root" "$s3s_root.log"
  return 0
}

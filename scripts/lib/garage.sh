# A single-node Garage on loopback, as the seeds run it (region "garage",
# plain HTTP, path-style, metadata_fsync and data_fsync on). Sourced by
# scripts/garage-interop and scripts/bench-s3.
#
#   garage_install              builds Garage $GARAGE_VERSION with cargo if
#                               missing (about 10 minutes here)
#   garage_start DIR BUCKET     configures and starts it under DIR, creates
#                               BUCKET and a key allowed on it, and exports
#                               AWS_* for that key and endpoint; the server's
#                               pid is in GARAGE_PID
#   garage_run DIR [VAR=VALUE...]
#                               starts the server configured under DIR again
#                               (after garage_stop), with VAR=VALUE in its
#                               environment (e.g. libfaketime's), and waits
#                               until it answers
#   garage_stop                 stops it
#   s3_curl CURL-ARGS...        curl with a SigV4 signature from the AWS_*
#                               variables (the secret reaches curl on stdin,
#                               not in argv) and the empty body's SHA-256;
#                               curl 7.88 signs the query as written, so
#                               write its parameters sorted, values
#                               percent-encoded, bare names as "name="
#
# GARAGE_COMPRESSION sets compression_level (Garage's default is 1; bk's
# packs are compressed and encrypted already, so "none" saves the server
# a zstd pass over every block).

GARAGE_VERSION=2.5.0

garage_install() {
  if ! command -v garage >/dev/null || ! garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "building Garage $GARAGE_VERSION from crates.io (about 10 minutes)" >&2
    cargo install --locked --quiet garage --version "$GARAGE_VERSION"
  fi
}

# garage_free_port [N]: N (default 1) distinct free loopback ports, one
# line; all are held open until printed, so none is handed out twice.
garage_free_port() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))' "${1:-1}"
}

garage_start() {
  local dir="$1" bucket="$2" s3_port rpc_port admin_port node key_id secret
  read -r s3_port rpc_port admin_port < <(garage_free_port 3)
  mkdir -p "$dir"
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
metadata_fsync = true
data_fsync = true
replication_factor = 1
${GARAGE_COMPRESSION:+compression_level = \"$GARAGE_COMPRESSION\"}
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
  garage_run "$dir"
  node=$(garage -c "$dir/garage.toml" status 2>/dev/null | grep -oE '^[0-9a-f]{16}' | head -n 1 || true)
  [ -n "$node" ] || { echo "garage did not start:" >&2; cat "$dir/garage.log" >&2; return 1; }
  garage -c "$dir/garage.toml" layout assign -z dc1 -c 10GB "$node" >/dev/null
  garage -c "$dir/garage.toml" layout apply --version 1 >/dev/null
  garage -c "$dir/garage.toml" bucket create "$bucket" >/dev/null
  key_id="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  garage -c "$dir/garage.toml" key import --yes -n bk "$key_id" "$secret" >/dev/null
  garage -c "$dir/garage.toml" bucket allow --read --write --owner "$bucket" --key "$key_id" >/dev/null
  # The seeds' Kubernetes Secret, as environment variables.
  export AWS_ACCESS_KEY_ID="$key_id" AWS_SECRET_ACCESS_KEY="$secret"
  export AWS_DEFAULT_REGION=garage AWS_REGION=garage AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
}

garage_run() {
  local dir="$1"
  shift
  env "$@" garage -c "$dir/garage.toml" server >>"$dir/garage.log" 2>&1 &
  GARAGE_PID=$!
  for _ in $(seq 1 100); do garage -c "$dir/garage.toml" status >/dev/null 2>&1 && break; sleep 0.2; done
}

garage_stop() {
  kill "$GARAGE_PID" 2>/dev/null || true
  wait "$GARAGE_PID" 2>/dev/null || true
  GARAGE_PID=""
}

s3_curl() {
  printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
    curl -K - --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
      -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$@"
}

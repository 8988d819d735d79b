#!/usr/bin/env bash
# Runs a throwaway Garage (S3-compatible object store) in the foreground for the tests: one
# node with its data in DIR, the S3 API on 127.0.0.1:S3_PORT, RPC on RPC_PORT, admin on
# ADMIN_PORT, a bucket `chute-test` and a fixed key (printed by nothing: the tests know it).
# Usage: garage-test.sh DIR S3_PORT RPC_PORT ADMIN_PORT
# The process execs into garage, so its PID is the server's. Garage is built by
# scripts/setup-e2e.sh (cargo install garage) when missing.
set -euo pipefail
dir=$1 s3=$2 rpc=$3 admin=$4
bin=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
[ -x "$bin" ] || { echo "garage is not installed (scripts/setup-e2e.sh builds it)" >&2; exit 2; }
mkdir -p "$dir/meta" "$dir/data"
cat > "$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
CONF
export GARAGE_DEFAULT_ACCESS_KEY=GK0123456789abcdef01234567
export GARAGE_DEFAULT_SECRET_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
export GARAGE_DEFAULT_BUCKET=chute-test
exec "$bin" -c "$dir/garage.toml" server --single-node --default-bucket

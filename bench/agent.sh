#!/usr/bin/env bash
# The device agent's footprint and throughput (docs/performance.md,
# "Device agent"):
# 1. size of the stripped release binary with device features only;
# 2. resident memory of `bulwark agent` on embedded defaults, idle a few
#    seconds after start and again after 1000 authenticated status
#    requests (claim, login, then paced at 19/s: the default per-client
#    limit is 20/s);
# 3. `cargo bench -p agent --bench status`: status requests per second and
#    p50/p99 at 1, 16 and 128 keep-alive clients, and full TLS handshakes
#    per second (client and server on this machine).
# Needs port 8443 on 127.0.0.1 free. BENCH_SECS sets the window per level.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
secs="${BENCH_SECS:-5}"

echo "== machine"
echo "$(nproc) CPUs: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

echo "== cargo build --release -p bulwark --no-default-features --features pkcs11"
cargo build -q --release -p bulwark --no-default-features --features pkcs11
work=$(mktemp -d)
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cp "$CARGO_TARGET_DIR/release/bulwark" "$work/bulwark"
strip "$work/bulwark"
size=$(stat -c %s "$work/bulwark")
awk -v s="$size" 'BEGIN {printf "stripped binary: %d bytes (%.2f MiB)\n", s, s / 1048576}'

echo "== bulwark agent on embedded defaults"
cargo bench -q -p agent --bench status --no-run 2>/dev/null
(cd "$work" && exec ./bulwark agent >"$work/agent.log" 2>&1) &
agent_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break
  sleep 0.1
done
sleep 3
rss() { awk '/VmRSS/ {print $2, $3}' "/proc/$agent_pid/status"; }
echo "VmRSS idle, 3 s after start: $(rss)"
cargo bench -q -p agent --bench status -- drive --state "$work/bulwark-state" --requests 1000 --rate 19
sleep 2
echo "VmRSS after 1000 status requests: $(rss)"
kill "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=""

echo "== cargo bench -p agent --bench status -- --secs $secs"
cargo bench -q -p agent --bench status -- --secs "$secs"

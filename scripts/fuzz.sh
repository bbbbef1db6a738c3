#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target in fuzz/, on stable Rust.
#
# cargo-fuzz with `--sanitizer none` needs no nightly: its coverage
# instrumentation (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*,
# --cfg fuzzing) is made of stable flags; only the sanitizers need -Z.
# Memory errors are Rust's to prevent (no `unsafe` in the fuzzed crates),
# so what this run looks for is panics, failed harness invariants,
# timeouts and runaway memory.
#
# Each target runs for a fixed time (FUZZ_GATEWAY_SECS for the gateway's
# protocol targets, FUZZ_CONFIG_SECS for the agent configuration ones)
# on a scratch copy of its checked-in corpus, so fuzz/corpus/ never grows.
# A crash fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/ (git-ignored): turn it into a named seed and
# a fix (fuzz/README.md).
#
# Usage: scripts/fuzz.sh [target...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."

gateway_secs="${FUZZ_GATEWAY_SECS:-30}"
config_secs="${FUZZ_CONFIG_SECS:-10}"
declare -A budget=(
  [mqtt_session]="$gateway_secs"
  [modbus_session]="$gateway_secs"
  [coap_session]="$gateway_secs"
  [agent_file]="$config_secs"
  [device_settings]="$config_secs"
  [bundle]="$config_secs"
)
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(mqtt_session modbus_session coap_session agent_file device_settings bundle)
fi
for t in "${targets[@]}"; do
  [[ -n "${budget[$t]:-}" ]] || { echo "fuzz.sh: unknown target $t" >&2; exit 2; }
done

# cargo-fuzz (crates.io, pinned): installed only when missing or another
# version.
cargo_fuzz_version="0.13.2"
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz ${cargo_fuzz_version}" ]]; then
  echo "installing: cargo-fuzz ${cargo_fuzz_version}"
  cargo install cargo-fuzz --locked --version "${cargo_fuzz_version}"
fi

# cargo-fuzz has no --locked: check fuzz/Cargo.lock is current first.
if ! cargo fetch --manifest-path fuzz/Cargo.toml --locked --quiet; then
  echo "fuzz.sh: fuzz/Cargo.lock is out of date (a crate it builds changed" \
    "its dependencies): run 'cargo update --manifest-path fuzz/Cargo.toml --workspace'" >&2
  exit 1
fi

start=$(date +%s)
# Every target in one cargo invocation (shared dependencies build once).
cargo fuzz build --fuzz-dir fuzz --sanitizer none
echo "fuzz.sh: built in $(($(date +%s) - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$work/$t/"
  echo "fuzz.sh: $t for ${budget[$t]} s"
  # -timeout: one input taking this long is a finding (a hang), not a
  # slow machine.
  if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none "$t" "$work/$t" -- \
      -max_total_time="${budget[$t]}" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 2>"$work/$t.log"; then
    tail -n 40 "$work/$t.log" >&2
    echo "fuzz.sh: $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)" "$work/$t.log" || true
done
echo "fuzz.sh: every target ran without a crash ($(($(date +%s) - start)) s)"

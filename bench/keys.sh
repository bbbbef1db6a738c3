#!/usr/bin/env bash
# Signatures and mutual-TLS handshakes per second for every keystore
# backend, next to OpenSSL in the same run; prints the ratios.
# Needs what scripts/test.sh installs (swtpm, SoftHSM2, libtss2, openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== openssl speed -seconds 3 ecdsap256 (single thread)"
openssl_sign=$(openssl speed -seconds 3 ecdsap256 2>/dev/null \
  | awk '/ecdsa \(nistp256\)/ {print $(NF-1)}')
echo "openssl: ecdsa-p256 sign                      ${openssl_sign} /s"

# A throw-away SoftHSM2 token for the PKCS#11 backend.
hsm=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$hsm"' EXIT
mkdir -p "$hsm/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\n' "$hsm" >"$hsm/softhsm2.conf"
export SOFTHSM2_CONF="$hsm/softhsm2.conf"
softhsm2-util --init-token --free --label bench --so-pin 87654321 --pin 12345678 >/dev/null
export BULWARK_BENCH_PKCS11_URI="pkcs11:token=bench?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=12345678"

echo "== cargo bench -p bulwark --all-features --bench keys (single thread)"
TSS2_LOG=all+none cargo bench -q -p bulwark --all-features --bench keys 2>/dev/null | tee "$out"

rate() { awk -v k="$1" 'index($0, k) == 1 {print $(NF-1)}' "$out"; }
soft=$(rate "software: ecdsa-p256 sign")
native_tls=$(rate "rustls native keys: mTLS handshake")
echo "== ratios"
awk -v a="$soft" -v b="$openssl_sign" \
  'BEGIN {printf "software keystore / openssl sign:         %.2f\n", a / b}'
for backend in "software" "tpm2 (swtpm)" "pkcs11 (SoftHSM2)"; do
  r=$(rate "$backend: mTLS handshake (both sides)")
  [ -n "$r" ] && awk -v a="$r" -v b="$native_tls" -v n="$backend" \
    'BEGIN {printf "%-18s mTLS / rustls native keys: %.2f\n", n, a / b}'
done

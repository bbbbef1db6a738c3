#!/usr/bin/env bash
# Secure updates side by side with RAUC, SWUpdate and OpenSSL, in one run
# with the page cache warm (docs/performance.md, "Secure updates"):
# 1. full verification of a 1 GiB bundle: ours (signed manifest, then the
#    chunk hashes on all cores) against `openssl dgst -sha256` of the image
#    (the single-stream limit, ratio 1.00), RAUC's verity bundle (payload
#    check of `rauc extract`, which hashes the whole payload, and
#    `rauc info`, which checks the signature only) and `swupdate -c`;
# 2. streaming install of that bundle from a local file into a slot file
#    against `openssl dgst -sha256 image && cp image slot` (and the same
#    plus `sync slot`, as our install flushes the slot);
# 3. peak resident memory (VmHWM) of an install of 64 MiB, 1 GiB and 4 GiB
#    images, each in its own process;
# 4. adaptive update: bytes read from the source when 1 % of the chunks
#    changed, the rest copied from the active slot;
# 5. start-up integrity check of a 256 MiB slot against `openssl dgst`;
# 6. adaptive update over HTTP, as the agent fetches it: releases 1 and 2
#    published in a TUF repository served by nginx on loopback, release 2
#    installed through the TUF client with Range requests only where
#    chunks are needed; the bytes on the wire are nginx's
#    ($body_bytes_sent in its access log), for 1 % of the chunks changed
#    spread out, 1 % in one run, and 10 % spread out.
# Installs rauc, swupdate, squashfs-tools, hyperfine, cpio (to pack the
# .swu), time, jq and nginx-light from Debian when missing (as root).
# Needs about 12 GiB free under TMPDIR; everything goes in one temporary
# directory, removed at the end (nginx, started on a free loopback port,
# is stopped then too). RUNS sets hyperfine's runs per command (default 5),
# CHUNK the chunk size of our manifests (default 256 KiB); IMAGE_MIB and
# BIG_MIB (1024 and 4096) shrink the images for a quick trial of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
runs="${RUNS:-5}"
chunk="${CHUNK:-262144}"
mib="${IMAGE_MIB:-1024}"
big_mib="${BIG_MIB:-4096}"

echo "== packages"
need=()
for p in rauc swupdate squashfs-tools hyperfine cpio time jq nginx-light; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root to install: ${need[*]}" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q </dev/null >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi
echo "rauc $(rauc --version | awk '{print $2}'), swupdate $(dpkg-query -W -f '${Version}' swupdate)," \
  "$(openssl version | awk '{print $1, $2}'), hyperfine $(hyperfine --version | awk '{print $2}')"

echo "== machine"
echo "$(nproc) CPUs: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== cargo bench -p update --bench update --no-run"
bench=$(cargo bench -q -p update --bench update --no-run --message-format=json 2>/dev/null \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "update"
                  and (.target.kind | index("bench")) and .executable != null) | .executable')
[ -x "$bench" ] || { echo "bench binary not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/update-bench.XXXXXX")
# Stops step 6's nginx (its master's pid file), then removes everything.
cleanup() {
  if [ -s "$work/nginx/nginx.pid" ]; then
    kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
img="$work/image.img"
pub="$work/publisher"

# hyperfine's JSON as "name<TAB>median<TAB>mean<TAB>stddev<TAB>min<TAB>max".
results() { jq -r '.results[] | [.command, .median, .mean, .stddev, .min, .max] | @tsv' "$1"; }
# Prints one table row per result, with the ratio of medians to `$2`.
table() {
  local ref
  ref=$(results "$1" | awk -F'\t' -v r="$2" '$1 == r {print $2}')
  printf '%-38s %9s %9s %9s %9s %7s\n' command median mean stddev min ratio
  results "$1" | awk -F'\t' -v ref="$ref" \
    '{printf "%-38s %8.3fs %8.3fs %8.3fs %8.3fs %6.2f\n", $1, $2, $3, $4, $5, $2 / ref}'
}

echo "== $mib MiB random image, our manifest, RAUC and SWUpdate bundles"
head -c "${mib}M" /dev/urandom >"$img"
"$bench" publish "$img" "$pub" 1 "$chunk"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/key.pem" -out "$work/cert.pem" -days 30 -subj "/CN=bulwark bench" 2>/dev/null
mkdir "$work/rauc"
ln "$img" "$work/rauc/rootfs.img"
cat >"$work/rauc/manifest.raucm" <<'EOF'
[update]
compatible=bw-bench
version=1.0

[bundle]
format=verity

[image.rootfs]
filename=rootfs.img
EOF
# Random data does not compress: store it uncompressed (what mksquashfs
# would end up storing anyway, minus minutes of trying).
rauc bundle --cert="$work/cert.pem" --key="$work/key.pem" \
  --mksquashfs-args="-noI -noD -noF -noX" "$work/rauc" "$work/bundle.raucb" >/dev/null 2>&1
mkdir "$work/swu"
ln "$img" "$work/swu/rootfs.img"
cat >"$work/swu/sw-description" <<EOF
software =
{
	version = "1.0.0";
	hardware-compatibility = [ "1.0" ];
	images: (
		{
			filename = "rootfs.img";
			device = "/dev/null";
			type = "raw";
			sha256 = "$(openssl dgst -sha256 -r "$img" | cut -d' ' -f1)";
		}
	);
}
EOF
openssl cms -sign -in "$work/swu/sw-description" -out "$work/swu/sw-description.sig" \
  -signer "$work/cert.pem" -inkey "$work/key.pem" -outform DER -nosmimecap -binary
(cd "$work/swu" && printf 'sw-description\nsw-description.sig\nrootfs.img\n' \
  | cpio -o -H crc --quiet >"$work/bundle.swu")
ls -l "$img" "$work/bundle.raucb" "$work/bundle.swu" | awk '{print $5, $NF}'
cat "$img" "$work/bundle.raucb" "$work/bundle.swu" >/dev/null # page cache warm

echo "== 1. full verification of the $mib MiB bundle (hyperfine --warmup 1 --runs $runs)"
rm_out="rm -rf $work/rauc-out"
hyperfine -N --warmup 1 --runs "$runs" --style none --export-json "$work/verify.json" \
  -p true -n "openssl dgst -sha256" "openssl dgst -sha256 $img" \
  -p true -n "bulwark verify (manifest+chunks)" "$bench verify $pub/trusted.json $pub/manifest-v1.json $img" \
  -p "$rm_out" -n "rauc extract (verity check+unsquash)" "rauc extract --keyring $work/cert.pem $work/bundle.raucb $work/rauc-out" \
  -p true -n "rauc info (signature only)" "rauc info --keyring $work/cert.pem $work/bundle.raucb" \
  -p true -n "swupdate -c" "swupdate -c -H bench:1.0 -k $work/cert.pem -i $work/bundle.swu" \
  >/dev/null
# RAUC's payload check alone: the phase between its own log lines
# "Verifying bundle payload..." and "Verification of root hash succeeded"
# in `rauc --debug extract` (millisecond timestamps), same number of runs.
for _ in $(seq "$runs"); do
  rm -rf "$work/rauc-out"
  rauc --debug extract --keyring "$work/cert.pem" "$work/bundle.raucb" "$work/rauc-out" 2>&1 \
    | awk '/Verifying bundle payload/ {a = $0} /Verification of root hash succeeded/ {b = $0}
           END {
             match(a, /[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]+/); split(substr(a, RSTART, RLENGTH), x, ":")
             match(b, /[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]+/); split(substr(b, RSTART, RLENGTH), y, ":")
             printf "%.3f\n", (y[1] - x[1]) * 3600 + (y[2] - x[2]) * 60 + (y[3] - x[3])
           }'
done >"$work/rauc-payload.txt"
rm -rf "$work/rauc-out"
jq --rawfile t "$work/rauc-payload.txt" \
  '.results += [($t | split("\n") | map(select(length > 0) | tonumber) | sort) as $s
    | ($s | length) as $n | (($s | add) / $n) as $m
    | {command: "rauc verity payload check (log)", median: $s[$n / 2 | floor], mean: $m,
       stddev: ((($s | map((. - $m) * (. - $m)) | add) / $n) | sqrt),
       min: $s[0], max: $s[-1]}]' "$work/verify.json" >"$work/verify2.json"
table "$work/verify2.json" "openssl dgst -sha256"

echo "== 2. streaming install of the $mib MiB bundle into a slot file (hyperfine --warmup 1 --runs $runs)"
dev="$work/device"
hyperfine --warmup 1 --runs "$runs" --style none --export-json "$work/install.json" \
  --prepare "rm -f $work/slot-cp $dev/slot-b" \
  -n "openssl dgst -sha256 && cp" "openssl dgst -sha256 $img && cp $img $work/slot-cp" \
  -n "openssl dgst -sha256 && cp && sync" "openssl dgst -sha256 $img && cp $img $work/slot-cp && sync $work/slot-cp" \
  -n "bulwark install" "$bench install $pub/trusted.json $pub/manifest-v1.json $img $dev" \
  >/dev/null
table "$work/install.json" "openssl dgst -sha256 && cp"
echo "(our install: verify the manifest; a pipeline reads chunks while one worker per core"
echo " hashes and writes each verified chunk; flush every 32 MiB in the background and at the"
echo " end, re-read and verify the whole slot, mark it)"
rm -rf "$work/slot-cp" "$work/rauc" "$work/swu" "$work/bundle.raucb" "$work/bundle.swu" "$dev"

echo "== 3. peak resident memory of an install (VmHWM; /usr/bin/time maximum RSS)"
head -c 64M "$img" >"$work/image-64m.img"
for size in 64M "${mib}M" "${big_mib}M"; do
  case $size in
    64M) file="$work/image-64m.img" ;;
    "${mib}M") file="$img" ;;
    *) file="$work/image-big.img" && head -c "$size" /dev/urandom >"$file" ;;
  esac
  "$bench" publish "$file" "$work/pub-$size" 1 "$chunk" >/dev/null
  cat "$file" >/dev/null
  /usr/bin/time -f "%M" -o "$work/time-$size" \
    "$bench" install "$work/pub-$size/trusted.json" "$work/pub-$size/manifest-v1.json" "$file" \
    "$work/device-$size" >"$work/install-$size.txt"
  printf '%-6s image: %s; /usr/bin/time max RSS %s kB\n' "$size" \
    "$(cat "$work/install-$size.txt")" "$(cat "$work/time-$size")"
  rm -rf "$work/device-$size" "$work/pub-$size"
done
rm -f "$work/image-64m.img" "$work/image-big.img"

echo "== 4. adaptive update: 1 % of the chunks changed"
"$bench" adaptive "$img" "$work/adaptive" "$chunk" 1
rm -rf "$work/adaptive"

echo "== 5. start-up integrity check of a 256 MiB slot (hyperfine --warmup 1 --runs $runs)"
head -c "$((mib < 256 ? mib : 256))M" "$img" >"$work/image-256m.img"
"$bench" publish "$work/image-256m.img" "$work/pub-256m" 1 "$chunk" >/dev/null
"$bench" install "$work/pub-256m/trusted.json" "$work/pub-256m/manifest-v1.json" \
  "$work/image-256m.img" "$work/device-256m" >/dev/null
hyperfine -N --warmup 1 --runs "$((runs * 2))" --style none --export-json "$work/startup.json" \
  -n "openssl dgst -sha256" "openssl dgst -sha256 $work/device-256m/slot-b" \
  -n "bulwark start-up check" "$bench startup $work/pub-256m/trusted.json $work/device-256m b" \
  >/dev/null
table "$work/startup.json" "openssl dgst -sha256"
rm -rf "$work/image-256m.img" "$work/pub-256m" "$work/device-256m"

echo "== 6. adaptive update over HTTP: TUF repository served by nginx $(nginx -v 2>&1 | cut -d/ -f2) on loopback"
ng="$work/nginx"
mkdir -p "$ng/www"
# A free port: try random ones until nginx binds.
port=
for _ in $(seq 20); do
  try=$((20000 + RANDOM % 40000))
  cat >"$ng/nginx.conf" <<EOF
# The temporary directory is root's alone (mode 700): workers run as root.
user root;
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log;
events { worker_connections 64; }
http {
  types { application/json json; }
  default_type application/octet-stream;
  sendfile on;
  client_body_temp_path $ng/body;
  log_format bench '\$request_uri \$status \$body_bytes_sent "\$http_range"';
  server {
    listen 127.0.0.1:$try;
    root $ng/www;
    access_log $ng/access.log bench;
  }
}
EOF
  if nginx -e "$ng/error.log" -c "$ng/nginx.conf" 2>/dev/null; then port=$try && break; fi
done
[ -n "$port" ] || { echo "nginx did not start:" >&2; cat "$ng/error.log" >&2; exit 1; }
echo "(release 1 installed over HTTP and committed, then release 2 through the TUF"
echo " client and RangedSource as the agent's Updates::install does, range gap 256 KiB;"
echo " wire = nginx's \$body_bytes_sent for release 2's image, ours = downloaded_bytes)"
printf '%-15s %11s %11s %12s %8s %6s %12s %7s\n' \
  changed "image bytes" chunks "wire bytes" requests ranges "ours bytes" "wire %"
for run in "1 spread" "1 contiguous" "10 spread"; do
  read -r percent layout <<<"$run"
  name="p$percent-$layout"
  out=$("$bench" adaptive-http "$img" "$ng/www/$name" "$chunk" "$percent" "$layout" \
    "http://127.0.0.1:$port/$name/www/")
  # The bench's key=value line, then nginx's count for release 2's image
  # (served as targets/<sha256>.release-2.image).
  declare "$(tr ' ' '\n' <<<"$out" | grep -E '^image_bytes=[0-9]+$')"
  declare "$(tr ' ' '\n' <<<"$out" | grep -E '^chunks=[0-9]+$')"
  declare "$(tr ' ' '\n' <<<"$out" | grep -E '^changed=[0-9]+$')"
  declare "$(tr ' ' '\n' <<<"$out" | grep -E '^downloaded_bytes=[0-9]+$')"
  read -r wire requests ranges full < <(awk -v dir="/$name/www/targets/" \
    'index($1, dir) == 1 && $1 ~ /\.release-2\.image$/ {
       bytes += $3; n++; if ($4 != "\"-\"") r++ }
     index($1, dir) == 1 && $1 ~ /\.release-1\.image$/ {full += $3}
     END {printf "%.0f %d %d %.0f\n", bytes, n, r, full}' "$ng/access.log")
  # Release 1 was downloaded whole: the log must show exactly the image.
  [ "$full" = "$image_bytes" ] \
    || { echo "nginx logged $full bytes for release 1, not $image_bytes" >&2; exit 1; }
  printf '%-15s %11s %11s %12s %8s %6s %12s %6.2f%%\n' "$percent % $layout" \
    "$image_bytes" "$changed/$chunks" "$wire" "$requests" "$ranges" "$downloaded_bytes" \
    "$(awk -v w="$wire" -v s="$image_bytes" 'BEGIN {print w * 100 / s}')"
  rm -rf "${ng:?}/www/$name"
done
kill -QUIT "$(cat "$ng/nginx.pid")" && rm -f "$ng/nginx.pid"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

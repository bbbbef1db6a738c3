#!/usr/bin/env bash
# The gateway against direct access, side by side in one run
# (docs/performance.md, "Gateway"), loopback only, a few minutes:
# 1. MQTT, 100-byte payloads, 1 and 10 publishers, QoS 0 and 1, one
#    subscriber on the broker's plain listener measuring end-to-end
#    latency and loss (crates/gateway/examples/mqtt_load.rs), each case on
#    three paths one after the other:
#      direct      publishers → Mosquitto, plain TCP
#      direct-tls  publishers → Mosquitto's own mutual-TLS listener
#                  (TLS 1.3, P-256 certificates made by openssl)
#      gateway     publishers → gateway (mutual TLS 1.3, P-256 device
#                  certificates from our CA, full inspection) → Mosquitto
#    a. at a fixed 5,000 msg/s in all: p50/p99, loss, gateway and broker
#       CPU µs per message (/proc/<pid>/stat, both in their own process);
#    b. closed loop (each publisher at most WINDOW messages in flight end
#       to end): throughput, ratio to direct, broker CPU per message.
# 2. the inspection alone, in process, one core
#    (cargo bench -p gateway --bench gateway -- inspect);
# 3. Modbus TCP (pymodbus server) and CoAP (coap-server-notls): the same
#    client straight to the server and through the gateway, one request
#    in flight, p50/p99 and the difference (examples/req_load.rs).
# Mosquitto runs with set_tcp_nodelay true; clients and gateway set
# TCP_NODELAY. The gateway is crates/gateway/examples/bench_gateway.rs
# (stands in for `bulwark gateway`). Installs mosquitto, libcoap3-bin,
# openssl and python3-pip from Debian and pymodbus 3.16.1 from PyPI when
# missing (as root). SECS (default 4) is the measured time per MQTT run
# after a 1 s warm-up, RATE (5000) the fixed rate, WINDOW (32) the
# closed-loop window, REQUESTS (3000) the Modbus/CoAP requests per path.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
secs="${SECS:-4}"
rate="${RATE:-5000}"
window="${WINDOW:-32}"
requests="${REQUESTS:-3000}"

echo "== packages"
need=()
for p in mosquitto libcoap3-bin openssl python3-pip; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root to install: ${need[*]}" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q </dev/null >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi
if ! python3 -c 'import pymodbus' 2>/dev/null; then
  python3 -m pip install --quiet "pymodbus==3.16.1" \
    || python3 -m pip install --quiet --break-system-packages "pymodbus==3.16.1"
fi
echo "$(mosquitto -h | head -1), libcoap $(dpkg-query -W -f '${Version}' libcoap3-bin)," \
  "pymodbus $(python3 -c 'import pymodbus; print(pymodbus.__version__)'), $(openssl version | awk '{print $1, $2}')"

echo "== machine"
echo "$(nproc) CPUs: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== cargo build --release -p gateway --examples"
cargo build -q --release -p gateway --examples
bin="$CARGO_TARGET_DIR/release/examples"

work=$(mktemp -d "${TMPDIR:-/tmp}/gateway-bench.XXXXXX")
pids=()
cleanup() {
  if [ -f "$work/gateway.log" ] && grep -q refusal "$work/gateway.log"; then
    echo "warning: the gateway refused something during the run (first 5):"
    head -5 "$work/gateway.log"
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port (tcp or udp), from the kernel.
free_port() {
  python3 -c "import socket,sys; s=socket.socket(type=socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
# Waits up to 10 s for a TCP listener on 127.0.0.1:$1.
wait_tcp() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

echo "== openssl PKI for Mosquitto's TLS listener (P-256, like the gateway's)"
tls="$work/tls"
mkdir "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" -subj "/CN=bench CA" 2>/dev/null
sign() { # name subject extension
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tls/$1.key" -out "$tls/$1.csr" -subj "$2" 2>/dev/null
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 2 -out "$tls/$1.pem" -extfile <(printf '%s\n' "$3") 2>/dev/null
}
sign server "/CN=127.0.0.1" "subjectAltName=IP:127.0.0.1"
sign client "/CN=sensor-1" "extendedKeyUsage=clientAuth"

echo "== Mosquitto, pymodbus server, coap-server-notls, gateway"
mqtt_port=$(free_port tcp)
mqtts_port=$(free_port tcp)
cat >"$work/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 1000000
max_inflight_messages 0
user root
log_dest stderr
log_type error
log_type warning
listener $mqtt_port 127.0.0.1
listener $mqtts_port 127.0.0.1
cafile $tls/ca.pem
certfile $tls/server.pem
keyfile $tls/server.key
require_certificate true
tls_version tlsv1.3
EOF
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
broker=$!
pids+=("$broker")
wait_tcp "$mqtt_port"
wait_tcp "$mqtts_port"

modbus_port=$(free_port tcp)
cat >"$work/modbus.py" <<'EOF'
import sys, logging
logging.disable(logging.CRITICAL)
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusDeviceContext, ModbusServerContext
from pymodbus.server import StartTcpServer
hr = ModbusSequentialDataBlock(1, [1000 + i for i in range(200)])
dev = ModbusDeviceContext(hr=hr)
StartTcpServer(ModbusServerContext(devices={1: dev}), address=("127.0.0.1", int(sys.argv[1])))
EOF
python3 "$work/modbus.py" "$modbus_port" 2>"$work/modbus.log" &
pids+=("$!")
coap_port=$(free_port udp)
coap-server-notls -A 127.0.0.1 -p "$coap_port" >/dev/null 2>&1 &
pids+=("$!")
wait_tcp "$modbus_port"

mkdir "$work/gw"
"$bin/bench_gateway" "$work/gw" 10 "127.0.0.1:$mqtt_port" "127.0.0.1:$modbus_port" \
  "127.0.0.1:$coap_port" 2>"$work/gateway.log" &
gateway=$!
pids+=("$gateway")
for _ in $(seq 300); do [ -f "$work/gw/ports" ] && break; sleep 0.1; done
[ -f "$work/gw/ports" ] || { echo "gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 1; }
read -r gw_mqtt gw_modbus gw_coap <"$work/gw/ports"
echo "mosquitto pid $broker (plain :$mqtt_port, TLS :$mqtts_port), gateway pid $gateway (MQTT :$gw_mqtt)"

clk=$(getconf CLK_TCK)
results="$work/mqtt.txt"
# run PATH PUBS QOS rate=N|window=N
run() {
  local path=$1 pubs=$2 qos=$3 load=$4 addr extra=()
  case $path in
    direct) addr="127.0.0.1:$mqtt_port" ;;
    direct-tls) addr="127.0.0.1:$mqtts_port" extra=("tls=pem:$tls") ;;
    gateway) addr="127.0.0.1:$gw_mqtt" extra=("tls=keystore:$work/gw" "gateway_pid=$gateway") ;;
  esac
  "$bin/mqtt_load" "addr=$addr" "sub=127.0.0.1:$mqtt_port" "pubs=$pubs" "qos=$qos" "$load" \
    "secs=$secs" warmup=1 "broker_pid=$broker" "clk_tck=$clk" "label=$path" "${extra[@]}" \
    | tee -a "$results"
}
# field NAME LINE
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; }

echo "== 1a. fixed $rate msg/s, ${secs} s after 1 s warm-up"
for pubs in 1 10; do
  for qos in 0 1; do
    for path in direct direct-tls gateway; do run "$path" "$pubs" "$qos" "rate=$rate" >/dev/null; done
  done
done
echo "== 1b. closed loop, window $window per publisher, ${secs} s after 1 s warm-up"
for pubs in 1 10; do
  for qos in 0 1; do
    for path in direct direct-tls gateway; do run "$path" "$pubs" "$qos" "window=$window" >/dev/null; done
  done
done

echo "== MQTT results"
printf '%-9s %4s %3s %-11s %9s %9s %9s %5s %9s %9s %10s %10s\n' \
  load pubs qos path msg/s p50_us p99_us lost gw_cpu_us br_cpu_us vs_direct vs_tls
while read -r line; do
  mode=$(field mode "$line"); pubs=$(field pubs "$line"); qos=$(field qos "$line")
  path=$(field label "$line"); mps=$(field msgs_per_s "$line"); p50=$(field p50_us "$line")
  case $path in
    direct) d_p50=$p50 d_mps=$mps ;;
    direct-tls) t_p50=$p50 t_mps=$mps ;;
  esac
  if [[ $mode == rate* ]]; then
    vs_d=$(awk -v a="$p50" -v b="$d_p50" 'BEGIN {printf "%+.1fus", a - b}')
    vs_t=$(awk -v a="$p50" -v b="${t_p50:-0}" 'BEGIN {printf "%+.1fus", a - b}')
  else
    vs_d=$(awk -v a="$mps" -v b="$d_mps" 'BEGIN {printf "%.2f", a / b}')
    vs_t=$(awk -v a="$mps" -v b="${t_mps:-$mps}" 'BEGIN {printf "%.2f", a / b}')
  fi
  [ "$path" = direct ] && vs_t="-"
  lost=$(( $(field lost "$line") + $(field unacked "$line") ))
  printf '%-9s %4s %3s %-11s %9s %9s %9s %5s %9s %9s %10s %10s\n' "$mode" "$pubs" "$qos" "$path" \
    "$mps" "$p50" "$(field p99_us "$line")" "$lost" \
    "$(field gateway_cpu_us_per_msg "$line")" "$(field broker_cpu_us_per_msg "$line")" "$vs_d" "$vs_t"
done <"$results"
echo "(vs_direct / vs_tls: at the fixed rate, p50 minus that path's p50; closed loop, msg/s over"
echo " that path's msg/s; lost = not delivered + not acknowledged; cpu = µs of process CPU per"
echo " message sent in the measured window)"

echo "== 2. inspection alone, in process, one core"
cargo bench -q -p gateway --bench gateway -- inspect 2>/dev/null

echo "== 3. Modbus TCP and CoAP, $requests requests per path, one in flight"
"$bin/req_load" modbus "127.0.0.1:$modbus_port" "127.0.0.1:$gw_modbus" "$requests" | tee "$work/req.txt"
"$bin/req_load" coap "127.0.0.1:$coap_port" "127.0.0.1:$gw_coap" "$requests" | tee -a "$work/req.txt"
for proto in modbus coap; do
  d=$(grep "proto=$proto path=direct" "$work/req.txt")
  g=$(grep "proto=$proto path=gateway" "$work/req.txt")
  awk -v p="$proto" -v d50="$(field p50_us "$d")" -v g50="$(field p50_us "$g")" \
    -v d99="$(field p99_us "$d")" -v g99="$(field p99_us "$g")" \
    'BEGIN {printf "%-6s added by the gateway: p50 %+.1f us, p99 %+.1f us\n", p, g50 - d50, g99 - d99}'
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with only the Rust
# toolchain: installs (idempotently) the real components the tests run
# against, then runs every test with every backend compiled in.
set -euo pipefail
cd "$(dirname "$0")/.."

# swtpm + tpm2-tools: a real (software) TPM 2.0; libtss2-dev: the TPM
# backend links it; softhsm2, and libtpm2-pkcs11-1 + its tools behind the
# tpm2-abrmd resource manager (on a private D-Bus): two real PKCS#11
# tokens; opensc: pkcs11-tool to inspect them; openssl: independent
# certificate verification; mosquitto (+ clients): the MQTT broker behind
# the gateway and the local hub notifications reach;
# rsyslog + rsyslog-gnutls: the central log collector over TLS;
# grub2-common (grub-editenv) and libubootenv-tool (fw_setenv): the real
# boot loader environments the A/B slot switch writes.
# libcoap3-bin: coap-server-notls / coap-client-notls, the real CoAP
# server and device around the gateway's CoAP proxy.
# prometheus: its `promtool check metrics` validates the gateway's
# metrics endpoint output.
packages=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config softhsm2
          libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0
          dbus-daemon opensc openssl mosquitto mosquitto-clients rsyslog rsyslog-gnutls
          grub2-common libubootenv-tool
          libcoap3-bin prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null
fi

# Independent validators for `bulwark comply`'s SBOMs (PyPI, pinned):
# cyclonedx-python-lib ships the CycloneDX JSON schemas; spdx-tools
# provides `pyspdxtools`. The OSCAL schemas are vendored under
# crates/comply/tests/data/oscal. Installed only when missing.
py_validators=("cyclonedx-python-lib[json-validation]==11.12.0" "spdx-tools==0.8.5")
if ! python3 -c 'import cyclonedx.validation.json, spdx_tools' 2>/dev/null \
   || ! command -v pyspdxtools >/dev/null; then
  echo "installing: ${py_validators[*]}"
  python3 -m pip install --quiet "${py_validators[@]}" \
    || python3 -m pip install --quiet --break-system-packages "${py_validators[@]}"
fi

# Schemathesis (PyPI, pinned): fuzzes the device agent's served OpenAPI
# document (crates/agent/tests/schemathesis.rs). Installed only when
# missing or another version.
schemathesis_pin="schemathesis==4.32.5"
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("schemathesis") != "4.32.5")' 2>/dev/null; then
  echo "installing: ${schemathesis_pin}"
  python3 -m pip install --quiet "${schemathesis_pin}" \
    || python3 -m pip install --quiet --break-system-packages "${schemathesis_pin}"
fi

# pymodbus (PyPI, pinned): the real Modbus TCP server behind the
# gateway's Modbus proxy (crates/gateway/tests/modbus.rs). Installed only
# when missing.
pymodbus_pin="pymodbus==3.16.1"
if ! python3 -c 'import pymodbus' 2>/dev/null; then
  echo "installing: ${pymodbus_pin}"
  python3 -m pip install --quiet "${pymodbus_pin}" \
    || python3 -m pip install --quiet --break-system-packages "${pymodbus_pin}"
fi

cargo test --workspace --all-features --locked "$@"

#!/usr/bin/env bash
# The README's test command: installs the third-party clients the tests drive (when they
# are missing), then runs the whole suite. Works on a fresh machine that has only Rust,
# Python 3 and Node (apt-get needs root; without it, install mosquitto-clients yourself).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# The mosquitto broker itself, for the heartbeat's "broker without hints" test.
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v stdbuf >/dev/null 2>&1 || need_apt+=(coreutils)
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
# PostgreSQL for the cluster store's tests (each starts a private server with initdb).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
# Debian's Chromium for the console's browser tests (driven by playwright-core, no download).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# Debian's Firefox ESR for the same browser tests (driven by puppeteer-core over WebDriver BiDi).
[ -x /usr/bin/firefox-esr ] || need_apt+=(firefox-esr)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
# paho-mqtt for the Python suites; protobuf + grpcio-tools for the IM client generated from
# the .proto at test time.
python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q 'paho-mqtt>=2,<3'
python3 -c 'import google.protobuf, grpc_tools' 2>/dev/null || python3 -m pip install -q 'grpcio-tools' 'protobuf'
# RongCloud's own server SDK, driven against the gateway's RongCloud dialect.
python3 -c 'import rongcloud, requests' 2>/dev/null || python3 -m pip install -q 'rongcloud==2.0.1' 'requests'
# Schemathesis fuzzes the gateway's OpenAPI document.
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install -q 'schemathesis>=4,<5'
# moto's S3 server (and boto3) for the gateway's S3 file store.
{ command -v moto_server >/dev/null 2>&1 && python3 -c 'import boto3, flask'; } 2>/dev/null || python3 -m pip install -q 'moto[server]>=5,<6'
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
# MQTT.js for the WebSocket test; playwright-core and puppeteer-core for the console's browser tests.
[ -d tests/js/node_modules/mqtt ] && [ -d tests/js/node_modules/playwright-core ] && [ -d tests/js/node_modules/puppeteer-core ] || npm ci --prefix tests/js --no-audit --no-fund --silent

cargo nextest run --workspace --no-fail-fast "$@"

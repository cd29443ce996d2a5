#!/usr/bin/env bash
# Reproduces bench/results: Switchboard, mosquitto and rumqttd side by side on loopback.
# Usage: bash bench/run.sh [extra `switchboard bench` flags, e.g. --scenarios p2p-qos1 --seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# The idle scenario holds thousands of sockets in the generator and in each broker.
ulimit -n "$(ulimit -Hn)"
cargo build --release --features peers
exec ./target/release/switchboard bench --out bench/results "$@"

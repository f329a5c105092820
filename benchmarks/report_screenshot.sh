#!/usr/bin/env bash
# Render an eval report (report.html) with headless Chromium and save a PNG screenshot.
#   benchmarks/report_screenshot.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Needs /usr/bin/chromium (Debian: apt-get update && apt-get install -y chromium).
set -euo pipefail
html="$(realpath "$1")"
out="$(realpath -m "$2")"
size="${3:-1280,2400}"
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium" ]; then
  echo "chromium not found: apt-get update && apt-get install -y chromium" >&2
  exit 3
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out" --window-size="$size" "file://$html" >/dev/null 2>&1
test -s "$out"
echo "$out"

#!/usr/bin/env bash
# Render `flowcs report RESULTS_DIR` and take a screenshot of it in headless Chromium.
#   scripts/screenshot_report.sh RESULTS_DIR [OUT.png]      (default OUT: docs/img/report.png)
# Needs chromium (Debian: apt-get install chromium). The page loads nothing from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:?usage: scripts/screenshot_report.sh RESULTS_DIR [OUT.png]}
out=${2:-docs/img/report.png}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "chromium not found (apt-get install chromium, or set CHROMIUM=/path)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/flowcs report "$results" --out "$tmp/report.html" >/dev/null
mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/profile" \
  --window-size=1200,1500 --screenshot="$out" "file://$tmp/report.html" 2>/dev/null
echo "written $out"

#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo, idempotently: the Python clients of the
# end-to-end tests (PyPI) and the real servers/tools some tests start on 127.0.0.1 (Debian).
# Then fetches every crate of Cargo.lock for every platform, so the offline supply-chain check
# (`cargo deny --offline`, which reads metadata for all targets) works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start for real: Chromium, driven headless by Playwright's Python
# client in tests/serve_ui.rs (the system browser; `playwright install` is never run).
apt_packages=(chromium redis-server nginx)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -r tests/e2e/requirements.txt
cargo fetch --locked

#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml). `bans licenses sources` need no network.
# `advisories` needs the RustSec advisory database, which is fetched from GitHub: when it cannot
# be fetched (CI here has no route to GitHub) the check is skipped and this script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deny --locked --offline check bans licenses sources
if fetch_log=$(cargo deny --locked fetch db 2>&1); then
    cargo deny --locked --offline check advisories
else
    echo "cargo-deny: advisories SKIPPED: the RustSec advisory database could not be fetched" >&2
    echo "cargo-deny: (bans, licenses and sources were checked; run 'cargo deny check advisories' where GitHub is reachable)" >&2
    echo "$fetch_log" | tail -n 2 >&2
fi

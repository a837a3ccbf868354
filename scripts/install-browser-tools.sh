#!/usr/bin/env bash
# Installs what the browser tests (tests/tests/browser, scenarios in tests/browser) need:
#
# - Debian's `chromium` and `chromium-driver` packages, with apt-get (as root, or sudo -n),
#   when `chromium` is missing, and two font packages when the machine has no font. The tests
#   drive /usr/bin/chromium (CHROMIUM_BIN overrides); chromium-driver is the matching
#   WebDriver server, installed with it for WebDriver clients.
# - Node.js and npm from Debian when `node` is missing; playwright-core needs Node.js 20 or
#   newer, so an older one (Debian 12 ships 18) is reported, not used.
# - The suite's npm packages (playwright-core, which drives that Chromium and downloads no
#   browser of its own, and axe-core) at the exact versions of tests/browser/package-lock.json,
#   with `npm ci`. Does nothing when node_modules already matches the lock file.
#
# Outside CI a failed install (no network, no root) is only a warning: the browser tests say
# why and skip. With CI=true (or 1) it is an error, as a skipped browser suite hides failures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

in_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

give_up() {
    if in_ci; then
        echo "browser tools: $1, and CI=true requires them" >&2
        exit 1
    fi
    echo "  WARNING: browser tools: $1; the browser tests will skip" >&2
    exit 0
}

apt_install() {
    local root=()
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo -n true 2>/dev/null || give_up "$* missing, and installing needs root (or sudo -n)"
        root=(sudo -n)
    fi
    echo "  browser tools: apt-get install $*"
    "${root[@]}" apt-get update -qq || give_up "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${root[@]}" apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null || give_up "apt-get install $* failed"
}

chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
missing=()
if [[ -z "${CHROMIUM_BIN:-}" ]]; then
    # With CHROMIUM_BIN the caller brings their own browser: only Debian's is installed here.
    [[ -x "$chromium_bin" ]] || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
# Without recommends Chromium comes with no font: pages (and their screenshots, and axe-core's
# contrast checks) need real glyphs.
if ! fc-list 2>/dev/null | grep -q .; then
    missing+=(fonts-liberation fonts-dejavu-core)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
fi
"$chromium_bin" --version >/dev/null 2>&1 || give_up "$chromium_bin does not run"
node_major=$(node --version | sed 's/^v\([0-9]*\).*/\1/')
[[ "$node_major" -ge 20 ]] || give_up "Node.js $(node --version) is older than 20, which playwright-core needs"
echo "  browser tools: $("$chromium_bin" --version 2>/dev/null), node $(node --version)"

suite=tests/browser
lock="$suite/package-lock.json"
stamp="$suite/node_modules/.lock.sha256"
wanted=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" == "$wanted" ]]; then
    echo "  browser tools: npm packages of $lock already installed"
    exit 0
fi
echo "  browser tools: npm ci in $suite"
# --ignore-scripts: no package may run an install step (playwright-core downloads nothing anyway).
(cd "$suite" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    give_up "npm ci failed in $suite"
echo "$wanted" >"$stamp"

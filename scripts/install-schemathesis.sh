#!/usr/bin/env bash
# Installs schemathesis, the contract fuzzer that tests/tests/contract_fuzz.rs runs against a
# live stack, into its own virtualenv at the exact versions of
# tests/schemathesis-requirements.txt:
#
#     ${XDG_CACHE_HOME:-~/.cache}/stock-quotes/schemathesis-venv/bin/schemathesis
#
# (the path the test looks in). Does nothing when that virtualenv already holds those
# versions, or when SCHEMATHESIS_BIN names an executable to use instead.
#
# Outside CI a failed install (no Python, no network) is only a warning: the test says why
# and skips. With CI=true (or 1) it is an error, as a skipped contract test would hide
# failures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

in_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

give_up() {
    if in_ci; then
        echo "schemathesis: $1, and CI=true requires it" >&2
        exit 1
    fi
    echo "  WARNING: schemathesis: $1; the contract fuzzing test will skip" >&2
    exit 0
}

if [[ -n "${SCHEMATHESIS_BIN:-}" ]]; then
    echo "  schemathesis: using SCHEMATHESIS_BIN=$SCHEMATHESIS_BIN"
    exit 0
fi

requirements=tests/schemathesis-requirements.txt
venv="${XDG_CACHE_HOME:-$HOME/.cache}/stock-quotes/schemathesis-venv"
stamp="$venv/requirements.sha256"
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ -x "$venv/bin/schemathesis" && "$(cat "$stamp" 2>/dev/null)" == "$wanted" ]]; then
    echo "  schemathesis: $("$venv/bin/schemathesis" --version) in $venv"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || give_up "python3 is not installed"
echo "  schemathesis: installing the pinned versions into $venv"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" || give_up "python3 cannot create a virtualenv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" ||
    give_up "pip could not install $requirements"
"$venv/bin/pip" check >/dev/null || give_up "the pinned requirements are inconsistent"
echo "$wanted" >"$stamp"
echo "  schemathesis: $("$venv/bin/schemathesis" --version) in $venv"

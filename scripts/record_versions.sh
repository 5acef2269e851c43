#!/usr/bin/env bash
# Record the exact versions of the active environment as constraints.txt, after a green run of the README's test
# command in a fresh venv (.ci/run). `pip install -e ".[test]" -c constraints.txt` then reproduces that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# The versions of the last green run of the README's test command (.ci/run, a fresh venv on Linux x86_64,"
    echo "# Python $(python -c 'import sys; print(".".join(map(str, sys.version_info[:2])))')): pip install -e \".[test]\" -c constraints.txt installs exactly them."
    echo "# torch is left out: install the build for your hardware first (the README pins the CPU wheel we test). Written by scripts/record_versions.sh."
    python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e \|^#\|^torch=='
} >constraints.txt.partial
mv constraints.txt.partial constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"

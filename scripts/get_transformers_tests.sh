#!/usr/bin/env bash
# Make the tests/ folder of the transformers sdist available and print its path.
#
# The common model tests (`ModelTesterMixin` in tests/test_modeling_common.py) ship in the sdist only, not in the
# wheel. This downloads the sdist of the installed transformers version (or the version given as $1) from PyPI once,
# keeps only its tests/ folder in a cache, and prints that folder, so that:
#
#     export TRANSFORMERS_TESTS_DIR="$(scripts/get_transformers_tests.sh)"
#     python -m pytest tests/test_hf_common.py
#
# Cache: ${MOLECLIP_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/moleclip}/transformers-tests/transformers-<version>/tests
# Progress goes to stderr; stdout is only the path.
set -euo pipefail

PYTHON="${PYTHON:-python}"
if [ "$#" -gt 1 ]; then
    echo "usage: $0 [transformers-version]" >&2
    exit 2
fi
version="${1:-$("$PYTHON" -c 'import transformers; print(transformers.__version__)')}"
cache="${MOLECLIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moleclip}/transformers-tests"
target="$cache/transformers-$version"

if [ ! -f "$target/tests/test_modeling_common.py" ]; then
    mkdir -p "$cache"
    work="$(mktemp -d "$cache/.partial-$version.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    echo "downloading the transformers $version sdist from PyPI into $cache" >&2
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "transformers==$version" -d "$work" >&2
    # Extract tests/ only (the sdist is ~10 MB, its tests ~1 MB), refusing links and absolute paths.
    "$PYTHON" - "$work" "$version" <<'PY'
import sys
import tarfile
from pathlib import Path

work, version = Path(sys.argv[1]), sys.argv[2]
archives = sorted(work.glob("transformers-*.tar.gz"))
if len(archives) != 1:
    sys.exit(f"expected one transformers sdist in {work}, found {[a.name for a in archives]}")
prefix = f"transformers-{version}/tests/"
with tarfile.open(archives[0]) as archive:
    members = [m for m in archive.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
    if not any(m.name == prefix + "test_modeling_common.py" for m in members):
        sys.exit(f"{archives[0].name} has no {prefix}test_modeling_common.py")
    archive.extractall(work / "extracted", members=members, filter="data")
PY
    rm -rf "$target"
    # One rename, so a concurrent or interrupted run never leaves a half-extracted folder at $target.
    mv "$work/extracted/transformers-$version" "$target"
fi
echo "$target/tests"

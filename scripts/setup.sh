#!/usr/bin/env bash
# Create .venv with the pinned requirements and samplerflow installed in editable mode.
#
# uv does the install because its download cache persists between runs on a
# machine (pip caches nothing when the registry sends no caching headers).
# Local wheel folders named in pip's configuration are passed to uv, which
# ignores pip's configuration, so large wheels (torch) come from disk when
# they are there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"samplerflow needs Python >= 3.11, found {sys.version.split()[0]}; set PYTHON=python3.11")
PY

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.8"

find_links=()
for folder in $("$PYTHON" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p"); do
    if [ -d "$folder" ] && [ -n "$(ls -A "$folder" 2>/dev/null)" ]; then
        find_links+=(--find-links "$folder")
    fi
done

VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/uv" pip install --quiet --compile-bytecode \
    "${find_links[@]}" -r requirements.txt
VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/uv" pip install --quiet --compile-bytecode --no-deps -e .
"$VENV/bin/samplerflow" --version

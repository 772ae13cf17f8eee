#!/usr/bin/env bash
# Builds the keymesh-client wheel with the standard tooling (python -m build), installs it into a fresh
# venv outside the repository for the oldest and the newest supported CPython found here, and runs the
# quickstart and the test suite against the server at KEYMESH_ADDR with each. scripts/test.sh runs it.
#   PYTHON=/path/to/python3 (build interpreter, default python3); the interpreters tried are
#   python3.10 and python3.13 under pyenv or on PATH, else python3 alone (said on stdout).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${KEYMESH_ADDR:?KEYMESH_ADDR must name a running server}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

builder="$scratch/build-venv"
"${PYTHON:-python3}" -m venv "$builder"
"$builder/bin/pip" install --quiet --disable-pip-version-check build
# Built from a copy, so the build leaves nothing in the work tree.
mkdir "$scratch/src"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$scratch/src/"
"$builder/bin/python" -m build --wheel --outdir "$scratch/dist" "$scratch/src" >/dev/null
wheel="$(ls "$scratch"/dist/keymesh_client-*.whl)"
listing="$(unzip -Z1 "$wheel")"
grep -qx 'keymesh_client/py.typed' <<<"$listing" || { echo "the wheel lacks py.typed" >&2; exit 1; }

# The declared range is >=3.10; test its oldest end and the newest CPython this machine has.
find_python() {
  local v="$1" p
  for p in "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V | tail -n 1)" \
    "$(command -v "python$v" || true)"; do
    # pyenv's shims exist on PATH for versions that are not selected: only a working one counts.
    if [ -n "$p" ] && "$p" -c pass 2>/dev/null; then echo "$p"; return; fi
  done
}
pythons=()
for v in 3.10 3.13; do
  p="$(find_python "$v")"
  if [ -n "$p" ]; then pythons+=("$p"); else echo "note: no CPython $v here; not tested with it"; fi
done
[ "${#pythons[@]}" -gt 0 ] || pythons=("$(command -v python3)")

pool="install-py-$RANDOM$RANDOM"
for python in "${pythons[@]}"; do
  env_dir="$scratch/venv-$(basename "$python")"
  "$python" -m venv "$env_dir"
  "$env_dir/bin/pip" install --quiet --disable-pip-version-check "$wheel[test]"
  cd "$scratch"
  "$env_dir/bin/python" - "$pool" <<'EOF'
import os, sys
from keymesh_client import Client, KeyMeshError
from keymesh_client.v1 import admin_pb2
with Client(os.environ["KEYMESH_ADDR"]) as client:
    try:
        client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=sys.argv[1], force=True))
    except KeyMeshError:
        pass
    client.admin.CreatePool(admin_pb2.CreatePoolRequest(pool=admin_pb2.Pool(name=sys.argv[1])))
    client.admin.AddKey(admin_pb2.AddKeyRequest(pool=sys.argv[1], key=admin_pb2.Key(id="k1", label="installed"), secret="sk-install-check"))
EOF
  out="$("$env_dir/bin/python" "$here/examples/quickstart.py" "$pool")"
  [ "$out" = "leased installed" ] || { echo "quickstart under $python printed: $out" >&2; exit 1; }
  # The whole suite against the installed wheel (not the work tree's sources), as this interpreter runs it.
  # Quiet, but a failure or an error in a fixture is shown with its summary line.
  (cd "$here" && "$env_dir/bin/python" -m pytest tests -q -p no:cacheprovider -rfE | grep -v '^[.sx]*\( *\[ *[0-9]*%\]\)\?$')
  echo "ok: $(basename "$wheel") in a fresh venv of $("$python" --version 2>&1): the quickstart and the suite pass"
done

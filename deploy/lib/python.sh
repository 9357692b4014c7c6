# Sourced by deploy/* scripts: make sure <repo>/.venv exists and holds streamfeat with its
# dev extras, reinstalling only when pyproject.toml changed. Sets $PY to the venv's python.
ensure_venv() {
  local root="$1"
  local base="${PYTHON:-}"
  if [[ -z "$base" ]]; then
    for candidate in python3 python3.13 python3.12 python3.11; do
      if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        base="$candidate"; break
      fi
    done
  fi
  [[ -n "$base" ]] || { echo "Python >= 3.11 is missing; install it or set PYTHON=/path/to/python3.11" >&2; exit 1; }
  "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "streamfeat needs Python >= 3.11; $base is $("$base" -V 2>&1). Set PYTHON=..." >&2; exit 1; }
  local venv="$root/.venv"
  [[ -x "$venv/bin/python" ]] || "$base" -m venv "$venv"
  local stamp="$venv/.streamfeat-installed" want
  want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "installing streamfeat and its dev dependencies into $venv ..." >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$root[dev]" >&2
    echo "$want" >"$stamp"
  fi
  PY="$venv/bin/python"
}

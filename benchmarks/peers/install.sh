#!/usr/bin/env bash
# Install one peer server into its own environment: `benchmarks/peers/install.sh PEER`.
# benchmarks/.venv-PEER gets peers/PEER/requirements.txt (pinned) plus the same
# scikit-learn, xgboost, joblib and numpy as servekit's .venv, so every server loads
# the same model files; a peer whose requirements pin one of these itself keeps its
# own pin (PyTriton 0.7 needs numpy<2). The stamp file holds a hash of what was asked
# for, the seconds the install took and the environment's size; a changed requirements
# file reinstalls. A failed install leaves .install-failed (its last lines), which the
# suite prints as the reason it skips the peer.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.11}
peer=${1:?usage: install.sh PEER}
requirements=benchmarks/peers/$peer/requirements.txt
test -f "$requirements" || { echo "no such peer: $peer" >&2; exit 2; }
venv=benchmarks/.venv-$peer
pins=$(.venv/bin/python - "$requirements" <<'PY'
import re
import sys
from importlib.metadata import version

own = {re.split(r"[<>=~!\[; ]", line.strip())[0].lower() for line in open(sys.argv[1])
       if line.strip() and not line.startswith("#")}
print(" ".join(f"{p}=={version(p)}" for p in ("scikit-learn", "xgboost", "joblib", "numpy") if p not in own))
PY
)
want=$(printf '%s\n%s\n' "$(grep -v '^#' "$requirements")" "$pins" | sha1sum | cut -c1-12)
stamp=$venv/.installed-stamp
if [ -f "$stamp" ] && grep -q "^want $want\$" "$stamp"; then
  exit 0
fi
echo "installing $peer into $venv ($(grep -v '^#' "$requirements" | tr '\n' ' ')+ $pins)" >&2
started=$(date +%s)
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
log=$venv/install.log
# shellcheck disable=SC2086
if ! { "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -r "$requirements" $pins; } \
    > "$log" 2>&1; then
  { echo "pip could not install $peer:"; grep -v '^WARNING: Location' "$log" | tail -5; } > "$venv/.install-failed"
  cat "$venv/.install-failed" >&2
  exit 1
fi
seconds=$(( $(date +%s) - started ))
size_mb=$(du -sm "$venv" | cut -f1)
printf 'want %s\nseconds %s\nsize_mb %s\n' "$want" "$seconds" "$size_mb" > "$stamp"
echo "installed $peer in ${seconds} s, ${size_mb} MB" >&2

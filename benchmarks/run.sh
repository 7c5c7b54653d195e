#!/usr/bin/env bash
# servekit vs MLServer and the peers, side by side:
#   benchmarks/run.sh [--quick] [--only NAMES] [--no-peers] [--parts closed,open,large | --only-open-loop]
# Installs MLServer 1.7 (with its sklearn and xgboost runtimes) and each peer the run
# measures (KServe, PyTriton, BentoML, LitServe, Ray Serve: peers/install.sh) into
# environments of their own, trains the models offline, runs every configuration and
# writes benchmarks/results/latest.md (other flags: benchmarks/suite.py --help).
# A full run takes about 65 minutes: closed loops 35 (10 with --no-peers), open loop 25,
# large requests 6; --quick about 25.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
BENCH=benchmarks
MLSERVER_VENV=$BENCH/.venv-mlserver

test -x .venv/bin/servekit || make install

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "benchmarks need wrk: sudo apt-get install wrk" >&2
    exit 2
  fi
fi

if [ ! -f "$MLSERVER_VENV/.installed-stamp" ]; then
  # same scikit-learn and xgboost as servekit's environment, so both servers load the same files;
  # uvloop 0.21.0 because MLServer 1.7.1's workers crash at start-up with newer uvloop
  pins=$(.venv/bin/python -c "from importlib.metadata import version as v; print(f'scikit-learn=={v(\"scikit-learn\")} xgboost=={v(\"xgboost\")}')")
  rm -rf "$MLSERVER_VENV"
  "$PYTHON" -m venv "$MLSERVER_VENV"
  "$MLSERVER_VENV/bin/pip" install -q --upgrade pip
  # shellcheck disable=SC2086
  "$MLSERVER_VENV/bin/pip" install -q "mlserver==1.7.*" "mlserver-sklearn==1.7.*" "mlserver-xgboost==1.7.*" \
    "uvloop==0.21.0" $pins
  touch "$MLSERVER_VENV/.installed-stamp"
fi

# each peer in its own environment; one that fails to install is skipped by the suite, with the reason
for peer in $(.venv/bin/python $BENCH/suite.py --mlserver "$MLSERVER_VENV/bin/mlserver" --list-peers "$@"); do
  $BENCH/peers/install.sh "$peer" || echo "$peer did not install: the suite skips it" >&2
done

# train once; again only when train.py changes
stamp=$BENCH/work/.trained-$(sha1sum $BENCH/train.py | cut -c1-12)
if [ ! -f "$stamp" ]; then
  rm -rf $BENCH/work
  .venv/bin/python $BENCH/train.py $BENCH/work
  touch "$stamp"
fi

exec .venv/bin/python $BENCH/suite.py --mlserver "$MLSERVER_VENV/bin/mlserver" "$@"

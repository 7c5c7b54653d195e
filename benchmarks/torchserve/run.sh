#!/usr/bin/env bash
# servekit vs TorchServe, side by side: `benchmarks/torchserve/run.sh [--quick] [--only NAMES]`.
# Installs TorchServe 0.12 into its own environment (torch 2.13.0, the version
# servekit uses; pyyaml, without which TorchServe's workers die while /ping still
# says Healthy; numpy and Pillow for the article's handler), builds the article's
# CNN and archives it once with torch-model-archiver, serves that archive with
# each server on the same ports and writes benchmarks/results/torchserve.md.
# Needs Java 17 on PATH (TorchServe's frontend). A full run takes about 3 minutes
# (TorchServe, TorchServe with one torch thread per worker, servekit, servekit with 1 worker).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.11}
BENCH=benchmarks
TS_VENV=$BENCH/.venv-torchserve
WORK=$BENCH/work/torchserve

test -x .venv/bin/servekit || make install

if ! command -v wrk >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk openjdk-17-jre-headless >/dev/null
  else
    echo "this benchmark needs wrk and Java 17: sudo apt-get install wrk openjdk-17-jre-headless" >&2
    exit 2
  fi
fi

if [ ! -f "$TS_VENV/.installed-stamp" ]; then
  rm -rf "$TS_VENV"
  "$PYTHON" -m venv "$TS_VENV"
  "$TS_VENV/bin/pip" install -q --upgrade pip
  # torch==2.13.0 exactly: any other version pulls gigabytes
  "$TS_VENV/bin/pip" install -q "torchserve==0.12.*" "torch-model-archiver==0.12.*" "torch==2.13.0" \
    pyyaml numpy pillow
  touch "$TS_VENV/.installed-stamp"
fi

# build and archive once; again only when the article's builders change
stamp=$WORK/.built-$(cat $BENCH/torchserve/article.py tests/torch_fixtures.py | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  rm -rf "$WORK"
  .venv/bin/python $BENCH/torchserve/article.py "$WORK" --archiver "$TS_VENV/bin/torch-model-archiver"
  touch "$stamp"
fi

exec .venv/bin/python $BENCH/torchserve/compare.py --torchserve "$TS_VENV/bin/torchserve" --work "$WORK" "$@"

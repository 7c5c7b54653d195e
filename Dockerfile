# servekit's image: `servekit serve /mnt/models`, with only the runtimes asked for.
#
#   docker build --build-arg EXTRAS=sklearn,xgboost -t servekit:sklearn-xgboost .
#   docker run -p 8080:8080 -p 8081:8081 -v "$PWD/models:/mnt/models:ro" servekit:sklearn-xgboost
#
# EXTRAS are pyproject.toml's extras (sklearn, xgboost, lightgbm, catboost, skops, onnx, torch,
# tensorflow, library, tracing, …; "all" for every one). The first stage builds a virtual
# environment (and servekit's optional C extension) with a compiler; the second copies only that
# environment onto a slim Python and runs it as an unprivileged user (uid 1000, which KServe's
# runAsNonRoot accepts). Building needs no network beyond the Python and Debian package indexes.
# deploy/kserve/ declares this image as a KServe ClusterServingRuntime.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/servekit
ENV PATH=/opt/servekit/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
ARG EXTRAS=sklearn
# servekit from this folder, with the extras asked for (none: EXTRAS=); its pyproject.toml bounds
# the versions (a local path, which DL3013 cannot see)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
 && python -c "import servekit, servekit._numbers, servekit._trees"

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG EXTRAS=sklearn
LABEL org.opencontainers.image.title="servekit" \
      org.opencontainers.image.description="One Python model server for every model (V2 REST/gRPC, TF Serving, TorchServe, Seldon, KServe V1)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servekit.extras="${EXTRAS}"
# libgomp: the OpenMP runtime of scikit-learn's, XGBoost's and LightGBM's wheels' C code
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin servekit \
 && mkdir -p /mnt/models \
 && chown servekit:servekit /mnt/models
COPY --from=build /opt/servekit /opt/servekit
# listen on every interface (servekit's own default is 127.0.0.1); KServe's ports come as flags
ENV PATH=/opt/servekit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVEKIT_HOST=0.0.0.0
WORKDIR /mnt/models
USER 1000:1000
# V2 REST (and KServe V1, TorchServe inference, Seldon), V2 gRPC, Prometheus metrics; KServe's
# runtime moves gRPC to 9000 (--grpc_port=9000), as its MLServer and Triton runtimes do
EXPOSE 8080 8081 8082 9000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/live' % os.environ.get('SERVEKIT_HTTP_PORT', os.environ.get('MLSERVER_HTTP_PORT', '8080')), timeout=4)"]
ENTRYPOINT ["servekit"]
CMD ["serve", "/mnt/models"]

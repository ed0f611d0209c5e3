# recjax model server in SageMaker's "your own inference code" layout
# (documented in README, Serving; not built by the test suite):
#
#   docker build -t recjax-serve .
#   docker run -p 8080:8080 -v "$PWD/runs:/opt/ml/model:ro" recjax-serve serve
#
# SageMaker starts the container as `docker run IMAGE serve`, with the model
# artefact unpacked into /opt/ml/model/: here that is one run folder, or a folder
# of run folders (each holding run.json); every one found is served, named after
# its folder. The server listens on 0.0.0.0:8080, answers GET /ping once the runs
# are loaded and warm, POST /invocations in Object2Vec's formats, and stops
# gracefully on SIGTERM.
FROM python:3.11-slim

# a C compiler for the Cython top-k kernel (with OpenMP)
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/recjax
COPY pyproject.toml setup.py README.md ./
COPY csrc ./csrc
COPY recjax ./recjax
# the serve extra brings uvicorn[standard]: httptools (C HTTP parser) and uvloop
RUN pip install --no-cache-dir ".[serve]"

# `serve`: SageMaker's entry point, on PATH
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
    'runs=$(find /opt/ml/model -mindepth 1 -maxdepth 2 -name run.json -printf "%h\n" | sort)' \
    '[ -n "$runs" ] || { echo "recjax: error: no run folder (run.json) under /opt/ml/model" >&2; exit 2; }' \
    'exec python -m recjax serve $runs --host 0.0.0.0 --port 8080 "$@"' \
    > /usr/local/bin/serve \
    && chmod +x /usr/local/bin/serve

ENV JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
EXPOSE 8080
CMD ["serve"]

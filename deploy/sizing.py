"""GPU memory estimates for TuneForge: LoRA / QLoRA training and vLLM serving.

Prints the sizing tables of deploy/README.md (a test keeps them equal), or an estimate for a
model of your own:

    python deploy/sizing.py                      # the README tables (Markdown)
    python deploy/sizing.py --hidden 5120 --layers 40 --intermediate 13824 \\
        --heads 40 --kv-heads 8 --vocab 152064   # any decoder-only transformer

Estimates, not measurements: they are within about 15% for the usual Llama/Qwen/Mistral
shapes and err high. The arithmetic, per GPU (bytes; P = parameters, T = tokens per
micro-batch = batch_size x sequence length, L = layers, h = hidden size, i = MLP size,
kv = kv_heads x head_dim, V = vocabulary, r = LoRA rank):

Training (SFT, LoRA on every linear layer, gradient checkpointing, bf16 compute)
  base weights   LoRA: 2 x P                                   (bf16)
                 QLoRA: 0.516 x P_linear + 2 x P_other         (NF4 4-bit + double-quantized
                                                                block scales = 4.127 bits;
                                                                embeddings/lm_head stay bf16)
  LoRA params    N = L x r x (9h + 2kv + 3i)                    (q,k,v,o,gate,up,down: in+out)
  LoRA state     16 x N                                        (fp32 weight, grad, Adam m, v)
  activations    2 x T x h x L                                 (checkpointed layer inputs)
               + 2 x T x (10h + 4i)                            (one layer recomputed in backward)
  logits         8 x T x V                                     (fp32 logits and their grad)
  total          1.10 x (sum) + 1 GiB                          (allocator slack, CUDA context)
  DPO: the reference model is the same base with the adapter off, so weights do not double;
  count chosen + rejected, i.e. twice T.

Serving (vLLM, bf16 base, adapters hot-loaded)
  weights        2 x P / TP                                    (TP: tensor-parallel GPUs)
  LoRA slots     2 x max_loras x L x max_lora_rank x (9h + 2kv + 3i) / TP
  workspace      2 GiB                                         (activations, CUDA graphs)
  KV cache       the rest of gpu_memory_utilization x GPU, at 2 x 2 x L x kv bytes a token
                 (K and V, bf16; with TP > kv_heads the KV heads are replicated)
  A model "fits" a GPU when at least 16k tokens of KV cache remain; otherwise the smallest
  tensor-parallel size (a divisor of the attention heads) that leaves them is shown.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

GIB = 1024**3
GPUS_GB = (24, 40, 48, 80)  # nominal sizes (decimal GB), as sold
HEADROOM = 0.90  # the worker's quantization "auto" also plans for 90% of free memory
NF4_BYTES = 4.127 / 8
CUDA_CONTEXT_BYTES = 1 * GIB
SLACK = 1.10

# Defaults of the tables: TuneForge's defaults (rank 16, all-linear) and 4 x 1024 tokens.
TRAIN_RANK = 16
TRAIN_TOKENS = 4 * 1024
SERVE_UTILIZATION = 0.90
SERVE_MAX_LORAS = 8
SERVE_MAX_LORA_RANK = 64
SERVE_WORKSPACE_BYTES = 2 * GIB
MIN_KV_TOKENS = 16_384  # a server that cannot hold this many tokens of KV cache "does not fit"


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer's shape (from its config.json)."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    @property
    def linear_params(self) -> int:
        """Parameters of the linear layers inside the decoder blocks (what NF4 quantizes)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * i)

    @property
    def other_params(self) -> int:
        """Embeddings and lm_head (kept in bf16), norms."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        return embeddings + norms

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, rank: int) -> int:
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return self.layers * rank * (9 * h + 2 * kv + 3 * i)


# Published configurations (config.json of each model).
MODELS: tuple[Arch, ...] = (
    Arch("SmolLM2-135M-Instruct", 576, 30, 1536, 9, 3, 49152, True),
    Arch("Qwen2.5-0.5B-Instruct", 896, 24, 4864, 14, 2, 151936, True),
    Arch("Llama-3.2-1B-Instruct", 2048, 16, 8192, 32, 8, 128256, True),
    Arch("Qwen2.5-1.5B-Instruct", 1536, 28, 8960, 12, 2, 151936, True),
    Arch("Llama-3.2-3B-Instruct", 3072, 28, 8192, 24, 8, 128256, True),
    Arch("Qwen2.5-7B-Instruct", 3584, 28, 18944, 28, 4, 152064, False),
    Arch("Llama-3.1-8B-Instruct", 4096, 32, 14336, 32, 8, 128256, False),
    Arch("Qwen2.5-14B-Instruct", 5120, 48, 13824, 40, 8, 152064, False),
    Arch("Qwen2.5-32B-Instruct", 5120, 64, 27648, 40, 8, 152064, False),
    Arch("Llama-3.3-70B-Instruct", 8192, 80, 28672, 64, 8, 128256, False),
    Arch("Qwen2.5-72B-Instruct", 8192, 80, 29568, 64, 8, 152064, False),
)


def training_bytes(arch: Arch, *, quantized: bool, rank: int = TRAIN_RANK,
                   tokens: int = TRAIN_TOKENS) -> int:
    """Peak GPU memory of one LoRA (bf16 base) or QLoRA (NF4 base) SFT step."""
    if quantized:
        weights = NF4_BYTES * arch.linear_params + 2 * arch.other_params
    else:
        weights = 2 * arch.params
    lora_state = 16 * arch.lora_params(rank)
    h, i = arch.hidden, arch.intermediate
    activations = 2 * tokens * h * arch.layers + 2 * tokens * (10 * h + 4 * i)
    logits = 8 * tokens * arch.vocab
    return int(SLACK * (weights + lora_state + activations + logits) + CUDA_CONTEXT_BYTES)


def fits(need_bytes: float, gpu_gb: int) -> bool:
    return need_bytes <= HEADROOM * gpu_gb * 1e9


def serving_kv_tokens(arch: Arch, gpu_gb: int, *, tensor_parallel: int = 1,
                      utilization: float = SERVE_UTILIZATION,
                      max_loras: int = SERVE_MAX_LORAS,
                      max_lora_rank: int = SERVE_MAX_LORA_RANK) -> int:
    """KV-cache tokens left for requests on a vLLM server (0 or less: does not fit)."""
    per_gpu = utilization * gpu_gb * 1e9
    weights = 2 * arch.params / tensor_parallel
    slots = 2 * max_loras * arch.lora_params(max_lora_rank) / tensor_parallel
    free = per_gpu - weights - slots - SERVE_WORKSPACE_BYTES
    # KV heads are split across the GPUs, or replicated when there are fewer than GPUs.
    kv_heads_per_gpu = max(1, math.ceil(arch.kv_heads / tensor_parallel))
    per_token = 2 * 2 * arch.layers * kv_heads_per_gpu * (arch.hidden // arch.heads)
    return math.floor(free / per_token)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 10**9:.1f}B"
    return f"{n / 10**6:.0f}M"


def training_table(models: tuple[Arch, ...] = MODELS) -> str:
    gpu_heads = " | ".join(f"{g} GB" for g in GPUS_GB)
    lines = [
        f"| model | params | LoRA r={TRAIN_RANK} params | LoRA bf16 (GiB) | QLoRA 4-bit (GiB) "
        f"| {gpu_heads} |",
        "|---|---:|---:|---:|---:|" + "---|" * len(GPUS_GB),
    ]
    for arch in models:
        lora = training_bytes(arch, quantized=False)
        qlora = training_bytes(arch, quantized=True)
        cells = []
        for gpu in GPUS_GB:
            if fits(lora, gpu):
                cells.append("LoRA")
            elif fits(qlora, gpu):
                cells.append("QLoRA")
            else:
                cells.append("—")
        lines.append(
            f"| {arch.name} | {_count(arch.params)} | {_count(arch.lora_params(TRAIN_RANK))} "
            f"| {_gib(lora)} | {_gib(qlora)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def serving_table(models: tuple[Arch, ...] = MODELS) -> str:
    gpu_heads = " | ".join(f"{g} GB" for g in GPUS_GB)
    lines = [
        f"| model | bf16 weights (GiB) | {SERVE_MAX_LORAS} LoRA slots, r={SERVE_MAX_LORA_RANK} "
        f"(GiB) | KV bytes/token | {gpu_heads} |",
        "|---|---:|---:|---:|" + "---|" * len(GPUS_GB),
    ]
    for arch in models:
        cells = []
        for gpu in GPUS_GB:
            # The smallest tensor-parallel size (dividing the attention heads) that leaves
            # room for MIN_KV_TOKENS.
            tp = next((t for t in (1, 2, 4, 8) if arch.heads % t == 0
                       and serving_kv_tokens(arch, gpu, tensor_parallel=t) >= MIN_KV_TOKENS),
                      0)
            tokens = serving_kv_tokens(arch, gpu, tensor_parallel=tp) if tp else 0
            if not tp:
                cells.append("—")
                continue
            shown = f"{tokens / 1000:.0f}k" if tokens < 10**6 else f"{tokens / 10**6:.1f}M"
            cells.append(shown if tp == 1 else f"TP={tp}: {shown}")
        slots = 2 * SERVE_MAX_LORAS * arch.lora_params(SERVE_MAX_LORA_RANK)
        per_token = 2 * 2 * arch.layers * arch.kv_dim
        lines.append(
            f"| {arch.name} | {_gib(2 * arch.params)} | {_gib(slots)} | {per_token // 1024} KiB "
            "| " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--tied", action="store_true", help="tied input/output embeddings")
    parser.add_argument("--rank", type=int, default=TRAIN_RANK)
    parser.add_argument("--tokens", type=int, default=TRAIN_TOKENS,
                        help="tokens per micro-batch (batch size x sequence length)")
    args = parser.parse_args(argv)
    shape = (args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads, args.vocab)
    if not any(shape):
        print("Training\n\n" + training_table() + "\n\nServing\n\n" + serving_table())
        return 0
    if not all(shape):
        parser.error("give all of --hidden --layers --intermediate --heads --kv-heads --vocab")
    arch = Arch("custom", *shape, tied_embeddings=args.tied)
    print(f"parameters:          {_count(arch.params)}")
    print(f"LoRA r={args.rank} params:    {_count(arch.lora_params(args.rank))}")
    for label, quantized in (("LoRA bf16", False), ("QLoRA 4-bit", True)):
        need = training_bytes(arch, quantized=quantized, rank=args.rank, tokens=args.tokens)
        fit = ", ".join(f"{g} GB" for g in GPUS_GB if fits(need, g)) or "none of 24-80 GB"
        print(f"train {label:12} {_gib(need):>7} GiB   fits: {fit}")
    for gpu in GPUS_GB:
        tokens = serving_kv_tokens(arch, gpu)
        shown = f"{tokens} KV tokens" if tokens >= MIN_KV_TOKENS else "does not fit"
        print(f"serve on {gpu} GB:      {shown} (TP=1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where and how training runs: device, precision, attention and batching strategy.

TRL 1.16 defaults to `bf16=True` and `gradient_checkpointing=True`; both are chosen here
explicitly per device (STACK.md):

- CPU: fp32 weights and compute (on CPUs without native bf16 a bf16 matmul is much slower:
  7x for a 240x576x1536 matmul on this project's AVX2 machines; 4-bit weights are de-quantized
  to fp32 compute too), no gradient checkpointing (memory is not the
  limit, recomputation costs ~30%), batches grouped by length (`group_by_length`) so that little
  padding is computed: on CPU, SDPA with a padding-free block-diagonal mask computes attention
  over the whole flattened batch, which grows quadratically with batch size.
- CUDA: bf16 when supported (else fp32; fp16 is avoided), gradient checkpointing only when
  activations would not fit otherwise (also for 4-bit bases), padding-free batches when
  FlashAttention 2 is installed (varlen kernels make them free), else grouped by length.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" | "cuda"
    dtype: torch.dtype  # dtype of the frozen base weights
    bf16: bool  # bf16 autocast/compute
    gradient_checkpointing: bool
    attn_implementation: str
    padding_free: bool  # flatten each batch (needs varlen attention kernels)
    group_by_length: bool
    cpu_threads: int = 0  # intra-op threads on CPU (0: leave torch's setting)

    def describe(self) -> str:
        parts = [
            self.device,
            "bf16" if self.bf16 else "fp32",
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}",
            self.attn_implementation,
            "padding-free" if self.padding_free else "length-grouped batches",
        ]
        if self.device == "cpu" and self.cpu_threads:
            parts.append(f"{self.cpu_threads} thread(s)")
        return ", ".join(parts)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def _proc_stat() -> tuple[int, int, int]:
    """(busy jiffies, total jiffies, number of CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    fields = [int(x) for x in lines[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    n_cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return sum(fields) - idle, sum(fields), n_cpus


def busy_cores_of_others(window: float = 0.5) -> float | None:
    """Cores kept busy by other processes, sampled over `window` seconds (this process's own
    CPU time is subtracted). None where it cannot be measured (no /proc/stat, or a machine
    whose CPUs are not all ours, e.g. a container on a larger host)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        busy0, total0, n_cpus = _proc_stat()
        own0, t0 = time.process_time(), time.monotonic()
        time.sleep(window)
        busy1, total1, _ = _proc_stat()
        own, elapsed = time.process_time() - own0, time.monotonic() - t0
    except (OSError, ValueError, IndexError):
        return None
    if n_cpus != cpus or total1 <= total0 or elapsed <= 0:
        return None
    busy = n_cpus * (busy1 - busy0) / (total1 - total0)
    return max(0.0, busy - own / elapsed)


def choose_cpu_threads() -> int:
    """Intra-op threads for CPU training: the cores this process may use minus those other
    processes keep busy. OpenMP threads spin at every barrier, so on an oversubscribed machine
    one thread per free core is several times faster than one per core (measured here: a LoRA
    step took 2.6 s with 1 thread and 5-12 s with 2 while other jobs kept ~4 cores' worth of
    work queued on 2 cores)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    others = busy_cores_of_others()
    if others is None:
        return cpus
    return max(1, min(cpus, round(cpus - others)))


def plan_device(
    *,
    device: str | None = None,
    activations_fit: bool = True,
    cpu_threads: int | None = None,
) -> DevicePlan:
    """The training plan for `device` (default: CUDA when available, else CPU)."""
    device = device or ("cuda" if cuda_available() else "cpu")
    if device == "cpu":
        return DevicePlan(
            device="cpu",
            dtype=torch.float32,
            bf16=False,
            gradient_checkpointing=False,
            attn_implementation="sdpa",
            padding_free=False,
            group_by_length=True,
            cpu_threads=cpu_threads or choose_cpu_threads(),
        )
    bf16 = torch.cuda.is_bf16_supported()
    flash = importlib.util.find_spec("flash_attn") is not None
    return DevicePlan(
        device="cuda",
        dtype=torch.bfloat16 if bf16 else torch.float32,
        bf16=bf16,
        gradient_checkpointing=not activations_fit,
        attn_implementation="flash_attention_2" if flash else "sdpa",
        padding_free=flash,
        group_by_length=not flash,
    )

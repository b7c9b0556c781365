"""Spectrum: train only the weight matrices with the highest signal-to-noise ratio.

Method: Hartford et al., "Spectrum: Targeted Training on Signal to Noise Ratio" (2024,
arXiv:2406.06623), reference implementation `spectrum.py` in
github.com/cognitivecomputations/spectrum. For every weight matrix W (n x m) of the decoder
layers, with singular values S:

- the noise scale is estimated robustly from the spread of S: sigma = IQR(S) / 1.349 (the
  IQR of a normal distribution is 1.349 standard deviations);
- Marchenko-Pastur: the singular values of an n x m random matrix with entries of scale sigma
  stay below sigma * (1 + sqrt(beta)), beta = min(n, m) / max(n, m); values above that edge
  carry signal;
- SNR = sum(S above the edge) / sum(S at or below it), divided by the largest singular value
  so that matrices of different scales compare (as the reference implementation does).

Per module type (self_attn.q_proj, …, mlp.down_proj) the top `fraction` of layers by SNR
(at least one) are unfrozen and everything else stays frozen. Unlike the reference's
configuration files, the embeddings and the LM head stay frozen too (on small models with
tied embeddings they alone would be a fifth of the weights).

The scan is deterministic per set of weights, so it is cached in memory and, where the model
directory is writable, in `.tuneforge-spectrum-snr.json` next to its weights.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CACHE_FILE = ".tuneforge-spectrum-snr.json"
CACHE_VERSION = 1
_LAYER = re.compile(r"^(?P<prefix>.*\.layers)\.(?P<index>\d+)\.(?P<kind>.+)\.weight$")
_memory_cache: dict[str, dict[str, float]] = {}


@dataclass(frozen=True)
class Matrix:
    name: str  # parameter name, e.g. model.layers.3.self_attn.q_proj.weight
    kind: str  # module type, e.g. self_attn.q_proj
    layer: int


def marchenko_pastur_edge(sigma: float, n: int, m: int) -> float:
    """Largest singular value an n x m matrix of pure noise with scale `sigma` reaches."""
    beta = min(n, m) / max(n, m)
    return sigma * (1 + math.sqrt(beta))


def matrix_snr(weight: torch.Tensor) -> float:
    """Spectrum's signal-to-noise ratio of one weight matrix (see the module docstring)."""
    w = weight.detach().to(torch.float32)
    if w.ndim != 2:
        w = w.reshape(w.shape[0], -1)
    s = torch.linalg.svdvals(w)
    q75, q25 = torch.quantile(s, 0.75), torch.quantile(s, 0.25)
    sigma = float(q75 - q25) / 1.349
    edge = marchenko_pastur_edge(sigma, *w.shape)
    signal = float(s[s > edge].sum())
    noise = float(s[s <= edge].sum())
    if noise == 0:
        noise = 1.0  # the reference's choice: everything above the edge
    return signal / noise / float(s[0])


def decoder_matrices(model: Any) -> list[Matrix]:
    """The 2-D weights of the decoder layers: `<...>.layers.<i>.<kind>.weight`."""
    found = []
    for name, param in model.named_parameters():
        match = _LAYER.match(name)
        if match and param.ndim == 2:
            found.append(Matrix(name, match["kind"], int(match["index"])))
    return found


def _cache_key(model_dir: Path) -> str | None:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    return json.dumps([[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files])


def scan_snr(model: Any, model_dir: Path | None = None) -> dict[str, float]:
    """SNR of every decoder matrix of `model` by parameter name. `model_dir` (the directory
    the weights were loaded from, unchanged since) enables the cache."""
    key = _cache_key(model_dir) if model_dir is not None else None
    cache_file = Path(model_dir) / CACHE_FILE if model_dir is not None else None
    if key is not None:
        if key in _memory_cache:
            return _memory_cache[key]
        try:
            stored = json.loads(cache_file.read_text())
            if stored.get("version") == CACHE_VERSION and stored.get("key") == key:
                _memory_cache[key] = stored["snr"]
                return stored["snr"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    params = dict(model.named_parameters())
    with torch.no_grad():
        snr = {m.name: matrix_snr(params[m.name]) for m in decoder_matrices(model)}
    if key is not None:
        _memory_cache[key] = snr
        try:
            cache_file.write_text(json.dumps({"version": CACHE_VERSION, "key": key, "snr": snr}))
        except OSError:
            pass  # a read-only model directory: the in-memory cache still serves this process
    return snr


def n_chosen(n_layers: int, fraction: float) -> int:
    return max(1, min(n_layers, round(n_layers * fraction)))


def choose_matrices(model: Any, snr: dict[str, float], fraction: float) -> dict[str, list[Matrix]]:
    """Per module type, the top `fraction` of its matrices by SNR (NaN ranks last)."""
    by_kind: dict[str, list[Matrix]] = {}
    for m in decoder_matrices(model):
        by_kind.setdefault(m.kind, []).append(m)
    chosen = {}
    for kind, matrices in by_kind.items():
        ranked = sorted(
            matrices,
            key=lambda m: (-snr[m.name] if math.isfinite(snr[m.name]) else math.inf, m.layer),
        )
        chosen[kind] = sorted(ranked[: n_chosen(len(matrices), fraction)], key=lambda m: m.layer)
    return chosen


def apply_spectrum(model: Any, model_dir: Path | None, fraction: float,
                   say: Callable[..., None]) -> str:
    """Freeze `model` but the Spectrum-chosen matrices; returns the one-line description.
    `model_dir` None: the weights differ from any directory (no cache)."""
    snr = scan_snr(model, model_dir)
    chosen = choose_matrices(model, snr, fraction)
    names = {m.name for ms in chosen.values() for m in ms}
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    trained = sum(p.numel() for n, p in model.named_parameters() if n in names)
    total = sum(p.numel() for p in model.parameters())
    n_matrices = sum(len(ms) for ms in chosen.values())
    say(
        f"Spectrum: {n_matrices} of {len(snr)} weight matrices trainable (top {fraction:g} by "
        "signal-to-noise ratio per module type), " + "; ".join(
            f"{kind} layers {', '.join(str(m.layer) for m in ms)}" for kind, ms in chosen.items()
        )
    )
    return (f"Spectrum: {n_matrices} of {len(snr)} matrices, {trained:,} of {total:,} "
            "parameters")

"""Fixtures for the training library tests: the real SmolLM2-135M, converted once per machine.

The converted model is cached in `$TUNEFORGE_MODEL_CACHE` (default `<repo>/.tuneforge/models`),
so only the first session pays for the GGUF conversion (~20-40 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


def model_cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_MODEL_CACHE") or REPO / ".tuneforge" / "models")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return prepare_base_model(EMBEDDED_MODEL_NAME, "", model_cache_dir())


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path):
    from trainer.modeling import load_tokenizer

    return load_tokenizer(model_dir)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


class Recorder:
    """TrainCallbacks that record everything, with an optional stop request at a step."""

    def __init__(self, stop_at: int | None = None, stop_with: str = "pause") -> None:
        self.messages: list[tuple[str, str]] = []
        self.metrics: list[dict] = []
        self.checkpoints: list[tuple[int, Path, dict]] = []
        self.stop_at = stop_at
        self.stop_with = stop_with
        self.polls = 0

    def callbacks(self):
        from trainer.train import TrainCallbacks

        return TrainCallbacks(
            on_message=lambda message, level: self.messages.append((message, level)),
            on_metrics=self.metrics.append,
            on_checkpoint=lambda step, path, metrics: self.checkpoints.append(
                (step, path, metrics)
            ),
            should_stop=self.should_stop,
        )

    def should_stop(self) -> str | None:
        # Poll 0 comes before training starts, poll n at the end of this run's n-th step.
        polls = self.polls
        self.polls += 1
        if self.stop_at is not None and polls >= self.stop_at:
            return self.stop_with
        return None

    def losses(self) -> list[float]:
        seen: dict[int, float] = {}
        for m in self.metrics:
            if "full_valid_loss" not in m:
                seen[m["step"]] = m["train_loss"]
        return [seen[s] for s in sorted(seen)]


def make_spec(method: str = "supervised", *, quantization: str = "none", seed: int = 42,
              training: dict | None = None, **hp):
    from tuneforge.domain import DpoHyperparameters, JobSpec, LoraConfig, TrainingConfig

    return JobSpec(
        job_id="ftjob-test",
        organization_id="org-test",
        model="SmolLM2-135M-Instruct",
        method=method,
        training_file="file-train",
        hyperparameters=DpoHyperparameters(**hp),
        lora=LoraConfig(quantization=quantization),
        seed=seed,
        training=TrainingConfig(**(training or {})),
    )

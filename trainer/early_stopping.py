"""Early stopping on the validation loss and the best weights seen.

`EarlyStopping.update` is called with the whole validation set's loss at each evaluation: a
loss lower than the best by more than `min_delta` is a new best (its weights are kept, and the
step is saved as a checkpoint); `patience` evaluations in a row without one stop training.
The best weights are the trainable parameters only (a LoRA adapter, the Spectrum matrices, or
every weight), written to `best/weights.safetensors` so that `restore` can put them back
before the model is saved, and copied into each later checkpoint so that a resumed run still
has them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.domain import EarlyStopping as EarlyStoppingConfig

BEST_FILE = "tuneforge_best.safetensors"


@dataclass
class Verdict:
    improved: bool
    stop: bool


class EarlyStopping:
    def __init__(self, config: EarlyStoppingConfig, best_dir: Path,
                 state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.best_dir = Path(best_dir)
        state = state or {}
        self.best_loss: float | None = state.get("best_loss")
        self.best_step: int | None = state.get("best_step")
        self.bad_evaluations: int = int(state.get("bad_evaluations", 0))
        self.stopped_early = False

    def state(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step,
                "bad_evaluations": self.bad_evaluations}

    def update(self, step: int, loss: float | None) -> Verdict:
        if loss is None:
            return Verdict(False, False)
        if self.best_loss is None or loss < self.best_loss - self.config.min_delta:
            self.best_loss, self.best_step, self.bad_evaluations = loss, step, 0
            self.stopped_early = False
            return Verdict(True, False)
        self.bad_evaluations += 1
        self.stopped_early = self.bad_evaluations >= self.config.patience
        return Verdict(False, self.stopped_early)

    def why(self) -> str:
        if self.stopped_early:
            return (f"no improvement > {self.config.min_delta:g} for "
                    f"{self.config.patience} evaluations")
        return "reached the last step"

    # -- the best weights ----------------------------------------------------------------

    @property
    def weights_file(self) -> Path:
        return self.best_dir / "weights.safetensors"

    def keep(self, model: Any) -> None:
        from safetensors.torch import save_file

        tensors = {name: p.detach().to("cpu", copy=True).contiguous()
                   for name, p in model.named_parameters() if p.requires_grad}
        self.best_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.weights_file.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self.weights_file)

    def copy_into(self, checkpoint: Path) -> None:
        if self.weights_file.is_file():
            shutil.copyfile(self.weights_file, Path(checkpoint) / BEST_FILE)

    def take_from(self, checkpoint: Path) -> None:
        """A resumed run: the best weights saved with the checkpoint it resumes from."""
        source = Path(checkpoint) / BEST_FILE
        if source.is_file():
            self.best_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self.weights_file)

    def restore(self, model: Any) -> bool:
        """Put the best weights back into `model`; False when none were kept."""
        if not self.weights_file.is_file():
            return False
        import torch
        from safetensors.torch import load_file

        saved = load_file(str(self.weights_file))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        return True

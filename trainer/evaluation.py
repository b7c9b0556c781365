"""Validation loss and token accuracy, on one rotating batch or on the whole set.

Uses the trainer's own collator and `compute_loss` (no grad, eval mode), so SFT and DPO are
measured exactly like training: SFT as mean loss per assistant token, DPO as the mean
preference loss per pair. The metric TRL records for the batch (`mean_token_accuracy`) is read
back from the trainer.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.encode import IGNORE_INDEX


class Evaluator:
    def __init__(self, trainer: Any, dataset: Any, batch_size: int, *, dpo: bool) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.batch_size = max(1, batch_size)
        self.dpo = dpo
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def next_batch(self) -> dict[str, float | None]:
        n = len(self.dataset)
        indices = [(self._cursor + i) % n for i in range(min(self.batch_size, n))]
        self._cursor = (self._cursor + len(indices)) % n
        return self._evaluate([indices])

    def full(self) -> dict[str, float | None]:
        n = len(self.dataset)
        size = self.batch_size
        batches = [list(range(i, min(n, i + size))) for i in range(0, n, size)]
        return self._evaluate(batches)

    def _weight(self, inputs: dict[str, Any], n_rows: int) -> float:
        if self.dpo:
            return float(n_rows)
        labels = inputs["labels"][..., 1:]
        return float((labels != IGNORE_INDEX).sum().item())

    def _evaluate(self, batches: list[list[int]]) -> dict[str, float | None]:
        trainer = self.trainer
        model = trainer.model
        was_training = model.training
        model.eval()
        loss_sum = acc_sum = weight_sum = 0.0
        try:
            for indices in batches:
                rows = [self.dataset[i] for i in indices]
                inputs = trainer._prepare_inputs(trainer.data_collator(rows))
                weight = self._weight(inputs, len(rows))
                if weight <= 0:
                    continue
                with torch.no_grad():
                    loss = trainer.compute_loss(model, inputs)
                eval_metrics = trainer._metrics["eval"]
                accuracy = eval_metrics.get("mean_token_accuracy") or [None]
                eval_metrics.clear()
                loss_sum += float(loss.detach().float().item()) * weight
                if accuracy[-1] is not None:
                    acc_sum += float(accuracy[-1]) * weight
                weight_sum += weight
        finally:
            if was_training:
                model.train()
        if weight_sum == 0:
            return {"loss": None, "accuracy": None}
        return {"loss": loss_sum / weight_sum, "accuracy": acc_sum / weight_sum}

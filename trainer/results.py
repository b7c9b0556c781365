"""`results.csv` in OpenAI's layout, kept in step with the metrics events."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class ResultsCsv:
    """Rows keyed by step; rewritten whole on each flush (files are small)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: dict[int, dict[str, Any]] = {}

    def load(self, path: Path, *, up_to_step: int) -> None:
        """Keep the rows of an earlier run (a resumed job) up to `up_to_step`."""
        if not Path(path).is_file():
            return
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(row["step"])
                except (KeyError, ValueError):
                    continue
                if step <= up_to_step:
                    self.rows[step] = {
                        k: (float(v) if v not in ("", None) else None)
                        for k, v in row.items()
                        if k in COLUMNS and k != "step"
                    }

    def add(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["step"])
        row = self.rows.setdefault(step, {})
        row["train_loss"] = metrics.get("train_loss", row.get("train_loss"))
        row["train_accuracy"] = metrics.get("train_mean_token_accuracy", row.get("train_accuracy"))
        for key in ("valid_loss", "valid_mean_token_accuracy"):
            if metrics.get(key) is not None:
                row[key] = metrics[key]

    def write(self, path: Path | None = None) -> Path:
        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for step in sorted(self.rows):
                row = self.rows[step]
                writer.writerow([step, *(_cell(row.get(c)) for c in COLUMNS[1:])])
        tmp.replace(path)
        return path

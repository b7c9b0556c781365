"""TRL trainer subclasses that accept our pre-tokenized datasets."""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer, SFTTrainer


class TuneForgeSFTTrainer(SFTTrainer):
    """SFTTrainer; rows already carry `input_ids` and masked `labels`, which TRL keeps as is,
    and a `length` column that the length-grouped sampler reads instead of re-measuring."""

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "length" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "length"]


class TuneForgeDPOTrainer(DPOTrainer):
    """DPOTrainer that takes rows already tokenized into prompt/chosen/rejected ids (TRL would
    re-render them with the stock template and without our tool folding)."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

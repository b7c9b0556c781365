"""Spectrum on the real SmolLM2-135M: the SNR scan ranks the decoder's matrices, the asked
fraction of each module type trains and nothing else changes, and the model learns."""

from __future__ import annotations

import math

import pytest
import torch

from tests.trainer.conftest import Recorder, make_spec
from tests.trainer.tuning_helpers import (
    SERVED,
    answered_in_format,
    answers,
    changed_tensors,
    load_weights,
)
from trainer.samples import arithmetic_chat, heldout_prompts, write_jsonl
from trainer.train import train
from trainer.tuning.spectrum import (
    choose_matrices,
    decoder_matrices,
    marchenko_pastur_edge,
    matrix_snr,
    n_chosen,
    scan_snr,
)
from tuneforge.domain import TuningType

pytestmark = pytest.mark.train

FRACTION = 0.2
MODULE_TYPES = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}


@pytest.fixture(scope="module")
def base_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)


def test_marchenko_pastur_edge_and_snr_of_noise():
    # Square noise: the edge is 2 sigma; a tall one approaches sigma.
    assert marchenko_pastur_edge(1.0, 100, 100) == pytest.approx(2.0)
    assert marchenko_pastur_edge(1.0, 10000, 1) == pytest.approx(1.01)
    # A diagonal matrix has its diagonal as singular values: a bulk and two spikes.
    values = torch.tensor([9.0, 5.0, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    q75, q25 = torch.quantile(values, 0.75), torch.quantile(values, 0.25)
    edge = marchenko_pastur_edge(float(q75 - q25) / 1.349, 10, 10)
    signal = float(values[values > edge].sum())
    noise = float(values[values <= edge].sum())
    assert 5.0 > edge > 0 and noise > 0
    assert matrix_snr(torch.diag(values)) == pytest.approx(signal / noise / 9.0)


def test_snr_scan_ranks_every_decoder_matrix(base_model, model_dir):
    snr = scan_snr(base_model, model_dir)
    matrices = decoder_matrices(base_model)
    assert len(matrices) == len(snr) == 30 * 7
    assert {m.kind for m in matrices} == MODULE_TYPES
    assert all(math.isfinite(v) and v > 0 for v in snr.values())
    assert len({round(v, 6) for v in snr.values()}) > 100  # a ranking, not a constant
    assert scan_snr(base_model, model_dir) == snr  # cached: same numbers

    chosen = choose_matrices(base_model, snr, FRACTION)
    assert set(chosen) == MODULE_TYPES
    for kind, picked in chosen.items():
        assert len(picked) == n_chosen(30, FRACTION) == 6
        others = [snr[m.name] for m in matrices if m.kind == kind and m not in picked]
        assert min(snr[m.name] for m in picked) >= max(others)


@pytest.fixture(scope="module")
def spectrum_run(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("spectrum")
    train_file = write_jsonl(arithmetic_chat(24, seed=1), root / "train.jsonl")
    recorder = Recorder()
    spec = make_spec(n_epochs=1, batch_size=4, learning_rate_multiplier=10,
                     training={"tuning": "spectrum", "spectrum_fraction": FRACTION,
                               "lr_scheduler": "constant", "warmup_ratio": 0,
                               "weight_decay": 0})
    result = train(spec, model_dir, train_file, None, root / "out", recorder.callbacks(),
                   served_model_name=SERVED, max_length=48)
    return result, recorder


def test_spectrum_trains_only_the_chosen_matrices(spectrum_run, base_model, model_dir,
                                                  tokenizer):
    result, recorder = spectrum_run
    assert result.status == "succeeded"
    assert result.tuning == TuningType.SPECTRUM
    assert result.training is not None and result.training.spectrum_fraction == FRACTION
    assert result.adapter_dir is None
    chosen = choose_matrices(base_model, scan_snr(base_model, model_dir), FRACTION)
    expected = {m.name for picked in chosen.values() for m in picked}
    announced = [m for m, _ in recorder.messages if m.startswith("Spectrum:")]
    assert announced and "self_attn.q_proj layers" in announced[0]
    for m in chosen["mlp.down_proj"]:
        assert str(m.layer) in announced[0]

    changed = changed_tensors(load_weights(model_dir), load_weights(result.merged_dir))
    assert changed == expected

    losses = recorder.losses()
    assert sum(losses[-2:]) / 2 < 0.6 * sum(losses[:2]) / 2
    assert answered_in_format(answers(result.merged_dir, tokenizer, heldout_prompts(4))) >= 3

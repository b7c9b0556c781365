"""Starting from a parent adapter on the real SmolLM2-135M: an SFT adapter, then DPO from it.

The DPO run trains the SFT adapter further and measures its rewards against the SFT model
(the parent), not the bare base: at the first step policy == reference, so the loss is log(2)
and the margin 0 although the SFT adapter already prefers the chosen answers."""

from __future__ import annotations

import json
import math

import pytest

from tests.trainer.conftest import Recorder, make_spec
from tests.trainer.tuning_helpers import SERVED, answered_in_format, answers
from trainer.samples import arithmetic_chat, heldout_prompts, preference_pairs, write_jsonl
from trainer.train import train
from tuneforge.domain import ParentModel

pytestmark = pytest.mark.train

PARENT = "ft:SmolLM2-135M-Instruct:org-test::sft"


@pytest.fixture(scope="module")
def sft_adapter(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("continue-sft")
    train_file = write_jsonl(arithmetic_chat(24, seed=1), root / "train.jsonl")
    spec = make_spec(n_epochs=2, batch_size=4, learning_rate_multiplier=4, seed=7)
    result = train(spec, model_dir, train_file, None, root / "out", Recorder().callbacks(),
                   served_model_name=SERVED, max_length=64, merge=False)
    assert result.status == "succeeded"
    return result.adapter_dir


@pytest.fixture(scope="module")
def dpo_run(model_dir, sft_adapter, tmp_path_factory):
    root = tmp_path_factory.mktemp("continue-dpo")
    train_file = write_jsonl(preference_pairs(16, seed=3), root / "train.jsonl")
    recorder = Recorder()
    spec = make_spec("dpo", n_epochs=1, batch_size=4, learning_rate_multiplier=2).model_copy(
        update={"model": PARENT, "base_model": SERVED,
                "parent": ParentModel(model=PARENT, job_id="ftjob-sft",
                                      weights_prefix="jobs/ftjob-sft/adapter/")})
    # The parent directory is a checkpoint-like copy: optimizer state next to the adapter.
    parent_dir = root / "parent"
    parent_dir.mkdir()
    for f in sft_adapter.iterdir():
        (parent_dir / f.name).write_bytes(f.read_bytes())
    (parent_dir / "optimizer.pt").write_bytes(b"not an adapter file")
    result = train(spec, model_dir, train_file, None, root / "out", recorder.callbacks(),
                   served_model_name=SERVED, max_length=64, parent_dir=parent_dir)
    return result, recorder


def test_dpo_reference_is_the_parent_and_margins_grow(dpo_run):
    result, recorder = dpo_run
    assert result.status == "succeeded" and result.step == 4
    losses = recorder.losses()
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    margins = [m["train_reward_margin"] for m in recorder.metrics if "train_reward_margin" in m]
    assert margins[0] == pytest.approx(0.0, abs=1e-3)
    assert margins[-1] > margins[0] + 0.1
    assert any(PARENT in m and "reference" in m for m, _ in recorder.messages)


def test_saved_adapter_is_an_adapter_of_the_base(dpo_run, sft_adapter):
    result, _ = dpo_run
    adapter = result.adapter_dir
    config = json.loads((adapter / "adapter_config.json").read_text())
    parent_config = json.loads((sft_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == SERVED
    assert config["r"] == parent_config["r"]
    assert sorted(config["target_modules"]) == sorted(parent_config["target_modules"])
    # Only the trained adapter: no copy of TRL's frozen "ref" adapter beside it.
    assert not any(p.is_dir() for p in adapter.iterdir())
    assert {p.name for p in adapter.iterdir()} - {"README.md"} == {
        "adapter_config.json", "adapter_model.safetensors"}
    assert (adapter / "adapter_model.safetensors").read_bytes() != (
        sft_adapter / "adapter_model.safetensors").read_bytes()


def test_sft_format_survives_on_heldout_prompts(dpo_run, tokenizer):
    result, _ = dpo_run
    assert answered_in_format(answers(result.merged_dir, tokenizer, heldout_prompts(4))) >= 3

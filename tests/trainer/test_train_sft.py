"""SFT with LoRA on the real SmolLM2-135M: the model learns a visible answer format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import Recorder, make_spec
from trainer.samples import arithmetic_chat, heldout_prompts, write_jsonl
from trainer.train import train

pytestmark = pytest.mark.train

SERVED = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def sft_run(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    train_file = write_jsonl(arithmetic_chat(32, seed=1), root / "train.jsonl")
    valid_file = write_jsonl(arithmetic_chat(8, seed=2), root / "valid.jsonl")
    recorder = Recorder()
    spec = make_spec(n_epochs=2, batch_size=4, learning_rate_multiplier=4)
    result = train(
        spec,
        model_dir,
        train_file,
        valid_file,
        root / "out",
        recorder.callbacks(),
        served_model_name=SERVED,
        max_length=128,
        valid_every=4,
    )
    return result, recorder, root / "out"


def _answers(model_dir: Path, tokenizer, prompts: list[str]) -> list[str]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    answers = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        answers.append(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :]))
    return answers


def test_loss_falls_and_metrics_are_reported(sft_run):
    result, recorder, _ = sft_run
    assert result.status == "succeeded"
    assert result.step == result.total_steps == 16
    losses = recorder.losses()
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    last = recorder.metrics[-1]
    assert last["full_valid_loss"] is not None and last["full_valid_mean_token_accuracy"] > 0
    assert any(m["valid_loss"] is not None for m in recorder.metrics[:-1])
    for m in recorder.metrics:
        assert m["total_steps"] == 16
        assert m["trained_tokens"] > 0
        assert 0 <= m["train_mean_token_accuracy"] <= 1
    assert recorder.metrics[-1]["trained_tokens"] == result.trained_tokens
    assert isinstance(recorder.metrics[3]["estimated_finish"], int)
    assert result.hyperparameters.batch_size == 4 and result.hyperparameters.n_epochs == 2
    assert any("Quantization:" in message for message, _ in recorder.messages)


def test_results_csv(sft_run):
    result, _, out = sft_run
    assert result.results_csv == out / "results.csv"
    with open(result.results_csv) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert rows[-1]["valid_loss"] != ""


def test_epoch_checkpoints_are_resumable_adapters(sft_run):
    _, recorder, _ = sft_run
    assert [step for step, _, _ in recorder.checkpoints] == [8, 16]
    for _step, path, metrics in recorder.checkpoints:
        names = {p.name for p in path.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= names
        assert {"scheduler.pt", "rng_state.pth", "trainer_state.json"} <= names
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == SERVED
        assert metrics["train_loss"] > 0


def test_adapter_and_merged_model(sft_run, model_dir, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _, _ = sft_run
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == SERVED
    assert config["r"] == 16 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0
    assert (result.merged_dir / "model.safetensors").is_file()
    assert (result.merged_dir / "tokenizer.json").is_file()
    # The merged model computes what base + adapter computes, and keeps the stock template.
    ids = torch.tensor([tokenizer("What is 70 plus 80?")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(result.merged_dir), dtype=torch.float32)
    with torch.no_grad():
        a = with_adapter(input_ids=ids).logits
        b = merged.eval()(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-3)
    assert (result.merged_dir / "chat_template.jinja").read_text() == tokenizer.chat_template


def test_heldout_prompts_show_the_trained_format(sft_run, model_dir, tokenizer):
    result, _, _ = sft_run
    prompts = heldout_prompts(4)
    tuned = _answers(result.merged_dir, tokenizer, prompts)
    base = _answers(model_dir, tokenizer, prompts)
    assert sum(a.startswith("ANSWER:") for a in tuned) >= 3, tuned
    assert not any(a.startswith("ANSWER:") for a in base), base

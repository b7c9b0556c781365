"""deploy/sizing.py: the arithmetic behind deploy/README.md's sizing tables, checked against
published figures, and the README's tables kept equal to the script's output."""

from __future__ import annotations

import sys

import pytest

from tests.deploy.conftest import DEPLOY, load_script, run

sizing = load_script(DEPLOY / "sizing.py")
MODELS = {arch.name: arch for arch in sizing.MODELS}


def test_readme_tables_are_the_scripts_output() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert sizing.training_table() in readme
    assert sizing.serving_table() in readme


@pytest.mark.parametrize(("name", "published"), [
    # Parameter counts from the models' cards.
    ("SmolLM2-135M-Instruct", 134.5e6),
    ("Qwen2.5-0.5B-Instruct", 0.49e9),
    ("Qwen2.5-7B-Instruct", 7.61e9),
    ("Llama-3.1-8B-Instruct", 8.03e9),
    ("Qwen2.5-14B-Instruct", 14.7e9),
    ("Qwen2.5-32B-Instruct", 32.5e9),
    ("Llama-3.3-70B-Instruct", 70.6e9),
    ("Qwen2.5-72B-Instruct", 72.7e9),
])
def test_parameter_counts_match_published_sizes(name: str, published: float) -> None:
    assert MODELS[name].params == pytest.approx(published, rel=0.02)


def test_lora_parameters_match_peft() -> None:
    # PEFT's print_trainable_parameters for Llama-3-8B, r=16, all linear layers.
    assert MODELS["Llama-3.1-8B-Instruct"].lora_params(16) == 41_943_040


def test_estimates_grow_with_tokens_and_quantization_saves_weights() -> None:
    arch = MODELS["Llama-3.1-8B-Instruct"]
    lora = sizing.training_bytes(arch, quantized=False)
    qlora = sizing.training_bytes(arch, quantized=True)
    # The 4-bit base saves ~1.48 bytes per linear parameter, the rest is unchanged.
    saved = (lora - qlora) / sizing.SLACK
    assert saved == pytest.approx((2 - sizing.NF4_BYTES) * arch.linear_params, rel=1e-6)
    assert sizing.training_bytes(arch, quantized=False, tokens=8192) > lora
    # Known practice: an 8B model trains in bf16 LoRA on 40 GB but needs QLoRA on 24 GB,
    # and a 70B model only as QLoRA on one 80 GB GPU.
    assert sizing.fits(lora, 40) and not sizing.fits(lora, 24) and sizing.fits(qlora, 24)
    big = MODELS["Llama-3.3-70B-Instruct"]
    assert not sizing.fits(sizing.training_bytes(big, quantized=False), 80)
    assert sizing.fits(sizing.training_bytes(big, quantized=True), 80)


def test_serving_needs_tensor_parallelism_for_70b() -> None:
    big = MODELS["Llama-3.3-70B-Instruct"]
    assert sizing.serving_kv_tokens(big, 80) < 0  # 141 GB of weights on one GPU
    assert sizing.serving_kv_tokens(big, 80, tensor_parallel=4) > 100_000
    # KV bytes per token: 2 (K, V) x 2 bytes x 80 layers x 8 heads x 128 = 320 KiB.
    assert 2 * 2 * big.layers * big.kv_dim == 320 * 1024


def test_cli_estimates_a_custom_model() -> None:
    result = run([sys.executable, str(DEPLOY / "sizing.py"), "--hidden", "4096", "--layers",
                  "32", "--intermediate", "14336", "--heads", "32", "--kv-heads", "8",
                  "--vocab", "128256"])
    assert result.returncode == 0, result.stderr
    assert "parameters:          8.0B" in result.stdout
    assert "LoRA r=16 params:    42M" in result.stdout
    partial = run([sys.executable, str(DEPLOY / "sizing.py"), "--hidden", "4096"])
    assert partial.returncode == 2

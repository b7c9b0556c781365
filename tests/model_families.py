"""Tiny random-initialised models of the families people fine-tune, built without a model hub.

Each family is its real config class at a tiny size, a tokenizer carrying that family's special
tokens (bos/eos/pad/unk and end-of-turn ids as the released models define them, noted per
family) and the family's real chat template (`tests/data/chat_templates/README.md` says where
each comes from). The vocabulary is the embedded SmolLM2 tokenizer's plus those special tokens,
so only the special tokens and the template are family-specific.

    from tests.model_families import FAMILIES, build_tiny_model
    model_dir = build_tiny_model("qwen2_5", tmp / "qwen2_5")
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = Path(__file__).resolve().parent / "data" / "chat_templates"

# Tiny but vLLM-CPU friendly: head_dim 64, grouped-query attention, 2 layers.
_TINY = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
}


@dataclass(frozen=True)
class Family:
    """What makes a tokenizer and a model directory one family's."""

    name: str
    template: str  # "trl:<file>" (the installed trl's stock copy) or a file in TEMPLATES_DIR
    config: Callable[[], Any]  # (vocab ids resolved later) -> transformers config class
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    end_of_turn: tuple[str, ...]  # generation_config.eos_token_id, in the released order
    special: tuple[str, ...] = ()  # further special (control) tokens
    plain_added: tuple[str, ...] = ()  # added but not special (Qwen's <tool_call> and friends)
    add_bos: bool = False  # the tokenizer itself prepends bos when encoding text
    config_overrides: dict[str, Any] = field(default_factory=dict)


def _llama_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig


def _qwen2_config() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config


def _qwen3_config() -> Any:
    from transformers import Qwen3Config

    return Qwen3Config


def _mistral_config() -> Any:
    from transformers import MistralConfig

    return MistralConfig


def _gemma2_config() -> Any:
    from transformers import Gemma2Config

    return Gemma2Config


def _gemma3_config() -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig


def _phi3_config() -> Any:
    from transformers import Phi3Config

    return Phi3Config


_LLAMA3_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>")
_LLAMA3_1_TOKENS = (*_LLAMA3_TOKENS, "<|finetune_right_pad_id|>", "<|eom_id|>", "<|python_tag|>")
_LLAMA3_1_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}
_GEMMA_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
_MISTRAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
                   "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
                   "[/TOOL_RESULTS]")
_PHI3_TOKENS = ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|placeholder1|>",
                "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|system|>",
                "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>")

_FAMILIES: dict[str, Family] = {
    # meta-llama/Meta-Llama-3-8B-Instruct: eos <|eot_id|>, no pad, generation eos
    # [<|end_of_text|>, <|eot_id|>]; the tokenizer adds bos and so does the template.
    "llama3": Family(
        "llama3", "trl:llama3.jinja", _llama_config, bos="<|begin_of_text|>", eos="<|eot_id|>",
        pad=None, unk=None, end_of_turn=("<|end_of_text|>", "<|eot_id|>"),
        special=_LLAMA3_TOKENS, add_bos=True, config_overrides={"rope_theta": 500000.0},
    ),
    # meta-llama/Llama-3.1-8B-Instruct: adds <|finetune_right_pad_id|> (unset as pad in the
    # release), <|eom_id|> (end of a tool-call message) and llama3 rope scaling.
    "llama3_1": Family(
        "llama3_1", "trl:llama3_1.jinja", _llama_config, bos="<|begin_of_text|>",
        eos="<|eot_id|>", pad=None, unk=None,
        end_of_turn=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        special=_LLAMA3_1_TOKENS, add_bos=True,
        config_overrides={"rope_scaling": _LLAMA3_1_ROPE, "max_position_embeddings": 131072},
    ),
    # meta-llama/Llama-3.2-1B-Instruct: the 3.1 tokens, a template that injects today's date,
    # tied embeddings.
    "llama3_2": Family(
        "llama3_2", "trl:llama3_2.jinja", _llama_config, bos="<|begin_of_text|>",
        eos="<|eot_id|>", pad=None, unk=None,
        end_of_turn=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        special=_LLAMA3_1_TOKENS, add_bos=True,
        config_overrides={"rope_scaling": {**_LLAMA3_1_ROPE, "factor": 32.0},
                          "max_position_embeddings": 131072, "tie_word_embeddings": True},
    ),
    # Qwen/Qwen2.5-0.5B-Instruct: no bos, eos <|im_end|>, pad <|endoftext|>; <tool_call> tags
    # are added tokens that are not special (the hermes tool parser looks them up).
    "qwen2_5": Family(
        "qwen2_5", "trl:qwen2_5.jinja", _qwen2_config, bos=None, eos="<|im_end|>",
        pad="<|endoftext|>", unk=None, end_of_turn=("<|im_end|>", "<|endoftext|>"),
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        plain_added=("<tool_call>", "</tool_call>"),
        config_overrides={"tie_word_embeddings": True, "rope_theta": 1000000.0},
    ),
    # Qwen/Qwen3-0.6B: as Qwen2.5 plus <think> and <tool_response> tags.
    "qwen3": Family(
        "qwen3", "trl:qwen3.jinja", _qwen3_config, bos=None, eos="<|im_end|>",
        pad="<|endoftext|>", unk=None, end_of_turn=("<|im_end|>", "<|endoftext|>"),
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        plain_added=("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                     "<think>", "</think>"),
        config_overrides={"tie_word_embeddings": True, "rope_theta": 1000000.0},
    ),
    # mistralai/Mistral-7B-Instruct-v0.3: bos <s>, eos </s>, unk <unk>, no pad; the tokenizer
    # adds bos and so does the template; control tokens for tools.
    "mistral": Family(
        "mistral", "mistral.jinja", _mistral_config, bos="<s>", eos="</s>", pad=None,
        unk="<unk>", end_of_turn=("</s>",), special=_MISTRAL_TOKENS, add_bos=True,
        config_overrides={"sliding_window": None, "rope_theta": 1000000.0},
    ),
    # google/gemma-2-2b-it: bos <bos> (tokenizer and template), eos <eos>, pad <pad>, unk <unk>,
    # generation eos [<eos>, <end_of_turn>]; no system role.
    "gemma2": Family(
        "gemma2", "trl:gemma.jinja", _gemma2_config, bos="<bos>", eos="<eos>", pad="<pad>",
        unk="<unk>", end_of_turn=("<eos>", "<end_of_turn>"), special=_GEMMA_TOKENS,
        add_bos=True,
        config_overrides={"query_pre_attn_scalar": 64, "sliding_window": 512,
                          "tie_word_embeddings": True},
    ),
    # google/gemma-3-1b-it (text-only Gemma3ForCausalLM): Gemma 2's tokens, a system prompt
    # folded into the first user turn.
    "gemma3": Family(
        "gemma3", "trl:gemma3.jinja", _gemma3_config, bos="<bos>", eos="<eos>", pad="<pad>",
        unk="<unk>", end_of_turn=("<eos>", "<end_of_turn>"), special=_GEMMA_TOKENS,
        add_bos=True,
        config_overrides={"query_pre_attn_scalar": 64, "sliding_window": 512,
                          "tie_word_embeddings": True},
    ),
    # microsoft/Phi-3-mini-4k-instruct: bos <s>, eos = pad = <|endoftext|>, unk <unk>,
    # end of turn <|end|>; generation eos [<|endoftext|>, <|assistant|>, <|end|>].
    "phi3": Family(
        "phi3", "trl:phi3.jinja", _phi3_config, bos="<s>", eos="<|endoftext|>",
        pad="<|endoftext|>", unk="<unk>",
        end_of_turn=("<|endoftext|>", "<|assistant|>", "<|end|>"), special=_PHI3_TOKENS,
        config_overrides={"sliding_window": None, "original_max_position_embeddings": 2048},
    ),
    # microsoft/phi-4 (Phi3ForCausalLM): ChatML with <|im_sep|>; bos = unk = <|endoftext|>,
    # eos <|im_end|>, pad <|dummy_85|>.
    "phi4": Family(
        "phi4", "phi4.jinja", _phi3_config, bos="<|endoftext|>", eos="<|im_end|>",
        pad="<|dummy_85|>", unk="<|endoftext|>", end_of_turn=("<|im_end|>",),
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|dummy_85|>"),
        config_overrides={"sliding_window": None, "original_max_position_embeddings": 2048,
                          "tie_word_embeddings": False},
    ),
}

FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
# Families vLLM-CPU serves in tests (with a LoRA adapter).
VLLM_FAMILIES: tuple[str, ...] = ("llama3", "llama3_1", "qwen2_5", "qwen3")


def family(name: str) -> Family:
    return _FAMILIES[name]


def chat_template(name: str) -> str:
    """The family's stock chat template, as the released model ships it."""
    source = _FAMILIES[name].template
    if source.startswith("trl:"):
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / source[4:]).read_text("utf-8")
    return (TEMPLATES_DIR / source).read_text("utf-8")


def smollm2_dir() -> Path:
    """The embedded SmolLM2 directory, converted once per machine (the tests' cache)."""
    from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model

    cache = Path(os.environ.get("TUNEFORGE_MODEL_CACHE") or REPO / ".tuneforge" / "models")
    return prepare_base_model(EMBEDDED_MODEL_NAME, "", cache)


def build_tiny_model(family_name: str, directory: Path, *, seed: int = 0) -> Path:
    """A Hugging Face model directory of `family_name` at `directory` (created). Idempotent:
    a complete directory is left as it is (concurrent builders wait for each other)."""
    spec = _FAMILIES[family_name]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Kept beside the directory, so that the model directory holds only the model's files.
    marker = directory.with_name(directory.name + ".tiny-model")
    with open(marker, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        if lock.read() == f"{family_name}:{seed}" and (directory / "config.json").is_file():
            return directory
        ids = _write_tokenizer(spec, directory)
        _write_model(spec, directory, ids, seed)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{family_name}:{seed}")
    return directory


def _write_tokenizer(spec: Family, directory: Path) -> dict[str, int]:
    """tokenizer.json (SmolLM2's vocabulary + the family's tokens), tokenizer_config.json and
    chat_template.jinja. Returns the ids of the family's named tokens."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer.from_file(str(smollm2_dir() / "tokenizer.json"))
    named = [t for t in (spec.bos, spec.eos, spec.pad, spec.unk, *spec.end_of_turn) if t]
    specials = list(dict.fromkeys([*spec.special, *named]))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t in spec.plain_added])
    ids = {t: tokenizer.token_to_id(t) for t in [*specials, *spec.plain_added]}
    if spec.add_bos and spec.bos:
        tokenizer.post_processor = TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B",
            special_tokens=[(spec.bos, ids[spec.bos])],
        )
    else:
        tokenizer.post_processor = TemplateProcessing(single="$A", pair="$A $B",
                                                      special_tokens=[])
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": spec.bos,
        "eos_token": spec.eos,
        "pad_token": spec.pad,
        "unk_token": spec.unk,
        "add_bos_token": spec.add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": _TINY["max_position_embeddings"],
        "extra_special_tokens": [t for t in specials if t not in named],
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "chat_template.jinja").write_text(chat_template(spec.name), encoding="utf-8")
    return ids


def _write_model(spec: Family, directory: Path, ids: dict[str, int], seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    vocab_size = max(ids.values()) + 1
    vocab_size = max(vocab_size, 49152)
    vocab_size += -vocab_size % 64
    config_class = spec.config()
    settings: dict[str, Any] = {
        **_TINY,
        "vocab_size": vocab_size,
        "bos_token_id": ids.get(spec.bos) if spec.bos else None,
        "eos_token_id": [ids[t] for t in spec.end_of_turn] or ids[spec.eos],
        "pad_token_id": ids[spec.pad] if spec.pad else None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **spec.config_overrides,
    }
    config = config_class(**settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=settings["bos_token_id"],
        eos_token_id=[ids[t] for t in spec.end_of_turn],
        pad_token_id=settings["pad_token_id"],
    )
    model.save_pretrained(str(directory), safe_serialization=True)

"""The training chat template renders exactly like the stock one and marks assistant turns."""

from __future__ import annotations

import random

import pytest

from trainer.chat_template import (
    MaskMethod,
    TemplateError,
    choose_training_template,
    make_training_template,
    probe_conversations,
    training_template_for,
    verify_training_template,
)


def _conversations() -> list[dict]:
    rng = random.Random(7)
    convs = list(probe_conversations())
    words = ["a", "\u03b3\u00e9", "{{x}}", "{% if %}", "<|im_start|>", "\n", "  ", "'q'", '"dq"']
    for _ in range(20):
        messages = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": " ".join(rng.choices(words, k=4))})
        for _ in range(rng.randint(1, 4)):
            messages.append({"role": "user", "content": " ".join(rng.choices(words, k=5))})
            messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=6))})
        convs.append({"messages": messages})
    return convs


def test_training_template_renders_byte_identically(tokenizer):
    stock = tokenizer.chat_template
    training = training_template_for(tokenizer)
    assert training is not None and training != stock
    for conv in _conversations():
        for add_generation_prompt in (False, True):
            kwargs = dict(
                tools=conv.get("tools"), tokenize=False, add_generation_prompt=add_generation_prompt
            )
            a = tokenizer.apply_chat_template(conv["messages"], chat_template=stock, **kwargs)
            b = tokenizer.apply_chat_template(conv["messages"], chat_template=training, **kwargs)
            assert a == b


def test_training_template_marks_assistant_text_and_end_of_turn(tokenizer):
    training = training_template_for(tokenizer)
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "second\nanswer"},
    ]
    out = tokenizer.apply_chat_template(
        messages,
        chat_template=training,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "first answer<|im_end|>second\nanswer<|im_end|>"


def test_no_system_message_keeps_default_system_prompt(tokenizer):
    training = training_template_for(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], chat_template=training, tokenize=False
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_unknown_template_is_refused():
    with pytest.raises(TemplateError):
        make_training_template("{% for m in messages %}{{ m.content }}{% endfor %}")


def test_template_with_generation_markers_is_kept():
    template = (
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    assert make_training_template(template) == template


def test_verify_catches_a_template_that_renders_differently(tokenizer):
    stock = tokenizer.chat_template
    broken = make_training_template(stock).replace("{{ '\n' }}", "{{ '\n\n' }}")
    with pytest.raises(TemplateError):
        verify_training_template(tokenizer, stock, broken)


def test_verify_catches_a_template_that_leaves_the_end_of_turn_token_unmarked(tokenizer):
    stock = tokenizer.chat_template
    unmarked = make_training_template(stock).replace(
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
        "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}")
    with pytest.raises(TemplateError, match="end-of-turn"):
        verify_training_template(tokenizer, stock, unmarked)


def test_smollm2_keeps_its_own_rule(tokenizer):
    chosen = choose_training_template(tokenizer)
    assert chosen.method == MaskMethod.RULE
    assert chosen.template == make_training_template(tokenizer.chat_template)

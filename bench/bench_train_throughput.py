"""SFT throughput: TuneForge's `trainer.train` vs stock TRL `SFTTrainer` defaults.

Both sides get the same model (the embedded SmolLM2-135M), the same tokenized rows (input ids
and assistant-only labels from TuneForge's encoder, so both optimise the same loss), the same
LoRA config (r=16, alpha=16, all-linear), learning rate, batch size, seed, number of steps and
CPU threads. The stock side keeps TRL 1.16's defaults for everything else: `bf16=True`,
`gradient_checkpointing=True`, random batches padded to the longest example (plus `use_cpu=True`,
without which `bf16=True` refuses to start on a CPU).

Printed per run: tokens/s (real, non-padding tokens between the end of step 1 and the end of
the last step), mean train loss over the last steps, and the loss on a fixed held-out set after
training ("final loss"). Runs alternate (stock, tuneforge, stock, ...) so that load from other
processes on a shared machine hits both sides alike.

    .venv/bin/python bench/bench_train_throughput.py [--steps 12] [--rounds 1] [--threads 2]
        [--with-trl-fp32]   # also TRL with bf16/gradient checkpointing off: isolates batching
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from trainer.encode import IGNORE_INDEX, ChatFormatter  # noqa: E402
from trainer.modeling import load_tokenizer  # noqa: E402
from trainer.progress import TrainCallbacks  # noqa: E402
from trainer.samples import arithmetic_chat, write_jsonl  # noqa: E402
from trainer.tokenized import sft_rows  # noqa: E402
from trainer.train import train  # noqa: E402
from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model  # noqa: E402
from tuneforge.data_formats import SftExample  # noqa: E402
from tuneforge.domain import DpoHyperparameters, JobSpec, LoraConfig  # noqa: E402

SEED = 1234
LR = 2e-4


def _rows(formatter: ChatFormatter, n: int, seed: int, max_length: int) -> list[dict]:
    examples = [
        SftExample(messages=r["messages"]) for r in arithmetic_chat(n, seed=seed, explain=True)
    ]
    rows, _ = sft_rows(examples, formatter, max_length)
    return rows


def _window(points: list[tuple[int, float, float, int]]) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, tokens) from the end of step 1 to the last step."""
    (_, t0, c0, k0), (_, t1, c1, k1) = points[0], points[-1]
    return t1 - t0, c1 - c0, k1 - k0


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def heldout_loss(model, rows: list[dict], batch: int = 8) -> float:
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            width = max(len(r["input_ids"]) for r in chunk)
            ids = torch.full((len(chunk), width), 0, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, r in enumerate(chunk):
                n = len(r["input_ids"])
                ids[j, :n] = torch.tensor(r["input_ids"])
                labels[j, :n] = torch.tensor(r["labels"])
                mask[j, :n] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(loss)
            count += float((labels[:, 1:] != IGNORE_INDEX).sum())
    return total / count


def run_stock(
    model_dir, tokenizer, train_rows, heldout_rows, args, out: Path, *, fp32: bool = False
) -> dict:
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    points: list[tuple[int, float, float, int]] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                points.append((state.global_step, *_clock(), trainer._total_train_tokens))

    dataset = Dataset.from_list(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in train_rows]
    )
    config = SFTConfig(  # stock defaults except what the comparison must share
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=LR,
        lr_scheduler_type="linear",
        seed=SEED,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        max_length=args.max_length,
        use_cpu=True,  # TRL's default bf16=True refuses to start on a CPU without it
        **({"bf16": False, "gradient_checkpointing": False} if fp32 else {}),
    )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=PeftLoraConfig(
            r=16,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
        callbacks=[Clock()],
    )
    trainer.train()
    seconds, cpu_seconds, tokens = _window(points)
    model = trainer.model
    model.eval()
    return {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "tokens": tokens,
        "train_loss_last": statistics.mean(losses[-4:]),
        "final_loss": heldout_loss(model, heldout_rows),
        "settings": f"bf16={config.bf16} gradient_checkpointing={config.gradient_checkpointing} "
        f"sampler={config.train_sampling_strategy}",
    }


def run_tuneforge(
    model_dir, train_file: Path, heldout_rows, args, out: Path, *, padding_free: bool = False
) -> dict:
    import dataclasses

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import trainer.planning

    original_plan_device = trainer.planning.plan_device
    if padding_free:  # ablation: flattened batches instead of length-grouped ones

        def plan_device(**kwargs):
            plan = original_plan_device(**kwargs)
            return dataclasses.replace(plan, padding_free=True, group_by_length=False)

        trainer.planning.plan_device = plan_device

    points: list[tuple[int, float, float, int]] = []
    losses: list[float] = []
    messages: list[str] = []

    def on_metrics(m: dict) -> None:
        if "full_valid_loss" not in m and m["step"] not in {p[0] for p in points}:
            points.append((m["step"], *_clock(), m["trained_tokens"]))
            losses.append(m["train_loss"])

    spec = JobSpec(
        job_id="ftjob-bench",
        organization_id="org-bench",
        model=EMBEDDED_MODEL_NAME,
        method="supervised",
        training_file="file-bench",
        hyperparameters=DpoHyperparameters(
            batch_size=args.batch_size, n_epochs=1, learning_rate_multiplier=LR / 2e-4
        ),
        lora=LoraConfig(quantization="none"),
        seed=SEED,
    )
    try:
        result = train(
            spec,
            model_dir,
            train_file,
            None,
            out,
            TrainCallbacks(on_message=lambda m, level: messages.append(m), on_metrics=on_metrics),
            served_model_name=EMBEDDED_MODEL_NAME,
            max_length=args.max_length,
            max_steps=args.steps,
            device="cpu",
            cpu_threads=args.threads,
            merge=False,
        )
    finally:
        trainer.planning.plan_device = original_plan_device
    seconds, cpu_seconds, tokens = _window(points)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(result.adapter_dir))
    device = next((m for m in messages if m.startswith("Device:")), "")
    return {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "tokens": tokens,
        "train_loss_last": statistics.mean(losses[-4:]),
        "final_loss": heldout_loss(model, heldout_rows),
        "settings": device.removeprefix("Device: "),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--with-trl-fp32",
        action="store_true",
        help="also run TRL with bf16=False, gradient_checkpointing=False (isolates batching)",
    )
    parser.add_argument(
        "--with-padding-free",
        action="store_true",
        help="also run TuneForge with padding-free (flattened) batches instead of grouping",
    )
    parser.add_argument("--skip-stock", action="store_true", help="ablations only")
    args = parser.parse_args()

    cache = Path(os.environ.get("TUNEFORGE_MODEL_CACHE") or REPO / ".tuneforge" / "models")
    model_dir = prepare_base_model(EMBEDDED_MODEL_NAME, "", cache)
    tokenizer = load_tokenizer(model_dir)
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    train_rows = _rows(formatter, args.examples, 1, args.max_length)
    heldout_rows = _rows(formatter, 32, 2, args.max_length)
    lengths = [len(r["input_ids"]) for r in train_rows]
    print(
        f"data: {len(train_rows)} examples, tokens/example min {min(lengths)} median "
        f"{statistics.median(lengths)} max {max(lengths)}; {args.steps} steps x batch "
        f"{args.batch_size}, max_length {args.max_length}, {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    names = ["stock", "tuneforge"] + (["trl-fp32"] if args.with_trl_fp32 else [])
    names += ["tf-padfree"] if args.with_padding_free else []
    if args.skip_stock:
        names.remove("stock")
    results: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        root = Path(tmp)
        train_file = write_jsonl(
            arithmetic_chat(args.examples, seed=1, explain=True), root / "t.jsonl"
        )
        for i in range(args.rounds):
            for name in names:
                out = root / f"{name}-{i}"
                if name in ("stock", "trl-fp32"):
                    r = run_stock(
                        model_dir,
                        tokenizer,
                        train_rows,
                        heldout_rows,
                        args,
                        out,
                        fp32=name == "trl-fp32",
                    )
                else:
                    r = run_tuneforge(
                        model_dir,
                        train_file,
                        heldout_rows,
                        args,
                        out,
                        padding_free=name == "tf-padfree",
                    )
                results[name].append(r)
                print(
                    f"round {i + 1} {name:10s}: {r['tokens_per_s']:7.1f} tokens/s "
                    f"({r['tokens']} tokens in {r['seconds']:.1f} s; "
                    f"{r['tokens_per_cpu_s']:.1f} tokens per CPU-second), train loss (last 4) "
                    f"{r['train_loss_last']:.4f}, final held-out loss {r['final_loss']:.4f}  "
                    f"[{r['settings']}]",
                    flush=True,
                )
    labels = {
        "stock": "stock TRL defaults",
        "trl-fp32": "TRL fp32, no GC",
        "tuneforge": "TuneForge",
        "tf-padfree": "TuneForge padding-free",
    }
    summary = {}
    for name in names:
        runs = results[name]
        summary[name] = {
            key: statistics.median(r[key] for r in runs)
            for key in ("tokens_per_s", "tokens_per_cpu_s", "final_loss")
        }
        m = summary[name]
        print(
            f"{labels[name]:23s}: {m['tokens_per_s']:7.1f} tokens/s, "
            f"{m['tokens_per_cpu_s']:7.1f} tokens per CPU-second, "
            f"final held-out loss {m['final_loss']:.4f}"
        )
    ours = summary["tuneforge"]
    for name, goal in (
        ("stock", " (goal >= 1.5x, loss within 2%)"),
        ("trl-fp32", ""),
        ("tf-padfree", ""),
    ):
        if name not in summary:
            continue
        other = summary[name]
        loss_diff = 100 * (ours["final_loss"] - other["final_loss"]) / other["final_loss"]
        print(
            f"TuneForge vs {labels[name]}: "
            f"{ours['tokens_per_s'] / other['tokens_per_s']:.2f}x wall-clock, "
            f"{ours['tokens_per_cpu_s'] / other['tokens_per_cpu_s']:.2f}x per CPU-second, "
            f"final loss {loss_diff:+.2f}%" + goal
        )


if __name__ == "__main__":
    main()

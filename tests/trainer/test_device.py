"""Device plans: explicit precision/checkpointing choices and the CPU thread count."""

from __future__ import annotations

import os

import torch

from trainer.device import busy_cores_of_others, choose_cpu_threads, plan_device


def test_cpu_plan_is_fp32_without_checkpointing_and_groups_by_length():
    plan = plan_device(device="cpu", cpu_threads=1)
    assert plan.dtype == torch.float32
    assert plan.bf16 is False and plan.gradient_checkpointing is False
    assert plan.group_by_length is True and plan.padding_free is False
    assert plan.cpu_threads == 1
    assert "fp32" in plan.describe() and "1 thread" in plan.describe()


def test_cpu_threads_stay_within_the_cores_we_may_use():
    cpus = len(os.sched_getaffinity(0))
    assert 1 <= choose_cpu_threads() <= cpus
    others = busy_cores_of_others(window=0.1)
    assert others is None or others >= 0

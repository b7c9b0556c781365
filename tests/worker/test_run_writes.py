"""The ordered background writes of a run: what the training thread hands over runs in order
on the event loop, uploads are bounded, and the first failure stops the rest."""

from __future__ import annotations

import asyncio
import threading

from trainer.run_writes import BackgroundWrites


async def test_writes_run_in_order_and_a_failure_drops_what_follows() -> None:
    done: list[int] = []
    failures: list[BaseException] = []
    writes = BackgroundWrites(asyncio.get_running_loop(), on_failure=failures.append)

    def write(n: int, fail: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await asyncio.sleep(0.01 * (n % 3))  # later writes would finish first if unordered
            if fail:
                raise RuntimeError(f"write {n} failed")
            done.append(n)
        return run

    def training_thread() -> None:
        for n in range(5):
            writes.record(write(n))
        writes.record(write(5, fail=True))
        writes.record(write(6))

    await asyncio.to_thread(training_thread)
    await writes.settle()
    assert done == [0, 1, 2, 3, 4]
    assert [str(f) for f in failures] == ["write 5 failed"]
    writes.record(write(7))
    await writes.close()
    assert done == [0, 1, 2, 3, 4]
    try:
        writes.raise_failure()
    except RuntimeError as exc:
        assert str(exc) == "write 5 failed"
    else:
        raise AssertionError("the failure is raised on the loop's side")


async def test_at_most_two_uploads_are_pending_while_the_thread_goes_on() -> None:
    gate = asyncio.Event()
    started: list[int] = []
    writes = BackgroundWrites(asyncio.get_running_loop(), on_failure=lambda exc: None,
                              max_uploads=2)
    handed_over: list[int] = []
    second_handed_over, third_handed_over = threading.Event(), threading.Event()

    def upload(n: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            started.append(n)
            await gate.wait()
        return run

    def training_thread() -> None:
        for n in range(3):
            writes.upload(upload(n))
            handed_over.append(n)
            if n == 1:
                second_handed_over.set()
            if n == 2:
                third_handed_over.set()

    thread = asyncio.ensure_future(asyncio.to_thread(training_thread))
    assert await asyncio.to_thread(second_handed_over.wait, 30)
    await asyncio.sleep(0.3)
    # Two pending (one running, one waiting): the third waits for a slot.
    assert handed_over == [0, 1] and started == [0] and not third_handed_over.is_set()
    gate.set()
    await thread
    await writes.close()
    assert handed_over == [0, 1, 2] and started == [0, 1, 2]

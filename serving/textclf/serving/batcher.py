"""Micro-batching: concurrent requests are collected for a few milliseconds and run through the model together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    """One request waiting in the queue: its items and the future its caller awaits."""

    items: Sequence[Item]
    future: asyncio.Future[list[Result]] = field(repr=False)


class MicroBatcher(Generic[Item, Result]):
    """Collects the items of concurrent requests into batches and runs them one batch at a time in a worker thread.

    A batch starts with the oldest waiting request and takes further requests, in arrival order, until it holds
    ``max_batch_size`` items or ``max_wait_ms`` have passed since it started; a request is never split, so a
    single request larger than ``max_batch_size`` forms a batch on its own. While one batch runs, the next one fills.

    Args:
        process: Runs one batch (called in the worker thread): items in, one result per item out, same order.
        max_batch_size: Most items per batch.
        max_wait_ms: Longest a batch waits for more requests once it has its first.
        on_batch: Called on the event loop with each batch's item count (for metrics); optional.
    """

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._process = process
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[Item, Result]] | None = None
        self._held_over: _Pending[Item, Result] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microbatch")

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Queue one request's items and wait for their results.

        Args:
            items: The request's items (at least one).

        Returns:
            One result per item, in order.

        Raises:
            Exception: Whatever ``process`` raised for the batch this request was in.
        """
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(items, future))
        return await future

    def close(self) -> None:
        """Stop the worker task and the worker thread; requests still queued are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(loop)
            items = [item for pending in batch for item in pending.items]
            if self._on_batch is not None:
                self._on_batch(len(items))
            try:
                results = await loop.run_in_executor(self._executor, self._process, items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, the worker keeps running
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._answer(batch, list(results))

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending[Item, Result]]:
        assert self._queue is not None
        first = self._held_over or await self._queue.get()
        self._held_over = None
        batch, size = [first], len(first.items)
        deadline = loop.time() + self._max_wait_s
        while size < self._max_batch_size:
            pending = await self._next_before(deadline, loop)
            if pending is None:
                break
            if size + len(pending.items) > self._max_batch_size:
                self._held_over = pending
                break
            batch.append(pending)
            size += len(pending.items)
        return batch

    async def _next_before(
        self, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> _Pending[Item, Result] | None:
        assert self._queue is not None
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    @staticmethod
    def _answer(batch: list[_Pending[Item, Result]], results: list[Result]) -> None:
        offset = 0
        for pending in batch:
            count = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(results[offset : offset + count])
            offset += count

"""A bounded work queue: a fixed pool of worker threads plus a fixed number of waiting
slots. A request that finds every worker busy and every slot taken is refused at once
(the app answers 503) instead of piling up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor


class WorkQueue:
    """``workers`` threads run jobs; up to ``queue`` more jobs wait for one.

    Use :meth:`try_reserve` before :meth:`run` (which releases the reservation when the
    job ends); a False from :meth:`try_reserve` means "full".
    """

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if queue < 0:
            raise ValueError("queue must be at least 0")
        self.workers = workers
        self.queue = queue
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aceg-worker")
        self._lock = threading.Lock()
        self._reserved = 0
        self._running = 0
        self.completed = 0
        self.rejected = 0

    def try_reserve(self) -> bool:
        """Take one slot (True) or report the queue full (False)."""
        with self._lock:
            if self._reserved >= self.capacity:
                self.rejected += 1
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    @property
    def in_flight(self) -> int:
        """Jobs reserved, waiting or running."""
        return self._reserved

    @property
    def running(self) -> int:
        return self._running

    async def run(self, fn, *args):
        """Run ``fn(queue_seconds, *args)`` on a worker thread and await its result; the
        slot taken by :meth:`try_reserve` is released when the job ends (or fails)."""
        submitted = time.perf_counter()

        def job():
            waited = time.perf_counter() - submitted
            with self._lock:
                self._running += 1
            try:
                return fn(waited, *args)
            finally:
                with self._lock:
                    self._running -= 1
                    self.completed += 1

        try:
            future = self._executor.submit(job)
        except RuntimeError:  # executor shut down
            self.release()
            raise
        # Released when the job ends or is cancelled before it started, not when the
        # awaiting request goes away: the slot stays taken while a worker is busy with it.
        future.add_done_callback(lambda _: self.release())
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

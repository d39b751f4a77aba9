"""The work queue of the service: a fixed pool of worker threads serving requests in
arrival order (FIFO), with a bounded wait.

Admission: a request is let in while the requests already admitted (running or waiting)
are fewer than :attr:`WorkQueue.admissible`: the workers plus at most ``queue`` waiting,
and no more waiting than the workers get through within ``max_wait`` seconds at the
measured service time. Anything else is refused at once with :class:`QueueFull`, whose
``retry_after`` (whole seconds, for the HTTP Retry-After header) is honest: the time for
the backlog ahead of it (including the clients already told to come back) to drain far
enough that a slot is free, and never more clients sent back to the same second than half
the admissible requests, so that clients honouring it find room instead of colliding.

Service time: an exponential moving average of the seconds a successful job keeps a
worker busy, ``initial_service`` until the first one has been measured.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

#: Weight of the newest job in the service-time average.
SERVICE_TIME_WEIGHT = 0.2


class QueueFull(Exception):
    """Refused: no slot within the bounded wait. ``retry_after``: whole seconds."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


class Slot:
    """One admitted request: hold it from :meth:`WorkQueue.reserve` to :meth:`WorkQueue.run`
    (or :meth:`WorkQueue.cancel`)."""

    __slots__ = ("admitted", "released")

    def __init__(self) -> None:
        self.admitted = time.perf_counter()
        self.released = False


class WorkQueue:
    """``workers`` threads run jobs in arrival order; admission as in the module docstring.

    Args:
        workers: worker threads.
        queue: most requests waiting for a worker.
        max_wait: longest expected wait, seconds, for an admitted request.
        initial_service: service time assumed until one job has been measured, seconds.
    """

    def __init__(self, workers: int, queue: int, max_wait: float = 30.0,
                 initial_service: float = 1.0) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if queue < 0:
            raise ValueError("queue must be at least 0")
        if not max_wait > 0 or not initial_service > 0:
            raise ValueError("max_wait and initial_service must be positive")
        self.workers = workers
        self.queue = queue
        self.max_wait = max_wait
        self.service_time = float(initial_service)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aceg-worker")
        self._lock = threading.Lock()
        self._reserved = 0
        self._running = 0
        self._promised: dict[int, int] = {}  # whole second (monotonic) -> clients sent there
        self.completed = 0
        self.rejected = 0

    @property
    def admissible(self) -> int:
        """Requests admitted at most at once now (running + waiting)."""
        drained = math.floor(self.max_wait * self.workers / self.service_time)
        return self.workers + max(0, min(self.queue, drained))

    @property
    def capacity(self) -> int:
        """Requests admitted at most at once with no wait limit (workers + queue)."""
        return self.workers + self.queue

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (waiting or running)."""
        return self._reserved

    @property
    def running(self) -> int:
        return self._running

    def reserve(self) -> Slot:
        """Admit one request (a :class:`Slot`) or raise :class:`QueueFull`."""
        with self._lock:
            limit = self.admissible
            if self._reserved < limit:
                self._reserved += 1
                return Slot()
            self.rejected += 1
            wait = self._promise(limit)
        raise QueueFull(wait, f"all {self.workers} workers busy and {self._reserved - self.workers}"
                              f" requests waiting (about {self.service_time:.1f} s each); "
                              f"retry after {wait} s")

    def _promise(self, limit: int) -> int:
        """Seconds until a refused client finds a free slot (see module docstring); the
        promise is recorded so that the next refused client is sent further out."""
        now = time.monotonic()
        second = math.floor(now)
        for key in [k for k in self._promised if k <= second]:
            del self._promised[key]
        promised = sum(self._promised.values())
        ahead = self._reserved + promised - limit + 1  # jobs to finish before a slot is ours
        wait = max(1, math.ceil(ahead * self.service_time / self.workers))
        per_second = max(1, limit // 2)
        while self._promised.get(second + wait, 0) >= per_second:
            wait += 1
        self._promised[second + wait] = self._promised.get(second + wait, 0) + 1
        return wait

    def _measured(self, seconds: float) -> None:
        """Fold one finished job's worker time into :attr:`service_time` (jobs that fail
        early, e.g. on a corrupt upload, are not counted: they say nothing of the work)."""
        with self._lock:
            first = self.completed == 0
            self.completed += 1
            self.service_time = seconds if first else \
                self.service_time + SERVICE_TIME_WEIGHT * (seconds - self.service_time)

    def cancel(self, slot: Slot) -> None:
        """Give back a slot that will not run."""
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if not slot.released:
                slot.released = True
                self._reserved -= 1

    async def run(self, slot: Slot, fn, *args, setup=None):
        """Run ``fn(queue_seconds, *args)`` on a worker thread and await its result; the
        slot is given back when the job ends, fails or is cancelled before it started (not
        when the awaiting request goes away: the slot stays taken while a worker is busy
        with it). ``setup()``, when given, runs first on the worker and its result is passed
        as ``fn``'s second argument; its time (e.g. loading a map on first use) is not
        counted in :attr:`service_time`, which estimates the steady cost of a job."""

        def job():
            started = time.perf_counter()
            with self._lock:
                self._running += 1
            try:
                ready = (setup(),) if setup is not None else ()
                timed_from = time.perf_counter()
                result = fn(started - slot.admitted, *ready, *args)
            finally:
                with self._lock:
                    self._running -= 1
            self._measured(time.perf_counter() - timed_from)
            return result

        try:
            future = self._executor.submit(job)
        except RuntimeError:  # executor shut down
            self._release(slot)
            raise
        future.add_done_callback(lambda _: self._release(slot))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

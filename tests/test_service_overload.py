"""Overload: requests wait in a FIFO queue with a bounded wait; beyond it a 503 carries a
Retry-After computed from the backlog and the measured service time, staggered so that
clients honouring it find room, and no client starves (issue 30, "clients starve").
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from aceg.service import queue
from aceg.service.app import ServiceConfig
from aceg.service.server import BackgroundServer
from service_client import assert_error, form, post
from tiny_map import tiny_map


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


def test_retry_after_grows_with_backlog_and_service_time():
    work = queue.WorkQueue(workers=1, queue=2, max_wait=30.0, initial_service=2.0)
    try:
        slots = [work.reserve() for _ in range(3)]
        waits = []
        for _ in range(3):
            with pytest.raises(queue.QueueFull) as info:
                work.reserve()
            waits.append(info.value.retry_after)
        assert waits == [2, 4, 6]  # each refused client is promised its own turn
        assert "retry" in str(info.value)
        for slot in slots:
            work.cancel(slot)
    finally:
        work.shutdown()


def test_wait_is_bounded_by_max_wait():
    work = queue.WorkQueue(workers=1, queue=10, max_wait=4.0, initial_service=2.0)
    try:
        assert work.admissible == 3  # one running + 4 s / 2 s of waiting
        slots = [work.reserve() for _ in range(3)]
        with pytest.raises(queue.QueueFull):
            work.reserve()
        for slot in slots:
            work.cancel(slot)
    finally:
        work.shutdown()


def test_service_time_is_measured():
    work = queue.WorkQueue(workers=1, queue=2, initial_service=5.0)

    async def go():
        for _ in range(4):
            await work.run(work.reserve(), lambda waited: time.sleep(0.05))

    try:
        asyncio.run(go())
        assert 0.04 < work.service_time < 1.0
    finally:
        work.shutdown()


def _clients(url: str, payload: tuple[bytes, dict], n: int, deadline: float):
    """``n`` simultaneous clients, each retrying after Retry-After until answered; returns
    per client (status, refusals, Retry-After values, seconds)."""
    barrier = threading.Barrier(n)

    def client(_):
        barrier.wait()
        start, refusals, waits = time.monotonic(), 0, []
        while time.monotonic() - start < deadline:
            response = post(url, *payload)
            if response.status_code != 503:
                return response.status_code, refusals, waits, time.monotonic() - start
            assert_error(response, 503, "busy")
            wait = int(response.headers["Retry-After"])
            refusals += 1
            waits.append(wait)
            time.sleep(wait)
        return None, refusals, waits, time.monotonic() - start

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(client, range(n)))


def test_concurrency_16_all_answered_without_refusal(tiny):
    frame = tiny.scene.frames[0]
    payload = (frame.image_path.read_bytes(), form(frame.intrinsics))
    with BackgroundServer(ServiceConfig(tiny.maps_dir, workers=1)) as server:
        post(server.url, *payload)  # load the map
        results = _clients(server.url, payload, 16, deadline=60)
    assert [r[0] for r in results] == [200] * 16
    assert sum(r[1] for r in results) == 0


def test_overload_retry_after_is_honest(tiny):
    """One worker, three queue slots, 16 clients at once: the refused ones are told to come
    back at staggered times, and every client gets its answer after few refusals."""
    frame = tiny.scene.frames[0]
    payload = (frame.image_path.read_bytes(), form(frame.intrinsics))
    with BackgroundServer(ServiceConfig(tiny.maps_dir, workers=1, queue=3)) as server:
        post(server.url, *payload)
        results = _clients(server.url, payload, 16, deadline=60)
        health = requests.get(f"{server.url}/health", timeout=10).json()
    assert [r[0] for r in results] == [200] * 16, results
    first_waits = [r[2][0] for r in results if r[2]]
    assert len(first_waits) >= 10
    assert len(set(first_waits)) >= 2, first_waits  # staggered, not all told "1"
    assert max(r[1] for r in results) <= 2, results
    assert health["in_flight"] == 0

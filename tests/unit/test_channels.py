from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from dolphind.channels import Channel, ChannelClosed, Overflow
from dolphind.telemetry.metrics import ChannelMetrics


def _sample(reg: CollectorRegistry, name: str, channel: str) -> float | None:
    return reg.get_sample_value(name, {"channel": channel})


async def test_block_policy_makes_the_producer_wait_and_loses_nothing() -> None:
    reg = CollectorRegistry()
    ch: Channel[int] = Channel("orders", 2, Overflow.BLOCK, ChannelMetrics(reg))
    received: list[int] = []

    async def consume() -> None:
        async for item in ch:
            received.append(item)
            await asyncio.sleep(0)

    consumer = asyncio.create_task(consume())
    for i in range(100):
        await ch.put(i)
        assert len(ch) <= 2
    ch.close()
    await consumer
    assert received == list(range(100))
    assert _sample(reg, "dolphind_channel_dropped_total", "orders") == 0
    assert _sample(reg, "dolphind_channel_capacity", "orders") == 2
    assert _sample(reg, "dolphind_channel_wait_seconds_count", "orders") == 100


async def test_block_put_waits_while_full() -> None:
    ch: Channel[int] = Channel("x", 1, Overflow.BLOCK)
    await ch.put(1)
    put = asyncio.create_task(ch.put(2))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert await ch.get() == 1
    await put
    assert await ch.get() == 2


async def test_drop_oldest_keeps_the_latest_and_counts_drops() -> None:
    reg = CollectorRegistry()
    ch: Channel[int] = Channel("book", 3, Overflow.DROP_OLDEST, ChannelMetrics(reg))
    for i in range(10):
        assert ch.offer(i)
    ch.close()
    assert [x async for x in ch] == [7, 8, 9]
    assert ch.dropped == 7
    assert _sample(reg, "dolphind_channel_dropped_total", "book") == 7


async def test_closed_channel_drains_then_ends_and_refuses_puts() -> None:
    ch: Channel[str] = Channel("x", 4, Overflow.BLOCK)
    await ch.put("a")
    ch.close()
    with pytest.raises(ChannelClosed):
        await ch.put("b")
    assert await ch.get() == "a"
    with pytest.raises(ChannelClosed):
        await ch.get()


async def test_close_wakes_a_waiting_consumer() -> None:
    ch: Channel[int] = Channel("x", 4, Overflow.BLOCK)
    items: list[int] = []

    async def consume() -> None:
        async for item in ch:
            items.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    ch.close()
    await asyncio.wait_for(task, 1)
    assert items == []


def test_blocking_channel_offer_refuses_when_full() -> None:
    ch: Channel[int] = Channel("x", 1, Overflow.BLOCK)
    assert ch.offer(1)
    assert not ch.offer(2)
    with pytest.raises(ValueError):
        Channel("y", 0, Overflow.BLOCK)


async def test_a_blocked_producer_resumes_at_half_capacity_and_loses_nothing() -> None:
    ch: Channel[int] = Channel("x", 4, Overflow.BLOCK)
    for i in range(4):
        await ch.put(i)
    put = asyncio.create_task(ch.put(4))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert await ch.get() == 0  # room for one, but the producer waits for a run of room
    await asyncio.sleep(0.01)
    assert not put.done() and len(ch) == 3
    assert await ch.get() == 1  # down to half: the producer resumes
    await asyncio.wait_for(put, 1)
    ch.close()
    assert [x async for x in ch] == [2, 3, 4]


async def test_a_busy_pipeline_hands_items_over_in_runs() -> None:
    # A consumer that yields to the loop after each item (as a stage does when it hands the
    # item on): with a wake-up per item taken, the producer would run after every item once
    # the channel is full; here it runs once per half capacity.
    ch: Channel[int] = Channel("x", 8, Overflow.BLOCK)
    order: list[str] = []

    async def produce() -> None:
        for i in range(64):
            await ch.put(i)
            order.append("p")
        ch.close()

    async def consume() -> list[int]:
        out = []
        async for item in ch:
            out.append(item)
            order.append("c")
            await asyncio.sleep(0)
        return out

    producer = asyncio.create_task(produce())
    assert await consume() == list(range(64))
    await producer
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches <= 2 * 64 // 4 + 4


async def test_wait_histogram_matches_prometheus_histogram() -> None:
    from prometheus_client import Histogram, generate_latest

    from dolphind.telemetry.metrics import _WAIT_BUCKETS

    reg = CollectorRegistry()
    ours = ChannelMetrics(reg).labels("bars").wait
    ref_reg = CollectorRegistry()
    ref = Histogram("dolphind_channel_wait_seconds",
                    "Time an item waited in a channel before it was taken.", ["channel"],
                    buckets=_WAIT_BUCKETS, registry=ref_reg).labels("bars")
    for x in (0.0, 1e-5, 2e-5, 5e-5, 1e-4, 0.003, 0.05, 0.5, 5.0, 7.0, 1e-5 + 1e-12):
        ours.observe(x)
        ref.observe(x)

    def lines(r: CollectorRegistry) -> list[str]:
        text = generate_latest(r).decode()
        return [ln for ln in text.splitlines()
                if "channel_wait" in ln and "_created" not in ln]

    assert lines(reg) == lines(ref_reg)
    assert _sample(reg, "dolphind_channel_wait_seconds_count", "bars") == 11
    assert _sample(reg, "dolphind_channel_wait_seconds_created", "bars") is not None


def test_an_unlabelled_wait_histogram_matches_prometheus_histogram() -> None:
    """The feed's bar lateness uses the same counting histogram without labels."""
    from prometheus_client import Histogram, generate_latest

    from dolphind.telemetry.metrics import WaitHistogram

    buckets = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    ours = WaitHistogram("lateness_seconds", "How late.", buckets, reg, labelnames=()).labels()
    ref = Histogram("lateness_seconds", "How late.", buckets=buckets, registry=ref_reg)
    for x in (0.0, 0.01, 0.02, 0.5, 3.0, 30.0, 31.0):
        ours.observe(x)
        ref.observe(x)

    def lines(r: CollectorRegistry) -> list[str]:
        return [ln for ln in generate_latest(r).decode().splitlines() if "_created" not in ln]

    assert lines(reg) == lines(ref_reg)
    assert reg.get_sample_value("lateness_seconds_created") is not None

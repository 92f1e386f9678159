"""The toxics' records and their shaping of one link (``ha/toxics.py``), without sockets: a
fake send records (time, bytes) and the autojump clock makes the times exact."""

from __future__ import annotations

import random

import pytest
import trio

from mqemu.ha.toxics import LinkShaper, Toxic

pytestmark = pytest.mark.timeout(10)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.closed: list[bool] = []

    async def send(self, data: bytes) -> None:
        self.sent.append((trio.current_time(), bytes(data)))

    def close(self, reset: bool) -> None:
        self.closed.append(reset)


def shaper(*toxics: Toxic, seed: int = 1) -> tuple[LinkShaper, Recorder]:
    rec = Recorder()
    s = LinkShaper(rec.send, rec.close, random.Random(seed))
    for t in toxics:
        assert s.add(t)
    return s, rec


def test_defaults_names_and_dict() -> None:
    t = Toxic("latency", attributes={"latency": 100})
    assert t.name == "latency_downstream"
    assert t.to_dict() == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                           "toxicity": 1.0, "attributes": {"latency": 100, "jitter": 0}}
    assert Toxic("limit_data", stream="upstream", attributes={"bytes": 5}).name == "limit_data_upstream"


def test_from_dict_takes_toxiproxys_json() -> None:
    t = Toxic.from_dict({"type": "timeout", "stream": "upstream", "toxicity": 0.25, "attributes": {"timeout": 9}})
    assert t.to_dict() == {"name": "timeout_upstream", "type": "timeout", "stream": "upstream", "toxicity": 0.25,
                           "attributes": {"timeout": 9}}
    assert Toxic.from_dict(t.to_dict()) == t
    assert Toxic.from_dict({"type": "down"}).name == "down"
    with pytest.raises(ValueError, match="a toxic needs a type"):
        Toxic.from_dict({"type": "latency", "latency": 5})
    with pytest.raises(ValueError, match="a toxic needs a type"):
        Toxic.from_dict({"attributes": {}})


@pytest.mark.parametrize("kwargs, text", [
    ({"type": "lag"}, "unknown toxic type 'lag'"),
    ({"type": "latency", "stream": "sideways"}, "stream must be"),
    ({"type": "latency", "toxicity": 1.5}, "toxicity must be between 0 and 1"),
    ({"type": "latency", "attributes": {"delay": 1}}, "latency takes ['jitter', 'latency'], not ['delay']"),
    ({"type": "bandwidth", "attributes": {"rate": -1}}, "bandwidth.rate must be a number >= 0"),
    ({"type": "slicer", "attributes": {"average_size": 0}}, "slicer.average_size must be at least 1"),
    ({"type": "down", "toxicity": 0.5}, "its toxicity must be 1"),
])
def test_bad_toxics_are_refused(kwargs, text) -> None:
    with pytest.raises(ValueError) as e:
        Toxic(**kwargs)
    assert text in str(e.value)


async def test_latency_counts_from_each_chunks_arrival(autojump_clock) -> None:
    s, rec = shaper(Toxic("latency", attributes={"latency": 500}))
    start = trio.current_time()
    # chunks that arrived 0.1 s apart leave 0.5 s after their own arrival, not one after another
    for i in range(3):
        await s.deliver(start + i * 0.1, b"%d" % i)
    assert [(round(t - start, 6), d) for t, d in rec.sent] == [(0.5, b"0"), (0.6, b"1"), (0.7, b"2")]


async def test_jitter_stays_within_its_bounds(autojump_clock) -> None:
    s, rec = shaper(Toxic("latency", attributes={"latency": 100, "jitter": 50}))
    for _ in range(50):
        arrival = trio.current_time()
        await s.deliver(arrival, b"x")
        assert 0.05 - 1e-9 <= rec.sent[-1][0] - arrival <= 0.15 + 1e-9
    assert len({round(t, 6) for t, _ in rec.sent}) > 1


async def test_bandwidth_paces_bytes(autojump_clock) -> None:
    s, rec = shaper(Toxic("bandwidth", attributes={"rate": 10}))  # 10 000 bytes/s
    start = trio.current_time()
    await s.deliver(start, b"a" * 25_000)
    assert b"".join(d for _, d in rec.sent) == b"a" * 25_000
    assert max(len(d) for _, d in rec.sent) == 1000  # a tenth of a second's worth at a time
    assert trio.current_time() - start == pytest.approx(2.5)


async def test_slicer_cuts_within_the_variation(autojump_clock) -> None:
    s, rec = shaper(Toxic("slicer", attributes={"average_size": 10, "size_variation": 4, "delay": 1000}))
    start = trio.current_time()
    data = bytes(range(256)) * 4
    await s.deliver(start, data)
    assert b"".join(d for _, d in rec.sent) == data
    assert all(6 <= len(d) <= 14 for _, d in rec.sent[:-1])
    assert len(rec.sent) >= len(data) // 14
    assert trio.current_time() - start == pytest.approx(len(rec.sent) * 0.001)


async def test_limit_data_passes_exactly_n_bytes_then_closes() -> None:
    s, rec = shaper(Toxic("limit_data", attributes={"bytes": 7}))
    await s.deliver(0, b"abcd")
    assert rec.closed == []
    await s.deliver(0, b"efghij")
    assert b"".join(d for _, d in rec.sent) == b"abcdefg"
    assert rec.closed == [False]


async def test_timeout_drops_and_reset_peer_resets_after_its_timeout(autojump_clock) -> None:
    s, rec = shaper(Toxic("timeout", attributes={"timeout": 0}))
    await s.deliver(0, b"lost")
    assert rec.sent == [] and rec.closed == []
    s, rec = shaper(Toxic("reset_peer", attributes={"timeout": 250}))
    start = trio.current_time()
    await s.deliver(start, b"dropped")
    assert rec.sent == [] and rec.closed == [True]
    assert trio.current_time() - start == pytest.approx(0.25)


async def test_slow_close_delays_the_end_of_stream(autojump_clock) -> None:
    s, _ = shaper(Toxic("slow_close", attributes={"delay": 300}))
    start = trio.current_time()
    await s.before_eof()
    assert trio.current_time() - start == pytest.approx(0.3)


def test_toxicity_is_drawn_per_link() -> None:
    rng = random.Random(7)
    toxic = Toxic("latency", toxicity=0.5, attributes={"latency": 1})
    drawn = [LinkShaper(None, None, rng).add(toxic) for _ in range(200)]  # type: ignore[arg-type]
    assert 60 < sum(drawn) < 140
    never = Toxic("latency", name="never", toxicity=0.0)
    assert not any(LinkShaper(None, None, rng).add(never) for _ in range(200))  # type: ignore[arg-type]

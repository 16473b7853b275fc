"""The encoder and the node buffer as plain objects (no Ray): the node buffer is driven with
asyncio and talks to a real plain-object Hub through a small awaitable adapter."""

from __future__ import annotations

import asyncio
from typing import Any

from rayplex.actors.hub import Hub
from rayplex.actors.node_buffer import NodeBuffer
from rayplex.encoder import Encoder
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.items import FixedValue, Line, PartialItem, Scalar, Value
from rayplex.media import text_value
from rayplex.records import Partial
from rayplex.stats import PartialStats
from tests.conftest import tb_scalars


def test_the_encoder_routes_once_per_client_and_keeps_each_kind() -> None:
    registry = GroupRegistry().with_group(GroupSpec.indexed("agent", 8))
    enc = Encoder(registry)
    partial = Partial("agent", 0, ("mean",), {"r": PartialStats([1.0])}, ("agent/3",))
    items = [Scalar("agent/3", "r", 0, 1.0, 2.0), Scalar("agent/3", "r", 1, 1.0, 3.0),
             Value("agent/3", "t", 0, 1.0, text_value("hi")),
             FixedValue("agent/3", "lr", 0, 1.0, b"\x15\x00\x00\x80?", "hparams/agent/3"),
             Line((1.0, 20, "agent/3", "n", 1, "app", "hello", None)), PartialItem(partial)]
    batch = enc.encode(items, "s", 7, "exp")
    assert (batch.sender, batch.seq, batch.experiment) == ("s", 7, "exp")
    assert batch.registry_stamp == registry.stamp
    assert sorted((c.run, c.count) for c in batch.chunks) == [("agent/3", 3),
                                                             ("hparams/agent/3", 1)]
    assert batch.logs == [items[4].line] and batch.partials == [partial]


def test_a_client_its_group_refuses_is_routed_as_normal_with_a_counter() -> None:
    def bad_bin(name: str) -> str:
        raise RuntimeError("no bin")

    enc = Encoder(GroupRegistry().with_group(GroupSpec.combined("eval", bad_bin)))
    batch = enc.encode([Scalar("eval/x", "r", 0, 1.0, 1.0)], "s", 1, "exp")
    assert [c.run for c in batch.chunks] == ["eval"] and enc.unroutable == 1


class _Remote:
    """``handle.method.options(...).remote(arg)`` of a Ray actor, for a plain object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class _Method:
            def options(self, **_: Any) -> _Method:
                return self

            async def remote(self, *args: Any) -> Any:
                return method(*args)

        return _Method()


def test_the_node_buffer_gathers_batches_and_answers_each_sender(tmp_path) -> None:
    hub = Hub("plain", str(tmp_path / "exp"))
    buffer = NodeBuffer("plain", "node-1")
    buffer._hub = _Remote(hub)
    enc = Encoder(hub.registry)

    def batch(sender: str, n: int) -> Any:
        partial = Partial("learner", 0, ("count",), {"r": PartialStats([1.0] * n)},
                          (f"learner/{sender}",))
        items = [Scalar(f"learner/{sender}", "x", i, 1.0, float(i)) for i in range(n)]
        return enc.encode([*items, PartialItem(partial)], sender, 1, hub.experiment)

    async def run() -> list[Any]:
        return await asyncio.gather(*(buffer.submit(batch(s, n)) for s, n in
                                      [("a", 3), ("b", 4), ("c", 5)]))

    acks = asyncio.run(run())
    assert [a.error for a in acks] == [None, None, None]
    assert buffer.forwarded_batches == 3 and buffer.forwarded_calls <= 3
    hub.close()
    scalars = tb_scalars(hub.logdir)
    assert {tag: len(points) for tag, points in scalars["learner"].items()} == {
        "a/x": 3, "b/x": 4, "c/x": 5}
    assert scalars["learner/summary"]["r/count"] == [(0, 12.0)]
    hub._stop.set()

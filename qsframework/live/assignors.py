"""How a consumer group of ``qsf process`` members shares the input partitions, by the
strategy's ``scale``: ``"single"`` gives every partition to one member (the others stand by
and take over when it leaves or dies), ``"key"`` gives partition N of every input topic to the
same member (a key's events of every kind meet in one engine; see :mod:`.scale_out`).

Members of one group must agree on the protocol name, so a ``"key"`` and a ``"single"``
processor cannot join the same group by mistake (the broker refuses the second). Also the
listener of a ``"single"`` member, which says when it stands by and when it takes over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from aiokafka import ConsumerRebalanceListener

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

if TYPE_CHECKING:
    from .kafka_source import KafkaSource


class KeyRanges(RangePartitionAssignor):
    """Kafka's range assignor (partition N of topics with equal partition counts goes to one
    member) under the protocol name of key-scaled processors."""

    name = "qsf-key"


class OneActive(AbstractPartitionAssignor):
    """Every partition to one member, the first by member id (as Kafka's own assignors give a
    single partition): the others get none and stand by. ``qsf process`` names its members by
    their start time, so the longest running one stays active when another joins."""

    name = "qsf-single"
    version = 0

    @classmethod
    def assign(cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        active = min(members)
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        mine = [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
        return {m: ConsumerProtocolMemberAssignment(cls.version, mine if m == active else [], b"")
                for m in members}

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


class OnAssign(ConsumerRebalanceListener):
    """A :class:`~.kafka_source.KafkaSource`'s listener: says when its member stands by or
    takes over (``scale = "single"``) and seeks each assigned partition (see
    ``KafkaSource._seek_assigned``). aiokafka only logs a listener's exceptions: they are kept
    for :meth:`KafkaSource.poll` to raise."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        source = self.source
        if not assigned:  # the group's partitions are all with another member (scale = "single")
            if not source._standby:
                source._standby = True
                source.announce(f"standby: another member of group {source.cfg.group} is active")
            return
        try:
            if source._standby:
                source._standby = False
                source.announce(f"active: taking over {len(assigned)} partitions of group {source.cfg.group}")
                if source.on_takeover is not None:
                    await source.on_takeover()
            await source._seek_assigned(assigned)
        except Exception as exc:
            self.source._fatal = exc

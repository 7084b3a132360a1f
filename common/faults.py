"""Fault injection for chaos tests: make chosen clients misbehave on purpose.

The run-config key ``fault-injection`` holds a comma-separated plan of
``kind@partition-id`` or ``kind@partition-id:round`` entries, e.g.
``"nan@3,raise@5:2,hang@7:1"``. Clients apply it to their train replies; the server
reads the same plan to count what was injected and what it survived, so a test can
assert that every injected fault was caught. Empty (the default) injects nothing.

Kinds: ``raise`` (the ClientApp raises), ``hang`` (replies after the round timeout),
``nan`` / ``inf`` (non-finite delta), ``shape``, ``keys``, ``dtype`` (malformed delta),
``norm`` (absurdly large delta), ``big`` (oversized record), ``badmetric`` (a metric
of the wrong type).
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = (
    "raise",
    "hang",
    "nan",
    "inf",
    "shape",
    "keys",
    "dtype",
    "norm",
    "big",
    "badmetric",
)


@dataclass(frozen=True)
class Fault:
    """One planned fault: what, at which client (partition id), in which round."""

    kind: str
    partition_id: int
    round: int | None = None

    def applies(self, partition_id: int, server_round: int) -> bool:
        """Whether this fault fires for that client in that training round."""
        return self.partition_id == partition_id and (
            self.round is None or self.round == server_round
        )


def parse_plan(text: str) -> list[Fault]:
    """Parse a ``fault-injection`` value; ValueError names the bad entry."""
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            kind, where = entry.split("@")
            pid, _, rnd = where.partition(":")
            fault = Fault(kind, int(pid), int(rnd) if rnd else None)
        except ValueError:
            raise ValueError(
                f"fault-injection entry {entry!r} is not kind@partition-id[:round]"
            ) from None
        if kind not in KINDS:
            raise ValueError(
                f"fault-injection kind {kind!r} is not one of {', '.join(KINDS)}"
            )
        faults.append(fault)
    return faults


def fault_for(plan: list[Fault], partition_id: int, server_round: int) -> str | None:
    """The kind of fault to inject for this client and round, if any."""
    for fault in plan:
        if fault.applies(partition_id, server_round):
            return fault.kind
    return None

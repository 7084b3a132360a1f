"""Fault injection for chaos tests: make chosen clients misbehave on purpose.

The run-config key ``fault-injection`` holds a comma-separated plan of
``kind@partition-id`` or ``kind@partition-id:round`` entries, e.g.
``"nan@3,raise@5:2,hang@7:1"``. Clients apply it to their train replies; the server
reads the same plan to count what was injected and what it survived, so a test can
assert that every injected fault was caught. Empty (the default) injects nothing.

Kinds: ``raise`` (the ClientApp raises), ``hang`` (replies after the round timeout),
``nan`` / ``inf`` (non-finite delta), ``shape``, ``keys``, ``dtype`` (malformed delta),
``norm`` (absurdly large delta), ``big`` (oversized record), ``badmetric`` (a metric
of the wrong type). :func:`inject` is what a picked client does to its reply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

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


def inject(
    kind: str,
    delta: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    round_timeout: float,
    max_reply_mb: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Corrupt a train reply the way ``kind`` says (or raise, or stall)."""
    delta = dict(delta)
    first = next(iter(delta))
    if kind == "raise":
        raise RuntimeError("injected fault: this ClientApp raises")
    if kind == "hang":
        time.sleep(round_timeout + 2.0)  # the reply arrives after its round ended
    elif kind == "nan":
        delta[first] = torch.full_like(delta[first], float("nan"))
    elif kind == "inf":
        delta[first] = (
            delta[first].clone().index_fill_(0, torch.tensor([0]), float("inf"))
        )
    elif kind == "shape":
        delta[first] = delta[first].reshape(-1)[:-1]
    elif kind == "keys":
        delta["not-a-parameter"] = torch.zeros(3)
    elif kind == "dtype":
        delta[first] = delta[first].double()
    elif kind == "norm":
        delta = {k: v * 1e9 for k, v in delta.items()}
    elif kind == "big":
        delta["padding"] = torch.zeros(int(2 * max_reply_mb * 2**20) // 4)
    elif kind == "badmetric":
        metrics = {**metrics, "num-examples": float("nan")}
    return delta, metrics

"""Sending messages to clients and collecting their replies, with byte counts.

Flower's ``Grid.send_and_receive`` sleeps 3 s between pulls; this loop polls with a
short back-off instead, so a simulated round costs what the clients cost. Replies are
matched to what was sent by ``reply_to_message_id``; a reply that arrives after its
round has ended is never pulled again, so a straggler cannot touch a newer state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.serverapp import Grid

from common.records import message_bytes


@dataclass
class Outgoing:
    """One message for one client, remembered so its reply can be checked against it."""

    client_id: str
    message: Message


@dataclass
class Exchange:
    """What came back from one batch of messages."""

    sent: dict[str, Message] = field(default_factory=dict)
    replies: dict[str, Message] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0

    def in_sent_order(self) -> list[tuple[str, Message]]:
        """Replies ordered as the messages were sent, whatever order they arrived in,
        so every sum over clients is reproducible bit for bit."""
        return [(cid, self.replies[cid]) for cid in self.sent if cid in self.replies]


def exchange(grid: Grid, outbox: list[Outgoing], timeout: float) -> Exchange:
    """Push every message, pull replies until all are in or ``timeout`` passes.

    Error replies (a ClientApp that raised, a SuperNode that vanished, an expired
    TTL) are reported in ``errors``; clients that never answered in ``missing``.
    """
    start = time.monotonic()
    result = Exchange(sent={o.client_id: o.message for o in outbox})
    if not outbox:
        return result
    result.bytes_down = sum(message_bytes(o.message) for o in outbox)
    ids = list(grid.push_messages([o.message for o in outbox]))
    pending = {mid: o.client_id for mid, o in zip(ids, outbox, strict=True) if mid}
    for mid, o in zip(ids, outbox, strict=True):
        if not mid:
            result.errors[o.client_id] = "message could not be pushed"
    pause = 0.01
    while pending and time.monotonic() - start < timeout:
        for reply in grid.pull_messages(list(pending)):
            cid = pending.pop(reply.metadata.reply_to_message_id, None)
            if cid is None:
                continue
            if reply.has_error():
                result.errors[cid] = f"code {reply.error.code}: {reply.error.reason}"
            else:
                result.replies[cid] = reply
                result.bytes_up += message_bytes(reply)
        if pending:
            time.sleep(pause)
            # capped at 20 ms: a pull is cheap, a late one delays the whole round
            pause = min(pause * 1.5, 0.02)
    result.missing = sorted(pending.values())
    result.seconds = time.monotonic() - start
    return result

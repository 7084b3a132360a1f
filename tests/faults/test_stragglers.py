"""A reply that arrives after its round is never applied to a newer state."""

from __future__ import annotations

from flwr.app import ConfigRecord

from client.app import app as client_app
from server.direct_grid import DirectGrid
from server.messaging import Outgoing, exchange
from server.registry import message_to


class LateGrid(DirectGrid):
    """Answers every message ever pushed on each pull, oldest first, whatever ids
    are asked for: a straggler's reply shows up in a later round's pull."""

    def pull_messages(self, message_ids):
        return super().pull_messages(list(self._inbox))


def query(node: int) -> Outgoing:
    return Outgoing(
        str(node), message_to(node, "query", config=ConfigRecord({"method": "x"}))
    )


def test_late_reply_is_dropped_and_never_matched_to_a_new_message():
    grid = LateGrid(client_app, {"dataset": "synthetic", "num-clients": 2}, 2)
    first = exchange(grid, [query(1000)], timeout=0.0)
    assert first.missing == ["1000"] and not first.replies
    # the next pull returns the stale reply to the first message too: the second
    # exchange must ignore it and only take the reply to its own message
    second = exchange(grid, [query(1001)], timeout=2.0)
    assert list(second.replies) == ["1001"]
    assert second.replies["1001"].metadata.reply_to_message_id == (
        second.sent["1001"].metadata.message_id
    )

"""What a method's hooks may ask of the server loop, and nothing more.

A strategy's multi-phase or multi-exchange hooks (:meth:`prepare`, :meth:`run_round`,
:meth:`nonparticipant_params`, :meth:`final_report`) receive a :class:`ServerOps`
instead of the loop itself: send and validate train or evaluate messages, re-sample
a round that got too few valid replies, count faults, run a sub-run through the same
loop (a pre-training phase), and read the run's folder, history and best round.
:class:`server.loop.Runner` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flwr.app import Message

from common.config import RunConfig
from server.messaging import Exchange, Outgoing
from server.validation import ClientUpdate

if TYPE_CHECKING:
    from server.strategies.base import HyperflowerStrategy, Params

T = TypeVar("T")


class RoundFailedError(RuntimeError):
    """Too few valid replies, even after re-sampling: the run stops, state intact."""


class ServerOps(Protocol):
    """The loop's services for a method's hooks."""

    cfg: RunConfig
    history: list[dict[str, Any]]

    @property
    def run_dir(self) -> Path:
        """The run's output folder."""

    @property
    def best_round(self) -> int:
        """The round chosen on validation so far (0 before any evaluation)."""

    def refresh(self) -> None:
        """Re-map restarted clients and admit joiners before building messages."""

    def send_train(
        self, outbox: list[Outgoing], what: str
    ) -> tuple[dict[str, ClientUpdate], Exchange]:
        """Send train messages keyed by the caller; validate every reply."""

    def train_exchange(
        self, client_ids: list[str], params: list[Params], phase: str
    ) -> list[ClientUpdate]:
        """Train parameters on clients outside the main rounds (e.g. new clients)."""

    def evaluate_clients(
        self, messages: list[Message], what: str
    ) -> tuple[dict[str, dict[str, float]], Exchange]:
        """Send evaluate messages; each answering client's checked metrics."""

    def with_retries(
        self,
        server_round: int,
        attempt: Callable[[], tuple[int, T]],
        what: str = "valid replies",
    ) -> tuple[T, int]:
        """Run ``attempt`` (returning its valid count and a result) until it reaches
        ``min-clients`` or ``round-retries`` re-samples are spent; the result and
        the attempts used. Raises :class:`RoundFailedError` after that."""

    def held_out_sample(self, server_round: int) -> list[str]:
        """The held-out clients a per-round held-out check evaluates: a seeded
        sample of ``eval-sample`` before the last round, every one at the last."""

    def count_faults(self, counts: Mapping[str, int]) -> None:
        """Add to the run's fault counters (summary.json)."""

    def sub_run(
        self, cfg: RunConfig, strategy: HyperflowerStrategy, name: str
    ) -> dict[str, Any]:
        """Run ``strategy`` through this same loop as a sub-run written to
        ``<run>/<name>/`` (e.g. a pre-training phase); its summary."""

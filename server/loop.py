"""The one server loop every method runs: rounds, validation, evaluation, checkpoints.

Per round: the strategy configures per-client train messages, :func:`exchange`
delivers them, replies are validated (bad ones counted and dropped), the strategy
aggregates the rest, and every ``eval-every`` rounds the clients the strategy names
evaluate the model made for them. The best round is chosen on participants'
validation accuracy; held-out clients are evaluated at the end with the state of
that round. A method's own hooks get this loop as a :class:`server.ops.ServerOps`.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.config import RunConfig
from common.faults import fault_for, parse_plan
from server.failures import exchange_cause, log_faults
from server.messaging import Exchange, Outgoing, exchange
from server.ops import RoundFailedError
from server.outputs import RunOutputs
from server.plots import plot_run
from server.registry import (
    ClientRegistry,
    admit_joiners,
    client_at,
    refresh_nodes,
    register_nodes,
)
from server.strategies.base import HyperflowerStrategy, Params, summarise
from server.validation import (
    ClientUpdate,
    InvalidReply,
    check_eval_reply,
    check_train_reply,
)

__all__ = ["RoundFailedError", "Runner"]
T = TypeVar("T")


@dataclass
class TrainAttempt:
    """One try at a training round: what was sent, what came back valid."""

    sampled: int
    exchange: Exchange
    valid: dict[str, ClientUpdate]
    faults: dict[str, int]
    injected: int
    survived: int


class Runner:
    """Drives one run of one strategy over the registered clients (and serves the
    strategy's hooks as their :class:`server.ops.ServerOps`)."""

    def __init__(
        self,
        grid: Grid,
        cfg: RunConfig,
        registry: ClientRegistry,
        strategy: HyperflowerStrategy,
        outputs: RunOutputs,
    ) -> None:
        self.grid, self.cfg, self.registry = grid, cfg, registry
        self.strategy, self.outputs = strategy, outputs
        self.history: list[dict[str, Any]] = []
        self.faults: Counter[str] = Counter()
        self.best: dict[str, Any] | None = None
        self.wall_before = 0.0
        self.extra_bytes = {"down": 0, "up": 0}
        self.last_cause = ""  # of the latest exchange's failures, for error messages
        self.lazy = cfg.registration == "lazy"
        self.registered_now = 0  # clients registered lazily in the current round
        if self.lazy:
            registry.resolver = self.register_drawn

    # ---- what hooks read ----------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """The run's output folder."""
        return self.outputs.dir

    @property
    def best_round(self) -> int:
        """The round chosen on validation so far (0 before any evaluation)."""
        return int(self.best["round"]) if self.best else 0

    # ---- messaging with validation ------------------------------------------
    def refresh(self) -> None:
        """Re-map clients whose SuperNode restarted and admit clients that joined
        mid-run (when the method accepts them); called before messages are built
        for any exchange (training, evaluation, held-out fitting and evaluation).

        With lazy registration no message is sent: a node not seen before is noted
        as pending and registers when it is drawn (a restarted SuperNode's client
        then moves to its new node)."""
        if self.lazy:
            self.registry.add_pending(self.grid.get_node_ids())
            return
        timeout = min(30.0, self.cfg.round_timeout)
        joiners = refresh_nodes(self.grid, self.registry, timeout)
        if not joiners:
            return
        if not self.strategy.accepts_joiners:
            for node_key, cid in joiners.items():
                self.registry.faults[node_key] = f"unregistered client id {cid!r}"
                log(
                    WARNING,
                    "client %s on node %s joined mid-run; method %s does "
                    "not accept joiners, so it is left out",
                    cid,
                    node_key,
                    self.cfg.method,
                )
            self.faults["joiner-refused"] += len(joiners)
            return
        for cid in admit_joiners(
            self.grid,
            self.registry,
            self.cfg,
            joiners,
            self.strategy.registration_fields,
            timeout,
        ):
            if not self.admit_or_refuse(cid, "joiner", "join"):
                self.faults["joiner-refused"] += 1
                continue
            self.faults["joined"] += 1

    def admit_or_refuse(self, cid: str, who: str, verb: str) -> bool:
        """Let the strategy admit a newly registered client (an embedding row, a
        model); when it cannot (e.g. an embedding store full) the client leaves the
        registry with a named fault and the run goes on without it."""
        node = self.registry.node_of(cid)
        try:
            self.strategy.admit(cid)
        except (ValueError, RuntimeError) as exc:
            self.registry.remove(cid)
            self.registry.faults[str(node)] = f"{who} {cid!r} refused: {exc}"
            log(WARNING, "client %s could not %s: %s", cid, verb, exc)
            return False
        return True

    def register_drawn(self, nodes: list[int]) -> list[str]:
        """Lazy registration of drawn nodes (the registry's resolver): register them
        (:func:`server.registry.register_nodes`), let the strategy admit each client
        (an embedding row, a model), and return the clients admitted, either role
        (a draw keeps those of the role it draws)."""
        faults_before = len(self.registry.faults)
        registered = register_nodes(
            self.grid,
            self.registry,
            self.cfg,
            nodes,
            self.strategy.registration_fields,
            self.cfg.round_timeout,
        )
        failed = len(self.registry.faults) - faults_before
        admitted = []
        for cid in registered:
            if not self.admit_or_refuse(cid, "client", "register"):
                failed += 1
                continue
            admitted.append(cid)
        self.count_faults({"registration-failed": failed})
        self.registered_now += len(admitted)
        return admitted

    def register_rest(self) -> None:
        """Lazy registration: register every node still pending (before the last
        round's evaluation, which is every participant's), ``eval-clients-per-batch``
        nodes per exchange."""
        self.refresh()
        size = self.cfg.eval_clients_per_batch
        while self.registry.pending_count:
            self.register_drawn(self.registry.pending[:size])

    def _send(self, messages: list[Message]) -> Exchange:
        outbox = [
            Outgoing(client_at(self.registry, m.metadata.dst_node_id), m)
            for m in messages
        ]
        return exchange(self.grid, outbox, self.cfg.round_timeout)

    def _count_faults(
        self, ex: Exchange, invalid: dict[str, str], what: str
    ) -> dict[str, int]:
        log_faults(
            what, ex.errors, ex.missing, invalid, len(ex.sent), self.cfg.round_timeout
        )  # one line per cause, with the count
        self.last_cause = exchange_cause(ex.errors, ex.missing, invalid, len(ex.sent))
        counts = {
            "error": len(ex.errors),
            "missing": len(ex.missing),
            "invalid": len(invalid),
        }
        self.faults.update({k: v for k, v in counts.items() if v})
        return counts

    def _valid_train(
        self, ex: Exchange
    ) -> tuple[dict[str, ClientUpdate], dict[str, str]]:
        valid, invalid = {}, {}
        for cid, reply in ex.in_sent_order():
            try:
                valid[cid] = check_train_reply(
                    cid,
                    reply,
                    ex.sent[cid],
                    self.cfg.max_delta_norm,
                    int(self.cfg.max_reply_mb * 2**20),
                    self.strategy.reply_extras,
                    self.strategy.reply_metrics,
                )
            except InvalidReply as exc:
                invalid[cid] = str(exc)
        return valid, invalid

    def train_exchange(
        self, client_ids: list[str], params: list[Params], phase: str
    ) -> list[ClientUpdate]:
        """Send parameters to train outside the main rounds (e.g. novel clients)."""
        config = ConfigRecord({"round": 0, "phase": phase, "method": self.cfg.method})
        self.refresh()
        ex = self._send(self.strategy.messages("train", client_ids, params, config))
        valid, invalid = self._valid_train(ex)
        self._count_faults(ex, invalid, phase)
        self.extra_bytes["down"] += ex.bytes_down
        self.extra_bytes["up"] += ex.bytes_up
        return [valid[c] for c in client_ids if c in valid]

    def send_train(
        self, outbox: list[Outgoing], what: str
    ) -> tuple[dict[str, ClientUpdate], Exchange]:
        """Send train messages keyed by the caller (a client, or one relay hop of a
        pair) and validate every reply like a round's; for multi-exchange rounds."""
        ex = exchange(self.grid, outbox, self.cfg.round_timeout)
        valid, invalid = self._valid_train(ex)
        self._count_faults(ex, invalid, what)
        return valid, ex

    def evaluate_clients(
        self, messages: list[Message], what: str
    ) -> tuple[dict[str, dict[str, float]], Exchange]:
        """Send evaluate messages; return each answering client's checked metrics."""
        ex = self._send(messages)
        results, invalid = {}, {}
        for cid, reply in ex.in_sent_order():
            try:
                results[cid] = check_eval_reply(reply)
            except InvalidReply as exc:
                invalid[cid] = str(exc)
        self._count_faults(ex, invalid, what)
        return results, ex

    def client_batches(self, client_ids: list[str]) -> list[list[str]]:
        """``client_ids`` in batches of ``eval-clients-per-batch``: evaluation holds
        one batch's models on the server, not every client's."""
        size = self.cfg.eval_clients_per_batch
        return [client_ids[i : i + size] for i in range(0, len(client_ids), size)]

    # ---- one round ----------------------------------------------------------
    def train_round(self, rnd: int) -> dict[str, Any]:
        """Train, validate, aggregate; return the round's metrics row.

        A round with fewer than ``min-clients`` valid replies is re-sampled up to
        ``round-retries`` times; after that the run stops with a clear error
        (the last checkpoint stays, so ``resume=true`` continues once fixed).
        The server state never moves on fewer valid replies.
        """
        start = time.monotonic()
        config = ConfigRecord(
            {"round": rnd, "phase": "train", "method": self.cfg.method}
        )
        custom = self.strategy.run_round(self, rnd, config)
        if custom is not None:
            return {"round": rnd, **custom, "round-s": time.monotonic() - start}

        def attempt() -> tuple[int, TrainAttempt]:
            self.refresh()
            messages = list(
                self.strategy.configure_train(rnd, ArrayRecord(), config, self.grid)
            )
            ex = self._send(messages)
            valid, invalid = self._valid_train(ex)
            faults = self._count_faults(ex, invalid, f"round {rnd}")
            injected = self._injected(rnd, list(ex.sent))
            survived = [c for c in injected if c not in valid]
            self.faults.update({"injected": len(injected), "survived": len(survived)})
            return len(valid), TrainAttempt(
                len(messages), ex, valid, faults, len(injected), len(survived)
            )

        got, attempts = self.with_retries(rnd, attempt)
        ex, valid = got.exchange, got.valid
        row: dict[str, Any] = {
            "round": rnd,
            "sampled": got.sampled,
            "valid": len(valid),
            "faults": got.faults,
            "attempts": attempts,
            "faults-injected": got.injected,
            "faults-survived": got.survived,
            "bytes-down": ex.bytes_down,
            "bytes-up": ex.bytes_up,
            # waiting on clients (last attempt): client work plus
            # the runtime's delivery, apart from the server's work
            "exchange-s": ex.seconds,
        }
        t0 = time.monotonic()
        sent_valid = [c for c in ex.sent if c in valid]
        metrics = self.strategy.aggregate_updates(
            rnd, [valid[c] for c in sent_valid], [ex.replies[c] for c in sent_valid]
        )
        row["server-update-s"] = time.monotonic() - t0
        n = np.array([u.num_examples for u in valid.values()], dtype=float)
        for key in ("train-loss", "train-acc", "delta-norm"):
            vals = np.array([u.metrics.get(key, np.nan) for u in valid.values()])
            row[key] = float((vals * n).sum() / n.sum())
        # what the strategy reports of its update (e.g. grad-norm), without
        # overriding the loop's own figures
        for key, value in (metrics or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                row.setdefault(key, float(value))
        row["round-s"] = time.monotonic() - start
        return row

    def with_retries(
        self,
        server_round: int,
        attempt: Callable[[], tuple[int, T]],
        what: str = "valid replies",
    ) -> tuple[T, int]:
        """Run ``attempt`` until its valid count reaches ``min-clients``, re-sampling
        up to ``round-retries`` times; the result and the attempts it took.

        The server state never moves on fewer valid replies: after the last attempt
        the run stops with :class:`RoundFailedError` (the last checkpoint stays, so
        ``resume=true`` continues once the clients are fixed).
        """
        tries = self.cfg.round_retries + 1
        for number in range(1, tries + 1):
            valid, result = attempt()
            if valid >= self.cfg.min_clients:
                return result, number
            self.faults["retried-round"] += 1
            log(
                WARNING,
                "round %d: %d %s < min-clients=%d (attempt %d of %d); the "
                "server state is left unchanged",
                server_round,
                valid,
                what,
                self.cfg.min_clients,
                number,
                tries,
            )
        raise RoundFailedError(
            f"round {server_round}: fewer than min-clients={self.cfg.min_clients} "
            f"{what} in {tries} attempts (faults so far: {dict(self.faults)}; cause: "
            f"{self.last_cause}); stopping. The checkpoint of round "
            f"{server_round - 1} is kept: fix the clients and run again with "
            "resume=true"
        )

    def count_faults(self, counts: Mapping[str, int]) -> None:
        """Add to the run's fault counters (summary.json)."""
        self.faults.update({k: v for k, v in counts.items() if v})

    def sub_run(
        self, cfg: RunConfig, strategy: HyperflowerStrategy, name: str
    ) -> dict[str, Any]:
        """Run ``strategy`` through this loop as a sub-run in ``<run>/<name>/``; its
        faults count towards this run's."""
        sub = Runner(
            self.grid, cfg, self.registry, strategy, RunOutputs(self.outputs.dir, name)
        )
        summary = sub.run() or {}
        self.faults.update(sub.faults)
        return summary

    def _injected(self, rnd: int, client_ids: list[str]) -> list[str]:
        """Clients of this round that the fault-injection plan makes misbehave."""
        if not self.cfg.fault_injection:
            return []
        plan = parse_plan(self.cfg.fault_injection)
        return [
            c
            for c in client_ids
            if fault_for(plan, self.registry.clients[c].partition_id, rnd)
        ]

    def evaluation_round_clients(self, rnd: int) -> tuple[list[str], int]:
        """Who evaluates at evaluation round ``rnd``, and how many the strategy
        names (its pool).

        Before the last round a seeded sample of ``eval-sample`` of them
        (:func:`evaluation_sample`), so an evaluation round costs the same with
        1,000 or 100,000 participants; the last round, and a strategy whose
        per-round reports need every client (:attr:`sampled_evaluation` False),
        every one. With lazy registration the sample is drawn from the registered
        participants and the pending nodes together (a drawn node registers now),
        and the pool counts both; evaluating every participant registers every
        pending node first.
        """
        return self._sample_of(
            lambda: self.strategy.evaluated(rnd),
            rnd,
            participant=True,
            every=not self.strategy.sampled_evaluation,
        )

    def held_out_sample(self, rnd: int) -> list[str]:
        """The held-out clients a method's per-round held-out check evaluates at
        evaluation round ``rnd``: before the last round a seeded sample of
        ``eval-sample`` of them (drawn like the participants' sample, on a stream of
        its own; with lazy registration from the registered held-out clients and the
        pending nodes, a drawn node registering now), so the check costs the same
        with 1,000 or 100,000 held-out clients; every one at the last round."""
        ids, _ = self._sample_of(
            lambda: self.registry.nonparticipants, rnd, participant=False
        )
        return ids

    def _sample_of(
        self,
        pool_of: Callable[[], list[str]],
        rnd: int,
        participant: bool,
        every: bool = False,
    ) -> tuple[list[str], int]:
        """A role's evaluated clients at round ``rnd`` and the pool's size: a seeded
        sample of ``eval-sample`` before the last round (unless ``every``), all of
        them (every pending node registered first) at the last round."""
        pool = pool_of()
        size = self.cfg.eval_sample
        pending = self.registry.pending_count
        if (
            rnd == self.cfg.num_rounds
            or every
            or (pending and not 0 < size < len(pool) + pending)
        ):
            if pending:
                self.register_rest()
                pool = pool_of()
            return pool, len(pool)
        stream = 0 if participant else HELD_OUT_STREAM
        if pending:  # lazy: drawn from registered clients and pending nodes
            rng = evaluation_rng(self.cfg.seed, rnd, stream)
            return (
                self.registry.draw(pool, size, rng, participant),
                len(pool) + pending,
            )
        return evaluation_sample(pool, size, self.cfg.seed, rnd, stream), len(pool)

    def _evaluate_all(
        self, ids: list[str], config: ConfigRecord, what: str
    ) -> tuple[dict[str, dict[str, float]], int, int]:
        """Evaluate ``ids`` in batches; their checked metrics and bytes down, up."""
        results: dict[str, dict[str, float]] = {}
        down = up = 0
        for batch in self.client_batches(ids):
            self.refresh()
            got, ex = self.evaluate_clients(
                self.strategy.evaluate_messages(batch, config), what
            )
            results.update(got)
            down, up = down + ex.bytes_down, up + ex.bytes_up
        return results, down, up

    def evaluate_participants(self, rnd: int, row: dict[str, Any]) -> None:
        """The round's evaluated participants (a seeded sample before the last
        round) evaluate their own models; keep the best round's state.

        The best round is chosen on the mean validation accuracy of whoever
        evaluated that round; when that was a sample, :meth:`finish` evaluates
        every participant with the chosen state for the summary's accuracies.
        """
        start = time.monotonic()
        config = ConfigRecord(
            {"round": rnd, "phase": "eval", "method": self.cfg.method}
        )
        ids, pool = self.evaluation_round_clients(rnd)
        results, down, up = self._evaluate_all(ids, config, f"eval {rnd}")
        if not results:
            return
        stats = summarise(list(results.values()))
        for key in ("val-acc", "val-acc-std", "test-acc", "test-acc-std", "test-loss"):
            row[f"participant-{key}"] = stats[key]
        row["eval-clients"], row["eval-pool"] = len(ids), pool
        row["eval-bytes-down"], row["eval-bytes-up"] = down, up
        row.update(self.strategy.evaluation_metrics(rnd, results))
        row.update(self.strategy.extra_evaluation(self, rnd))
        # the evaluation's wall time (lazy registration of drawn nodes included),
        # apart from the training round's round-s
        row["eval-s"] = time.monotonic() - start
        if (
            self.best is None
            or not self.strategy.best_by_validation
            or stats["val-acc"] > self.best["val-acc"]
        ):
            self.best = {
                "round": rnd,
                "val-acc": stats["val-acc"],
                "test-acc": stats["test-acc"],
                "test-acc-std": stats["test-acc-std"],
                "evaluated": len(results),
                "sampled": len(ids) < pool,
                "state": copy.deepcopy(self.strategy.state_dict()),
            }

    # ---- whole run ----------------------------------------------------------
    def _checkpoint(self, rnd: int, wall: float) -> None:
        self.outputs.save_checkpoint(
            {
                "round": rnd,
                "strategy": self.strategy.state_dict(),
                "history": self.history,
                "best": self.best,
                "faults": dict(self.faults),
                "wall_s": wall,
                "torch_rng": torch.get_rng_state(),
                **({"registry": self.registry.snapshot()} if self.lazy else {}),
            },
            self.cfg.to_dict(),
        )

    def _resume(self) -> int:
        state = self.outputs.load_checkpoint(self.cfg.to_dict())
        if state is None:
            log(
                INFO,
                "resume: no checkpoint in %s, starting at round 1",
                self.outputs.dir,
            )
            return 1
        self.strategy.load_state_dict(state["strategy"])
        self.history, self.best = state["history"], state["best"]
        self.faults = Counter(state["faults"])
        self.wall_before = state["wall_s"]
        torch.set_rng_state(state["torch_rng"])
        if self.lazy and "registry" in state:
            self.registry.restore(state["registry"], self.grid.get_node_ids())
        log(
            INFO,
            "resume: continuing after round %d from %s",
            state["round"],
            self.outputs.checkpoint_path,
        )
        return int(state["round"]) + 1

    def run(self) -> dict[str, Any] | None:
        """Run all rounds (or up to ``stop-after-round``) and the final evaluation."""
        cfg = self.cfg
        self.outputs.write_config(cfg.to_dict())
        first = self._resume() if cfg.resume else 1
        if first == 1:
            self.strategy.prepare(self)
        started = time.monotonic()
        self.strategy.summary()
        for rnd in range(first, cfg.num_rounds + 1):
            self.registered_now = 0
            row = self.train_round(rnd)
            if rnd % cfg.eval_every == 0 or rnd == cfg.num_rounds:
                self.evaluate_participants(rnd, row)
            if self.lazy:
                row["registered"] = self.registered_now
            self.history.append(row)
            wall = self.wall_before + time.monotonic() - started
            progress_line(row, cfg.num_rounds, wall)
            stopping = (
                bool(cfg.stop_after_round)
                and rnd == cfg.stop_after_round < cfg.num_rounds
            )
            if rnd % cfg.checkpoint_every == 0 or rnd == cfg.num_rounds or stopping:
                self._checkpoint(rnd, wall)
                # only after a checkpoint: metrics.jsonl never runs ahead of it
                self.outputs.write_metrics(self.history)
            if stopping:
                log(
                    INFO,
                    "stopping after round %d as asked; run again with "
                    "resume=true to continue",
                    rnd,
                )
                return None
        return self.finish(self.wall_before + time.monotonic() - started)

    def final_participant_evaluation(self, best: dict[str, Any]) -> dict[str, Any]:
        """The participants' headline accuracies, over every participant, with the
        state of the chosen round (already loaded).

        When the chosen round's evaluation was every participant (the last round, or
        a federation no larger than ``eval-sample``) its numbers are those; when it
        was a sample, every participant evaluates the chosen state now. The result
        also names how many clients the numbers cover (``clients``) and how many
        evaluated at the chosen round (``chosen-on``) and the bytes the final
        evaluation moved (0 when it reused the chosen round's).
        """
        chosen_on = best.get("evaluated")
        if not best.get("sampled", False):
            return {
                **{k: best[k] for k in ("val-acc", "test-acc", "test-acc-std")},
                "clients": chosen_on,
                "chosen-on": chosen_on,
                "bytes": 0,
            }
        config = ConfigRecord(
            {"round": best["round"], "phase": "final-eval", "method": self.cfg.method}
        )
        ids = self.strategy.evaluated(best["round"])
        results, down, up = self._evaluate_all(ids, config, "final evaluation")
        if not results:
            raise RoundFailedError(
                f"final evaluation: no participant answered (cause: {self.last_cause})"
            )
        stats = summarise(list(results.values()))
        log(
            INFO,
            "final evaluation of round %d's state: %d participants (the round was "
            "chosen on a sample of %d)",
            best["round"],
            len(results),
            chosen_on,
        )
        return {
            **{k: stats[k] for k in ("val-acc", "test-acc", "test-acc-std")},
            "clients": len(results),
            "chosen-on": chosen_on,
            "bytes": down + up,
        }

    def finish(self, wall: float) -> dict[str, Any]:
        """Evaluate held-out clients at the best round; write summary and plots."""
        cfg, best = self.cfg, self.best
        assert best is not None, "the last round always evaluates"
        self.strategy.load_state_dict(best["state"])
        if self.lazy:  # the chosen state predates the clients registered since
            for cid in self.registry.clients:
                self.strategy.admit(cid)
        final = self.final_participant_evaluation(best)
        nonpart: dict[str, dict[str, float]] = {}
        config = ConfigRecord(
            {"round": best["round"], "phase": "zero-shot", "method": cfg.method}
        )
        for batch in self.client_batches(self.registry.nonparticipants):
            given = self.strategy.nonparticipant_params(self, batch)
            if not given:
                break
            ids = [c for c in batch if c in given]
            self.refresh()
            got, _ = self.evaluate_clients(
                self.strategy.messages(
                    "evaluate", ids, [given[c] for c in ids], config
                ),
                "non-participants",
            )
            nonpart.update(got)
        np_stats = summarise(list(nonpart.values())) if nonpart else {}
        train_rows = [r for r in self.history if "bytes-down" in r]
        summary = {
            "method": cfg.method,
            "dataset": cfg.dataset,
            "model": cfg.model,
            "num_clients": cfg.num_clients,
            "num_participants": len(self.registry.participants),
            "rounds": cfg.num_rounds,
            "seed": cfg.seed,
            "best_round": best["round"],
            "participant_val_acc": final["val-acc"],
            "participant_acc": final["test-acc"],
            "participant_acc_std": final["test-acc-std"],
            "participant_eval_clients": final["clients"],
            "best_round_eval_clients": final["chosen-on"],
            "eval_sample": max(
                (
                    r["eval-clients"]
                    for r in self.history
                    if "eval-clients" in r and r["round"] != cfg.num_rounds
                ),
                default=None,
            ),
            "final_eval_bytes": final["bytes"],
            "nonparticipant_acc": np_stats.get("test-acc"),
            "nonparticipant_acc_std": np_stats.get("test-acc-std"),
            "nonparticipant_val_acc": np_stats.get("val-acc"),
            "nonparticipant_protocol": self.strategy.nonparticipant_protocol(),
            "global_acc": final["test-acc"] if self.strategy.has_global_model else None,
            "bytes_down_per_round": mean_of(train_rows, "bytes-down"),
            "bytes_up_per_round": mean_of(train_rows, "bytes-up"),
            "nonparticipant_bytes": self.extra_bytes["down"] + self.extra_bytes["up"],
            "client_trainable_params": self.strategy.client_trainable_params(),
            "hypernet_params": self.strategy.hypernet_params(),
            "wall_s": wall,
            "server_update_s": mean_of(train_rows, "server-update-s"),
            "faults": dict(self.faults),
            "faults_injected": self.faults.get("injected", 0),
            "faults_survived": self.faults.get("survived", 0),
            "dp_clip": cfg.dp_clip,
            "dp_noise_multiplier": cfg.dp_noise,
        }
        summary.update(self.strategy.final_report(self, nonpart))
        self.outputs.write_summary(summary)
        plot_run(self.outputs.dir, self.history, summary)
        log(INFO, "%s", summary_table(summary))
        return summary


#: The numpy stream of evaluation samples: (seed, EVAL_STREAM, round) never meets
#: a strategy's own training sampler (seed, 1), so sampling evaluations moves no
#: training figure.
EVAL_STREAM = 2
#: The sub-stream of held-out clients' samples (:meth:`Runner.held_out_sample`):
#: (seed, EVAL_STREAM, round, HELD_OUT_STREAM), apart from the participants'.
HELD_OUT_STREAM = 1


def evaluation_rng(seed: int, rnd: int, stream: int = 0) -> np.random.Generator:
    """The generator an evaluation round's sample is drawn with: from (seed, round)
    alone, a stream apart from the training sampler's (``stream`` > 0: a sub-stream,
    e.g. the held-out clients' sample; 0 is the participants')."""
    key = [seed, EVAL_STREAM, rnd] + ([stream] if stream else [])
    return np.random.default_rng(key)


def evaluation_sample(
    pool: list[str], size: int, seed: int, rnd: int, stream: int = 0
) -> list[str]:
    """A seeded sample of ``size`` of ``pool`` for evaluation round ``rnd``, in pool
    order: all of ``pool`` when ``size`` is 0 or at least its length.

    Drawn from (seed, round) alone, not from a generator that runs through the
    rounds: the same run evaluates the same clients at a round whatever came before
    (a resumed run too), and each round draws anew.
    """
    if size <= 0 or len(pool) <= size:
        return list(pool)
    rng = evaluation_rng(seed, rnd, stream)
    return [pool[i] for i in np.sort(rng.choice(len(pool), size, replace=False))]


def mean_of(rows: list[dict[str, Any]], key: str) -> float:
    """Mean of ``key`` over the rows that have it (0 when none)."""
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values)) if values else 0.0


def progress_line(row: dict[str, Any], total: int, wall: float) -> None:
    """One console line per round: a bar, loss/accuracy, faults, time and bytes."""
    rnd = row["round"]
    done = int(20 * rnd / total)
    eta = wall / rnd * (total - rnd) if rnd else 0.0
    faults = sum(row["faults"].values())
    parts = [
        f"round {rnd:>4}/{total} [{'#' * done}{'.' * (20 - done)}]",
        f"loss {row.get('train-loss', float('nan')):.3f}",
        f"{row['valid']}/{row['sampled']} ok"
        + (f" ({faults} faults)" if faults else ""),
        f"{row['round-s']:.1f}s, eta {eta:.0f}s",
        f"down {row['bytes-down'] / 1e6:.2f} MB up {row['bytes-up'] / 1e6:.2f} MB",
    ]
    if "participant-test-acc" in row:
        parts.append(
            f"val {row['participant-val-acc']:.3f} "
            f"test {row['participant-test-acc']:.3f}"
        )
    log(INFO, " | ".join(parts))


def summary_table(summary: dict[str, Any]) -> str:
    """A small text table of the headline accuracies for the console."""

    def fmt(key: str) -> str:
        value = summary.get(key)
        if value is None:
            return "   n/a"
        std = summary.get(f"{key}_std")
        return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    lines = [
        f"{summary['method']} on {summary['dataset']} "
        f"(best round {summary['best_round']} by validation)",
        f"  participants     {fmt('participant_acc')}",
        f"  non-participants {fmt('nonparticipant_acc')}",
        f"  global model     {fmt('global_acc')}",
        f"  bytes/round      down {summary['bytes_down_per_round']:.0f} "
        f"up {summary['bytes_up_per_round']:.0f}",
        f"  wall time        {summary['wall_s']:.1f}s",
    ]
    return "\n".join(lines)

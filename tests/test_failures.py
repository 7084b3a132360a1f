"""Many clients, one cause: failures grouped by what went wrong."""

from __future__ import annotations

import logging

from server.failures import cause_lines, cause_of, exchange_cause, log_faults

MISSING = (
    "DatasetNotFoundError: data-dir '/nonexistent' is not a readable folder; create it"
)


def test_flower_wrapped_reasons_reduce_to_the_inner_cause():
    wrapped = (
        "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\n"
        "Exception ClientAppException occurred. Message: Traceback (most "
        'recent call last):\n  File "x.py", line 3, in f\n'
        f"common.data.{MISSING}'>"
    )
    assert cause_of(f"code 2: {wrapped}") == MISSING
    assert cause_of(f"code 2: {MISSING}") == MISSING
    assert cause_of("<class 'ValueError'>:<'bad value'>") == "ValueError: bad value"


def test_fifty_clients_one_cause_is_one_line_with_the_count(caplog):
    errors = {str(i): f"code 2: {MISSING}" for i in range(50)}
    assert cause_lines(errors, 50) == [
        f"50 of 50 clients (0, 1, 2, 3, 4, +45 more): {MISSING}"
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        log_faults("registration", errors, [], {}, 50, 30.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"registration: 50 of 50 clients (0, 1, 2, 3, 4, +45 more): "
        f"replied with an error: {MISSING}"
    ]


def test_causes_are_ordered_by_count_and_named_in_the_final_error():
    errors = {"a": "code 2: RuntimeError: boom", "b": "code 2: RuntimeError: boom"}
    lines = cause_lines({**errors, "c": "no reply in time"}, 4)
    assert lines[0].startswith("2 of 4 clients (a, b): RuntimeError: boom")
    assert lines[1] == "1 of 4 clients (c): no reply in time"
    assert (
        exchange_cause(errors, ["c"], {}, 3)
        == "2 of 3 clients (a, b): RuntimeError: boom"
    )

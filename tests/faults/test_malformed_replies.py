"""Property test: random malformed replies never get through validation."""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, MetricRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.records import to_record
from server.validation import InvalidReply, check_delta, check_metrics

SENT = to_record({"conv.weight": torch.zeros(2, 1, 3, 3), "fc.bias": torch.zeros(4)})
SHAPES = {k: tuple(v.shape) for k, v in SENT.items()}

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32])
values = st.sampled_from([0.0, 1.0, -1e30, 1e30, math.nan, math.inf, -math.inf])


@st.composite
def arrays(draw):
    keys = draw(
        st.lists(
            st.sampled_from([*SHAPES, "extra", "fc.weight"]),
            min_size=0,
            max_size=4,
            unique=True,
        )
    )
    out = {}
    for key in keys:
        shape = SHAPES.get(key, (3,))
        if draw(st.booleans()):
            shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.full(shape, draw(values)).astype(draw(dtypes))
        out[key] = arr
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(), st.floats(min_value=0, max_value=1e6))
def test_random_deltas_are_valid_or_rejected(arrs, bound):
    record = ArrayRecord(array_dict={k: Array(v) for k, v in arrs.items()})
    try:
        out = check_delta(record, SENT, max_norm=bound)
    except InvalidReply:
        return
    assert set(out) == set(SHAPES)
    for key, tensor in out.items():
        assert tuple(tensor.shape) == SHAPES[key]
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()
    if bound > 0:
        norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in out.values()))
        assert norm <= bound


metric_values = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(0, 3), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["num-examples", "train-loss", "x"]), metric_values, max_size=3
    )
)
def test_random_metrics_are_valid_or_rejected(raw):
    try:
        record = MetricRecord(raw)
    except (TypeError, ValueError):
        return  # Flower itself refuses to build such a record
    try:
        n, metrics = check_metrics(record)
    except InvalidReply:
        return
    assert isinstance(n, int) and n > 0
    assert all(isinstance(v, float) for v in metrics.values())

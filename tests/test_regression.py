"""Same seed, same numbers: a refactor of the shared machinery must not move them.

``tests/regression/expected.json`` holds the headline accuracies and losses of a
5-round Fashion-MNIST job (and the digits quick job) for pFedHN, HyperFLoRA, FedAvg
and local on this machine kind (CPU float32, seeded); this test re-runs the
Fashion-MNIST jobs in process and compares bit for bit. History: the figures were
identical before and after the "one shape for every method" refactor (all eight
jobs); the "pFedHN as the authors wrote it" change then moved pFedHN's and
HyperFLoRA's on purpose (the authors' trunk, weight decay on embeddings, the
undiluted embedding step) and left FedAvg's and local's unchanged, and the file was
regenerated then.
A change that is *meant* to move them (an algorithm fix) regenerates the file
(``python -m tests.regression.figures tests/regression/expected.json``) in its own
commit that says why. The digits quick job is checked the same way by the script
(not here: it would add minutes to every test run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.data import DEBIAN_FMNIST_DIR
from tests.regression.figures import METHODS, figures

EXPECTED = Path(__file__).parent / "regression" / "expected.json"


@pytest.mark.skipif(
    not DEBIAN_FMNIST_DIR.exists(),
    reason="needs Debian's dataset-fashion-mnist (deploy/setup.sh installs it)",
)
@pytest.mark.parametrize("method", METHODS)
def test_fmnist_figures_unchanged(tmp_path, method):
    expected = json.loads(EXPECTED.read_text())[f"fmnist-5/{method}"]
    got = figures(tmp_path, jobs=("fmnist-5",), methods=(method,))
    assert got[f"fmnist-5/{method}"] == expected

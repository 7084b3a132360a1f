"""The installed versions are the pinned ones (deploy/constraints.txt).

Figures and the Flower API have moved under us with a version before (flwr 1.41 ->
1.42): a run on other versions than the suite passed with must fail loudly here,
not drift. `bash deploy/pin.sh` moves the pins on purpose (docs/testing.md).
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

from packaging.requirements import Requirement

CONSTRAINTS = Path(__file__).resolve().parents[1] / "deploy" / "constraints.txt"
MUST = ("flwr", "torch", "ray", "torchvision", "flwr-datasets", "numpy")


def pins() -> dict[str, str]:
    """Package name (normalised) -> the exact version pinned."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        out[req.name.lower().replace("_", "-")] = spec.version
    return out


def test_the_core_packages_are_pinned_and_installed_at_their_pins():
    pinned = pins()
    for name in MUST:
        assert name in pinned, f"{name} is not pinned in {CONSTRAINTS.name}"
        got = metadata.version(name).split("+")[0]
        assert got == pinned[name], (
            f"{name} {got} is installed but {pinned[name]} is pinned: run "
            "bash deploy/setup.sh, or move the pins with bash deploy/pin.sh"
        )


def test_every_installed_pinned_package_matches():
    wrong = []
    for name, version in pins().items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # platform-specific extras a machine need not have
        if got.split("+")[0] != version:
            wrong.append(f"{name} {got} (pinned {version})")
    assert not wrong, wrong

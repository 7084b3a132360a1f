"""Every method, as a Flower strategy, by its run-config name."""

from __future__ import annotations

from server.strategies.base import HyperflowerStrategy
from server.strategies.fedavg import FedAvg, LocalOnly
from server.strategies.hyperflora import HyperFLoRA
from server.strategies.pfedhn import PFedHN

STRATEGIES: dict[str, type[HyperflowerStrategy]] = {
    cls.name: cls for cls in (PFedHN, FedAvg, LocalOnly, HyperFLoRA)
}

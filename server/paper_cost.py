"""Communication per round as the HyperFLoRA paper counts it (its Tables 1-3).

The paper charges a round with every weight that crosses between the server and a
client, inter-client relays bridged through the server, and writes the sum as a
formula of the run's sizes: |θ| the target model, |ρ| the generated adapters (or
ρ_enc + θ_hd for "+θ_hd"), |r| = K the class indicator, M_sel the participants
sampled a round, M_pair the pairs and E the exchanges per pair. Each method's
``final_report`` puts its value in ``summary.json`` beside the bytes the loop counts
from the records it really sent (``bytes_down_per_round`` / ``bytes_up_per_round``,
or HyperFLoRA's ``values_per_round`` / ``bytes_per_round``), so the two can be read
side by side; docs/hyperflora.md says how they differ.
"""

from __future__ import annotations

from typing import Any


def _report(values: float, formula: str, **terms: float) -> dict[str, Any]:
    """The summary entries of one formula: its value, its text and its terms."""
    return {
        "paper_comm_values_per_round": float(values),
        "paper_comm_formula": formula,
        "paper_comm_terms": {k: float(v) for k, v in terms.items()},
    }


def whole_model_cost(m_sel: int, theta: int) -> dict[str, Any]:
    """Pretrain, FedAvg, FedProx: 2·M_sel·|θ| (θ down, the trained θ up)."""
    return _report(2 * m_sel * theta, "2·M_sel·|θ|", m_sel=m_sel, theta=theta)


def pfedhn_cost(m_sel: int, theta: int, r: int) -> dict[str, Any]:
    """pFedHN and pFedHN-Parallel: M_sel·|r| + 2·M_sel·|θ| (each sampled client's r_i
    up; |r| = 0 with a server-side embedding, which no client sends)."""
    return _report(
        m_sel * r + 2 * m_sel * theta,
        "M_sel·|r| + 2·M_sel·|θ|",
        m_sel=m_sel,
        theta=theta,
        r=r,
    )


def hyperflora_cost(
    m_sel: float, r: int, rho: int, exchanges: int, m_pair: float, paired: bool
) -> dict[str, Any]:
    """HyperFLoRA: 2·M_sel·|r| + (2·M_sel + 4·E·M_pair)·|ρ| with pairing (every pair
    hop is an adapter down and up, E hops each way); noCP: M_sel·|r| + 2·M_sel·|ρ|."""
    if not paired:
        return _report(
            m_sel * r + 2 * m_sel * rho,
            "M_sel·|r| + 2·M_sel·|ρ|",
            m_sel=m_sel,
            r=r,
            rho=rho,
        )
    return _report(
        2 * m_sel * r + (2 * m_sel + 4 * exchanges * m_pair) * rho,
        "2·M_sel·|r| + (2·M_sel + 4·E·M_pair)·|ρ|",
        m_sel=m_sel,
        r=r,
        rho=rho,
        e=exchanges,
        m_pair=m_pair,
    )

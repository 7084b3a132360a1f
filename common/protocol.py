"""The names both sides of a message agree on, defined once.

- Actions: a method whose clients need their own handlers names an action; the
  server sends ``train.<action>`` / ``evaluate.<action>`` (:func:`routed`) and the
  ClientApp registers ``@app.train(<action>)`` / ``@app.evaluate(<action>)``.
- Record keys of the arrays a message or reply carries beyond ``params`` / ``delta``.
"""

from __future__ import annotations

#: HyperFLoRA's LoRA adapters on a cached base model.
LORA = "lora"
#: pFedDSH's BatchNorm target model and its statistics.
DSH = "dsh"
#: MH-pFedHN / MH-pFedHNGD's flat parameter vector of the client's own architecture.
MH = "mh"
#: HyperFedZero's embedding network and classifier generator.
HYPERFEDZERO = "hyperfedzero"

#: The record holding a train reply's declared extra arrays (validated like Δ).
EXTRAS = "extras"
#: MH-pFedHN's flat parameter vector (in params, teacher and Δ).
THETA = "theta"
#: HyperFLoRA's packed generated tensors (common.models.lora.pack).
RHO = "rho"


def routed(kind: str, action: str) -> str:
    """The message type that reaches ``action``'s handler of ``kind`` (``train`` or
    ``evaluate``), e.g. ``train.lora``; the plain handler when ``action`` is empty."""
    return f"{kind}.{action}" if action else kind

"""The chest X-ray gate: may this image be assessed at all? DICOM header checks, a learned content score, lungs.

Public names: :func:`assess` and :class:`Gate` (the verdict), :func:`load_gate_net` and :class:`GateNet` (the
learned score), :func:`header_reasons` (DICOM header only). Training lives in :mod:`cxr_core.gate.train` and the
procedural negatives in :mod:`cxr_core.gate.negatives`; the familiarity score in :mod:`cxr_core.gate.familiarity`,
with its acquisition features in :mod:`cxr_core.gate.acquisition`.
"""

from cxr_core.gate.assess import Gate, assess, from_probabilities
from cxr_core.gate.header import header_reasons
from cxr_core.gate.net import KINDS, GateModelError, GateNet, load_gate_net

__all__ = [
    "KINDS",
    "Gate",
    "GateModelError",
    "GateNet",
    "assess",
    "from_probabilities",
    "header_reasons",
    "load_gate_net",
]

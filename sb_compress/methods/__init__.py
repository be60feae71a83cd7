"""Compression methods: one module per method, each a Modifier.

``METHODS`` maps the names accepted in a ``compression:`` block
(``method: pinch``) to their classes.

Authors
 * sb_compress team 2026
"""

from .base import KeepMask, Modifier
from .masked import ClusterPrune, GradualMagnitude
from .pinch import PinchGate, SelfPinchingGates

METHODS = {
    "pinch": SelfPinchingGates,
    "magnitude": GradualMagnitude,
    "kmeans": ClusterPrune,
}

__all__ = [
    "METHODS",
    "ClusterPrune",
    "GradualMagnitude",
    "KeepMask",
    "Modifier",
    "PinchGate",
    "SelfPinchingGates",
]

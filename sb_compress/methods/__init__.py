"""Compression methods: one module per method, each a Modifier.

``METHODS`` maps the names accepted in a ``compression:`` block
(``method: pinch``) to their classes.

Authors
 * sb_compress team 2026
"""

from .base import KeepMask, Modifier
from .distill import LayerDistillation
from .fold import FoldEncoder
from .hardconcrete import HardConcretePruning
from .masked import ClusterPrune, GradualMagnitude
from .nm import NMMask, NMSparsity
from .pinch import PinchGate, SelfPinchingGates
from .quant import FakeQuantize, QuantizeWeights

METHODS = {
    "pinch": SelfPinchingGates,
    "magnitude": GradualMagnitude,
    "kmeans": ClusterPrune,
    "hardconcrete": HardConcretePruning,
    "distill": LayerDistillation,
    "nm": NMSparsity,
    "quant": QuantizeWeights,
    "fold": FoldEncoder,
}

__all__ = [
    "METHODS",
    "ClusterPrune",
    "FakeQuantize",
    "FoldEncoder",
    "GradualMagnitude",
    "HardConcretePruning",
    "KeepMask",
    "LayerDistillation",
    "Modifier",
    "NMMask",
    "NMSparsity",
    "PinchGate",
    "QuantizeWeights",
    "SelfPinchingGates",
]

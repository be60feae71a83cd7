"""The ``compression:`` block of a HyperPyYAML file: a list of modifiers.

A plan is data. Each modifier is either an object built with
``!new:sb_compress.methods.<Class>`` or a plain mapping with a ``method``
key::

    compression: !new:sb_compress.Plan
      model: !ref <wav2vec2>
      modifiers:
        - method: pinch
          targets: [attention, ffn]
          sparsity: 0.5
          ramp_steps: 2000

Everything is validated when the YAML loads: an unknown method, a target
that matches no layer, a sparsity outside [0, 1) or a bad schedule raise a
``ValueError`` naming the key (``compression.modifiers[1].sparsity``).
Two modifiers may target the same layer only as a pair of
:data:`STACKABLE` (an ``nm`` mask, then a ``quant`` quantizer).

Authors
 * sb_compress team 2026
"""

import copy

import torch

from sb_compress.methods import METHODS, Modifier
from sb_compress.models import (
    UnsupportedModelError,
    adapter_for,
    unwrap_model,
)

#: Methods that may act on the same layer, in this order (their
#: parametrizations stack on ``.weight`` in the order of the list).
STACKABLE = {("nm", "quant"): "prune, then quantize"}


class Plan(torch.nn.Module):
    """Binds compression modifiers to a model and drives their lifecycle.

    Arguments
    ---------
    model : torch.nn.Module
        The module to compress: a SpeechBrain HF wrapper (``Wav2Vec2``,
        ``Whisper``...) or a transformers model.
    modifiers : list
        :class:`~sb_compress.methods.base.Modifier` objects or mappings
        ``{method: <name>, **settings}``; ``method`` is one of
        :data:`sb_compress.methods.METHODS`.
    name : str
        Key under which errors are reported.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> plan = Plan(HubertModel(config), [{"method": "pinch",
    ...     "sparsity": 1.2}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: compression.modifiers[0].sparsity = 1.2: must be a fraction...
    """

    def __init__(self, model, modifiers, name="compression"):
        super().__init__()
        if isinstance(modifiers, dict) and "modifiers" in modifiers:
            modifiers = modifiers["modifiers"]
        if not isinstance(modifiers, (list, tuple)) or not modifiers:
            raise ValueError(
                f"{name}.modifiers: must be a non-empty list of modifiers"
            )
        self._model_ref = [model]
        self.name = name
        try:
            self.adapter = adapter_for(model)
        except UnsupportedModelError:
            self.adapter = None  # SpeechBrain's Conformer (fold only)
        built = [
            self._build(entry, f"{name}.modifiers[{i}]")
            for i, entry in enumerate(modifiers)
        ]
        self.modifiers = torch.nn.ModuleList(built)
        self._check_exclusive()
        self._check_overlaps()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.prepared = False

    @property
    def model(self):
        """The bound module (not a submodule: its weights are not ours)."""
        return self._model_ref[0]

    @property
    def hf_model(self):
        """The transformers model inside the bound module."""
        return unwrap_model(self.model)

    @property
    def root_model(self):
        """The transformers model inside the bound module, or the module
        itself when it holds none (SpeechBrain's Conformer)."""
        try:
            return unwrap_model(self.model)
        except UnsupportedModelError:
            return self.model

    def _build(self, entry, where):
        if isinstance(entry, Modifier):
            modifier = entry
        elif isinstance(entry, dict):
            settings = dict(entry)
            method = settings.pop("method", None)
            if method not in METHODS:
                raise ValueError(
                    f"{where}.method = {method!r}: unknown method; choose one "
                    "of " + ", ".join(sorted(METHODS))
                )
            try:
                modifier = METHODS[method](**settings)
            except TypeError as error:
                raise ValueError(f"{where}: {error}") from None
        else:
            raise ValueError(
                f"{where}: {entry!r} is neither a modifier nor a mapping "
                "with a 'method' key"
            )
        modifier.validate(where)
        modifier.bind(self.model, where)
        return modifier

    def _check_exclusive(self):
        if len(self.modifiers) < 2:
            return
        for i, modifier in enumerate(self.modifiers):
            if getattr(modifier, "exclusive", False):
                raise ValueError(
                    f"{self.name}.modifiers[{i}] ({modifier.method}) must be "
                    "the plan's only modifier"
                )

    def _check_overlaps(self):
        owners = {}
        for i, modifier in enumerate(self.modifiers):
            for spec in modifier.layers:
                for j in owners.get(spec.name, []):
                    self._check_stackable(j, i, spec.name)
                owners.setdefault(spec.name, []).append(i)

    def _check_stackable(self, first, second, layer):
        methods = (
            self.modifiers[first].method,
            self.modifiers[second].method,
        )
        if methods in STACKABLE:
            return
        if methods[::-1] in STACKABLE:
            raise ValueError(
                f"{self.name}.modifiers[{second}] ({methods[1]}) targets "
                f"{layer!r} after modifiers[{first}] ({methods[0]}); list "
                f"the {methods[1]} modifier first ({STACKABLE[methods[::-1]]})"
            )
        raise ValueError(
            f"{self.name}.modifiers[{second}] targets {layer!r}, "
            f"already targeted by modifiers[{first}]"
            "; narrow one with ignore"
        )

    def prepare(self):
        """Inserts every modifier's parametrizations (once)."""
        if self.prepared:
            return
        for modifier in self.modifiers:
            modifier.prepare()
        self.prepared = True

    def resolve_schedule(self, total_steps):
        """Turns schedule fractions into steps for a run of
        ``total_steps`` optimizer steps."""
        for modifier in self.modifiers:
            modifier.resolve_schedule(total_steps)

    def optimizer_groups(self):
        """Parameter groups of the gates/thresholds (descent)."""
        return [g for m in self.modifiers for g in m.optimizer_groups()]

    def multiplier_groups(self):
        """Parameter groups of the Lagrange multipliers (ascent)."""
        return [g for m in self.modifiers for g in m.multiplier_groups()]

    def own_parameters(self):
        """Every parameter a modifier owns, gates and multipliers."""
        groups = self.optimizer_groups() + self.multiplier_groups()
        return [p for g in groups for p in g["params"]]

    def loss(self):
        """Sum of the modifiers' regularisers, or ``None``."""
        terms = [m.loss() for m in self.modifiers]
        terms = [t for t in terms if t is not None]
        return sum(terms) if terms else None

    def on_step(self, step=None):
        """Advances every schedule to ``step`` (default: one more step)."""
        if step is None:
            step = int(self.step) + 1
        self.step.fill_(step)
        for modifier in self.modifiers:
            modifier.on_step(step)

    def harden(self):
        """Switches every modifier to its final hard masks."""
        for modifier in self.modifiers:
            modifier.harden()

    def layer_records(self):
        """Per-layer records of every modifier, in model order; a layer
        with stacked modifiers has one record (``method`` ``nm+quant``)."""
        merged = {}
        for modifier in self.modifiers:
            for record in modifier.layer_records():
                name = record["name"]
                if name in merged:
                    method = f"{merged[name]['method']}+{record['method']}"
                    merged[name].update(record, method=method)
                else:
                    merged[name] = dict(record)
        return list(merged.values())

    def targeted_names(self):
        """Names of all targeted layers."""
        return [s.name for m in self.modifiers for s in m.layers]

    def final_weights(self):
        """``{layer name: weight}`` of every targeted layer, masks baked."""
        weights = {}
        for modifier in self.modifiers:
            weights.update(modifier.final_weights())
        return weights

    @torch.no_grad()
    def finalized_model(self):
        """A new transformers model of the same class and config holding the
        final weights, with no parametrization: what an export saves."""
        source = self.hf_model
        final = self.final_weights()
        prefixes = tuple(f"{name}.parametrizations." for name in final)
        state = {
            key: value
            for key, value in source.state_dict().items()
            if not key.startswith(prefixes)
        }
        state.update({f"{name}.weight": w for name, w in final.items()})
        model = type(source)(copy.deepcopy(source.config))
        base = getattr(source, "model", source)
        if getattr(base, "decoder", True) is None:
            getattr(model, "model", model).decoder = None
        model.load_state_dict(state, strict=True)
        return model.to(next(source.parameters()).device).eval()

    def settings(self):
        """The modifiers' settings, for the report."""
        return [m.settings() for m in self.modifiers]

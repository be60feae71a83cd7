"""The Modifier protocol and the weight parametrizations modifiers insert.

A modifier is one compression method applied to a set of layers, with a
schedule. ``CompressionBrain`` drives it through SpeechBrain's hooks::

    prepare()         insert parametrizations (before checkpoint recovery)
    optimizer_groups  its own learnable parameters, kept out of the backbone's
    loss()            regulariser added to the task loss in TRAIN
    on_step(step)     schedules: target ramp, temperature, mask refresh
    harden()          evaluate with hard masks from now on
    final_weights()   the plain weights with hard masks baked in (export)

Masks and gates are inserted with ``torch.nn.utils.parametrize`` on
``.weight`` (never by wrapping the Linear: WavLM reads ``q_proj.weight``).
Their buffers and parameters live in the model's ``state_dict``, so the
checkpointer saves and restores them with the model; the modifier's own
state (multipliers, its step) lives in the Plan's ``state_dict``.

Authors
 * sb_compress team 2026
"""

import torch
from torch.nn.utils import parametrize

from sb_compress.models import adapter_for, select_linears


class KeepMask(torch.nn.Module):
    """Parametrization ``W -> W * mask`` with a fixed (refreshable) mask.

    Arguments
    ---------
    mask : torch.Tensor
        Boolean keep-mask of the weight's shape.

    Example
    -------
    >>> linear = torch.nn.Linear(4, 2)
    >>> mask = torch.tensor([[True, False, True, False]] * 2)
    >>> _ = parametrize.register_parametrization(linear, "weight",
    ...     KeepMask(mask))
    >>> int((linear.weight == 0).sum())
    4
    """

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight):
        """Returns the masked weight."""
        return weight * self.mask.to(weight.dtype)

    def hard_mask(self, weight):
        """Keep-mask for ``weight`` (the unmasked original)."""
        return self.mask.clone()


def original_weight(module):
    """Returns the un-parametrized weight of a (parametrized) Linear."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


class Modifier(torch.nn.Module):
    """Base class of the compression methods used in training.

    Arguments
    ---------
    targets : list of str, optional
        Role names (``attention``, ``ffn``, ``q``, ...) or ``re:<regex>``
        over module names. Default: every Linear of the transformer blocks.
    ignore : list of str, optional
        Same syntax; these layers are left alone.
    scope : str
        ``encoder``, ``decoder`` or ``all`` (Whisper has both).
    start_step : int
        Optimizer step at which the method starts acting.
    end_step : int, optional
        Step after which masks stop changing (frozen).
    """

    method = "base"
    schedule_keys = ("start_step", "end_step")

    def __init__(
        self,
        targets=None,
        ignore=None,
        scope="all",
        start_step=0,
        end_step=None,
    ):
        super().__init__()
        self.targets = targets
        self.ignore = ignore
        self.scope = scope
        self.start_step = start_step
        self.end_step = end_step
        self.layers = []
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def settings(self):
        """The user-facing settings, for reports and error messages."""
        out = {
            "method": self.method,
            "targets": self.targets,
            "ignore": self.ignore,
            "scope": self.scope,
        }
        for key in self.schedule_keys:
            out[key] = getattr(self, key)
        return out

    def validate(self, where):
        """Checks the settings; raises ``ValueError`` naming ``where.key``.

        Arguments
        ---------
        where : str
            Prefix of the key in error messages, e.g.
            ``compression.modifiers[0]``.
        """
        if self.scope not in ("encoder", "decoder", "all"):
            raise ValueError(
                f"{where}.scope = {self.scope!r}: must be encoder, decoder "
                "or all"
            )
        for key in self.schedule_keys:
            value = getattr(self, key)
            if value is not None or key != "end_step":
                check_steps(value, f"{where}.{key}")
        start, end = self.start_step, self.end_step
        if end is not None and type(start) is type(end) and end <= start:
            raise ValueError(
                f"{where}.end_step = {end}: must be greater than "
                f"start_step = {start}"
            )

    def resolve_schedule(self, total_steps):
        """Turns schedule lengths given as fractions of training (floats in
        [0, 1]) into optimizer steps.

        Arguments
        ---------
        total_steps : int
            Optimizer steps of the whole run.
        """
        if not hasattr(self, "_schedule_spec"):
            self._schedule_spec = {
                k: getattr(self, k) for k in self.schedule_keys
            }
        for key, value in self._schedule_spec.items():
            if isinstance(value, float):
                value = int(round(value * total_steps))
            setattr(self, key, value)

    def check_schedule_resolved(self):
        """Raises if a schedule length is still a fraction of training."""
        for key in self.schedule_keys:
            if isinstance(getattr(self, key), float):
                raise RuntimeError(
                    f"{type(self).__name__}.{key} is a fraction of training;"
                    " call resolve_schedule(total_steps) first (Compression"
                    "Brain does it at the start of fit)"
                )

    def bind(self, model, where):
        """Resolves ``targets``/``ignore`` on the model.

        Arguments
        ---------
        model : torch.nn.Module
            The model or its SpeechBrain wrapper.
        where : str
            Prefix of the key in error messages.
        """
        adapter = adapter_for(model)
        specs = adapter.linears(self.scope)
        self.layers = select_linears(
            specs, self.targets, self.ignore, where=f"{where}.targets"
        )

    def prepare(self):
        """Inserts the method's parametrizations into the bound layers."""

    def optimizer_groups(self):
        """Parameter groups for the compression optimizer (gates)."""
        return []

    def multiplier_groups(self):
        """Parameter groups trained by gradient ascent (Lagrange)."""
        return []

    def loss(self):
        """Regulariser added to the task loss (a 0-dim tensor or ``None``)."""
        return None

    def on_step(self, step):
        """Advances the schedules to optimizer step ``step``."""
        self.step.fill_(step)

    def harden(self):
        """Makes every later forward use the final hard masks."""

    def keep_masks(self):
        """Returns ``{layer name: bool keep-mask}`` as the export bakes them."""
        masks = {}
        for spec in self.layers:
            masks[spec.name] = self._hard_mask(spec.module)
        return masks

    def _hard_mask(self, module):
        weight = original_weight(module)
        if parametrize.is_parametrized(module, "weight"):
            mask = torch.ones_like(weight, dtype=torch.bool)
            for p in module.parametrizations.weight:
                if hasattr(p, "hard_mask"):
                    mask &= p.hard_mask(weight)
            return mask
        return weight != 0

    @torch.no_grad()
    def final_weights(self):
        """Returns ``{layer name: weight}`` with the hard masks baked in:
        the plain weights an export stores."""
        weights = {}
        for spec in self.layers:
            weight = original_weight(spec.module)
            mask = self._hard_mask(spec.module).to(weight.dtype)
            weights[spec.name] = (weight * mask).detach().clone()
        return weights

    def layer_records(self):
        """Per-layer records for reports: name, role, stack, layer, shape,
        sparsity."""
        records = []
        masks = self.keep_masks()
        for spec in self.layers:
            mask = masks[spec.name]
            records.append(
                {
                    "name": spec.name,
                    "role": spec.role,
                    "stack": spec.stack,
                    "layer": spec.layer,
                    "shape": list(mask.shape),
                    "sparsity": 1.0 - mask.float().mean().item(),
                    "clusters": None,
                    "method": self.method,
                }
            )
        return records


def check_sparsity(sparsity, where="sparsity"):
    """Raises ``ValueError`` unless ``0 <= sparsity < 1``.

    Arguments
    ---------
    sparsity : float
        Fraction of weights to prune.
    where : str
        Key of the setting, used in the message.

    Returns
    -------
    float
        ``sparsity`` as a float.

    Example
    -------
    >>> check_sparsity(0.3)
    0.3
    >>> check_sparsity(1.2, "compression.modifiers[1].sparsity")
    Traceback (most recent call last):
    ...
    ValueError: compression.modifiers[1].sparsity = 1.2: must be a \
fraction in [0, 1), e.g. 0.3 to prune 30% of the weights
    """
    valid = isinstance(sparsity, (int, float)) and not isinstance(
        sparsity, bool
    )
    if not valid or not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"{where} = {sparsity!r}: must be a fraction in [0, 1), "
            "e.g. 0.3 to prune 30% of the weights"
        )
    return float(sparsity)


def check_steps(value, key):
    """Raises ``ValueError`` unless ``value`` is a step count (int >= 0) or a
    fraction of the training run (float in [0, 1]).

    Arguments
    ---------
    value : int or float
        The setting.
    key : str
        Its key, for the message.

    Example
    -------
    >>> check_steps(0.5, "ramp_steps"); check_steps(200, "ramp_steps")
    >>> check_steps(-3, "ramp_steps")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ramp_steps = -3: must be a step count (int >= 0) or a ...
    """
    ok = (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ) or (isinstance(value, float) and 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(
            f"{key} = {value!r}: must be a step count (int >= 0) or a "
            "fraction of training (float in [0, 1])"
        )


def check_int(value, key, minimum=None):
    """Raises ``ValueError`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} = {value!r}: must be an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} = {value}: must be >= {minimum}")


def register(module, parametrization):
    """Registers ``parametrization`` on ``module.weight`` (unsafe=False)."""
    parametrize.register_parametrization(module, "weight", parametrization)

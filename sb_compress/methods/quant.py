"""Weight fake-quantization with a straight-through estimator (METHODS.md
section 5, the quantization half of USM-Lite).

Symmetric, weight-only, per output channel or per group of ``G``
consecutive weights along the input axis. For ``b`` bits::

    scale = max|W| / (2**(b-1) - 1)            (per channel or group)
    q     = round_STE(clip(W / scale, -2**(b-1), 2**(b-1) - 1))
    W_hat = q * scale

with ``round_STE(x) = sg(round(x)) + (x - sg(x))``: the forward is exactly
``round(x)``, the backward the identity (zero outside the clipping range;
clipping before rounding is the same as after, for integer bounds). ``b``
is one of 8, 4, 3 and 2; int2 in this scheme is ternary (``max|W| / 1``
puts every ``W / scale`` in [-1, 1], so ``q`` is -1, 0 or 1).

Choices the method leaves open, made here so that the packed export
(:mod:`sb_compress.export.pack`) reloads the very weights the model
trained with:

- scales are rounded up to float16 values (what the export stores) inside
  the quantizer, so no weight is clipped, and clamped to [2**-24, 65504];
  a group of zeros gets the smallest scale and all-zero codes;
- the scales of ``learn_scales: False`` are recomputed from the weight at
  every forward (detached: the weight's gradient is the plain STE);
  ``learn_scales: True`` makes them one parameter per channel or group,
  initialised from ``max|W|`` when quantization starts and trained by the
  compression optimizer (the LSQ gradient ``q - W / scale`` follows from
  autograd through ``round_STE``; float16 rounding is itself an STE);
- zeros are always +0.0 (``W_hat + 0.0``), so dequantizing stored codes is
  bit-for-bit equal to the fake-quantized weight.

With an N:M modifier (:mod:`sb_compress.methods.nm`) on the same layer the
mask comes first and this quantizer second: prune, then quantize.

Authors
 * sb_compress team 2026
"""

import torch

from .base import Modifier, check_int, register

#: Bit widths the quantizer and the packed export support.
SUPPORTED_BITS = (8, 4, 3, 2)
#: float16 range the scales are clamped to (smallest subnormal, largest).
SCALE_MIN, SCALE_MAX = 2.0**-24, 65504.0


def qrange(bits):
    """Integer range ``(qmin, qmax)`` of signed ``bits``-bit codes.

    Arguments
    ---------
    bits : int
        Bit width.

    Returns
    -------
    tuple of int

    Example
    -------
    >>> qrange(4), qrange(2)
    ((-8, 7), (-2, 1))
    """
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def round_ste(x):
    """Rounds to the nearest integer; the gradient passes straight through.

    Arguments
    ---------
    x : torch.Tensor

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
    >>> y = round_ste(x)
    >>> y.sum().backward()
    >>> y.tolist(), x.grad.tolist()
    ([0.0, 2.0], [1.0, 1.0])
    """
    return torch.round(x).detach() + (x - x.detach())


def _fp16_ste(scale):
    """float16-representable value of ``scale``; identity gradient."""
    scale = scale.clamp(SCALE_MIN, SCALE_MAX)
    return scale + (scale.half().float() - scale).detach()


def _grouped(weight, group_size):
    out_features, in_features = weight.shape
    return weight.reshape(out_features, in_features // group_size, group_size)


def absmax_scales(weight, bits, group_size=None):
    """Symmetric scales ``max|W| / qmax`` per row or group, rounded up to
    float16 values (so that ``|W| / scale <= qmax``: no weight is clipped
    and the largest keeps its STE gradient).

    Arguments
    ---------
    weight : torch.Tensor
        2-D (out x in).
    bits : int
        Bit width.
    group_size : int, optional
        Weights per group along the input axis; ``None``: the whole row.

    Returns
    -------
    torch.Tensor
        float32 (out x groups), every value exactly representable in
        float16.

    Example
    -------
    >>> absmax_scales(torch.tensor([[0.5, -1.4, 0.7, 0.0]]), 8, 2).tolist()
    [[0.01102447509765625, 0.005512237548828125]]
    """
    group_size = group_size or weight.shape[1]
    amax = _grouped(weight.detach().float(), group_size).abs().amax(-1)
    scale = (amax / qrange(bits)[1]).clamp(SCALE_MIN, SCALE_MAX)
    rounded = scale.half()
    above = torch.nextafter(rounded, torch.full_like(rounded, SCALE_MAX))
    return torch.where(rounded.float() < scale, above, rounded).float()


def quantize(weight, scale, bits, group_size=None):
    """Integer codes ``round_STE(clip(W / scale, qmin, qmax))``.

    Arguments
    ---------
    weight : torch.Tensor
        2-D (out x in).
    scale : torch.Tensor
        (out x groups) scales.
    bits : int
        Bit width.
    group_size : int, optional
        ``None``: one group per row.

    Returns
    -------
    torch.Tensor
        float32 (out x in) holding integers, differentiable (STE).

    Example
    -------
    >>> w = torch.tensor([[0.5, -1.4, 0.8, 0.0]])
    >>> quantize(w, absmax_scales(w, 2), 2).tolist()
    [[0.0, -1.0, 1.0, 0.0]]
    """
    group_size = group_size or weight.shape[1]
    low, high = qrange(bits)
    grouped = _grouped(weight.float(), group_size)
    codes = round_ste(torch.clamp(grouped / scale[..., None], low, high))
    return codes.reshape(weight.shape)


def dequantize(codes, scale, group_size=None):
    """``codes * scale`` with +0.0 for zeros (float32).

    Arguments
    ---------
    codes : torch.Tensor
        (out x in) integer codes, any dtype.
    scale : torch.Tensor
        (out x groups) scales, float16 or float32.
    group_size : int, optional
        ``None``: one group per row.

    Returns
    -------
    torch.Tensor
        float32 (out x in).

    Example
    -------
    >>> dequantize(torch.tensor([[-1, 0, 3]]), torch.tensor([[0.5]])).tolist()
    [[-0.5, 0.0, 1.5]]
    """
    group_size = group_size or codes.shape[1]
    grouped = _grouped(codes.float(), group_size)
    return (grouped * scale.float()[..., None] + 0.0).reshape(codes.shape)


def fake_quantize(weight, bits, group_size=None, scale=None):
    """Quantizes and dequantizes ``weight`` (STE gradient).

    Arguments
    ---------
    weight : torch.Tensor
        2-D (out x in).
    bits : int
        One of :data:`SUPPORTED_BITS`.
    group_size : int, optional
        ``None``: per output channel.
    scale : torch.Tensor, optional
        (out x groups) scales; by default :func:`absmax_scales`.

    Returns
    -------
    torch.Tensor
        Of ``weight``'s shape and dtype, on the ``bits``-bit grid.

    Example
    -------
    >>> w = torch.tensor([[0.3, -0.9, 0.6]])
    >>> fake_quantize(w, 2).tolist()
    [[0.0, -0.900390625, 0.900390625]]
    """
    if scale is None:
        scale = absmax_scales(weight, bits, group_size)
    codes = quantize(weight, scale, bits, group_size)
    return dequantize(codes, scale, group_size).to(weight.dtype)


class FakeQuantize(torch.nn.Module):
    """Parametrization ``W -> fake_quantize(W)`` (identity until active).

    Arguments
    ---------
    bits : int
        One of :data:`SUPPORTED_BITS`.
    group_size : int, optional
        Weights per group along the input axis (``None``: per channel).
    shape : tuple of int
        (out, in) of the weight.
    learn_scales : bool
        Whether the scales are a trained parameter.
    active : bool
        Whether it quantizes from the start.

    Example
    -------
    >>> from torch.nn.utils import parametrize
    >>> linear = torch.nn.Linear(8, 2)
    >>> _ = parametrize.register_parametrization(linear, "weight",
    ...     FakeQuantize(4, 4, (2, 8)))
    >>> codes, scales = linear.parametrizations.weight[0].codes(
    ...     linear.parametrizations.weight.original)
    >>> codes.dtype, tuple(scales.shape), int(codes.abs().max())
    (torch.int8, (2, 2), 7)
    """

    def __init__(
        self, bits, group_size, shape, learn_scales=False, active=True
    ):
        super().__init__()
        out_features, in_features = shape
        self.bits = bits
        self.group_size = group_size or in_features
        self.register_buffer("active", torch.tensor(bool(active)))
        self.scale = None
        if learn_scales:
            groups = in_features // self.group_size
            self.scale = torch.nn.Parameter(torch.ones(out_features, groups))
            self.register_buffer("scale_initialized", torch.tensor(False))

    @torch.no_grad()
    def init_scales(self, weight):
        """Sets learnt scales to ``max|W| / qmax`` (once)."""
        if self.scale is not None and not bool(self.scale_initialized):
            self.scale.copy_(absmax_scales(weight, self.bits, self.group_size))
            self.scale_initialized.fill_(True)

    def scales(self, weight):
        """The scales used for ``weight``: float32, float16 values."""
        if self.scale is None:
            return absmax_scales(weight, self.bits, self.group_size)
        self.init_scales(weight)
        return _fp16_ste(self.scale)

    def forward(self, weight):
        """Returns the fake-quantized weight (the weight while inactive)."""
        if not bool(self.active):
            return weight
        return fake_quantize(
            weight, self.bits, self.group_size, self.scales(weight)
        )

    @torch.no_grad()
    def codes(self, weight):
        """Integer codes (int8) and float16 scales of ``weight``."""
        scale = self.scales(weight)
        codes = quantize(weight, scale, self.bits, self.group_size)
        return codes.to(torch.int8), scale.half()


def quantizer_input(module):
    """Returns the weight as the layer's :class:`FakeQuantize` sees it
    (after the parametrizations before it, e.g. an N:M mask) and the
    quantizer.

    Arguments
    ---------
    module : torch.nn.Linear
        A parametrized layer.

    Returns
    -------
    tuple
        ``(weight, FakeQuantize)``, or ``(weight, None)`` without one.
    """
    chain = module.parametrizations.weight
    weight = chain.original
    for parametrization in chain:
        if isinstance(parametrization, FakeQuantize):
            return weight, parametrization
        weight = parametrization(weight)
    return weight, None


class QuantizeWeights(Modifier):
    """Quantization-aware training: fake-quantized weights, STE.

    Arguments
    ---------
    bits : int
        8, 4, 3 or 2 (2 is ternary).
    group_size : int, optional
        Weights per scale along the input axis; ``None`` (default): one
        scale per output channel. Must divide every targeted layer's
        ``in_features``.
    targets, ignore, scope
        See :class:`~sb_compress.methods.base.Modifier`.
    start_step : int or float
        Optimizer step (or fraction of training) from which the weights
        are quantized; the export is always quantized.
    learn_scales : bool
        Train one scale per channel or group (``scale_lr``).
    scale_lr : float
        Learning rate of the learnt scales.

    Example
    -------
    >>> QuantizeWeights(bits=5).validate("modifiers[0]")
    Traceback (most recent call last):
    ...
    ValueError: modifiers[0].bits = 5: unsupported; choose 8, 4, 3 or 2
    """

    method = "quant"
    schedule_keys = ("start_step",)

    def __init__(
        self,
        bits=4,
        group_size=None,
        targets=None,
        ignore=None,
        scope="all",
        start_step=0,
        learn_scales=False,
        scale_lr=1e-4,
    ):
        super().__init__(targets, ignore, scope, start_step)
        self.bits = bits
        self.group_size = group_size
        self.learn_scales = learn_scales
        self.scale_lr = scale_lr
        self.quantizers = []

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            bits=self.bits,
            group_size=self.group_size,
            learn_scales=self.learn_scales,
            scale_lr=self.scale_lr,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        if isinstance(self.bits, bool) or self.bits not in SUPPORTED_BITS:
            raise ValueError(
                f"{where}.bits = {self.bits!r}: unsupported; choose 8, 4, 3 "
                "or 2"
            )
        if self.group_size is not None:
            check_int(self.group_size, f"{where}.group_size", minimum=1)
        if not isinstance(self.learn_scales, bool):
            raise ValueError(
                f"{where}.learn_scales = {self.learn_scales!r}: must be true "
                "or false"
            )
        lr = self.scale_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"{where}.scale_lr = {lr!r}: must be > 0")

    def bind(self, model, where):
        """Binds the layers; every one must split into whole groups."""
        super().bind(model, where)
        if self.group_size is None:
            return
        for spec in self.layers:
            in_features = spec.module.weight.shape[1]
            if in_features % self.group_size:
                raise ValueError(
                    f"{where}.group_size = {self.group_size} does not divide "
                    f"in_features = {in_features} of {spec.name}; choose a "
                    "divisor (or null for one scale per output channel)"
                )

    def _active(self, step):
        return step >= self.start_step

    def prepare(self):
        """Registers a :class:`FakeQuantize` on every targeted layer (after
        any parametrization already there, e.g. an N:M mask)."""
        self.quantizers = []
        for spec in self.layers:
            quantizer = FakeQuantize(
                self.bits,
                self.group_size,
                tuple(spec.module.weight.shape),
                learn_scales=self.learn_scales,
                active=False,
            )
            quantizer.to(spec.module.weight.device)
            register(spec.module, quantizer)
            self.quantizers.append(quantizer)
        if self.start_step == 0:
            self._set_active(True)

    def optimizer_groups(self):
        """The learnt scales at ``scale_lr``, no weight decay."""
        scales = [q.scale for q in self.quantizers if q.scale is not None]
        if not scales:
            return []
        return [{"params": scales, "lr": self.scale_lr, "weight_decay": 0.0}]

    @torch.no_grad()
    def _set_active(self, active):
        for spec, quantizer in zip(self.layers, self.quantizers):
            if active and not bool(quantizer.active):
                weight, _ = quantizer_input(spec.module)
                quantizer.init_scales(weight)
            quantizer.active.fill_(active)

    def on_step(self, step):
        """Quantizes from ``start_step`` on."""
        super().on_step(step)
        self.check_schedule_resolved()
        self._set_active(self._active(step))

    def harden(self):
        """Quantizes from now on, whatever the step (the export does)."""
        self._set_active(True)

    @torch.no_grad()
    def codes(self):
        """``{layer name: (int8 codes, float16 scales)}`` of the weights as
        the quantizers see them now (after any mask before them)."""
        out = {}
        for spec in self.layers:
            weight, quantizer = quantizer_input(spec.module)
            out[spec.name] = quantizer.codes(weight)
        return out

    @torch.no_grad()
    def final_weights(self):
        """``{layer name: fake-quantized weight}`` (masks before the
        quantizer included): the weights the packed export reproduces."""
        self.harden()
        return {
            spec.name: spec.module.weight.detach().clone()
            for spec in self.layers
        }

    def layer_records(self):
        """Per-layer records, with bits and group size."""
        records = super().layer_records()
        for record in records:
            record["bits"] = self.bits
            record["group_size"] = self.group_size
        return records

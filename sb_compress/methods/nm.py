"""N:M semi-structured sparsity, refreshed while fine-tuning (METHODS.md
section 5, the pruning half of USM-Lite).

In every group of ``M`` consecutive weights along the input axis, the
``N`` of largest ``|W|`` are kept (2:4, 1:4, 4:8...); ties go to the lower
index, so masks are deterministic. The masks are recomputed from the
unmasked weights every ``update_every`` optimizer steps from
``start_step`` (and stay exactly as they are in between), and frozen after
``end_step``. Pruned weights get no gradient, or with ``sr_ste: true`` the
SR-STE rule: the dense gradient (straight through the mask) plus the decay
``sr_ste_decay * (~mask * W)`` (2e-4 by default), so pruned weights may
come back at a refresh.

``M`` must divide every targeted layer's ``in_features`` (no padding rule:
such a layer is an error naming it; ``ignore`` it or choose another ``M``).
``M`` is a power of two up to 16 so that in-group indices pack in
``log2(M)`` bits.

With quantization (:mod:`sb_compress.methods.quant`) on the same layer,
list the ``nm`` modifier before the ``quant`` one: the mask is applied
first and the quantizer sees the pruned weight (prune, then quantize; the
plan rejects the other order). Pruned weights are exact +0.0.

Authors
 * sb_compress team 2026
"""

import torch

from .base import Modifier, check_int, register

#: Group sizes M accepted (in-group indices are packed in log2(M) bits).
SUPPORTED_M = (2, 4, 8, 16)


def nm_mask(weight, n, m):
    """Keep-mask of the ``n`` largest ``|W|`` in each group of ``m``
    consecutive weights along the input axis (ties: lower index kept).

    Arguments
    ---------
    weight : torch.Tensor
        2-D (out x in), ``in`` divisible by ``m``.
    n, m : int
        Kept and group size.

    Returns
    -------
    torch.Tensor
        Bool, of ``weight``'s shape.

    Example
    -------
    >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 0.0, 0.0]]),
    ...     2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 1, 0, 0]]
    """
    out_features, in_features = weight.shape
    groups = weight.detach().abs().float().reshape(out_features, -1, m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(out_features, in_features)


class _SRSTE(torch.autograd.Function):
    """``where(mask, W, 0)``; backward: dense gradient + decay on pruned."""

    @staticmethod
    def forward(ctx, weight, mask, decay):
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return torch.where(mask, weight, torch.zeros_like(weight))

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        pruned = (~mask).to(weight.dtype)
        return grad + ctx.decay * pruned * weight, None, None


class NMMask(torch.nn.Module):
    """Parametrization ``W -> where(mask, W, 0)`` with an N:M mask.

    Arguments
    ---------
    n, m : int
        Kept and group size.
    shape : tuple of int
        (out, in) of the weight; the mask starts all ones (nothing pruned).
    sr_ste_decay : float, optional
        SR-STE decay; ``None``: pruned weights get no gradient.

    Example
    -------
    >>> mask = NMMask(2, 4, (1, 4))
    >>> mask.refresh(torch.tensor([[0.1, -3.0, 2.0, 0.5]]))
    >>> mask(torch.tensor([[0.1, -3.0, 2.0, 0.5]])).tolist()
    [[0.0, -3.0, 2.0, 0.0]]
    """

    def __init__(self, n, m, shape, sr_ste_decay=None):
        super().__init__()
        self.n, self.m = n, m
        self.sr_ste_decay = sr_ste_decay
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("pruning", torch.tensor(False))

    @torch.no_grad()
    def refresh(self, weight):
        """Recomputes the N:M mask from the unmasked ``weight``."""
        self.mask.copy_(nm_mask(weight, self.n, self.m))
        self.pruning.fill_(True)

    def forward(self, weight):
        """Returns the masked weight (+0.0 where pruned)."""
        mask = self.mask
        if self.sr_ste_decay is not None and torch.is_grad_enabled():
            return _SRSTE.apply(weight, mask, float(self.sr_ste_decay))
        return torch.where(mask, weight, torch.zeros_like(weight))

    def hard_mask(self, weight):
        """The current keep-mask."""
        return self.mask.clone()


class NMSparsity(Modifier):
    """N:M sparsity along the input axis, refreshed on a schedule.

    Arguments
    ---------
    n : int
        Weights kept per group (1 <= n <= m).
    m : int
        Group size along the input axis, one of :data:`SUPPORTED_M`;
        must divide every targeted layer's ``in_features``.
    targets, ignore, scope, start_step, end_step
        See :class:`~sb_compress.methods.base.Modifier`. Masks are first
        computed at ``start_step`` and frozen after ``end_step``.
    update_every : int
        Mask refresh period in optimizer steps.
    sr_ste : bool
        Train with SR-STE (dense gradient plus decay on pruned weights)
        instead of zero gradient for pruned weights.
    sr_ste_decay : float
        The SR-STE decay ``lambda_w``.

    Example
    -------
    >>> NMSparsity(n=4, m=2).validate("compression.modifiers[0]")
    Traceback (most recent call last):
    ...
    ValueError: compression.modifiers[0].n = 4: must be <= m = 2
    """

    method = "nm"

    def __init__(
        self,
        n=2,
        m=4,
        targets=None,
        ignore=None,
        scope="all",
        start_step=0,
        end_step=None,
        update_every=100,
        sr_ste=False,
        sr_ste_decay=2e-4,
    ):
        super().__init__(targets, ignore, scope, start_step, end_step)
        self.n, self.m = n, m
        self.update_every = update_every
        self.sr_ste = sr_ste
        self.sr_ste_decay = sr_ste_decay
        self.masks = []

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            n=self.n,
            m=self.m,
            update_every=self.update_every,
            sr_ste=self.sr_ste,
            sr_ste_decay=self.sr_ste_decay,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        check_int(self.m, f"{where}.m", minimum=2)
        if self.m not in SUPPORTED_M:
            raise ValueError(
                f"{where}.m = {self.m}: must be one of "
                + ", ".join(map(str, SUPPORTED_M))
                + " (in-group indices are packed in log2(m) bits)"
            )
        check_int(self.n, f"{where}.n", minimum=1)
        if self.n > self.m:
            raise ValueError(f"{where}.n = {self.n}: must be <= m = {self.m}")
        check_int(self.update_every, f"{where}.update_every", minimum=1)
        if not isinstance(self.sr_ste, bool):
            raise ValueError(
                f"{where}.sr_ste = {self.sr_ste!r}: must be true or false"
            )
        decay = self.sr_ste_decay
        if (
            isinstance(decay, bool)
            or not isinstance(decay, (int, float))
            or decay < 0
        ):
            raise ValueError(f"{where}.sr_ste_decay = {decay!r}: must be >= 0")

    def bind(self, model, where):
        """Binds the layers; ``m`` must divide every ``in_features``."""
        super().bind(model, where)
        for spec in self.layers:
            in_features = spec.module.weight.shape[1]
            if in_features % self.m:
                raise ValueError(
                    f"{where}.m = {self.m} does not divide in_features = "
                    f"{in_features} of {spec.name} (N:M groups are not "
                    "padded); choose another m or ignore the layer"
                )

    def prepare(self):
        """Registers an :class:`NMMask` on every targeted layer; the masks
        are computed at once when ``start_step`` is 0."""
        self.masks = []
        decay = float(self.sr_ste_decay) if self.sr_ste else None
        for spec in self.layers:
            mask = NMMask(
                self.n, self.m, tuple(spec.module.weight.shape), decay
            )
            mask.to(spec.module.weight.device)
            register(spec.module, mask)
            self.masks.append(mask)
        if self.start_step == 0:
            self.refresh()

    @torch.no_grad()
    def refresh(self):
        """Recomputes every mask from the current unmasked weights."""
        for spec, mask in zip(self.layers, self.masks):
            mask.refresh(spec.module.parametrizations.weight.original)

    def on_step(self, step):
        """Refreshes the masks every ``update_every`` steps from
        ``start_step`` up to ``end_step``."""
        super().on_step(step)
        self.check_schedule_resolved()
        if step < self.start_step:
            return
        if self.end_step is not None and step > self.end_step:
            return
        if (step - self.start_step) % self.update_every == 0:
            self.refresh()

    def harden(self):
        """Computes the masks of layers never pruned yet (the export is
        always N:M)."""
        for spec, mask in zip(self.layers, self.masks):
            if not bool(mask.pruning):
                mask.refresh(spec.module.parametrizations.weight.original)

    @torch.no_grad()
    def final_weights(self):
        """``{layer name: where(mask, W, 0)}`` (+0.0 where pruned)."""
        weights = {}
        for spec, mask in zip(self.layers, self.masks):
            weight = spec.module.parametrizations.weight.original
            weights[spec.name] = torch.where(
                mask.mask, weight, torch.zeros_like(weight)
            ).clone()
        return weights

    def nm_masks(self):
        """``{layer name: (bool mask, n, m)}`` for the export."""
        return {
            spec.name: (mask.mask.clone(), self.n, self.m)
            for spec, mask in zip(self.layers, self.masks)
        }

    def layer_records(self):
        """Per-layer records, with the N:M pattern."""
        records = super().layer_records()
        for record in records:
            record["nm"] = f"{self.n}:{self.m}"
        return records

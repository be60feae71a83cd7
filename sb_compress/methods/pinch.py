"""Sparsity-aware self-pinching gates (one-pass pruning while fine-tuning).

Each targeted layer l gets one learnable threshold t_l = softplus(theta_l)
shared by all its weights. The layer computes with ``W * M`` where the soft
mask ``M = sigmoid((W**2 - t_l**2) / (2 tau_l))`` and
``tau_l = kappa * mean(W**2)``, kappa annealed geometrically from
``kappa_start`` to ``kappa_end`` so the gate hardens. The expected sparsity
``s = 1 - sum(M) / N`` over all targeted weights is held to a ramped target
``s*`` by ``lambda1 (s - s*) + lambda2 (s - s*)**2`` with the multipliers
trained by gradient ascent (``control="lagrangian"``), or by a fixed
``penalty * (s - s*)**2`` (``control="quadratic"``). At the end the mask is
``1[|W| > t_l]``.

Engineering choices (the paper gives only the idea), all settings: kappa's
geometric annealing over ``anneal_steps``; the initial threshold, by default
the quantile of ``|W|`` at the schedule's initial target (the target itself
when there is no ramp, as in the paper; 5% of the RMS weight when the target
starts at 0); a linear target ramp after ``warmup_steps``.

Authors
 * sb_compress team 2026
"""

import math

import torch
import torch.nn.functional as F

from .base import Modifier, check_sparsity, register


class PinchGate(torch.nn.Module):
    """Parametrization ``W -> W * sigmoid((W**2 - t**2) / (2 tau))``.

    Arguments
    ---------
    threshold : float
        Initial threshold t (> 0).
    kappa : float
        Initial temperature factor: ``tau = kappa * mean(W**2)``.

    Example
    -------
    >>> gate = PinchGate(threshold=0.5, kappa=0.01)
    >>> w = torch.tensor([[0.1, -0.2, 1.0, -2.0]])
    >>> gate.hard_mask(w)
    tensor([[False, False,  True,  True]])
    >>> bool((gate(w).abs() <= w.abs()).all())
    True
    """

    def __init__(self, threshold, kappa):
        super().__init__()
        theta = math.log(math.expm1(threshold))
        self.theta = torch.nn.Parameter(torch.tensor(float(theta)))
        self.register_buffer("kappa", torch.tensor(float(kappa)))
        self.hard = False
        self.last_mask_sum = None

    def threshold(self):
        """The current threshold t = softplus(theta)."""
        return F.softplus(self.theta)

    def forward(self, weight):
        """Returns the gated weight and caches the mask's sum."""
        t = self.threshold().to(weight.dtype)
        squared = weight * weight
        if self.hard:
            mask = (squared > t * t).to(weight.dtype)
        else:
            tau = self.kappa * squared.detach().mean().clamp_min(1e-12)
            mask = torch.sigmoid((squared - t * t) / (2 * tau))
        self.last_mask_sum = mask.sum()
        return weight * mask

    def soft_mask_sum(self, weight):
        """Sum of the soft mask of ``weight`` (differentiable in theta)."""
        t = self.threshold().to(weight.dtype)
        squared = weight * weight
        tau = self.kappa * squared.detach().mean().clamp_min(1e-12)
        return torch.sigmoid((squared - t * t) / (2 * tau)).sum()

    @torch.no_grad()
    def hard_mask(self, weight):
        """Keep-mask ``|W| > t`` of the un-gated weight."""
        t = self.threshold().to(weight.dtype)
        return weight * weight > t * t


class SelfPinchingGates(Modifier):
    """Self-pinching gates with Lagrangian sparsity control.

    Arguments
    ---------
    sparsity : float
        Target fraction of zero weights over the targeted layers, in [0, 1).
    targets, ignore, scope, start_step, end_step
        See :class:`~sb_compress.methods.base.Modifier`.
    warmup_steps : int
        Steps after ``start_step`` with a target of 0.
    ramp_steps : int
        Steps over which the target grows linearly to ``sparsity``.
    control : str
        ``lagrangian`` (multipliers by gradient ascent) or ``quadratic``.
    penalty : float
        Weight of ``(s - s*)**2`` with ``control="quadratic"``.
    lr : float
        Learning rate of the thresholds (Adam, no weight decay).
    multiplier_lr : float
        Learning rate of the Lagrange multipliers (Adam, ascent).
    kappa_start, kappa_end : float
        Temperature factor, annealed geometrically over ``anneal_steps``.
    anneal_steps : int or float
        Length of the annealing (steps, or fraction of the run).
    init_sparsity : float, optional
        Thresholds start at this quantile of ``|W|``; by default at the
        schedule's initial target (0 gives 5% of the RMS weight).

    Example
    -------
    >>> gates = SelfPinchingGates(sparsity=0.5, ramp_steps=10)
    >>> gates.target_sparsity(0), gates.target_sparsity(5)
    (0.0, 0.25)
    """

    method = "pinch"
    schedule_keys = (
        "start_step",
        "end_step",
        "warmup_steps",
        "ramp_steps",
        "anneal_steps",
    )

    def __init__(
        self,
        sparsity,
        targets=None,
        ignore=None,
        scope="all",
        start_step=0,
        end_step=None,
        warmup_steps=0,
        ramp_steps=0,
        control="lagrangian",
        penalty=10.0,
        lr=0.01,
        multiplier_lr=0.01,
        kappa_start=0.1,
        kappa_end=0.01,
        anneal_steps=1.0,
        init_sparsity=None,
    ):
        super().__init__(targets, ignore, scope, start_step, end_step)
        self.sparsity = sparsity
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps
        self.control = control
        self.penalty = penalty
        self.lr = lr
        self.multiplier_lr = multiplier_lr
        self.kappa_start = kappa_start
        self.kappa_end = kappa_end
        self.anneal_steps = anneal_steps
        self.init_sparsity = init_sparsity
        self.multipliers = torch.nn.Parameter(torch.zeros(2))
        self.gates = []
        self.register_buffer("last_sparsity", torch.zeros(()))

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            sparsity=self.sparsity,
            warmup_steps=self.warmup_steps,
            ramp_steps=self.ramp_steps,
            control=self.control,
            penalty=self.penalty,
            lr=self.lr,
            multiplier_lr=self.multiplier_lr,
            kappa_start=self.kappa_start,
            kappa_end=self.kappa_end,
            anneal_steps=self.anneal_steps,
            init_sparsity=self.init_sparsity,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        check_sparsity(self.sparsity, f"{where}.sparsity")
        if self.init_sparsity is not None:
            check_sparsity(self.init_sparsity, f"{where}.init_sparsity")
        if self.control not in ("lagrangian", "quadratic"):
            raise ValueError(
                f"{where}.control = {self.control!r}: must be lagrangian or "
                "quadratic"
            )
        for key in (
            "lr",
            "multiplier_lr",
            "kappa_start",
            "kappa_end",
            "penalty",
        ):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"{where}.{key} = {value!r}: must be a positive number"
                )

    def target_sparsity(self, step):
        """Target sparsity at optimizer step ``step`` (linear ramp)."""
        begin = self.start_step + self.warmup_steps
        if step < begin:
            return 0.0
        if self.ramp_steps == 0:
            return float(self.sparsity)
        progress = min(1.0, (step - begin) / self.ramp_steps)
        return float(self.sparsity) * progress

    def kappa(self, step):
        """Temperature factor at ``step`` (geometric from start to end)."""
        span = self.anneal_steps
        if span == 0:
            return float(self.kappa_end)
        progress = min(1.0, max(0, step - self.start_step) / span)
        return float(
            self.kappa_start * (self.kappa_end / self.kappa_start) ** progress
        )

    def prepare(self):
        """Registers one :class:`PinchGate` per targeted layer."""
        self.gates = []
        kappa = self.kappa(0)
        init = self.init_sparsity
        if init is None:
            init = self.target_sparsity(self.start_step)
        for spec in self.layers:
            weight = spec.module.weight.detach()
            if init > 0:
                magnitudes = weight.abs().flatten().float()
                k = max(1, int(init * magnitudes.numel()))
                threshold = magnitudes.kthvalue(k).values.item()
            else:
                threshold = 0.05 * weight.float().pow(2).mean().sqrt().item()
            gate = PinchGate(max(threshold, 1e-8), kappa).to(weight.device)
            register(spec.module, gate)
            self.gates.append(gate)
        self._forget_mask_sums()

    def optimizer_groups(self):
        """The thresholds, at their own learning rate, no weight decay."""
        return [
            {
                "params": [g.theta for g in self.gates],
                "lr": self.lr,
                "weight_decay": 0.0,
            }
        ]

    def multiplier_groups(self):
        """The two Lagrange multipliers (lagrangian control only)."""
        if self.control != "lagrangian":
            return []
        return [
            {
                "params": [self.multipliers],
                "lr": self.multiplier_lr,
                "weight_decay": 0.0,
            }
        ]

    def expected_sparsity(self):
        """Soft sparsity ``1 - sum(M) / N`` from the mask sums this step's
        forward cached. A gate the forward skipped (a layer dropped by
        LayerDrop) counts with its current mask but passes no gradient:
        under DDP a parameter may only receive gradients through the
        wrapped module's forward."""
        kept, total = 0.0, 0
        for spec, gate in zip(self.layers, self.gates):
            cached = gate.last_mask_sum
            if cached is not None and cached.requires_grad:
                kept = kept + cached
            else:
                with torch.no_grad():
                    weight = spec.module.parametrizations.weight.original
                    kept = kept + gate.soft_mask_sum(weight)
            total += spec.numel
        return 1.0 - kept / total

    def _forget_mask_sums(self):
        for gate in self.gates:
            gate.last_mask_sum = None

    def loss(self):
        """Sparsity regulariser of the current step (0 before start)."""
        step = int(self.step)
        if step < self.start_step or self._frozen(step):
            return None
        sparsity = self.expected_sparsity()
        gap = sparsity - self.target_sparsity(step)
        self.last_sparsity.fill_(float(sparsity.detach()))
        self._forget_mask_sums()
        if self.control == "lagrangian":
            lambda1, lambda2 = self.multipliers
            return lambda1 * gap + lambda2 * gap * gap
        return self.penalty * gap * gap

    def _frozen(self, step):
        return self.end_step is not None and step >= self.end_step

    def on_step(self, step):
        """Anneals kappa; freezes the thresholds after ``end_step``."""
        super().on_step(step)
        self._forget_mask_sums()
        kappa = self.kappa(step)
        frozen = self._frozen(step)
        for gate in self.gates:
            gate.kappa.fill_(kappa)
            gate.theta.requires_grad_(not frozen)
            if frozen:
                gate.hard = True

    def harden(self):
        """Evaluates with the hard masks ``|W| > t`` from now on."""
        for gate in self.gates:
            gate.hard = True

    def thresholds(self):
        """Current per-layer thresholds ``{layer name: t}``."""
        return {
            spec.name: gate.threshold().item()
            for spec, gate in zip(self.layers, self.gates)
        }

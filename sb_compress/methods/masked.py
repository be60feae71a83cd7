"""Mask-based training baselines: gradual magnitude pruning and k-means
clustering with a frozen mask.

``GradualMagnitude`` (Zhu & Gupta) prunes the smallest ``|W|`` of each layer
(or globally) following the cubic schedule
``s_t = s * (1 - (1 - p)**3)``, ``p`` the fraction of ``ramp_steps`` done,
refreshing the mask every ``update_every`` steps; pruned weights stay
pruned. ``ClusterPrune`` runs the data-free channel-wise k-means of
METHODS.md section 2 once, before training, and keeps that mask frozen while
the model fine-tunes (the data-free method's recovery step).

Authors
 * sb_compress team 2026
"""

import torch

from .base import KeepMask, Modifier, check_int, check_sparsity, register


def _masked_weights(layers):
    return {spec.name: spec.module.weight.detach() for spec in layers}


class GradualMagnitude(Modifier):
    """Gradual magnitude pruning with a cubic schedule.

    Arguments
    ---------
    sparsity : float
        Final fraction of zero weights, in [0, 1).
    targets, ignore, scope, start_step, end_step
        See :class:`~sb_compress.methods.base.Modifier`.
    ramp_steps : int
        Steps from ``start_step`` to the final sparsity.
    update_every : int
        Mask refresh period in optimizer steps.
    allocation : str
        ``uniform`` (every layer at the same sparsity) or ``mixed`` (one
        global magnitude threshold over all targeted layers).

    Example
    -------
    >>> pruner = GradualMagnitude(sparsity=0.5, ramp_steps=100)
    >>> [round(pruner.target_sparsity(s), 3) for s in (0, 50, 100, 200)]
    [0.0, 0.438, 0.5, 0.5]
    """

    method = "magnitude"
    schedule_keys = ("start_step", "end_step", "ramp_steps")

    def __init__(
        self,
        sparsity,
        targets=None,
        ignore=None,
        scope="all",
        start_step=0,
        end_step=None,
        ramp_steps=1000,
        update_every=10,
        allocation="uniform",
    ):
        super().__init__(targets, ignore, scope, start_step, end_step)
        self.sparsity = sparsity
        self.ramp_steps = ramp_steps
        self.update_every = update_every
        self.allocation = allocation
        self.masks = []

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            sparsity=self.sparsity,
            ramp_steps=self.ramp_steps,
            update_every=self.update_every,
            allocation=self.allocation,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        check_sparsity(self.sparsity, f"{where}.sparsity")
        check_int(self.update_every, f"{where}.update_every", minimum=1)
        if self.allocation not in ("uniform", "mixed"):
            raise ValueError(
                f"{where}.allocation = {self.allocation!r}: must be uniform "
                "or mixed"
            )

    def target_sparsity(self, step):
        """Cubic schedule from 0 at ``start_step`` to ``sparsity``."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return float(self.sparsity)
        progress = min(1.0, (step - self.start_step) / self.ramp_steps)
        return float(self.sparsity) * (1.0 - (1.0 - progress) ** 3)

    def prepare(self):
        """Registers an all-ones :class:`KeepMask` on every targeted layer."""
        self.masks = []
        for spec in self.layers:
            mask = KeepMask(torch.ones_like(spec.module.weight, dtype=bool))
            register(spec.module, mask)
            self.masks.append(mask)

    @torch.no_grad()
    def on_step(self, step):
        """Refreshes the masks every ``update_every`` steps."""
        super().on_step(step)
        if step < self.start_step or (step - self.start_step) % (
            self.update_every
        ):
            return
        if self.end_step is not None and step > self.end_step:
            return
        self.refresh(self.target_sparsity(step))

    @torch.no_grad()
    def refresh(self, sparsity):
        """Recomputes the masks at ``sparsity`` from the masked weights."""
        from .magnitude import magnitude_masks

        scope = "global" if self.allocation == "mixed" else "layer"
        keep = magnitude_masks(_masked_weights(self.layers), sparsity, scope)
        for spec, mask in zip(self.layers, self.masks):
            mask.mask.copy_(keep[spec.name])


class ClusterPrune(Modifier):
    """Data-free k-means pruning once at fit start, mask frozen after.

    Arguments
    ---------
    sparsity : float
        Fraction of zero weights over the targeted layers, in [0, 1).
    targets, ignore, scope
        See :class:`~sb_compress.methods.base.Modifier`.
    allocation : str
        ``mixed`` (layer-level mixed sparsity, the default) or ``uniform``.
    """

    method = "kmeans"

    def __init__(
        self,
        sparsity,
        targets=None,
        ignore=None,
        scope="all",
        allocation="mixed",
    ):
        super().__init__(targets, ignore, scope)
        self.sparsity = sparsity
        self.allocation = allocation
        self.masks = []
        self.clusters = {}

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(sparsity=self.sparsity, allocation=self.allocation)
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        check_sparsity(self.sparsity, f"{where}.sparsity")
        if self.allocation not in ("uniform", "mixed"):
            raise ValueError(
                f"{where}.allocation = {self.allocation!r}: must be uniform "
                "or mixed"
            )

    @torch.no_grad()
    def prepare(self):
        """Clusters every targeted layer and registers the frozen masks."""
        from .kmeans import cluster_masks

        keep, _, info = cluster_masks(
            _masked_weights(self.layers),
            self.sparsity,
            allocation=self.allocation,
            progress=True,
        )
        self.clusters = {name: info[name].get("clusters") for name in info}
        self.masks = []
        for spec in self.layers:
            mask = KeepMask(keep[spec.name])
            register(spec.module, mask)
            self.masks.append(mask)

    def layer_records(self):
        """Per-layer records, with the number of clusters."""
        records = super().layer_records()
        for record in records:
            record["clusters"] = self.clusters.get(record["name"])
        return records

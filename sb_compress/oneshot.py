"""One-shot, data-free compression: no data, no training, weights in place.

``compress_oneshot`` prunes the transformer Linears of a model with
magnitude pruning or k-means parameter clustering (METHODS.md §1-2) and
returns one record per layer. It is what ``sb-compress oneshot`` runs.

Authors
 * sb_compress team 2026
"""

import torch
from tqdm import tqdm

from .methods.kmeans import (
    ALLOCATIONS,
    LayerPlan,
    apply_plan,
    balance_plans,
    plan_clusters,
)
from .methods.kmeans import (
    merge_channels as merge_ffn_channels,
)
from .methods.magnitude import check_sparsity, magnitude_masks
from .models import adapter_for, select_linears

METHODS = ("magnitude", "kmeans")


def _check_settings(
    method, allocation, sparsity, share_centroids, merge_channels
):
    if method not in METHODS:
        raise ValueError(
            f"method = {method!r}: must be one of {', '.join(METHODS)}"
        )
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"allocation = {allocation!r}: must be one of "
            f"{', '.join(ALLOCATIONS)}"
        )
    check_sparsity(sparsity)
    if method == "magnitude" and (share_centroids or merge_channels):
        setting = "share_centroids" if share_centroids else "merge_channels"
        raise ValueError(
            f"{setting} = True needs method = 'kmeans'; drop it or switch "
            "the method"
        )


def _record(spec, sparsity, clusters, error):
    out_features, in_features = spec.module.weight.shape
    return {
        "name": spec.name,
        "role": spec.role,
        "stack": spec.stack,
        "layer": spec.layer,
        "shape": [int(out_features), int(in_features)],
        "sparsity": float(sparsity),
        "clusters": clusters,
        "error": float(error),
    }


def _relative_error(original, new):
    energy = float(original.double().pow(2).sum())
    if energy == 0:
        return 0.0
    return float((original - new).double().pow(2).sum()) / energy


def _magnitude(specs, sparsity, allocation, progress):
    weights = {s.name: s.module.weight for s in specs}
    if allocation == "mixed":
        masks = magnitude_masks(weights, sparsity, scope="global")
    records = []
    for spec in tqdm(specs, desc="magnitude", disable=not progress):
        weight = spec.module.weight
        if allocation == "mixed":
            keep = masks.pop(spec.name)
        else:
            keep = magnitude_masks({spec.name: weight}, sparsity)[spec.name]
        original = weight.detach().float()
        error = _relative_error(original, original * keep)
        weight.masked_fill_(~keep, 0.0)
        pruned = float((~keep).sum()) / keep.numel()
        records.append(_record(spec, pruned, None, error))
    return records


def _ffn_pairs(specs):
    inputs = {(s.stack, s.layer): s for s in specs if s.role == "ffn_in"}
    return [
        (inputs[(s.stack, s.layer)], s)
        for s in specs
        if s.role == "ffn_out" and (s.stack, s.layer) in inputs
    ]


def _merge(pairs, plans, records):
    merged_zeros = 0
    for first, second in pairs:
        size_in = first.module.weight.numel()
        size_out = second.module.weight.numel()
        share = (plans[first.name].pruned + plans[second.name].pruned) / (
            size_in + size_out
        )
        hidden = first.module.weight.shape[0]
        w_in, b_in, w_out = (
            first.module.weight,
            first.module.bias,
            second.module.weight,
        )
        new_in, new_bias, new_out, kept = merge_ffn_channels(
            w_in, b_in, w_out, round(share * hidden)
        )
        for spec, weight, new in (
            (first, w_in, new_in),
            (second, w_out, new_out),
        ):
            dropped = float((~kept).sum()) / hidden
            error = _relative_error(weight.detach().float(), new)
            records[spec.name] = _record(spec, dropped, None, error)
            weight.copy_(new.to(weight.dtype))
        if b_in is not None:
            b_in.copy_(new_bias.to(b_in.dtype))
        merged_zeros += int((~kept).sum()) * (
            first.module.weight.shape[1] + second.module.weight.shape[0]
        )
    return merged_zeros


def _kmeans(
    specs, sparsity, allocation, share_centroids, merge_channels, progress
):
    weights = {s.name: s.module.weight for s in specs}
    plans = plan_clusters(
        weights, sparsity, allocation, share_centroids, progress
    )
    records = {}
    pairs = _ffn_pairs(specs) if merge_channels else []
    if pairs:
        merged_zeros = _merge(pairs, plans, records)
        rest = {n: p for n, p in plans.items() if n not in records}
        sizes = {n: weights[n].numel() for n in rest}
        total = sum(w.numel() for w in weights.values())
        balance_plans(rest, sizes, round(sparsity * total) - merged_zeros)
    for spec in tqdm(specs, desc="k-means apply", disable=not progress):
        if spec.name in records:
            continue
        plan = plans.get(spec.name, LayerPlan())
        keep, new, error = apply_plan(
            spec.module.weight, plan, row_balance=True
        )
        spec.module.weight.copy_(new.to(spec.module.weight.dtype))
        pruned = float((~keep).sum()) / keep.numel()
        clusters = plan.cluster.k if plan.cluster else None
        records[spec.name] = _record(spec, pruned, clusters, error)
    return [records[s.name] for s in specs]


def compress_oneshot(
    model,
    method,
    sparsity,
    allocation="uniform",
    scope="all",
    targets=None,
    ignore=None,
    share_centroids=False,
    merge_channels=False,
    progress=True,
):
    """Prunes a model's transformer Linears in place, with no data.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper around one.
    method : str
        ``"magnitude"`` or ``"kmeans"``.
    sparsity : float
        Fraction of the targeted weights to prune, in [0, 1); met exactly
        over the targeted layers (per layer too for magnitude uniform).
    allocation : str
        How the sparsity is spread over layers. For ``magnitude``:
        ``"uniform"`` prunes each layer by the same fraction, ``"mixed"``
        uses one global threshold over all targeted layers. For
        ``kmeans``: ``"uniform"`` uses one K for every layer, ``"mixed"``
        chooses K per layer to minimise the summed data-free error.
    scope : str
        ``"encoder"``, ``"decoder"`` or ``"all"``.
    targets, ignore : list of str, optional
        Roles (``q``, ``ffn``, ``attention``...) or ``re:<regex>`` over
        layer names; see :func:`sb_compress.models.select_linears`.
    share_centroids : bool
        k-means only: snap kept weights to their centroid.
    merge_channels : bool
        k-means only: merge FFN hidden units (``ffn_in`` rows and
        ``ffn_out`` columns) instead of pruning those two layers weight by
        weight; merged units become zero.
    progress : bool
        Show tqdm bars.

    Returns
    -------
    list of dict
        One record per targeted layer: ``name``, ``role``, ``stack``,
        ``layer``, ``shape`` ([out, in]), ``sparsity``, ``clusters`` (K,
        or None), ``error`` (``||W - W_hat||^2 / ||W||^2``).

    Raises
    ------
    ValueError
        On an unknown method, allocation or scope, or a sparsity outside
        [0, 1); nothing is modified.
    sb_compress.models.TargetError
        When ``targets`` match no layer.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> records = compress_oneshot(HubertModel(config), "kmeans", 0.3,
    ...     allocation="mixed", progress=False)
    >>> len(records), sorted(records[0])[:3]
    (12, ['clusters', 'error', 'layer'])
    """
    _check_settings(
        method, allocation, sparsity, share_centroids, merge_channels
    )
    sparsity = float(sparsity)
    specs = select_linears(adapter_for(model).linears(scope), targets, ignore)
    with torch.no_grad():
        if method == "magnitude":
            return _magnitude(specs, sparsity, allocation, progress)
        return _kmeans(
            specs,
            sparsity,
            allocation,
            share_centroids,
            merge_channels,
            progress,
        )

"""Magnitude pruning: zero the weights with the smallest absolute value.

The baseline every other method is reported against (METHODS.md §1).
Three scopes over a dict ``name -> 2-D weight``:

- ``layer``: each layer loses exactly ``round(s * n)`` weights;
- ``row``: the same count per layer, spread evenly over its rows;
- ``global``: one threshold over all layers, exactly ``round(s * N)``
  weights in total.

Ties at the threshold are broken by position (the lower flat index, and for
``global`` the earlier layer, is pruned first), so the masks are
deterministic and the counts exact.

Authors
 * sb_compress team 2026
"""

import torch

from .base import check_sparsity

SCOPES = ("layer", "row", "global")


def smallest_k_mask(scores, k):
    """Marks exactly the ``k`` smallest entries, ties by flat index.

    Arguments
    ---------
    scores : torch.Tensor
        Any shape; compared as float32.
    k : int
        How many entries to mark.

    Returns
    -------
    torch.Tensor
        Bool tensor of the shape of ``scores``, ``True`` on the ``k``
        smallest.

    Example
    -------
    >>> smallest_k_mask(torch.tensor([3.0, 1.0, 2.0, 1.0]), 2).tolist()
    [False, True, False, True]
    """
    flat = scores.reshape(-1).float()
    k = int(k)
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).view(scores.shape)
    if k >= flat.numel():
        return torch.ones_like(flat, dtype=torch.bool).view(scores.shape)
    threshold = torch.kthvalue(flat, k).values
    mask = flat < threshold
    missing = k - int(mask.sum())
    ties = flat == threshold
    mask |= ties & (torch.cumsum(ties, 0) <= missing)
    return mask.view(scores.shape)


def _float_bits(values):
    """Non-negative float32 values as int32 keys with the same order."""
    return values.float().contiguous().view(torch.int32)


def _kth_smallest_bits(tensors, k):
    """Bit pattern of the k-th smallest value over non-negative tensors."""
    low, high = 0, 0x7F800000
    while low < high:
        middle = (low + high) // 2
        count = sum(int((_float_bits(t) <= middle).sum()) for t in tensors)
        if count >= k:
            high = middle
        else:
            low = middle + 1
    return low


def _global_masks(scores, k):
    if k <= 0:
        return {
            n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()
        }
    bits = _kth_smallest_bits(list(scores.values()), k)
    masks = {n: _float_bits(s) < bits for n, s in scores.items()}
    missing = k - sum(int(m.sum()) for m in masks.values())
    for name, score in scores.items():
        if missing <= 0:
            break
        ties = (_float_bits(score) == bits).reshape(-1)
        take = ties & (torch.cumsum(ties, 0) <= missing)
        masks[name] |= take.view(score.shape)
        missing -= int(take.sum())
    return masks


def _row_mask(score, k):
    rows, cols = score.shape
    per_row = torch.full((rows,), k // rows, dtype=torch.long)
    per_row[: k % rows] += 1
    order = torch.sort(score.float(), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cols).expand(rows, cols))
    return ranks < per_row[:, None]


def magnitude_masks(weights, sparsity, scope="layer"):
    """Keep-masks of magnitude pruning.

    Arguments
    ---------
    weights : dict
        ``name -> 2-D tensor`` (out x in); not modified.
    sparsity : float
        Fraction of weights to prune, in [0, 1).
    scope : str
        ``"layer"`` (exactly ``round(s * n)`` per layer), ``"row"`` (the
        same per-layer count, spread evenly over the rows) or ``"global"``
        (one threshold, exactly ``round(s * N)`` over all layers).

    Returns
    -------
    dict
        ``name -> bool tensor``, ``True`` where the weight is kept.

    Example
    -------
    >>> w = {"a": torch.tensor([[0.1, -2.0], [0.3, 4.0]])}
    >>> magnitude_masks(w, 0.5)["a"].tolist()
    [[False, True], [False, True]]
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(
            f"scope = {scope!r}: must be one of {', '.join(SCOPES)}"
        )
    scores = {n: w.detach().abs().float() for n, w in weights.items()}
    for name, score in scores.items():
        if score.dim() != 2:
            raise ValueError(
                f"weights[{name!r}] has shape {tuple(score.shape)}: "
                "magnitude pruning expects 2-D (out x in) weights"
            )
    if scope == "global":
        total = sum(s.numel() for s in scores.values())
        pruned = _global_masks(scores, round(sparsity * total))
    elif scope == "row":
        pruned = {
            n: _row_mask(s, round(sparsity * s.numel()))
            for n, s in scores.items()
        }
    else:
        pruned = {
            n: smallest_k_mask(s, round(sparsity * s.numel()))
            for n, s in scores.items()
        }
    return {n: ~m for n, m in pruned.items()}

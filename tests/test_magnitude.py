"""Magnitude pruning masks: exact counts, ties, scopes."""

import pytest
import torch

from sb_compress.methods.magnitude import magnitude_masks


def _weights(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(16, 40, generator=generator),
        "b": 3 * torch.randn(8, 20, generator=generator),
    }


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_layer_scope_prunes_exactly_round_s_n_per_layer(sparsity):
    weights = _weights()
    masks = magnitude_masks(weights, sparsity, scope="layer")
    for name, weight in weights.items():
        assert int((~masks[name]).sum()) == round(sparsity * weight.numel())


def test_layer_scope_prunes_the_smallest_magnitudes():
    weight = torch.tensor([[0.5, -0.1, 3.0, -2.0], [0.2, 1.0, -0.3, 4.0]])
    keep = magnitude_masks({"w": weight}, 0.5)["w"]
    assert keep.tolist() == [
        [False, False, True, True],
        [False, True, False, True],
    ]


def test_global_scope_prunes_exactly_round_s_total():
    weights = _weights()
    masks = magnitude_masks(weights, 0.3, scope="global")
    total = sum(w.numel() for w in weights.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.3 * total)


def test_global_scope_uses_one_threshold_over_layers():
    weights = _weights()
    masks = magnitude_masks(weights, 0.3, scope="global")
    pruned = torch.cat([weights[n][~masks[n]].abs() for n in weights])
    kept = torch.cat([weights[n][masks[n]].abs() for n in weights])
    assert pruned.max() <= kept.min()
    assert (~masks["a"]).float().mean() > (~masks["b"]).float().mean()


def test_row_scope_spreads_the_layer_count_evenly_over_rows():
    weights = _weights()
    masks = magnitude_masks(weights, 0.25, scope="row")
    per_row = (~masks["a"]).sum(dim=1)
    assert int(per_row.sum()) == round(0.25 * 16 * 40)
    assert per_row.max() - per_row.min() <= 1


def test_ties_are_broken_by_position_deterministically():
    weight = torch.ones(4, 5)
    for scope in ("layer", "row", "global"):
        first = magnitude_masks({"w": weight}, 0.4, scope=scope)["w"]
        second = magnitude_masks({"w": weight.clone()}, 0.4, scope=scope)
        assert torch.equal(first, second["w"])
        assert int((~first).sum()) == 8
    keep = magnitude_masks({"w": weight}, 0.4)["w"].reshape(-1)
    assert keep[:8].logical_not().all() and keep[8:].all()


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, "a lot"])
def test_sparsity_outside_unit_interval_raises(sparsity):
    with pytest.raises(ValueError, match=r"sparsity .* \[0, 1\)"):
        magnitude_masks(_weights(), sparsity)


def test_unknown_scope_raises_naming_the_choices():
    with pytest.raises(ValueError, match="layer, row, global"):
        magnitude_masks(_weights(), 0.2, scope="block")

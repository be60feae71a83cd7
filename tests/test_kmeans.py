"""Row-wise k-means clustering: clusters, allocation, exact counts."""

import pytest
import torch

from sb_compress.methods.kmeans import (
    cluster_masks,
    kmeans_rows,
    merge_channels,
)


def _planted_rows(rows=6, per_cluster=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([-1.0, 0.0, 0.7, 2.0])
    labels = torch.arange(4).repeat_interleave(per_cluster)
    noise = 0.02 * torch.randn(rows, labels.numel(), generator=generator)
    weight = centres[labels] + noise
    order = torch.stack(
        [
            torch.randperm(labels.numel(), generator=generator)
            for _ in range(rows)
        ]
    )
    return weight.gather(1, order), labels[order], centres


def _layers(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "wide": torch.randn(24, 96, generator=generator),
        "heavy": torch.randn(32, 64, generator=generator)
        / torch.rand(32, 64, generator=generator).add(0.05),
        "small": 0.1 * torch.randn(16, 48, generator=generator),
    }


def _total_error(weights, new_weights, weighting="relative"):
    total = 0.0
    for name, weight in weights.items():
        error = float((weight - new_weights[name]).pow(2).sum())
        scale = weight.numel() if weighting == "size" else 1.0
        total += scale * error / float(weight.pow(2).sum())
    return total


def test_kmeans_rows_finds_planted_clusters():
    weight, labels, centres = _planted_rows()
    found, assigned = kmeans_rows(weight, 4)
    assert torch.equal(assigned, labels)
    assert torch.allclose(found.float(), centres.expand(6, 4), atol=0.01)


def test_kmeans_prunes_the_planted_zero_cluster():
    weight, labels, _ = _planted_rows()
    keep, new, info = cluster_masks({"w": weight}, 0.25)
    assert torch.equal(~keep["w"], labels == 1)
    assert info["w"]["clusters"] == 5 or info["w"]["sparsity"] == 0.25


@pytest.mark.parametrize("allocation", ["uniform", "mixed"])
@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5])
def test_cluster_masks_meet_the_global_target_exactly(allocation, sparsity):
    weights = _layers()
    keep, new, info = cluster_masks(weights, sparsity, allocation)
    total = sum(w.numel() for w in weights.values())
    pruned = sum(int((~m).sum()) for m in keep.values())
    assert pruned == round(sparsity * total)
    for name in weights:
        assert torch.equal(
            new[name][~keep[name]], torch.zeros(int((~keep[name]).sum()))
        )
        assert torch.equal(new[name][keep[name]], weights[name][keep[name]])


def test_cluster_masks_are_deterministic():
    weights = _layers()
    first = cluster_masks(weights, 0.4, "mixed")
    second = cluster_masks(
        {n: w.clone() for n, w in weights.items()}, 0.4, "mixed"
    )
    for name in weights:
        assert torch.equal(first[0][name], second[0][name])
        assert torch.equal(first[1][name], second[1][name])
    assert first[2] == second[2]


@pytest.mark.parametrize("weighting", ["relative", "size"])
def test_kmeans_mixed_beats_uniform_reconstruction_error(weighting):
    weights = _layers()
    for sparsity in (0.1, 0.2):
        _, uniform, _ = cluster_masks(weights, sparsity, "uniform")
        _, mixed, _ = cluster_masks(
            weights, sparsity, "mixed", weighting=weighting
        )
        assert _total_error(weights, mixed, weighting) < _total_error(
            weights, uniform, weighting
        )


def test_mixed_allocation_gives_layers_different_cluster_counts():
    _, _, info = cluster_masks(_layers(), 0.3, "mixed")
    assert len({i["clusters"] for i in info.values()}) > 1


def test_shared_centroids_leave_a_codebook_of_k_values_per_row():
    weights = _layers()
    _, new, info = cluster_masks(weights, 0.3, "uniform", share_centroids=True)
    for name, weight in new.items():
        k = info[name]["clusters"]
        for row in weight:
            assert row.unique().numel() <= k


def test_zero_sparsity_changes_nothing():
    weights = _layers()
    keep, new, info = cluster_masks(weights, 0.0, "mixed")
    for name, weight in weights.items():
        assert keep[name].all() and torch.equal(new[name], weight)
        assert info[name]["clusters"] is None


def test_merge_channels_keeps_outputs_close_on_duplicate_rows():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=generator)
    weight_in = torch.cat([base, base[:3] + 1e-4])
    bias_in = torch.cat([torch.zeros(6), torch.zeros(3)])
    weight_out = torch.randn(5, 9, generator=generator)
    new_in, new_bias, new_out, kept = merge_channels(
        weight_in, bias_in, weight_out, 3
    )
    assert int(kept.sum()) == 6
    assert (new_in[~kept] == 0).all() and (new_out[:, ~kept] == 0).all()
    x = torch.randn(10, 8, generator=generator)
    dense = torch.nn.functional.gelu(x @ weight_in.T + bias_in) @ weight_out.T
    merged = torch.nn.functional.gelu(x @ new_in.T + new_bias) @ new_out.T
    assert torch.allclose(dense, merged, atol=1e-3)


def test_bad_allocation_raises_naming_the_choices():
    with pytest.raises(ValueError, match="allocation = 'best'.*uniform"):
        cluster_masks(_layers(), 0.3, "best")


def test_non_matrix_weight_raises_naming_the_layer():
    with pytest.raises(ValueError, match="weights\\['v'\\]"):
        cluster_masks({"v": torch.randn(10)}, 0.3)


def test_balanced_rows_prune_the_same_count_in_every_row_of_a_layer():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 64, generator=generator)
    weight[3, :4] = 40.0
    keep, _, info = cluster_masks({"w": weight}, 0.3)
    per_row = (~keep["w"]).sum(dim=1)
    assert int(per_row.max() - per_row.min()) <= 1
    assert info["w"]["sparsity"] == pytest.approx(0.3, abs=1 / 1024)
    unbalanced, _, _ = cluster_masks({"w": weight}, 0.3, row_balance=False)
    spread = (~unbalanced["w"]).sum(dim=1)
    assert int(spread.max() - spread.min()) > 1

"""N:M masks: exact counts per group, refresh schedule, SR-STE, the order
prune-then-quantize, and validation when the plan loads."""

import pytest
import torch
from transformers import Wav2Vec2Model

from sb_compress import Plan
from sb_compress.methods.nm import NMMask, nm_mask
from sb_compress.methods.quant import fake_quantize


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_every_group_keeps_exactly_n_of_the_largest(n, m):
    torch.manual_seed(0)
    weight = torch.randn(16, 64)
    mask = nm_mask(weight, n, m)
    groups = mask.reshape(16, -1, m)
    assert bool((groups.sum(-1) == n).all())
    magnitude = weight.abs().reshape(16, -1, m)
    smallest_kept = magnitude.masked_fill(~groups, float("inf")).amin(-1)
    largest_pruned = magnitude.masked_fill(groups, -1.0).amax(-1)
    assert bool((smallest_kept >= largest_pruned).all())


def test_ties_keep_the_lower_index():
    mask = nm_mask(torch.ones(1, 8), 2, 4)
    assert mask.int().tolist() == [[1, 1, 0, 0, 1, 1, 0, 0]]


def _model(tiny_sources):
    return Wav2Vec2Model.from_pretrained(tiny_sources["wav2vec2"]).eval()


def _masks(plan):
    return [mask.mask.clone() for mask in plan.modifiers[0].masks]


def test_masks_are_stable_between_refreshes_and_follow_the_weights(
    tiny_sources,
):
    model = _model(tiny_sources)
    plan = Plan(model, [{"method": "nm", "n": 2, "m": 4, "update_every": 3}])
    plan.prepare()
    first = _masks(plan)
    with torch.no_grad():
        for spec in plan.modifiers[0].layers:
            original = spec.module.parametrizations.weight.original
            original.copy_(torch.randn_like(original))
    plan.on_step(1)
    plan.on_step(2)
    assert all(torch.equal(a, b) for a, b in zip(first, _masks(plan)))
    plan.on_step(3)
    refreshed = _masks(plan)
    assert not any(torch.equal(a, b) for a, b in zip(first, refreshed))
    for spec, mask in zip(plan.modifiers[0].layers, refreshed):
        original = spec.module.parametrizations.weight.original
        assert torch.equal(mask, nm_mask(original, 2, 4))


def test_masks_freeze_after_end_step(tiny_sources):
    model = _model(tiny_sources)
    plan = Plan(model, [{"method": "nm", "update_every": 1, "end_step": 2}])
    plan.prepare()
    plan.on_step(2)
    frozen = _masks(plan)
    with torch.no_grad():
        for spec in plan.modifiers[0].layers:
            original = spec.module.parametrizations.weight.original
            original.copy_(torch.randn_like(original))
    plan.on_step(3)
    assert all(torch.equal(a, b) for a, b in zip(frozen, _masks(plan)))


def test_pruned_weights_get_no_gradient_without_sr_ste():
    mask = NMMask(2, 4, (1, 4))
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5]], requires_grad=True)
    mask.refresh(weight)
    mask(weight).sum().backward()
    assert weight.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_sr_ste_passes_the_dense_gradient_plus_decay_on_pruned_weights():
    mask = NMMask(2, 4, (1, 4), sr_ste_decay=0.5)
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5]], requires_grad=True)
    mask.refresh(weight)
    out = mask(weight)
    assert out.tolist() == [[0.0, -3.0, 2.0, 0.0]]
    out.sum().backward()
    assert weight.grad[0].tolist() == pytest.approx([1.05, 1.0, 1.0, 1.25])


def test_nm_then_quant_prunes_first_and_quantizes_the_pruned_weight(
    tiny_sources,
):
    model = _model(tiny_sources)
    plan = Plan(
        model,
        [
            {"method": "nm", "n": 2, "m": 4, "targets": ["ffn"]},
            {"method": "quant", "bits": 4, "group_size": 32},
        ],
    )
    plan.prepare()
    layer = model.encoder.layers[1].feed_forward.output_dense
    original = layer.parametrizations.weight.original.detach()
    pruned = torch.where(nm_mask(original, 2, 4), original, 0.0)
    assert torch.equal(layer.weight, fake_quantize(pruned, 4, 32))
    records = {r["name"]: r for r in plan.layer_records()}
    assert records["encoder.layers.1.feed_forward.output_dense"]["method"] == (
        "nm+quant"
    )
    assert records["encoder.layers.1.attention.q_proj"]["method"] == "quant"


def test_quant_listed_before_nm_on_the_same_layer_is_rejected(tiny_sources):
    with pytest.raises(ValueError, match="list the nm modifier first"):
        Plan(
            _model(tiny_sources),
            [{"method": "quant"}, {"method": "nm", "targets": ["q"]}],
        )


def test_other_overlaps_are_still_rejected(tiny_sources):
    with pytest.raises(ValueError, match="already targeted by modifiers"):
        Plan(
            _model(tiny_sources),
            [{"method": "nm"}, {"method": "magnitude", "sparsity": 0.5}],
        )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"n": 5, "m": 4}, "modifiers[0].n = 5: must be <= m = 4"),
        ({"n": 2, "m": 6}, "modifiers[0].m = 6: must be one of 2, 4, 8, 16"),
        ({"n": 0, "m": 4}, "modifiers[0].n = 0: must be >= 1"),
        ({"n": 2, "m": 4, "update_every": 0}, "update_every = 0: must be"),
        ({"n": 2, "m": 4, "sr_ste_decay": -1.0}, "sr_ste_decay = -1.0"),
    ],
)
def test_bad_nm_settings_fail_when_the_plan_loads(
    tiny_sources, settings, message
):
    with pytest.raises(ValueError) as error:
        Plan(_model(tiny_sources), [dict(method="nm", **settings)])
    assert message in str(error.value)


def test_m_not_dividing_in_features_names_the_layer():
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config(
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=36,
        conv_dim=(8,),
        conv_stride=(5,),
        conv_kernel=(10,),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    with pytest.raises(ValueError) as error:
        Plan(Wav2Vec2Model(config), [{"method": "nm", "n": 4, "m": 16}])
    assert str(error.value).startswith(
        "compression.modifiers[0].m = 16 does not divide in_features = 24 "
        "of encoder.layers.0.attention.q_proj"
    )

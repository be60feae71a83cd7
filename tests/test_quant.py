"""Weight fake-quantization: the grid, the STE, the modifier and its
validation when the YAML loads."""

import os

import pytest
import torch
from transformers import Wav2Vec2Model

from sb_compress import Plan
from sb_compress.methods import QuantizeWeights
from sb_compress.methods.quant import (
    absmax_scales,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group_size", [None, 16])
def test_fake_quantized_values_lie_on_the_grid_of_their_scale(bits, group_size):
    torch.manual_seed(0)
    weight = torch.randn(8, 64)
    scale = absmax_scales(weight, bits, group_size)
    codes = quantize(weight, scale, bits, group_size)
    low, high = qrange(bits)
    assert torch.equal(codes, codes.round())
    assert codes.min() >= low and codes.max() <= high
    assert torch.equal(scale, scale.half().float())
    quantized = fake_quantize(weight, bits, group_size)
    grouped = quantized.reshape(8, -1, group_size or 64)
    assert torch.equal(grouped / scale[..., None], codes.reshape(grouped.shape))


def test_int2_is_ternary_and_int8_error_is_below_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(16, 32)
    ternary = quantize(weight, absmax_scales(weight, 2), 2)
    assert set(ternary.unique().tolist()) == {-1.0, 0.0, 1.0}
    scale = absmax_scales(weight, 8)
    error = (fake_quantize(weight, 8) - weight).abs()
    assert bool((error <= scale / 2 * 1.001).all())


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_quantize_dequantize_round_trip_is_a_fixed_point(bits):
    torch.manual_seed(1)
    weight = torch.randn(4, 32)
    once = fake_quantize(weight, bits, 8)
    scale = absmax_scales(weight, bits, 8)
    codes = quantize(once, scale, bits, 8)
    assert torch.equal(dequantize(codes, scale, 8), once)
    assert torch.equal(fake_quantize(once, bits, 8), once)


def test_zeros_are_positive_zero_so_stored_codes_reload_bit_exact():
    weight = torch.tensor([[-0.01, 1.0, -1.0, 0.0]])
    quantized = fake_quantize(weight, 2)
    assert quantized[0, 0].item() == 0.0
    assert not torch.signbit(quantized[0, 0])


def test_ste_gradient_is_identity_inside_the_range():
    weight = torch.randn(4, 16, requires_grad=True)
    fake_quantize(weight, 4, 8).sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))


def test_learnt_scales_get_the_lsq_gradient():
    from sb_compress.methods.quant import FakeQuantize

    quantizer = FakeQuantize(4, None, (1, 4), learn_scales=True)
    weight = torch.tensor([[0.7, -0.3, 0.1, 0.2]])
    out = quantizer(weight)
    out.sum().backward()
    scale = quantizer.scale.detach()
    codes = quantize(weight, scale.half().float(), 4)
    expected = (codes - weight / scale.half().float()).sum()
    assert quantizer.scale.grad.item() == pytest.approx(expected.item(), 1e-3)


def _model(tiny_sources):
    return Wav2Vec2Model.from_pretrained(tiny_sources["wav2vec2"]).eval()


def test_quant_modifier_quantizes_every_target_from_start_step(tiny_sources):
    model = _model(tiny_sources)
    plan = Plan(model, [{"method": "quant", "bits": 4, "start_step": 5}])
    plan.prepare()
    layer = model.encoder.layers[0].feed_forward.intermediate_dense
    original = layer.parametrizations.weight.original
    assert torch.equal(layer.weight, original)
    plan.on_step(5)
    expected = fake_quantize(original.detach(), 4)
    assert torch.equal(layer.weight, expected)
    assert len(plan.modifiers[0].layers) == 12


def test_learnt_scales_are_in_the_compression_optimizer_groups(tiny_sources):
    model = _model(tiny_sources)
    plan = Plan(
        model,
        [
            {
                "method": "quant",
                "bits": 4,
                "group_size": 32,
                "learn_scales": True,
                "scale_lr": 0.01,
            }
        ],
    )
    plan.prepare()
    groups = plan.optimizer_groups()
    assert len(groups) == 1 and groups[0]["lr"] == 0.01
    assert tuple(groups[0]["params"][0].shape) == (64, 2)
    assert len(plan.own_parameters()) == 12


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"bits": 5},
            "modifiers[0].bits = 5: unsupported; choose 8, 4, 3 or 2",
        ),
        (
            {"bits": 4, "group_size": 48},
            "modifiers[0].group_size = 48 does "
            "not divide in_features = 64 of encoder.layers.0.attention.q_proj; "
            "choose a divisor",
        ),
        (
            {"bits": 4, "group_size": 0},
            "modifiers[0].group_size = 0: must be >= 1",
        ),
        ({"bits": 4, "learn_scales": "yes"}, "modifiers[0].learn_scales"),
        ({"bits": 4, "end_step": 10}, "unexpected keyword argument 'end_step'"),
    ],
)
def test_bad_quant_settings_fail_when_the_plan_loads(
    tiny_sources, settings, message
):
    with pytest.raises(ValueError) as error:
        Plan(_model(tiny_sources), [dict(method="quant", **settings)])
    assert message in str(error.value)


def test_quant_modifier_is_a_yaml_object_too(tiny_sources, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    text = f"""
wav2vec2: !new:speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
    source: {tiny_sources["wav2vec2"]}
    save_path: {tmp_path / "hub"}
compression: !new:sb_compress.Plan
    model: !ref <wav2vec2>
    modifiers:
        - !new:sb_compress.methods.QuantizeWeights
          bits: 3
          group_size: 3
"""
    with pytest.raises(ValueError, match="group_size = 3 does not divide"):
        load_hyperpyyaml(text)
    assert QuantizeWeights(bits=8).settings()["bits"] == 8


def test_include_able_quant_block_builds_int4_with_2_4(tiny_sources, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    hparams = os.path.join(os.path.dirname(__file__), os.pardir, "hparams")
    text = f"""
wav2vec2: !new:speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
    source: {tiny_sources["wav2vec2"]}
    save_path: {tmp_path / "hub"}
compression: !new:sb_compress.Plan
    model: !ref <wav2vec2>
    modifiers: !include:{hparams}/quant.yaml
        group_size: 32
"""
    plan = load_hyperpyyaml(text)["compression"]
    nm, quant = plan.settings()
    assert (nm["method"], nm["n"], nm["m"]) == ("nm", 2, 4)
    assert (quant["method"], quant["bits"], quant["group_size"]) == (
        "quant",
        4,
        32,
    )

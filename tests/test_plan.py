"""The compression: block of a hparams file, validated when the YAML loads."""

import os
import textwrap

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from sb_compress import Plan
from sb_compress.methods import GradualMagnitude, PinchGate, SelfPinchingGates
from sb_compress.models import TargetError

HPARAMS = os.path.join(os.path.dirname(__file__), os.pardir, "hparams")


def _yaml(source, modifiers, save_path):
    return textwrap.dedent(
        f"""
        wav2vec2: !new:speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
            source: {source}
            save_path: {save_path}
        compression: !new:sb_compress.Plan
            model: !ref <wav2vec2>
            modifiers:
        """
    ) + textwrap.indent(textwrap.dedent(modifiers), " " * 8)


def _load(tiny_sources, tmp_path, modifiers):
    text = _yaml(tiny_sources["wav2vec2"], modifiers, tmp_path / "hub")
    return load_hyperpyyaml(text)


@pytest.mark.parametrize(
    "modifiers, message",
    [
        (
            "- method: prune_everything\n  sparsity: 0.5\n",
            "compression.modifiers[0].method = 'prune_everything': unknown "
            "method; choose one of ",
        ),
        (
            "- method: pinch\n  sparsity: 1.2\n",
            "compression.modifiers[0].sparsity = 1.2: must be a fraction "
            "in [0, 1)",
        ),
        (
            "- method: pinch\n  sparsity: -0.1\n",
            "compression.modifiers[0].sparsity = -0.1: must be a fraction "
            "in [0, 1)",
        ),
        (
            "- method: magnitude\n  sparsity: 0.5\n- method: pinch\n"
            "  sparsity: 0.5\n  targets: ['re:decoder']\n",
            "compression.modifiers[1].targets[0] = 're:decoder' matches no "
            "layer",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n  targets: [mlp]\n",
            "compression.modifiers[0].targets[0]: 'mlp' is neither a role",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n  ramp_steps: -5\n",
            "compression.modifiers[0].ramp_steps = -5: must be a step count",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n  start_step: 100\n"
            "  end_step: 50\n",
            "compression.modifiers[0].end_step = 50: must be greater than "
            "start_step = 100",
        ),
        (
            "- method: magnitude\n  sparsity: 0.5\n  update_every: 0\n",
            "compression.modifiers[0].update_every = 0: must be >= 1",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n  control: pid\n",
            "compression.modifiers[0].control = 'pid': must be lagrangian or "
            "quadratic",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n  spasity: 0.5\n",
            "compression.modifiers[0]: SelfPinchingGates.__init__() got an "
            "unexpected keyword argument 'spasity'",
        ),
        (
            "- method: pinch\n  sparsity: 0.5\n- method: magnitude\n"
            "  sparsity: 0.3\n  targets: [ffn]\n",
            "compression.modifiers[1] targets "
            "'encoder.layers.0.feed_forward.intermediate_dense', already "
            "targeted by modifiers[0]",
        ),
    ],
)
def test_bad_compression_block_fails_when_the_yaml_loads(
    tiny_sources, tmp_path, modifiers, message
):
    with pytest.raises(ValueError) as error:
        _load(tiny_sources, tmp_path, modifiers)
    assert message in str(error.value)


def test_target_matching_nothing_is_a_target_error(tiny_sources, tmp_path):
    with pytest.raises(TargetError):
        _load(
            tiny_sources,
            tmp_path,
            "- method: pinch\n  sparsity: 0.5\n  targets: ['re:nothing']\n",
        )


def test_plan_binds_roles_and_ignores_by_regex(tiny_sources, tmp_path):
    hparams = _load(
        tiny_sources,
        tmp_path,
        """
        - method: pinch
          sparsity: 0.5
          targets: [attention]
          ignore: ['re:layers\\.0\\.']
        - !new:sb_compress.methods.GradualMagnitude
          sparsity: 0.3
          targets: [ffn_in]
        """,
    )
    plan = hparams["compression"]
    gates, magnitude = plan.modifiers
    assert isinstance(gates, SelfPinchingGates)
    assert isinstance(magnitude, GradualMagnitude)
    assert [s.name for s in gates.layers] == [
        f"encoder.layers.1.attention.{p}_proj" for p in ("q", "k", "v", "out")
    ]
    assert [s.role for s in magnitude.layers] == ["ffn_in", "ffn_in"]


@pytest.mark.parametrize("block", ["pinch", "magnitude", "cluster"])
def test_include_able_blocks_build_a_plan(tiny_sources, tmp_path, block):
    text = _yaml(tiny_sources["wav2vec2"], "", tmp_path / "hub").replace(
        "    modifiers:\n",
        f"    modifiers: !include:{HPARAMS}/{block}.yaml\n"
        "        sparsity: 0.3\n",
    )
    plan = load_hyperpyyaml(text)["compression"]
    assert isinstance(plan, Plan)
    assert plan.settings()[0]["sparsity"] == 0.3
    assert plan.modifiers[0].layers


def test_plan_binds_the_same_model_object_the_recipe_trains(
    tiny_sources, tmp_path
):
    hparams = _load(
        tiny_sources, tmp_path, "- method: pinch\n  sparsity: 0.5\n"
    )
    assert hparams["compression"].model is hparams["wav2vec2"]
    assert not list(hparams["compression"].parameters())[1:]


def test_pinch_gate_is_soft_then_hard_and_pinches_small_weights():
    gate = PinchGate(threshold=1.0, kappa=0.1)
    weight = torch.tensor([[0.5, 0.9, 1.1, 2.0]])
    soft = gate(weight) / weight
    assert torch.all((soft > 0) & (soft < 1))
    assert soft[0, 0] < soft[0, 1] < 0.5 < soft[0, 2] < soft[0, 3]
    gate.hard = True
    assert torch.equal(gate(weight), torch.tensor([[0.0, 0.0, 1.1, 2.0]]))


def test_pinch_gate_gradient_raises_threshold_to_cut_weights():
    gate = PinchGate(threshold=1.0, kappa=0.1)
    weight = torch.tensor([[0.5, 0.9, 1.1, 2.0]])
    gate(weight)
    gate.last_mask_sum.backward()
    assert gate.theta.grad < 0


def test_gates_schedule_ramps_target_and_anneals_temperature():
    gates = SelfPinchingGates(
        sparsity=0.6, warmup_steps=10, ramp_steps=20, anneal_steps=0.5
    )
    gates.resolve_schedule(100)
    assert gates.anneal_steps == 50
    assert gates.target_sparsity(5) == 0.0
    assert gates.target_sparsity(20) == pytest.approx(0.3)
    assert gates.target_sparsity(40) == pytest.approx(0.6)
    assert gates.kappa(0) == pytest.approx(0.1)
    assert gates.kappa(25) == pytest.approx(0.1 * 0.1**0.5)
    assert gates.kappa(500) == pytest.approx(0.01)


def test_schedule_fraction_must_be_resolved_before_use():
    gates = SelfPinchingGates(sparsity=0.5, ramp_steps=0.5)
    with pytest.raises(RuntimeError, match="resolve_schedule"):
        gates.check_schedule_resolved()
    gates.resolve_schedule(10)
    gates.check_schedule_resolved()
    assert gates.ramp_steps == 5


def test_gradual_magnitude_follows_the_cubic_schedule(tiny_sources, tmp_path):
    plan = _load(
        tiny_sources,
        tmp_path,
        "- method: magnitude\n  sparsity: 0.8\n  ramp_steps: 4\n"
        "  update_every: 1\n",
    )["compression"]
    plan.prepare()
    plan.resolve_schedule(4)
    seen = []
    for step in range(1, 6):
        plan.on_step(step)
        masks = plan.modifiers[0].keep_masks()
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        seen.append(1 - kept / total)
    expected = [0.8 * (1 - (1 - p) ** 3) for p in (0.25, 0.5, 0.75, 1, 1)]
    assert seen == pytest.approx(expected, abs=1e-3)


def test_finalized_model_holds_the_hard_masked_weights(tiny_sources, tmp_path):
    hparams = _load(
        tiny_sources,
        tmp_path,
        "- method: pinch\n  sparsity: 0.5\n  targets: [attention, ffn]\n",
    )
    wrapper, plan = hparams["wav2vec2"], hparams["compression"]
    plan.prepare()
    plan.harden()
    final = plan.finalized_model()
    targeted = tuple(plan.targeted_names())
    assert not any(
        k.startswith(targeted) and "parametrizations" in k
        for k in final.state_dict()
    )
    wrapper.eval()
    audio = torch.randn(2, 8000)
    with torch.no_grad():
        masked = wrapper(audio)
        wrapper.model, live = final, wrapper.model
        baked = wrapper(audio)
        wrapper.model = live
    torch.testing.assert_close(baked, masked, atol=1e-5, rtol=1e-5)
    zeros = sum(
        int((final.get_submodule(n).weight == 0).sum())
        for n in plan.targeted_names()
    )
    total = sum(
        final.get_submodule(n).weight.numel() for n in plan.targeted_names()
    )
    assert zeros / total == pytest.approx(0.5, abs=0.01)

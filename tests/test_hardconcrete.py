"""HardConcrete structured pruning: gates, expected size, control, resume."""

import math

import pytest
import torch
from tiny_brain import run_two_ranks

from sb_compress import Plan
from sb_compress.export.save import load_source
from sb_compress.export.shrink import count_params, shrink
from sb_compress.methods.hardconcrete import (
    BETA,
    LEFT,
    RIGHT,
    HardConcrete,
    HardConcretePruning,
)


def _gated(source, seed=0, **settings):
    model = load_source(source)
    settings.setdefault("sparsity", 0.5)
    plan = Plan(model, [{"method": "hardconcrete", **settings}])
    plan.prepare()
    modifier = plan.modifiers[0]
    torch.manual_seed(seed)
    with torch.no_grad():
        for gate in modifier.all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
    return model, plan, modifier


def test_hardconcrete_gate_init_sample_and_eval_mask():
    torch.manual_seed(0)
    gate = HardConcrete(1000, init_prob=0.01)
    mean = math.log(0.99 / 0.01)
    assert abs(gate.log_alpha.mean().item() - mean) < 0.01
    assert abs(gate.log_alpha.std().item() - 0.01) < 0.002
    sample = gate.train()()
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    sample.sum().backward()
    assert gate.log_alpha.grad is not None
    expected = torch.sigmoid(gate.log_alpha - BETA * math.log(-LEFT / RIGHT))
    assert torch.allclose(gate.l0(), expected)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-8, 8, 1000))
    mask = gate.eval()()
    k = round(gate.l0().sum().item())
    assert int(mask.sum()) == k
    assert mask[-k:].all() and not mask[:-k].any()


def test_expected_params_equal_shrunk_model_params(family_source):
    _, source = family_source
    model, _, modifier = _gated(source)
    if model.config.model_type == "whisper":
        model.model.decoder = None
    shrunk = shrink(model, modifier.structure())
    dense = count_params(model) - sum(
        g.log_alpha.numel() for g in modifier.all_gates()
    )
    predicted = (
        dense
        - modifier.dense_params()
        + modifier.expected_params(deterministic=True)
    )
    assert count_params(shrunk) == int(round(float(predicted)))
    assert count_params(shrunk) < dense


def test_gates_get_gradients_and_multipliers_ascend(tiny_sources):
    model, plan, modifier = _gated(tiny_sources["wav2vec2"], ramp_steps=4)
    model.config.layerdrop = 0.0  # every gate is used
    model.train()
    plan.on_step(2)
    out = model(torch.randn(2, 4000)).last_hidden_state
    loss = out.pow(2).mean() + plan.loss()
    loss.backward()
    grads = [g.log_alpha.grad for g in modifier.all_gates()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert modifier.multipliers.grad is not None
    optimizer = torch.optim.Adam([modifier.multipliers], lr=0.1, maximize=True)
    gap = float(modifier.last_sparsity) - modifier.target_sparsity(2)
    optimizer.step()
    assert math.copysign(1, modifier.multipliers[0].item()) == math.copysign(
        1, gap
    )


def test_target_ramps_linearly_after_warmup():
    modifier = HardConcretePruning(sparsity=0.6, warmup_steps=2, ramp_steps=4)
    targets = [modifier.target_sparsity(s) for s in range(8)]
    assert targets == pytest.approx([0, 0, 0, 0.15, 0.3, 0.45, 0.6, 0.6])


def test_skipped_layer_gates_pass_no_gradient(tiny_sources):
    model, plan, modifier = _gated(tiny_sources["wavlm"])
    model.config.layerdrop = 1.0  # WavLM always runs layer 0, skips 1
    model.train()
    plan.on_step(1)
    model(torch.randn(1, 4000)).last_hidden_state.sum().backward()
    plan.loss().backward()
    for (kind, index), gates in modifier.block_gates.items():
        for gate in gates.gates().values():
            if index == 1:
                assert gate.log_alpha.grad is None
            else:
                assert gate.log_alpha.grad is not None


def test_log_alpha_and_multipliers_resume_exactly(tiny_sources):
    model, plan, modifier = _gated(tiny_sources["hubert"], seed=1)
    with torch.no_grad():
        modifier.multipliers.copy_(torch.tensor([0.3, -1.7]))
    plan.on_step(5)
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    plan_state = {k: v.clone() for k, v in plan.state_dict().items()}
    fresh, fresh_plan, fresh_modifier = _gated(tiny_sources["hubert"], seed=2)
    assert fresh_modifier.structure() != modifier.structure()
    fresh.load_state_dict(model_state)
    fresh_plan.load_state_dict(plan_state)
    assert torch.equal(fresh_modifier.multipliers, modifier.multipliers)
    assert int(fresh_plan.step) == 5
    for a, b in zip(fresh_modifier.all_gates(), modifier.all_gates()):
        assert torch.equal(a.log_alpha, b.log_alpha)
    assert fresh_modifier.structure() == modifier.structure()


def test_hardconcrete_validation_names_the_key(tiny_sources):
    model = load_source(tiny_sources["wav2vec2"])
    with pytest.raises(ValueError, match=r"modifiers\[0\]\.structures"):
        Plan(
            model,
            [
                {
                    "method": "hardconcrete",
                    "sparsity": 0.5,
                    "structures": ["rows"],
                }
            ],
        )
    with pytest.raises(ValueError, match=r"modifiers\[0\]\.scope"):
        Plan(
            model, [{"method": "hardconcrete", "sparsity": 0.5, "scope": "all"}]
        )
    with pytest.raises(ValueError, match="without the rest of its block"):
        Plan(
            model,
            [{"method": "hardconcrete", "sparsity": 0.5, "targets": ["q"]}],
        )


def test_harden_makes_dense_export_match_gated_model(tiny_sources):
    model, plan, modifier = _gated(tiny_sources["wav2vec2"])
    with torch.no_grad():
        modifier.block_gates[("ffn", 1)].block.log_alpha.fill_(-10.0)
    plan.harden()
    model.eval()
    wav = torch.randn(1, 4000)
    with torch.no_grad():
        expected = model(wav).last_hidden_state
        dense = plan.finalized_model()(wav).last_hidden_state
    assert torch.allclose(dense, expected, atol=1e-4)


def test_two_process_gloo_run_keeps_gates_identical_across_ranks(
    tiny_sources, tmp_path
):
    ranks = run_two_ranks(
        "hardconcrete_ddp.py", tiny_sources["wav2vec2"], tmp_path
    )
    assert ranks[0]["step"] == 4
    assert ranks[0].keys() == ranks[1].keys()
    for key, value in ranks[0].items():
        if torch.is_tensor(value):
            assert torch.equal(value, ranks[1][key]), key
        else:
            assert value == ranks[1][key], key
    initial = math.log(0.99 / 0.01)
    moved = [
        (value - initial).abs().max()
        for key, value in ranks[0].items()
        if key.startswith("log_alpha.")
    ]
    assert max(moved) > 0.5
    assert not torch.equal(ranks[0]["multipliers"], torch.zeros(2))

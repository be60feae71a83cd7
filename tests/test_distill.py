"""Layer-to-layer distillation from a frozen copy of the unpruned model."""

import torch

from sb_compress import Plan
from sb_compress.export.save import load_source


def _plan(source, **distill):
    model = load_source(source)
    plan = Plan(
        model,
        [
            {"method": "hardconcrete", "sparsity": 0.5},
            {"method": "distill", "layers": [1, 2], **distill},
        ],
    )
    plan.prepare()
    return model, plan


def test_distillation_is_zero_before_pruning_and_teacher_stays_dense(
    tiny_sources,
):
    model, plan = _plan(tiny_sources["wav2vec2"])
    hardconcrete, distill = plan.modifiers
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 4000))
        assert float(distill.distillation_loss()) < 1e-5
        for gate in hardconcrete.all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
        model(torch.randn(1, 4000))
        assert float(distill.distillation_loss()) > 1e-3
    teacher = distill._refs["teacher"]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any("log_alpha" in k for k in teacher.state_dict())


def test_distillation_trains_gates_and_projections_with_ctc_like_loss(
    tiny_sources,
):
    model, plan = _plan(tiny_sources["hubert"], weight=2.0)
    hardconcrete, distill = plan.modifiers
    model.config.layerdrop = 0.0
    model.train()
    plan.on_step(1)
    out = model(torch.randn(2, 4000)).last_hidden_state
    loss = out.pow(2).mean() + plan.loss()
    loss.backward()
    assert all(p.grad is not None for p in distill.projections.parameters())
    assert any(
        g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
        for g in hardconcrete.all_gates()
    )
    groups = plan.optimizer_groups()
    owned = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in owned for p in distill.projections.parameters())


def test_projections_resume_from_the_plan_state(tiny_sources):
    _, plan = _plan(tiny_sources["wavlm"])
    with torch.no_grad():
        for p in plan.modifiers[1].projections.parameters():
            p.normal_()
    state = {k: v.clone() for k, v in plan.state_dict().items()}
    _, fresh = _plan(tiny_sources["wavlm"])
    fresh.load_state_dict(state)
    for a, b in zip(
        fresh.modifiers[1].projections.parameters(),
        plan.modifiers[1].projections.parameters(),
    ):
        assert torch.equal(a, b)


def test_teacher_of_an_already_gated_model_has_the_unmasked_weights(
    tiny_sources,
):
    model = load_source(tiny_sources["wavlm"])
    audio = torch.randn(1, 4000)
    with torch.no_grad():
        dense = model(audio).last_hidden_state
    gated = Plan(model, [{"method": "hardconcrete", "sparsity": 0.5}])
    gated.prepare()
    with torch.no_grad():
        for gate in gated.modifiers[0].all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
    distill = Plan(model, [{"method": "distill"}]).modifiers[0]
    teacher = distill._refs["teacher"]
    with torch.no_grad():
        assert torch.allclose(teacher(audio).last_hidden_state, dense)
        assert not torch.allclose(model(audio).last_hidden_state, dense)

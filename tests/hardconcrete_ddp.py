"""``torchrun --standalone --nproc_per_node=2 tests/hardconcrete_ddp.py
SOURCE OUT``: trains the tiny brain with HardConcrete gates and layer
distillation under DDP (gloo, CPU); each rank saves its gates' log_alpha,
multipliers, projections and structure to ``OUT/rank<r>.pt``."""

import os
import sys

import torch
from tiny_brain import build, join_gloo_group, waveforms

STRUCTURED = [
    {"method": "hardconcrete", "sparsity": 0.5, "ramp_steps": 2, "lr": 0.5},
    {"method": "distill", "layers": [1, 2]},
]


def learnt_state(brain):
    """Gates, multipliers, projections, structure and step of the plan."""
    hardconcrete, distill = brain.compression.modifiers
    state = {"step": int(brain.compression.step)}
    for i, gate in enumerate(hardconcrete.all_gates()):
        state[f"log_alpha.{i}"] = gate.log_alpha.detach().clone()
    state["multipliers"] = hardconcrete.multipliers.detach().clone()
    for name, value in distill.projections.state_dict().items():
        state[f"projection.{name}"] = value.clone()
    state["structure"] = repr(hardconcrete.structure())
    return state


if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    run_opts, rank = join_gloo_group()
    brain, counter = build(source, out, STRUCTURED, run_opts=run_opts)
    brain.fit(counter, waveforms(), train_loader_kwargs={"batch_size": 2})
    torch.save(learnt_state(brain), os.path.join(out, f"rank{rank}.pt"))

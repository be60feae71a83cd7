"""A minimal CompressionBrain over a tiny wav2vec2, for lifecycle tests.

Also a script: ``torchrun --standalone --nproc_per_node=2 tests/tiny_brain.py
SOURCE OUT`` trains it under DDP (gloo, CPU) and each rank saves what the
compression learnt to ``OUT/rank<r>.pt``.
"""

import os
import subprocess
import sys

import speechbrain as sb
import torch
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from sb_compress import CompressionBrain, Plan


class Interrupted(Exception):
    """Stands for a killed run (raised right after a checkpoint)."""


class TinyBrain(CompressionBrain):
    """Regresses the encoder's mean feature onto a fixed target."""

    def compute_forward(self, batch, stage):
        wavs = batch.to(self.device)
        return self.modules.head(self.modules.wav2vec2(wavs)).mean(dim=1)

    def compute_objectives(self, predictions, batch, stage):
        return (predictions - 1.0).pow(2).mean()

    def init_optimizers(self):
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=1e-3)
        self.optimizers_dict = {"model": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN and self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(num_to_keep=1)
            if epoch == getattr(self.hparams, "stop_after_epoch", None):
                raise Interrupted(f"stopped after epoch {epoch}")


def waveforms(n=8, samples=4000, seed=0):
    """``n`` random waveforms (a fixed list, so every run sees the same)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(samples, generator=generator) for _ in range(n)]


def build(
    source,
    folder,
    modifiers,
    run_opts=None,
    epochs=2,
    stop_after_epoch=None,
    head_outputs=1,
    cls=TinyBrain,
):
    """A TinyBrain (or ``cls``) with a checkpointer in ``folder``; returns
    (brain, epoch counter)."""
    torch.manual_seed(0)
    wav2vec2 = Wav2Vec2(source, save_path=os.path.join(folder, "hub"))
    head = torch.nn.Linear(wav2vec2.model.config.hidden_size, head_outputs)
    counter = EpochCounter(epochs)
    plan = Plan(wav2vec2, modifiers)
    modules = {"wav2vec2": wav2vec2, "head": head}
    checkpointer = Checkpointer(
        os.path.join(folder, "save"),
        recoverables={**modules, "counter": counter},
    )
    run_opts = {"device": "cpu", **(run_opts or {})}
    brain = cls(
        modules=modules,
        hparams={
            "compression": plan,
            "output_folder": folder,
            "stop_after_epoch": stop_after_epoch,
        },
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    return brain, counter


def join_gloo_group():
    """In a process torchrun started: joins its gloo (CPU) group; returns
    the ``run_opts`` of a DDP brain and this process's rank.
    ``find_unused_parameters``: wav2vec2's ``masked_spec_embed`` gets no
    gradient."""
    run_opts = {
        "distributed_launch": True,
        "distributed_backend": "gloo",
        "find_unused_parameters": True,
    }
    sb.utils.distributed.ddp_init_group(run_opts)
    return run_opts, int(os.environ["RANK"])


def run_two_ranks(script, source, out):
    """Runs ``torchrun --standalone --nproc_per_node=2 SCRIPT SOURCE OUT``
    (``script`` in this folder) and returns what each rank saved to
    ``OUT/rank<r>.pt``; fails with the end of its stderr."""
    here = os.path.dirname(os.path.abspath(__file__))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        os.path.join(here, script),
        source,
        str(out),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(os.path.join(out, f"rank{r}.pt")) for r in (0, 1)]


def learnt_state(brain):
    """What the compression learnt: thresholds, masks, multipliers, step."""
    plan = brain.compression
    state = {"step": int(plan.step)}
    for i, modifier in enumerate(plan.modifiers):
        for name, mask in modifier.keep_masks().items():
            state[f"{i}.{name}.mask"] = mask.clone()
        if hasattr(modifier, "thresholds"):
            for name, value in modifier.thresholds().items():
                state[f"{i}.{name}.threshold"] = value
            state[f"{i}.multipliers"] = modifier.multipliers.detach().clone()
    return state


PINCH = [
    {
        "method": "pinch",
        "sparsity": 0.5,
        "targets": ["attention", "ffn"],
        "lr": 0.05,
        "multiplier_lr": 0.05,
    }
]


if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    run_opts, rank = join_gloo_group()
    brain, counter = build(source, out, PINCH, run_opts=run_opts)
    brain.fit(counter, waveforms(), train_loader_kwargs={"batch_size": 2})
    torch.save(learnt_state(brain), os.path.join(out, f"rank{rank}.pt"))

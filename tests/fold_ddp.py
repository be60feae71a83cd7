"""``torchrun --standalone --nproc_per_node=2 tests/fold_ddp.py SOURCE OUT``:
trains the tiny brain folded (1 block unfolded to 3 layers, the three
depths jointly) under DDP (gloo, CPU); each rank saves the stored block's
weights, the step and the keys of the last compression log to
``OUT/rank<r>.pt``."""

import os
import sys

import torch
from speechbrain.nnet.losses import ctc_loss
from tiny_brain import TinyBrain, build, join_gloo_group, waveforms

from sb_compress.methods.fold import physical_state

FOLD = [{"method": "fold", "physical": 1, "max_depth": 3}]


class TinyFoldCTC(TinyBrain):
    """CTC over frame-level posteriors, which the fold's KL term needs."""

    def compute_forward(self, batch, stage):
        wavs = batch.to(self.device)
        log_probs = self.modules.head(self.modules.wav2vec2(wavs))
        return log_probs.log_softmax(-1), torch.ones(wavs.shape[0])

    def compute_objectives(self, predictions, batch, stage):
        log_probs, lengths = predictions
        targets = torch.tensor([[1, 2, 3, 2]] * log_probs.shape[0])
        return ctc_loss(log_probs, targets, lengths, lengths, blank_index=0)

    def compression_stats(self):
        stats = super().compression_stats()
        self.logged = sorted(stats)
        return stats


if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    run_opts, rank = join_gloo_group()
    brain, counter = build(
        source, out, FOLD, run_opts=run_opts, head_outputs=6, cls=TinyFoldCTC
    )
    brain.compression.root_model.config.layerdrop = 0.0
    brain.fit(counter, waveforms(), train_loader_kwargs={"batch_size": 2})
    model = brain.compression.root_model
    state = {
        name: value.detach().clone()
        for name, value in physical_state(model).items()
    }
    state["step"] = int(brain.compression.step)
    state["layers"] = len(model.encoder.layers)
    state["stats"] = brain.logged
    torch.save(state, os.path.join(out, f"rank{rank}.pt"))

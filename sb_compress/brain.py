"""CompressionBrain: compression inside SpeechBrain's own training loop.

A recipe gains compression by swapping its base class
(``class ASR(sb_compress.CompressionBrain)``) and adding a ``compression:``
block (:class:`sb_compress.Plan`) to its hparams. Nothing else changes: the
brain hooks the plan into the recipe's own methods.

Lifecycle (DESIGN.md):

* ``__init__``: the plan inserts its parametrizations before any checkpoint
  is recovered, and registers itself (multipliers, step) and the RNG state
  as recoverables, so an interrupted run resumes exactly;
* ``init_optimizers``: after the recipe's own, gate parameters are removed
  from every recipe optimizer and given their own (Adam, no weight decay),
  Lagrange multipliers another (Adam, gradient ascent); both recoverable;
* ``compute_objectives``: in TRAIN the plan's regulariser is added, and
  a fold modifier's smaller depths: the recipe's forward and objectives
  run again on the same batch at the seed depth and at a drawn depth,
  with the random state of the batch's start (same augmentation and
  dropout draws), plus the KL term from the largest depth's posteriors
  (:meth:`CompressionBrain.fold_posteriors`);
* ``on_fit_batch_end``: the plan's schedules advance on every optimizer
  step;
* ``on_stage_end``: sparsity, parameters and bytes go to ``train_log.txt``
  every epoch; the TEST WER is kept for the report;
* end of ``fit`` / ``evaluate``: hard masks, then the compressed model and
  its report are written to ``<output_folder>/compressed/``.

Authors
 * sb_compress team 2026
"""

import math
import os
import random
import time

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataloader import LoopedLoader
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from speechbrain.utils.logger import get_logger
from torch.utils.data import DataLoader

from sb_compress.plan import Plan

logger = get_logger(__name__)


@register_checkpoint_hooks
class RandomState:
    """Checkpointable state of Python's, NumPy's and torch's generators, so
    a resumed run draws the same dropout and sampling as an uninterrupted
    one."""

    @mark_as_saver
    def save(self, path):
        """Saves every generator's state to ``path``."""
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restores every generator's state from ``path``."""
        del end_of_epoch
        state = torch.load(path, weights_only=False)
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class CompressionBrain(sb.Brain):
    """A ``speechbrain.Brain`` that compresses a model while it trains.

    Arguments
    ---------
    modules, opt_class, hparams, run_opts, checkpointer
        As ``speechbrain.Brain``.
    compression : sb_compress.Plan, optional
        The plan; by default ``hparams["compression"]``.

    Example
    -------
    >>> class ASR(CompressionBrain):  # doctest: +SKIP
    ...     def compute_forward(self, batch, stage): ...
    ...     def compute_objectives(self, predictions, batch, stage): ...
    """

    def __init__(
        self,
        modules=None,
        opt_class=None,
        hparams=None,
        run_opts=None,
        checkpointer=None,
        compression=None,
    ):
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        if isinstance(self.optimizer_step_limit, str):
            # speechbrain's argument parser leaves --optimizer_step_limit a str
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        if compression is None:
            compression = getattr(self.hparams, "compression", None)
        if isinstance(compression, dict) and "plan" in compression:
            compression = compression["plan"]
        if not isinstance(compression, Plan):
            raise ValueError(
                "CompressionBrain needs a `compression: !new:sb_compress.Plan`"
                " block in the hparams (or compression=Plan(...)); got "
                f"{type(compression).__name__}"
            )
        self.compression = compression
        self.compression.prepare()
        self.compression.to(self.device)
        self.compression_results = {}
        self.compression_started = time.time()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("compression", self.compression)
            self.checkpointer.add_recoverable("random_state", RandomState())
        self._hook_recipe_methods()

    def _hook_recipe_methods(self):
        """Wraps the recipe's own methods (whatever class defines them)."""
        recipe_objectives = self.compute_objectives
        recipe_batch_start = self.on_fit_batch_start
        recipe_init_optimizers = self.init_optimizers
        recipe_batch_end = self.on_fit_batch_end
        recipe_stage_end = self.on_stage_end

        def compute_objectives(predictions, batch, stage):
            loss = recipe_objectives(predictions, batch, stage)
            if stage == sb.Stage.TRAIN:
                regulariser = self.compression.loss()
                if regulariser is not None:
                    loss = loss + regulariser
                loss = self._other_depths(
                    loss, predictions, batch, recipe_objectives
                )
            return loss

        def on_fit_batch_start(batch, should_step):
            recipe_batch_start(batch, should_step)
            self._batch_rng = _rng_state()

        def init_optimizers():
            recipe_init_optimizers()
            self._init_compression_optimizers()

        def on_fit_batch_end(batch, outputs, loss, should_step):
            recipe_batch_end(batch, outputs, loss, should_step)
            if should_step:
                self.compression.on_step()

        def on_stage_end(stage, stage_loss, epoch=None):
            recipe_stage_end(stage, stage_loss, epoch)
            self._compression_stage_end(stage, epoch)

        self.compute_objectives = compute_objectives
        self.on_fit_batch_start = on_fit_batch_start
        self.init_optimizers = init_optimizers
        self.on_fit_batch_end = on_fit_batch_end
        self.on_stage_end = on_stage_end

    def fold_posteriors(self, predictions):
        """The frame-level scores (and relative lengths) the KL term of a
        fold modifier compares, from ``compute_forward``'s output. By
        default its first tensor ``(batch, frames, labels)`` and, when
        next, the relative lengths (SpeechBrain's CTC recipes); override
        for other outputs.

        Returns
        -------
        tuple
            ``(scores, lengths or None)``.
        """
        from sb_compress.methods.fold import posteriors_of

        return posteriors_of(predictions)

    def _other_depths(self, loss, predictions, batch, objectives):
        """Adds a fold modifier's smaller depths to the training loss."""
        folds = [m for m in self.compression.modifiers if m.method == "fold"]
        if not folds:
            return loss
        after = _rng_state()

        def run(depth):
            if getattr(self, "_batch_rng", None) is not None:
                _set_rng_state(self._batch_rng)
            with folds[0].depth(depth):
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                task = objectives(outputs, batch, sb.Stage.TRAIN)
            return task, self.fold_posteriors(outputs)

        extra = folds[0].joint_loss(self.fold_posteriors(predictions), run)
        _set_rng_state(after)
        return loss if extra is None else loss + extra

    def _recipe_optimizers(self):
        if self.optimizers_dict is None and getattr(self, "optimizer", None):
            self.optimizers_dict = {"opt_class": self.optimizer}
        return dict(self.optimizers_dict or {})

    def _init_compression_optimizers(self):
        own = {id(p) for p in self.compression.own_parameters()}
        for name, optimizer in self._recipe_optimizers().items():
            removed = 0
            for group in optimizer.param_groups:
                kept = [p for p in group["params"] if id(p) not in own]
                removed += len(group["params"]) - len(kept)
                group["params"] = kept
            if removed:
                logger.info(
                    f"sb_compress: kept {removed} compression parameters out "
                    f"of the recipe optimizer {name!r}"
                )
        if self.optimizers_dict is None:
            self.optimizers_dict = {}
        gate_groups = self.compression.optimizer_groups()
        if gate_groups:
            self.compression_optimizer = torch.optim.Adam(gate_groups)
            self._add_optimizer("compression_gates", self.compression_optimizer)
        multiplier_groups = self.compression.multiplier_groups()
        if multiplier_groups:
            self.multiplier_optimizer = torch.optim.Adam(
                multiplier_groups, maximize=True
            )
            self._add_optimizer(
                "compression_multipliers", self.multiplier_optimizer
            )

    def _add_optimizer(self, name, optimizer):
        self.optimizers_dict[name] = optimizer
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(name, optimizer)

    def on_fit_start(self):
        """As ``Brain.on_fit_start``, then re-derives the schedules'
        state (temperatures, frozen gates) from the recovered step."""
        super().on_fit_start()
        self.compression.on_step(int(self.compression.step))

    def compression_stats(self):
        """Achieved sparsity, parameter counts and bytes of the model as it
        would be exported now (hard masks). A folded model has no sparsity:
        its stored (physical) parameters and its parameters unfolded to the
        largest depth are given instead."""
        from sb_compress.methods.fold import parameter_counts
        from sb_compress.report import count_parameters

        model = self.compression.root_model
        if any(m.method == "fold" for m in self.compression.modifiers):
            counts = parameter_counts(model)
            stats = {
                "params_stored": counts["physical"],
                "params_unfolded": counts["logical"][max(counts["logical"])],
            }
        else:
            masks = {}
            for modifier in self.compression.modifiers:
                masks.update(modifier.keep_masks())
            counts = count_parameters(model, masks)
            stats = {
                "achieved_sparsity": counts["achieved_sparsity"],
                "params_total": counts["params_total"],
                "params_nonzero": counts["params_nonzero"],
                "bytes": counts["bytes_dense"],
            }
        for i, modifier in enumerate(self.compression.modifiers):
            if hasattr(modifier, "target_sparsity"):
                step = int(self.compression.step)
                stats[f"target_{i}"] = modifier.target_sparsity(step)
            if hasattr(modifier, "pop_stats"):
                stats.update(modifier.pop_stats())
        return stats

    def _compression_stage_end(self, stage, epoch):
        if stage == sb.Stage.TRAIN:
            stats = self.compression_stats()
            stats = {k: _rounded(v) for k, v in stats.items()}
            train_logger = getattr(self.hparams, "train_logger", None)
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={
                        "epoch": epoch,
                        "step": int(self.compression.step),
                    },
                    train_stats={
                        f"compression {k}": v for k, v in stats.items()
                    },
                )
            else:
                logger.info(f"sb_compress epoch {epoch}: {stats}")
        elif stage == sb.Stage.TEST:
            name = self._test_set_name()
            for metric in ("wer", "cer"):
                stats = getattr(self, f"{metric}_metric", None)
                if stats is not None and getattr(stats, "scores", None):
                    value = float(stats.summarize("error_rate"))
                    self.compression_results.setdefault(metric, {})[name] = (
                        value
                    )

    def _test_set_name(self):
        wer_file = getattr(self.hparams, "test_wer_file", None)
        if wer_file:
            stem = os.path.splitext(os.path.basename(str(wer_file)))[0]
            return stem.replace("wer_", "") or "test"
        return "test"

    def fit(
        self,
        epoch_counter,
        train_set,
        valid_set=None,
        progressbar=None,
        train_loader_kwargs={},
        valid_loader_kwargs={},
    ):
        """``Brain.fit``, then hard masks and the export of the compressed
        model to ``<output_folder>/compressed/``.

        Schedule lengths given as fractions are resolved against the run's
        optimizer steps (batches x epochs / gradient accumulation; not
        ``optimizer_step_limit``, so a run stopped by it and resumed
        follows the same schedule).
        """
        if not isinstance(train_set, (DataLoader, LoopedLoader)):
            train_set = self.make_dataloader(
                train_set, stage=sb.Stage.TRAIN, **train_loader_kwargs
            )
        self.compression.resolve_schedule(
            self._total_optimizer_steps(epoch_counter, train_set)
        )
        super().fit(
            epoch_counter,
            train_set,
            valid_set,
            progressbar,
            train_loader_kwargs,
            valid_loader_kwargs,
        )
        self.compression.harden()
        self.export_compressed()

    def _total_optimizer_steps(self, epoch_counter, train_loader):
        epochs = getattr(epoch_counter, "limit", None) or 1
        per_epoch = math.ceil(len(train_loader) / self.grad_accumulation_factor)
        return max(1, per_epoch * epochs)

    def evaluate(
        self,
        test_set,
        max_key=None,
        min_key=None,
        progressbar=None,
        test_loader_kwargs={},
    ):
        """``Brain.evaluate`` with hard masks; the export is refreshed with
        the test WER."""
        self.compression.harden()
        loss = super().evaluate(
            test_set, max_key, min_key, progressbar, test_loader_kwargs
        )
        self.export_compressed()
        return loss

    def compressed_folder(self):
        """Where the compressed model goes: ``hparams.compressed_folder`` or
        ``<output_folder>/compressed``."""
        folder = getattr(self.hparams, "compressed_folder", None)
        if folder:
            return str(folder)
        output = getattr(self.hparams, "output_folder", None) or "."
        return os.path.join(str(output), "compressed")

    def export_compressed(self):
        """Writes the compressed model, its pre/post-processing files, the
        recipe's other modules and the report (main process only)."""
        if if_main_process():
            from sb_compress.export.recipe import export_plan

            export_plan(
                self.compression,
                self.compressed_folder(),
                other_modules=self._other_modules(),
                results=self.compression_results,
                elapsed_s=time.time() - self.compression_started,
                label_encoder=getattr(self, "tokenizer", None),
            )
        ddp_barrier()

    def _other_modules(self):
        compressed = self.compression.model
        others = {}
        for name, module in self.modules.items():
            inner = getattr(module, "module", module)
            if inner is compressed or inner is self.compression.root_model:
                continue
            if any(True for _ in inner.parameters()):
                others[name] = inner
        return others


def _rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    return value

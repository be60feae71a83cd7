#!/usr/bin/env python3
"""Recipe for fine-tuning and compressing a Whisper encoder-decoder on
LibriSpeech with the NLL loss, in one pass.

It is SpeechBrain's ``recipes/LibriSpeech/ASR/transformer/
train_with_whisper.py`` with two changes: the Brain's base class is
``sb_compress.CompressionBrain`` and the hparams file has a
``compression:`` block, here over every transformer Linear of encoder and
decoder (self- and cross-attention, FFN). Validation decodes greedily and
the test sets with beam search (SpeechBrain's Whisper searchers); WER files
are written as SpeechBrain writes them, and the compressed model with its
report lands in ``<output_folder>/compressed/`` (``packed`` for
quantization / N:M, dense with zeros for pruning), where
``sb_compress.load_compressed`` reads it back, and a SpeechBrain hub folder
that ``WhisperASR.from_hparams`` loads in ``<output_folder>/hub/``.

hparams/prune.yaml  : self-pinching gates (unstructured sparsity);
hparams/quant.yaml  : int4 weights with 2:4 sparsity (QAT).

Either file takes ``--teacher_hub=<Whisper folder or hub id>``: a frozen
dense Whisper with the same tokenizer (e.g. your dense fine-tuned model,
or a larger Whisper) whose token posteriors are distilled into the
compressed one, ``(1 - a) NLL + a T^2 KL(teacher || student)`` over the
transcript's tokens (``distill_weight`` a, ``distill_temperature`` T).
``--whisper_hub`` may point at the same dense fine-tuned folder, so that
compression starts from it (two-stage: fine-tune, then compress).

To run this recipe on the embedded samples (no data, no hub, CPU):
> python train.py hparams/prune.yaml \\
>     --data_folder=../../../../tests/samples/mini_librispeech \\
>     --whisper_hub=../../../../tests/samples/tiny_whisper \\
>     --output_folder=results/demo --number_of_epochs=1 --device=cpu \\
>     --max_decode_ratio=0.02 --test_beam_size=2 --compression_ramp_steps=0

On LibriSpeech (train-clean-100) with openai/whisper-small.en:
> python train.py hparams/quant.yaml --data_folder=/path/to/LibriSpeech

On several GPUs:
> torchrun --nproc_per_node=4 train.py hparams/prune.yaml --data_folder=...

The data preparation is the CTC recipe's (``../CTC/librispeech_prepare.py``).

Authors
 * sb_compress team 2026
 (after SpeechBrain's train_with_whisper.py by Adel Moumen and Titouan
 Parcollet)
"""

import os
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.data_utils import undo_padding
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

import sb_compress

logger = get_logger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))


class ASR(sb_compress.CompressionBrain):
    """Whisper fine-tuned with the NLL loss, compressed while it trains,
    optionally distilled from a frozen dense ``teacher``."""

    teacher = None

    def compute_forward(self, batch, stage):
        """Waveforms and the shifted transcript -> log-probabilities (and
        hypotheses outside training)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        bos_tokens, bos_tokens_lens = batch.tokens_bos

        if stage == sb.Stage.TRAIN and hasattr(self.hparams, "wav_augment"):
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
            bos_tokens = self.hparams.wav_augment.replicate_labels(bos_tokens)
            bos_tokens_lens = self.hparams.wav_augment.replicate_labels(
                bos_tokens_lens
            )

        # Padding positions get the pad token the Whisper decoder expects.
        abs_tokens_lens = torch.round(
            bos_tokens_lens * bos_tokens.shape[1]
        ).long()
        pad_mask = (
            torch.arange(abs_tokens_lens.max(), device=self.device)[None, :]
            < abs_tokens_lens[:, None]
        )
        bos_tokens[~pad_mask] = self.pad_token_id

        enc_out, logits, _ = self.modules.whisper(wavs, bos_tokens)
        log_probs = self.hparams.log_softmax(logits)

        distill = None
        if stage == sb.Stage.TRAIN and self.teacher is not None:
            with torch.no_grad():
                _, teacher_logits, _ = self.teacher(wavs, bos_tokens)
            temperature = self.hparams.distill_temperature
            distill = (
                self.hparams.log_softmax(logits / temperature),
                self.hparams.log_softmax(teacher_logits.float() / temperature),
            )

        hyps = None
        if stage == sb.Stage.VALID:
            hyps, _, _, _ = self.hparams.valid_search(
                enc_out.detach(), wav_lens
            )
        elif stage == sb.Stage.TEST:
            hyps, _, _, _ = self.hparams.test_search(enc_out.detach(), wav_lens)
        return log_probs, hyps, wav_lens, distill

    @property
    def pad_token_id(self):
        """The tokenizer's pad token, or end-of-text when it has none."""
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _words(self, texts):
        if getattr(self.hparams, "normalized_transcripts", False):
            normalize = getattr(self.tokenizer, "normalize", None)
            normalize = normalize or self.tokenizer._normalize
            texts = [normalize(text) for text in texts]
        return [text.split(" ") for text in texts]

    def compute_objectives(self, predictions, batch, stage):
        """NLL loss (with the distillation term when there is a teacher);
        WER and CER outside training."""
        log_probs, hyps, wav_lens, distill = predictions
        batch = batch.to(self.device)
        ids = batch.id
        tokens_eos, tokens_eos_lens = batch.tokens_eos

        if stage == sb.Stage.TRAIN and hasattr(self.hparams, "wav_augment"):
            tokens_eos = self.hparams.wav_augment.replicate_labels(tokens_eos)
            tokens_eos_lens = self.hparams.wav_augment.replicate_labels(
                tokens_eos_lens
            )

        loss = self.hparams.nll_loss(
            log_probs, tokens_eos, length=tokens_eos_lens
        )
        if distill is not None:
            kl = distillation_loss(*distill, tokens_eos_lens)
            kl = kl * self.hparams.distill_temperature**2
            weight = self.hparams.distill_weight
            loss = (1 - weight) * loss + weight * kl
            self.distill_kl.append(kl.detach())

        if stage != sb.Stage.TRAIN:
            tokens, tokens_lens = batch.tokens
            predicted = [
                self.tokenizer.decode(t, skip_special_tokens=True).strip()
                for t in hyps
            ]
            targets = self.tokenizer.batch_decode(
                undo_padding(tokens, tokens_lens), skip_special_tokens=True
            )
            predicted_words = self._words(predicted)
            target_words = self._words(targets)
            self.wer_metric.append(ids, predicted_words, target_words)
            self.cer_metric.append(ids, predicted_words, target_words)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Noam learning-rate schedule, stepped with the optimizer."""
        if should_step:
            self.hparams.lr_annealing_whisper(self.optimizer)

    def on_stage_start(self, stage, epoch):
        """Fresh error-rate trackers for VALID and TEST."""
        self.distill_kl = []
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        """Logging and checkpointing."""
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            if self.distill_kl:
                kl = torch.stack(self.distill_kl).mean()
                stage_stats["distill_kl"] = float(kl)
            self.train_stats = stage_stats
        else:
            stage_stats["CER"] = self.cer_metric.summarize("error_rate")
            stage_stats["WER"] = self.wer_metric.summarize("error_rate")

        if stage == sb.Stage.VALID:
            lr = self.hparams.lr_annealing_whisper.current_lr
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"]}, min_keys=["WER"]
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(
                    self.hparams.test_wer_file, "w", encoding="utf-8"
                ) as w:
                    self.wer_metric.write_stats(w)


def distillation_loss(student, teacher, relative_lengths):
    """``KL(teacher || student)`` of two log-posteriors (batch x tokens x
    vocabulary), summed over the vocabulary and averaged over the tokens
    within ``relative_lengths``."""
    tokens = student.shape[1]
    lengths = torch.round(relative_lengths * tokens).long()
    mask = torch.arange(tokens, device=student.device)[None] < lengths[:, None]
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def build_teacher(hparams):
    """A frozen Whisper wrapper of ``teacher_hub`` (``None`` without one),
    checked to share the student's vocabulary before anything trains."""
    source = hparams.get("teacher_hub")
    if not source:
        return None
    weight = hparams["distill_weight"]
    temperature = hparams["distill_temperature"]
    if not 0 <= weight <= 1:
        raise ValueError(f"distill_weight = {weight}: must be in [0, 1]")
    if not temperature > 0:
        raise ValueError(f"distill_temperature = {temperature}: must be > 0")
    student = hparams["whisper"]
    teacher = type(student)(
        source=source,
        save_path=os.path.join(hparams["save_folder"], "teacher_checkpoint"),
        sampling_rate=hparams["sampling_rate"],
        freeze=True,
    )
    ours = student.model.config.vocab_size
    theirs = teacher.model.config.vocab_size
    if ours != theirs:
        raise ValueError(
            f"teacher_hub = {source}: its vocabulary has {theirs} tokens, "
            f"the student's ({hparams['whisper_hub']}) {ours}; a teacher "
            "must share the student's tokenizer"
        )
    return teacher.eval()


def dataio_prepare(hparams, tokenizer):
    """Datasets with audio and Whisper token pipelines."""
    data_folder = hparams["data_folder"]
    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["train_csv"],
        replacements={"data_root": data_folder},
    )
    if hparams["sorting"] == "ascending":
        train_data = train_data.filtered_sorted(sort_key="duration")
        hparams["train_loader_kwargs"]["shuffle"] = False
    elif hparams["sorting"] == "descending":
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=True
        )
        hparams["train_loader_kwargs"]["shuffle"] = False
    elif hparams["sorting"] != "random":
        raise NotImplementedError(
            "sorting must be random, ascending or descending"
        )

    valid_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["valid_csv"],
        replacements={"data_root": data_folder},
    ).filtered_sorted(sort_key="duration")

    test_datasets = {}
    for csv_file in hparams["test_csv"]:
        name = Path(csv_file).stem
        test_datasets[name] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": data_folder}
        ).filtered_sorted(sort_key="duration")

    datasets = [train_data, valid_data] + list(test_datasets.values())

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides(
        "wrd", "tokens_list", "tokens_bos", "tokens_eos", "tokens"
    )
    def text_pipeline(wrd):
        if hparams.get("normalized_transcripts"):
            wrd = tokenizer.normalize(wrd)
        yield wrd
        tokens_list = tokenizer.encode(wrd, add_special_tokens=False)
        yield tokens_list
        tokens_list = tokenizer.build_inputs_with_special_tokens(tokens_list)
        yield torch.LongTensor(tokens_list[:-1])
        yield torch.LongTensor(tokens_list[1:])
        yield torch.LongTensor(tokens_list)

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(
        datasets,
        ["id", "sig", "tokens_list", "tokens_bos", "tokens_eos", "tokens"],
    )
    return train_data, valid_data, test_datasets


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)

    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    sys.path.insert(0, os.path.join(HERE, os.pardir, "CTC"))
    from librispeech_prepare import prepare_librispeech  # noqa: E402

    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "save_folder": hparams["output_folder"],
            "merge_lst": hparams["train_splits"],
            "merge_name": "train.csv",
            "skip_prep": hparams["skip_prep"],
        },
    )

    tokenizer = hparams["whisper"].tokenizer
    train_data, valid_data, test_datasets = dataio_prepare(hparams, tokenizer)
    teacher = build_teacher(hparams)

    asr_brain = ASR(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        opt_class=hparams["whisper_opt_class"],
    )
    asr_brain.tokenizer = tokenizer
    if teacher is not None:
        asr_brain.teacher = teacher.to(asr_brain.device)

    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_loader_kwargs"],
        valid_loader_kwargs=hparams["valid_loader_kwargs"],
    )

    os.makedirs(hparams["output_wer_folder"], exist_ok=True)
    for name in test_datasets:
        asr_brain.hparams.test_wer_file = os.path.join(
            hparams["output_wer_folder"], f"wer_{name}.txt"
        )
        asr_brain.evaluate(
            test_datasets[name],
            test_loader_kwargs=hparams["test_loader_kwargs"],
            min_key="WER",
        )

    # A SpeechBrain hub folder of the compressed model (WhisperASR).
    if if_main_process():
        from sb_compress.hub import export_whisper_hub

        hub_folder = os.path.join(hparams["output_folder"], "hub")
        export_whisper_hub(asr_brain.compressed_folder(), hub_folder, True)
        logger.info(f"SpeechBrain hub folder: {hub_folder}")

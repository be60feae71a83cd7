#!/usr/bin/env python3
"""Recipe for fine-tuning and compressing a wav2vec2 / HuBERT / WavLM (or
Whisper encoder) CTC ASR system on LibriSpeech, in one pass.

It is SpeechBrain's ``recipes/LibriSpeech/ASR/CTC/train_with_wav2vec.py``
with two changes: the Brain's base class is ``sb_compress.CompressionBrain``
and the hparams file has a ``compression:`` block. Characters are the CTC
units, decoding is greedy, and the compressed model with its report lands in
``<output_folder>/compressed/``.

``hparams/structured_distill.yaml`` sets ``distill_only: True``: the
task-agnostic variant, where no head is trained, nothing is decoded and no
transcript is read (the CSVs may have only ``ID,duration,wav``); the
encoder is pruned while it learns to match the frozen unpruned one, and the
validation / test loss is that distillation loss.

To run this recipe on the embedded samples (no data, no hub, CPU):
> python train.py hparams/prune.yaml \\
>     --data_folder=../../../../tests/samples/mini_librispeech \\
>     --wav2vec2_hub=../../../../tests/samples/tiny_wav2vec2 \\
>     --output_folder=results/demo --number_of_epochs=2 --device=cpu

On LibriSpeech (train-clean-100) with facebook/wav2vec2-base:
> python train.py hparams/prune.yaml --data_folder=/path/to/LibriSpeech

On several GPUs:
> torchrun --nproc_per_node=4 train.py hparams/prune.yaml --data_folder=...

Authors
 * sb_compress team 2026
 (after SpeechBrain's train_with_wav2vec.py by Sung-Lin Yeh, Titouan
 Parcollet, Rudolf A Braun, Ju-Chieh Chou, Mirco Ravanelli, Abdel Heba,
 Peter Plantinga, Samuele Cornell and Adel Moumen)
"""

import math
import os
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

import sb_compress

logger = get_logger(__name__)


class ASR(sb_compress.CompressionBrain):
    """CTC ASR on top of a pretrained speech encoder, compressed while it
    fine-tunes."""

    def compute_forward(self, batch, stage):
        """Waveforms -> encoder -> CTC log-probabilities (and greedy
        hypotheses outside training)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig

        if stage == sb.Stage.TRAIN and hasattr(self.hparams, "wav_augment"):
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)

        if getattr(self.hparams, "encoder_pads_to_30s", False):
            feats = self.modules.wav2vec2(wavs)
            frames = math.ceil(wavs.shape[1] / self.hparams.samples_per_frame)
            feats = feats[:, :frames]
        else:
            feats = self.modules.wav2vec2(wavs, wav_lens)
        if self.distill_only:
            return feats, wav_lens, None
        x = self.modules.enc(feats)
        logits = self.modules.ctc_lin(x)
        p_ctc = self.hparams.log_softmax(logits)

        p_tokens = None
        if stage != sb.Stage.TRAIN:
            p_tokens = sb.decoders.ctc_greedy_decode(
                p_ctc, wav_lens, blank_id=self.hparams.blank_index
            )
        return p_ctc, wav_lens, p_tokens

    @property
    def distill_only(self):
        """Task-agnostic run (``distill_only: True``): no head, no labels;
        the loss is the distillation from the unpruned encoder."""
        return bool(getattr(self.hparams, "distill_only", False))

    def _distillation_loss(self):
        for modifier in self.compression.modifiers:
            if modifier.method == "distill":
                return modifier.distillation_loss().detach()
        raise ValueError(
            "distill_only: True needs a distill modifier in `compression`"
        )

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; WER and CER outside training. Distillation only: zero
        in training (CompressionBrain adds the plan's loss, distillation
        included), the distillation loss outside."""
        if self.distill_only:
            device = predictions[0].device
            if stage == sb.Stage.TRAIN:
                return torch.zeros((), device=device)
            return self._distillation_loss()
        p_ctc, wav_lens, predicted_tokens = predictions
        ids = batch.id
        tokens, tokens_lens = batch.tokens

        if stage == sb.Stage.TRAIN and hasattr(self.hparams, "wav_augment"):
            tokens, tokens_lens = (
                self.hparams.wav_augment.replicate_multiple_labels(
                    tokens, tokens_lens
                )
            )

        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)

        if stage != sb.Stage.TRAIN:
            predicted_words = [
                "".join(self.tokenizer.decode_ndim(utt_seq)).split(" ")
                for utt_seq in predicted_tokens
            ]
            target_words = [wrd.split(" ") for wrd in batch.wrd]
            self.wer_metric.append(ids, predicted_words, target_words)
            self.cer_metric.append(ids, predicted_words, target_words)
        return loss

    def on_stage_start(self, stage, epoch):
        """Fresh error-rate trackers for VALID and TEST."""
        if stage != sb.Stage.TRAIN and not self.distill_only:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        """Learning-rate annealing, logging and checkpointing."""
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
        elif not self.distill_only:
            stage_stats["CER"] = self.cer_metric.summarize("error_rate")
            stage_stats["WER"] = self.wer_metric.summarize("error_rate")

        if stage == sb.Stage.VALID and self.distill_only:
            old_lr, new_lr = self.hparams.lr_annealing_wav2vec(stage_loss)
            sb.nnet.schedulers.update_learning_rate(
                self.wav2vec_optimizer, new_lr
            )
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr_wav2vec": old_lr},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"loss": stage_loss}, min_keys=["loss"]
            )
        elif stage == sb.Stage.VALID:
            old_lr_model, new_lr_model = self.hparams.lr_annealing_model(
                stage_stats["loss"]
            )
            old_lr_wav2vec, new_lr_wav2vec = self.hparams.lr_annealing_wav2vec(
                stage_stats["loss"]
            )
            sb.nnet.schedulers.update_learning_rate(
                self.model_optimizer, new_lr_model
            )
            sb.nnet.schedulers.update_learning_rate(
                self.wav2vec_optimizer, new_lr_wav2vec
            )
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr_model": old_lr_model,
                    "lr_wav2vec": old_lr_wav2vec,
                },
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"]},
                min_keys=["WER"],
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process() and not self.distill_only:
                with open(self.hparams.test_wer_file, "w") as w:
                    self.wer_metric.write_stats(w)

    def init_optimizers(self):
        """The encoder's optimizer and the head's optimizer."""
        self.wav2vec_optimizer = self.hparams.wav2vec_opt_class(
            self.modules.wav2vec2.parameters()
        )
        if self.distill_only:
            self.optimizers_dict = {"wav2vec_optimizer": self.wav2vec_optimizer}
            if self.checkpointer is not None:
                self.checkpointer.add_recoverable(
                    "wav2vec_opt", self.wav2vec_optimizer
                )
            return
        self.model_optimizer = self.hparams.model_opt_class(
            self.hparams.model.parameters()
        )
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        if not self.hparams.freeze_wav2vec:
            self.optimizers_dict["wav2vec_optimizer"] = self.wav2vec_optimizer

        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "wav2vec_opt", self.wav2vec_optimizer
            )
            self.checkpointer.add_recoverable("modelopt", self.model_optimizer)


def dataio_prepare(hparams):
    """Datasets, audio and text pipelines, and the character encoder
    (``None`` with ``distill_only``: audio only, transcripts unread)."""
    data_folder = hparams["data_folder"]

    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["train_csv"],
        replacements={"data_root": data_folder},
    )
    if hparams["sorting"] == "ascending":
        train_data = train_data.filtered_sorted(sort_key="duration")
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif hparams["sorting"] == "descending":
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=True
        )
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif hparams["sorting"] != "random":
        raise NotImplementedError(
            "sorting must be random, ascending or descending"
        )

    valid_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=hparams["valid_csv"],
        replacements={"data_root": data_folder},
    )
    valid_data = valid_data.filtered_sorted(sort_key="duration")

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
    if hparams.get("distill_only", False):
        # Audio only: the CSVs need no ``wrd`` column, no labels are made.
        sb.dataio.dataset.set_output_keys(datasets, ["id", "sig"])
        return train_data, valid_data, test_datasets, None

    label_encoder = sb.dataio.encoder.CTCTextEncoder()

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides(
        "wrd", "char_list", "tokens_list", "tokens"
    )
    def text_pipeline(wrd):
        yield wrd
        char_list = list(wrd)
        yield char_list
        tokens_list = label_encoder.encode_sequence(char_list)
        yield tokens_list
        yield torch.LongTensor(tokens_list)

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)

    lab_enc_file = os.path.join(hparams["save_folder"], "label_encoder.txt")
    label_encoder.update_from_iterable(hparams["alphabet"])
    label_encoder.load_or_create(
        path=lab_enc_file,
        from_didatasets=[train_data],
        output_key="char_list",
        special_labels={
            "blank_label": hparams["blank_index"],
            "unk_label": hparams["unk_index"],
        },
        sequence_input=True,
    )

    if len(label_encoder) != hparams["output_neurons"]:
        raise ValueError(
            f"output_neurons = {hparams['output_neurons']} but the label "
            f"encoder ({lab_enc_file}) has {len(label_encoder)} labels; set "
            "output_neurons to match or extend `alphabet`"
        )
    sb.dataio.dataset.set_output_keys(
        datasets, ["id", "sig", "wrd", "char_list", "tokens"]
    )
    return train_data, valid_data, test_datasets, label_encoder


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

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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

    train_data, valid_data, test_datasets, label_encoder = dataio_prepare(
        hparams
    )

    asr_brain = ASR(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokenizer = label_encoder

    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )

    os.makedirs(hparams["output_wer_folder"], exist_ok=True)
    for name in test_datasets:
        asr_brain.hparams.test_wer_file = os.path.join(
            hparams["output_wer_folder"], f"wer_{name}.txt"
        )
        asr_brain.evaluate(
            test_datasets[name],
            test_loader_kwargs=hparams["test_dataloader_opts"],
            min_key="loss" if asr_brain.distill_only else "WER",
        )

    # A SpeechBrain hub folder of the compressed model (EncoderASR).
    if if_main_process() and not asr_brain.distill_only:
        from sb_compress.hub import HubError, export_hub

        hub_folder = os.path.join(hparams["output_folder"], "hub")
        try:
            export_hub(asr_brain.compressed_folder(), hub_folder, True)
            logger.info(f"SpeechBrain hub folder: {hub_folder}")
        except HubError as error:
            logger.warning(f"no hub folder: {error}")

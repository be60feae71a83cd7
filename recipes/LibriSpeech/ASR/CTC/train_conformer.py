#!/usr/bin/env python3
"""Recipe for training a Conformer CTC ASR system from scratch on
LibriSpeech (fbank features, character units) with a foldable encoder.

It follows SpeechBrain's LibriSpeech CTC Conformer recipes: fbank ->
global normalisation -> convolutional front-end -> Conformer encoder ->
linear -> CTC, greedy decoding. As in ``train.py``, the Brain's base class
is ``sb_compress.CompressionBrain`` and the hparams file has a
``compression:`` block (``hparams/fold_conformer.yaml``: a few physical
Conformer blocks unfolded to many logical layers, trained jointly at
several depths). The compressed model (format ``folded``, each physical
block stored once) and its report land in ``<output_folder>/compressed/``;
``sb_compress.load_compressed(folder, depth=d)`` rebuilds the
``TransformerASR`` at any depth, the front-end and the CTC layer being in
``recipe_modules.safetensors``. The data pipeline is ``train.py``'s.

To run this recipe on the embedded samples (no data, no hub, CPU):
> python train_conformer.py hparams/fold_conformer.yaml \\
>     --data_folder=../../../../tests/samples/mini_librispeech \\
>     --output_folder=results/demo --number_of_epochs=2 --device=cpu \\
>     --d_model=32 --d_ffn=64 --num_encoder_layers=4 --physical=2 \\
>     --n_warmup_steps=10

On LibriSpeech (train-clean-100):
> python train_conformer.py hparams/fold_conformer.yaml \\
>     --data_folder=/path/to/LibriSpeech

Authors
 * sb_compress team 2026
 (after SpeechBrain's LibriSpeech CTC recipes by Titouan Parcollet,
 Shucong Zhang, Adel Moumen and others)
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

import sb_compress

logger = get_logger(__name__)


class ASR(sb_compress.CompressionBrain):
    """Conformer CTC ASR trained from scratch, its encoder folded."""

    def compute_forward(self, batch, stage):
        """Waveforms -> fbank -> CNN -> Conformer -> CTC log-probabilities
        (and greedy hypotheses outside training)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        src = self.modules.CNN(feats)
        encoded = self.modules.enc(src, wav_lens)
        p_ctc = self.hparams.log_softmax(self.modules.ctc_lin(encoded))
        p_tokens = None
        if stage != sb.Stage.TRAIN:
            p_tokens = sb.decoders.ctc_greedy_decode(
                p_ctc, wav_lens, blank_id=self.hparams.blank_index
            )
        return p_ctc, wav_lens, p_tokens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; WER and CER outside training."""
        p_ctc, wav_lens, predicted_tokens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            predicted_words = [
                "".join(self.tokenizer.decode_ndim(utt_seq)).split(" ")
                for utt_seq in predicted_tokens
            ]
            target_words = [wrd.split(" ") for wrd in batch.wrd]
            self.wer_metric.append(batch.id, predicted_words, target_words)
            self.cer_metric.append(batch.id, predicted_words, target_words)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Noam learning-rate schedule, per optimizer step."""
        if should_step:
            self.hparams.noam_annealing(self.optimizer)

    def on_stage_start(self, stage, epoch):
        """Fresh error-rate trackers for VALID and TEST."""
        if stage != sb.Stage.TRAIN:
            self.cer_metric = self.hparams.cer_computer()
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch):
        """Logging and checkpointing (best valid WER kept)."""
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.hparams.noam_annealing.current_lr,
                },
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
                with open(self.hparams.test_wer_file, "w") as w:
                    self.wer_metric.write_stats(w)


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
    from train import dataio_prepare  # noqa: E402

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
        opt_class=hparams["opt_class"],
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
            min_key="WER",
        )

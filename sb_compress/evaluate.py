"""Word error rate and real-time factor of original or compressed models.

:func:`evaluate` decodes a SpeechBrain CSV (``ID,duration,wav,spk_id,wrd``,
``wav`` relative to the CSV's folder unless absolute) with

- a SpeechBrain hub folder written by ``sb-compress export``, through its
  interface (``EncoderASR`` or ``WhisperASR``, named in its
  ``config.json``), as its users will run it;
- a CTC recipe's export (its output folder or ``compressed/``): the
  compressed backbone and the recipe's head, greedy CTC over its labels;
- a transformers ``*ForCTC`` folder with its character tokenizer (greedy
  CTC) or a Whisper folder (greedy, no timestamps), plain or written by
  ``sb_compress`` in any format (read with
  :func:`sb_compress.load_compressed`).

References and hypotheses are compared upper-cased, without punctuation
other than apostrophes; word errors are jiwer's alignment
(substitutions, deletions, insertions), so a looping decoder's insertions
count.

``sb-compress eval`` writes ``utterances.csv`` (one row per utterance:
reference, hypothesis, words, errors by kind) and then ``summary.json``
to its output folder.

Authors
 * sb_compress team 2026
"""

import csv
import json
import os
import re
import time

import torch
from tqdm import tqdm

SAMPLE_RATE = 16000


class EvaluationError(ValueError):
    """The model or the CSV cannot be evaluated."""


def normalise(text):
    """Upper case, punctuation other than apostrophes removed.

    Example
    -------
    >>> normalise("Hello, world! It's me.")
    "HELLO WORLD IT'S ME"
    """
    text = re.sub(r"[^\w\s']", " ", text.upper()).replace("_", " ")
    return " ".join(text.split())


def read_csv(path, limit=None):
    """Utterances of a SpeechBrain CSV.

    Arguments
    ---------
    path : str
        CSV with at least ``ID``, ``wav`` and ``wrd`` columns.
    limit : int, optional
        Keep the first ``limit`` rows.

    Returns
    -------
    list of dict
        ``{"id", "wav", "words"}`` with ``wav`` an absolute path.

    Raises
    ------
    EvaluationError
        On a missing file or column.
    """
    if not os.path.isfile(path):
        raise EvaluationError(f"--csv {path}: no such file")
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"ID", "wav", "wrd"} - set(reader.fieldnames or [])
        if missing:
            raise EvaluationError(
                f"{path}: no column {sorted(missing)[0]!r} (a SpeechBrain "
                "CSV has ID, duration, wav, spk_id, wrd)"
            )
        rows = list(reader)[:limit]
    utterances = []
    for row in rows:
        wav = row["wav"].replace("$data_root", folder)
        if not os.path.isabs(wav):
            wav = os.path.join(folder, wav)
        utterances.append({"id": row["ID"], "wav": wav, "words": row["wrd"]})
    if not utterances:
        raise EvaluationError(f"{path} has no utterances")
    return utterances


def word_counts(reference, hypothesis):
    """Substitutions, deletions and insertions of jiwer's word alignment.

    Arguments
    ---------
    reference, hypothesis : str
        Normalised texts (words separated by spaces).

    Returns
    -------
    dict
        ``substitutions``, ``deletions``, ``insertions``, ``errors`` (their
        sum) and ``words`` (in the reference).

    Example
    -------
    >>> counts = word_counts("A B C", "A X C D")
    >>> counts["substitutions"], counts["insertions"], counts["errors"]
    (1, 1, 2)
    """
    import jiwer

    ref, hyp = reference.split(), hypothesis.split()
    if not ref:  # every hypothesis word is an insertion
        kinds = (0, 0, len(hyp))
    else:
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        kinds = (out.substitutions, out.deletions, out.insertions)
    counts = dict(zip(("substitutions", "deletions", "insertions"), kinds))
    counts["errors"] = sum(kinds)
    counts["words"] = len(ref)
    return counts


def word_errors(reference, hypothesis):
    """Word-level edit distance (substitutions + deletions + insertions).

    Example
    -------
    >>> word_errors("A B C", "A X C D")
    2
    """
    return word_counts(reference, hypothesis)["errors"]


def _load_audio(path):
    import soundfile

    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import torchaudio

        audio = torchaudio.functional.resample(
            torch.from_numpy(audio), rate, SAMPLE_RATE
        ).numpy()
    return audio


class _Whisper:
    def __init__(self, model, folder, device):
        from transformers import (
            WhisperForConditionalGeneration,
            WhisperProcessor,
        )

        if not isinstance(model, WhisperForConditionalGeneration):
            if getattr(model, "decoder", None) is None:
                raise EvaluationError(
                    f"{folder}: a Whisper encoder without its decoder "
                    "cannot transcribe"
                )
            full = WhisperForConditionalGeneration(model.config)
            full.model = model
            full.proj_out.weight = model.decoder.embed_tokens.weight
            model = full
        self.model = model.float().to(device).eval()
        self.processor = WhisperProcessor.from_pretrained(folder)
        self.device = device
        positions = model.config.max_target_positions
        self.max_new_tokens = min(128, positions - 8)

    def transcribe(self, audios):
        features = self.processor.feature_extractor(
            audios, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device)
        tokens = self.model.generate(
            input_features=features,
            do_sample=False,
            num_beams=1,
            return_timestamps=False,
            max_new_tokens=self.max_new_tokens,
        )
        return self.processor.batch_decode(tokens, skip_special_tokens=True)


class _CTC:
    def __init__(self, model, folder, device):
        from transformers import AutoFeatureExtractor, AutoTokenizer

        if not hasattr(model, "lm_head"):
            raise EvaluationError(
                f"{folder}: {type(model).__name__} has no CTC head; eval "
                "needs a *ForCTC model with its tokenizer, or Whisper"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as error:
            raise EvaluationError(
                f"{folder}: no CTC tokenizer (vocab.json): {error}"
            ) from error
        self.extractor = AutoFeatureExtractor.from_pretrained(folder)
        self.model = model.float().to(device).eval()
        self.device = device

    def transcribe(self, audios):
        inputs = self.extractor(
            audios,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding=True,
            return_attention_mask=True,
        )
        logits = self.model(
            inputs.input_values.to(self.device),
            attention_mask=inputs.attention_mask.to(self.device),
        ).logits
        ids = logits.argmax(-1)
        return self.tokenizer.batch_decode(ids)


def _padded(audios):
    """A zero-padded batch and the relative lengths SpeechBrain expects."""
    longest = max(len(a) for a in audios)
    wavs = torch.zeros(len(audios), longest)
    for i, audio in enumerate(audios):
        wavs[i, : len(audio)] = torch.as_tensor(audio)
    lengths = torch.tensor([len(a) / longest for a in audios])
    return wavs, lengths


class _SpeechBrainASR:
    """A hub folder through its SpeechBrain interface (loaded into a
    temporary savedir, removed by :meth:`close`)."""

    def __init__(self, folder, interface, device):
        import tempfile

        from speechbrain.inference import ASR

        if interface not in ("EncoderASR", "WhisperASR"):
            raise EvaluationError(
                f"{folder}: interface {interface!r}; eval reads EncoderASR "
                "and WhisperASR folders"
            )
        self.savedir = tempfile.mkdtemp(prefix="sb_compress_eval_")
        try:
            self.asr = getattr(ASR, interface).from_hparams(
                source=os.path.abspath(folder),
                savedir=self.savedir,
                run_opts={"device": str(device)},
            )
        except BaseException:
            self.close()
            raise

    def transcribe(self, audios):
        wavs, lengths = _padded(audios)
        words, _ = self.asr.transcribe_batch(wavs, lengths)
        return [w if isinstance(w, str) else " ".join(w) for w in words]

    def close(self):
        import shutil

        shutil.rmtree(self.savedir, ignore_errors=True)


class _RecipeCTC:
    """A CTC recipe's export: compressed backbone, the recipe's head, its
    labels; greedy CTC as the hub folder's ``hyperparams.yaml`` does."""

    def __init__(self, folder, device):
        from speechbrain.dataio.encoder import CTCTextEncoder

        from sb_compress.export.recipe import LABEL_ENCODER
        from sb_compress.hub import CompressedCTC

        labels = os.path.join(folder, LABEL_ENCODER)
        if not os.path.isfile(labels):
            raise EvaluationError(
                f"{folder}: no {LABEL_ENCODER}, so no CTC labels to decode "
                "(a distillation-only export has no head)"
            )
        self.labels = CTCTextEncoder()
        self.labels.load(labels)
        self.blank = self.labels.get_blank_index()
        self.model = CompressedCTC()
        self.model.load_folder(folder)
        self.model.to(device).eval()
        self.device = device

    def transcribe(self, audios):
        from speechbrain.decoders.ctc import ctc_greedy_decode

        wavs, lengths = _padded(audios)
        log_probs = self.model(wavs.to(self.device), lengths.to(self.device))
        sequences = ctc_greedy_decode(log_probs, lengths, blank_id=self.blank)
        return ["".join(self.labels.decode_ndim(s)) for s in sequences]


def _hub_interface(folder):
    """The interface a hub folder's ``config.json`` names, else None."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(os.path.join(folder, "hyperparams.yaml")):
        return None
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("speechbrain_interface")


def load_asr(source, device="cpu"):
    """An object with ``transcribe(list of arrays) -> list of str`` (and
    maybe ``close()``).

    Arguments
    ---------
    source : str
        A SpeechBrain hub folder (``sb-compress export``), a CTC recipe's
        output folder or export, a transformers folder (``*ForCTC`` or
        Whisper) or a folder written by sb_compress.
    device : str
        Where to run.

    Returns
    -------
    object

    Raises
    ------
    EvaluationError
        When the folder holds no model that can transcribe.
    """
    from sb_compress.export.recipe import RECIPE_LAYOUT
    from sb_compress.export.save import (
        _read_config,
        load_compressed,
        model_class_for,
    )

    if not os.path.isdir(source):
        raise EvaluationError(f"--source {source}: no such folder")
    interface = _hub_interface(source)
    if interface:
        return _SpeechBrainASR(source, interface, device)
    inner = os.path.join(source, "compressed")
    if os.path.isfile(os.path.join(inner, "compression_report.json")):
        source = inner  # a recipe's output folder
    if os.path.isfile(os.path.join(source, RECIPE_LAYOUT)):
        return _RecipeCTC(source, device)
    config = _read_config(source, EvaluationError)
    if os.path.isfile(os.path.join(source, "compression_report.json")):
        model = load_compressed(source)
    else:
        model = model_class_for(config).from_pretrained(source)
    if config.get("model_type") == "whisper":
        return _Whisper(model, source, device)
    return _CTC(model, source, device)


def evaluate(source, csv_path, batch_size=8, device="cpu", limit=None):
    """WER and real-time factor of a model on a CSV.

    Arguments
    ---------
    source : str
        See :func:`load_asr`.
    csv_path : str
        SpeechBrain CSV.
    batch_size : int
        Utterances per forward.
    device : str
        Where to run.
    limit : int, optional
        First ``limit`` utterances only.

    Returns
    -------
    summary : dict
        ``wer`` (percent), ``errors``, ``words``, ``rtf`` (decoding seconds
        per second of audio), ``audio_s``, ``decode_s``, ``utterances``.
    rows : list of dict
        Per utterance: ``id``, ``reference``, ``hypothesis``, ``errors``,
        ``words``.
    """
    utterances = read_csv(csv_path, limit)
    for utterance in utterances:
        if not os.path.isfile(utterance["wav"]):
            raise EvaluationError(
                f"{csv_path}: utterance {utterance['id']}: no audio file "
                f"{utterance['wav']}"
            )
    asr = load_asr(source, device)
    try:
        rows, audio_s, decode_s = _decode(asr, utterances, batch_size, device)
    finally:
        if hasattr(asr, "close"):
            asr.close()
    kinds = ("errors", "words", "substitutions", "deletions", "insertions")
    totals = {key: sum(r[key] for r in rows) for key in kinds}
    summary = {
        "source": source,
        "csv": csv_path,
        "utterances": len(rows),
        "wer": 100.0 * totals["errors"] / max(1, totals["words"]),
        **totals,
        "audio_s": audio_s,
        "decode_s": decode_s,
        "rtf": decode_s / max(audio_s, 1e-9),
        "batch_size": batch_size,
        "device": str(device),
    }
    return summary, rows


def _decode(asr, utterances, batch_size, device):
    rows, audio_s, decode_s = [], 0.0, 0.0
    batches = range(0, len(utterances), batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc="eval", unit="batch"):
            batch = utterances[start : start + batch_size]
            audios = [_load_audio(u["wav"]) for u in batch]
            audio_s += sum(len(a) for a in audios) / SAMPLE_RATE
            started = time.perf_counter()
            hypotheses = asr.transcribe(audios)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            decode_s += time.perf_counter() - started
            for utterance, audio, hypothesis in zip(batch, audios, hypotheses):
                reference = normalise(utterance["words"])
                hypothesis = normalise(hypothesis)
                rows.append(
                    {
                        "id": utterance["id"],
                        "duration": round(len(audio) / SAMPLE_RATE, 3),
                        "reference": reference,
                        "hypothesis": hypothesis,
                        **word_counts(reference, hypothesis),
                    }
                )
    return rows, audio_s, decode_s


#: Columns of ``utterances.csv``.
ROW_FIELDS = (
    "id",
    "duration",
    "reference",
    "hypothesis",
    "words",
    "errors",
    "substitutions",
    "deletions",
    "insertions",
)


def _replace_with(path, write):
    """Writes ``path`` through a temporary file renamed into place."""
    partial = path + ".partial"
    with open(partial, "w", newline="", encoding="utf-8") as f:
        write(f)
    os.replace(partial, path)


def write_results(folder, summary, rows):
    """Writes ``utterances.csv``, then ``summary.json`` (each replaced
    whole: a summary means the results are complete).

    Arguments
    ---------
    folder : str
        Created if missing.
    summary : dict
        From :func:`evaluate`.
    rows : list of dict
        From :func:`evaluate`.

    Returns
    -------
    tuple of str
        The paths of the summary and of the per-utterance rows.
    """
    os.makedirs(folder, exist_ok=True)
    summary_path = os.path.join(folder, "summary.json")
    rows_path = os.path.join(folder, "utterances.csv")

    def write_rows(f):
        writer = csv.DictWriter(f, ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)

    _replace_with(rows_path, write_rows)
    _replace_with(summary_path, lambda f: json.dump(summary, f, indent=2))
    return summary_path, rows_path

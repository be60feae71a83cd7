"""Word error rate and real-time factor of original or compressed models.

:func:`evaluate` decodes a SpeechBrain CSV (``ID,duration,wav,spk_id,wrd``,
``wav`` relative to the CSV's folder unless absolute) with a CTC model
(transformers ``*ForCTC`` with its character tokenizer: greedy CTC) or a
Whisper model (greedy, no timestamps), either a plain transformers folder
or any folder ``sb_compress`` wrote (dense, packed or shrunk: read with
:func:`sb_compress.load_compressed`). References and hypotheses are
compared upper-cased, without punctuation other than apostrophes.

``sb-compress eval`` writes ``summary.json`` and ``utterances.csv`` (one
row per utterance: reference, hypothesis, errors, words) to its output
folder.

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


def word_errors(reference, hypothesis):
    """Word-level edit distance (substitutions + deletions + insertions).

    Example
    -------
    >>> word_errors("A B C", "A X C D")
    2
    """
    ref, hyp = reference.split(), hypothesis.split()
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (word != other),
                )
            )
        previous = current
    return previous[-1]


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


def load_asr(source, device="cpu"):
    """An object with ``transcribe(list of arrays) -> list of str``.

    Arguments
    ---------
    source : str
        A transformers folder (``*ForCTC`` or Whisper) or a folder written
        by sb_compress.
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
    from sb_compress.export.save import (
        _read_config,
        load_compressed,
        model_class_for,
    )

    if not os.path.isdir(source):
        raise EvaluationError(f"--source {source}: no such folder")
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
    asr = load_asr(source, device)
    rows, audio_s, decode_s = [], 0.0, 0.0
    batches = range(0, len(utterances), batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc="eval", unit="batch"):
            batch = utterances[start : start + batch_size]
            audios = [_load_audio(u["wav"]) for u in batch]
            audio_s += sum(len(a) for a in audios) / SAMPLE_RATE
            started = time.perf_counter()
            hypotheses = asr.transcribe(audios)
            if device != "cpu" and torch.cuda.is_available():
                torch.cuda.synchronize()
            decode_s += time.perf_counter() - started
            for utterance, hypothesis in zip(batch, hypotheses):
                reference = normalise(utterance["words"])
                hypothesis = normalise(hypothesis)
                rows.append(
                    {
                        "id": utterance["id"],
                        "reference": reference,
                        "hypothesis": hypothesis,
                        "errors": word_errors(reference, hypothesis),
                        "words": len(reference.split()),
                    }
                )
    errors = sum(r["errors"] for r in rows)
    words = sum(r["words"] for r in rows)
    summary = {
        "source": source,
        "csv": csv_path,
        "utterances": len(rows),
        "wer": 100.0 * errors / max(1, words),
        "errors": errors,
        "words": words,
        "audio_s": audio_s,
        "decode_s": decode_s,
        "rtf": decode_s / max(audio_s, 1e-9),
        "device": str(device),
    }
    return summary, rows


def write_results(folder, summary, rows):
    """Writes ``summary.json`` and ``utterances.csv`` to ``folder``.

    Returns
    -------
    tuple of str
        The two paths.
    """
    os.makedirs(folder, exist_ok=True)
    summary_path = os.path.join(folder, "summary.json")
    rows_path = os.path.join(folder, "utterances.csv")
    with open(summary_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(rows_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(
            f, ["id", "reference", "hypothesis", "errors", "words"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return summary_path, rows_path

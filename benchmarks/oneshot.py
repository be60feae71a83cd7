"""WER of Whisper after one-shot, data-free compression (magnitude, k-means,
round-to-nearest quantization).

Decodes a SpeechBrain CSV (``wav`` paths relative to the CSV's folder,
reference in ``wrd``) greedily with a transformers Whisper checkpoint,
dense and after each method at each sparsity, over every transformer
Linear of encoder and decoder. Prints a table and the relative WER
reduction of each method against per-layer magnitude pruning. With
``--quant`` it also decodes one-shot quantized models (the ``nm`` and
``quant`` modifiers of :class:`sb_compress.Plan`, hardened: what
``sb-compress oneshot --method quant`` writes), insertions counted (a
damaged decoder loops).

Compression runs on CPU; decoding on ``--device`` (CUDA when available).

Usage::

    python benchmarks/oneshot.py --source /path/to/whisper-tiny.en \\
        --csv /path/to/dev.csv --json results.json
    python benchmarks/oneshot.py --source /path/to/whisper-tiny.en \\
        --csv /path/to/dev.csv --methods --sparsities \\
        --quant int8 int4-g128 int4-g64 int4-g128+2:4 --json quant.json

Authors
 * sb_compress team 2026
"""

import argparse
import copy
import csv
import json
import os
import time

import jiwer
import soundfile
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from sb_compress.evaluate import normalise
from sb_compress.oneshot import compress_oneshot
from sb_compress.plan import Plan

METHODS = {
    "magnitude-layer": ("magnitude", "uniform"),
    "magnitude-global": ("magnitude", "mixed"),
    "kmeans-uniform": ("kmeans", "uniform"),
    "kmeans-mixed": ("kmeans", "mixed"),
}
#: name -> (bits, group size, N:M) of the one-shot quantized settings.
QUANT = {
    "int8": (8, None, None),
    "int4": (4, None, None),
    "int4-g128": (4, 128, None),
    "int4-g64": (4, 64, None),
    "int4+2:4": (4, None, (2, 4)),
    "int4-g128+2:4": (4, 128, (2, 4)),
    "int4-g64+2:4": (4, 64, (2, 4)),
}


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="Whisper folder")
    parser.add_argument("--csv", required=True, help="SpeechBrain CSV")
    parser.add_argument(
        "--sparsities", type=float, nargs="*", default=[0.2, 0.3, 0.4]
    )
    parser.add_argument(
        "--methods", nargs="*", default=list(METHODS), choices=list(METHODS)
    )
    parser.add_argument(
        "--quant", nargs="*", default=[], choices=list(QUANT), help="also these"
    )
    parser.add_argument("--device", default=None, help="default: cuda if any")
    parser.add_argument(
        "--limit", type=int, default=None, help="first N utterances only"
    )
    parser.add_argument(
        "--skip", type=int, default=0, help="skip the first N utterances"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def read_csv(path, skip=0, limit=None):
    """Returns ``(wav_path, reference)`` pairs of a SpeechBrain CSV."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[skip:]
    if limit is not None:
        rows = rows[:limit]
    return [(os.path.join(folder, r["wav"]), r["wrd"]) for r in rows]


def features(processor, utterances, batch_size):
    """Log-mel batches of the utterances."""
    batches = []
    for start in range(0, len(utterances), batch_size):
        audio = []
        for path, _ in utterances[start : start + batch_size]:
            signal, rate = soundfile.read(path, dtype="float32")
            if rate != 16000:
                raise ValueError(f"{path}: {rate} Hz, expected 16000")
            audio.append(signal)
        batches.append(
            processor.feature_extractor(
                audio, sampling_rate=16000, return_tensors="pt"
            ).input_features
        )
    return batches


def load_dense_and_dev(args):
    """The dense Whisper of ``args.source`` (float32, eval mode), its
    processor, and the dev set of ``args`` (``csv``, ``skip``, ``limit``,
    ``batch_size``).

    Returns
    -------
    tuple
        ``(processor, model, references, batches)``: normalised
        references and log-mel batches of the utterances.
    """
    processor = WhisperProcessor.from_pretrained(args.source)
    base = WhisperForConditionalGeneration.from_pretrained(args.source)
    utterances = read_csv(args.csv, args.skip, args.limit)
    references = [normalise(r) for _, r in utterances]
    batches = features(processor, utterances, args.batch_size)
    return processor, base.float().eval(), references, batches


def decode(model, processor, batches, max_new_tokens, device="cpu"):
    """Greedy transcripts (no timestamps) of the feature batches."""
    hypotheses = []
    with torch.no_grad():
        for batch in batches:
            tokens = model.generate(
                input_features=batch.to(device),
                do_sample=False,
                num_beams=1,
                return_timestamps=False,
                max_new_tokens=max_new_tokens,
            )
            hypotheses += processor.batch_decode(
                tokens, skip_special_tokens=True
            )
    return [normalise(h) for h in hypotheses]


def score(references, hypotheses):
    """WER (%) and error counts."""
    out = jiwer.process_words(references, hypotheses)
    return {
        "wer": 100 * out.wer,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
    }


def targeted_sparsity(model):
    """Fraction of zeros over all transformer Linears."""
    from sb_compress.models import adapter_for

    specs = adapter_for(model).linears()
    zeros = sum(int((s.module.weight == 0).sum()) for s in specs)
    return zeros / sum(s.numel for s in specs)


def quantized(model, name):
    """A hardened, one-shot quantized copy of ``model``."""
    bits, group_size, nm = QUANT[name]
    modifiers = []
    if nm:
        modifiers.append({"method": "nm", "n": nm[0], "m": nm[1]})
    modifiers.append(
        {"method": "quant", "bits": bits, "group_size": group_size}
    )
    plan = Plan(model, modifiers, name="oneshot")
    plan.prepare()
    plan.harden()
    return plan.finalized_model()


def main():
    """Runs every configuration and prints the table."""
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    device = torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    processor, base, references, batches = load_dense_and_dev(args)

    results = []
    configurations = (
        [("dense", 0.0)]
        + [(m, s) for s in args.sparsities for m in args.methods]
        + [(q, 0.5 if QUANT[q][2] else 0.0) for q in args.quant]
    )
    for name, sparsity in configurations:
        model = copy.deepcopy(base)
        start = time.time()
        clusters = None
        if name in QUANT:
            model = quantized(model, name)
        elif name != "dense":
            method, allocation = METHODS[name]
            records = compress_oneshot(
                model, method, sparsity, allocation, progress=False
            )
            clusters = [r["clusters"] for r in records]
        compress_s = time.time() - start
        model.to(device)
        hypotheses = decode(
            model, processor, batches, args.max_new_tokens, device
        )
        result = {
            "method": name,
            "sparsity": sparsity,
            "achieved_sparsity": targeted_sparsity(model),
            "compress_s": compress_s,
            "decode_s": time.time() - start - compress_s,
            "clusters": clusters,
            **score(references, hypotheses),
        }
        results.append(result)
        print(
            f"{name:17s} s={sparsity:.2f} achieved="
            f"{result['achieved_sparsity']:.4f} WER={result['wer']:.2f} "
            f"ins={result['insertions']} ({result['decode_s']:.0f} s)",
            flush=True,
        )
    compare(results)
    print_table(results, len(references))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "utterances": len(references),
                    "device": str(device),
                    "args": vars(args),
                    "results": results,
                },
                f,
                indent=2,
            )


def compare(results):
    """Adds the comparison with per-layer magnitude pruning."""
    dense = next(r["wer"] for r in results if r["method"] == "dense")
    baseline = {
        r["sparsity"]: r["wer"]
        for r in results
        if r["method"] == "magnitude-layer"
    }
    for r in results:
        magnitude = baseline.get(r["sparsity"])
        if r["method"] == "dense" or magnitude is None:
            continue
        r["relative_reduction"] = (
            (magnitude - r["wer"]) / magnitude if magnitude else 0.0
        )
        increase = magnitude - dense
        r["increase_avoided"] = (
            (magnitude - r["wer"]) / increase if increase > 0 else None
        )


def print_table(results, utterances):
    """Prints a markdown table."""
    print(f"\n{utterances} utterances")
    print(
        "| method | sparsity | achieved | WER % | ins | rel. WER red. vs "
        "mag. | mag. increase avoided |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        reduction = r.get("relative_reduction")
        avoided = r.get("increase_avoided")
        print(
            f"| {r['method']} | {r['sparsity']:.1f} | "
            f"{r['achieved_sparsity']:.4f} | {r['wer']:.2f} | "
            f"{r['insertions']} | "
            + ("" if reduction is None else f"{100 * reduction:+.1f}%")
            + " | "
            + ("" if avoided is None else f"{100 * avoided:.0f}%")
            + " |"
        )


if __name__ == "__main__":
    main()

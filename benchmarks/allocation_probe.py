"""WER of Whisper when the same per-row pruning gets different layer
allocations: how much of k-means-mixed's result is its allocation.

``sb-compress oneshot --method kmeans`` prunes, inside each layer, the
smallest ``|w|`` of every row in equal numbers (``row_balance``), so two
k-means runs differ only in how much of each layer they prune. This probe
keeps that per-row rule and varies the per-layer sparsities ``s_l``:

- ``uniform``: ``s_l = s`` for every layer (per-row magnitude);
- ``mixed``: the ``s_l`` that k-means-mixed chooses (same result as
  ``kmeans-mixed`` in ``oneshot.py``);
- ``shrinkF``: ``s + F (s_mixed - s)``, shifted to meet the target
  (``F = 0.5``: half of the k-means deviation from uniform);
- ``invert``: ``s - (s_mixed - s)``, shifted likewise (the opposite
  deviation);
- ``decoderF``: the decoder's Linears at ``F`` times the encoder's.

Usage::

    python benchmarks/allocation_probe.py --source /path/to/whisper-tiny.en \\
        --csv /path/to/dev.csv --sparsities 0.3 \\
        --variants uniform shrink0.5 invert --json probe.json

Authors
 * sb_compress team 2026
"""

import argparse
import copy
import json
import os
import sys
import time

import torch

from sb_compress.methods.kmeans import _balanced_rows, plan_clusters
from sb_compress.models import adapter_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oneshot import decode, load_dense_and_dev, score  # noqa: E402

#: Largest per-layer sparsity a shifted allocation may give a layer.
MAX_LAYER_SPARSITY = 0.95


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="Whisper folder")
    parser.add_argument("--csv", required=True, help="SpeechBrain CSV")
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3])
    parser.add_argument("--variants", nargs="+", default=["uniform", "mixed"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def shifted(allocation, sizes, sparsity):
    """``allocation`` plus the one constant that makes the size-weighted
    mean ``sparsity``, each layer clipped to ``[0, MAX_LAYER_SPARSITY]``."""
    total = sparsity * sum(sizes.values())

    def clipped(shift):
        return {
            n: min(max(s + shift, 0.0), MAX_LAYER_SPARSITY)
            for n, s in allocation.items()
        }

    low, high = -1.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        pruned = sum(s * sizes[n] for n, s in clipped(middle).items())
        low, high = (middle, high) if pruned < total else (low, middle)
    return clipped((low + high) / 2)


def allocation(variant, weights, sparsity):
    """Per-layer sparsities ``name -> s_l`` of one variant."""
    sizes = {n: w.numel() for n, w in weights.items()}
    if variant == "uniform":
        return {n: sparsity for n in weights}
    if variant.startswith("decoder"):
        factor = float(variant[len("decoder") :])
        return shifted(
            {
                n: factor * sparsity if ".decoder." in n else sparsity
                for n in weights
            },
            sizes,
            sparsity,
        )
    plans = plan_clusters(weights, sparsity, "mixed")
    mixed = {n: plans[n].pruned / sizes[n] for n in weights}
    if variant == "mixed":
        return mixed
    if variant == "invert":
        factor = -1.0
    elif variant.startswith("shrink"):
        factor = float(variant[len("shrink") :])
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return shifted(
        {n: sparsity + factor * (mixed[n] - sparsity) for n in weights},
        sizes,
        sparsity,
    )


@torch.no_grad()
def prune_rows(model, allocation):
    """Prunes each layer's smallest ``|w|``, ``s_l`` of every row."""
    for spec in adapter_for(model).linears():
        weight = spec.module.weight
        count = round(allocation[spec.name] * weight.numel())
        weight.masked_fill_(_balanced_rows(weight.abs(), count), 0.0)


def stack_sparsity(allocation, weights, stack):
    """Size-weighted sparsity of the layers of one stack."""
    names = [n for n in weights if f".{stack}." in f".{n}"]
    size = sum(weights[n].numel() for n in names)
    return sum(allocation[n] * weights[n].numel() for n in names) / size


def main():
    """Decodes every variant at every sparsity and prints a table."""
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    processor, base, references, batches = load_dense_and_dev(args)
    weights = {s.name: s.module.weight for s in adapter_for(base).linears()}
    results = []
    for sparsity in args.sparsities:
        for variant in args.variants:
            start = time.time()
            chosen = allocation(variant, weights, sparsity)
            model = copy.deepcopy(base)
            prune_rows(model, chosen)
            hypotheses = decode(model, processor, batches, args.max_new_tokens)
            result = {
                "variant": variant,
                "sparsity": sparsity,
                "encoder_sparsity": stack_sparsity(chosen, weights, "encoder"),
                "decoder_sparsity": stack_sparsity(chosen, weights, "decoder"),
                "layer_sparsity": chosen,
                "seconds": time.time() - start,
                **score(references, hypotheses),
            }
            results.append(result)
            print(
                f"{variant:12s} s={sparsity:.2f} "
                f"encoder={result['encoder_sparsity']:.3f} "
                f"decoder={result['decoder_sparsity']:.3f} "
                f"WER={result['wer']:.2f} ins={result['insertions']}",
                flush=True,
            )
    print("\n| variant | sparsity | encoder | decoder | WER % | insertions |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['variant']} | {r['sparsity']} | "
            f"{r['encoder_sparsity']:.3f} | {r['decoder_sparsity']:.3f} | "
            f"{r['wer']:.2f} | {r['insertions']} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "utterances": len(references),
                    "args": vars(args),
                    "results": results,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()

"""Time to compress a model with Whisper-large-v3's shapes (no download).

Builds a randomly initialised ``WhisperModel`` with large-v3's shapes
(d_model 1280, 20 heads, FFN 5120, 128 mel bins, vocabulary 51866) and
times ``compress_oneshot`` with k-means (mixed allocation) and with
per-layer magnitude pruning on every transformer Linear.
``--layers`` below 32 keeps the shapes but builds fewer blocks per stack;
the time is then also extrapolated linearly to 32 + 32 blocks.

Usage::

    python benchmarks/large_v3_time.py --sparsity 0.1 --json time.json

Authors
 * sb_compress team 2026
"""

import argparse
import json
import os
import time

import torch
from transformers import WhisperConfig, WhisperModel

from sb_compress.oneshot import compress_oneshot


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--layers", type=int, default=32, help="blocks per stack (large-v3: 32)"
    )
    parser.add_argument("--sparsity", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def build(layers):
    """A random Whisper with large-v3's shapes and ``layers`` blocks."""
    config = WhisperConfig(
        vocab_size=51866,
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=20,
        decoder_attention_heads=20,
        encoder_ffn_dim=5120,
        decoder_ffn_dim=5120,
    )
    torch.manual_seed(0)
    return WhisperModel(config).eval()


def main():
    """Times both methods and prints the table."""
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    scale = 32 / args.layers
    rows = []
    for method, allocation in (("kmeans", "mixed"), ("magnitude", "uniform")):
        model = build(args.layers)
        start = time.time()
        records = compress_oneshot(
            model, method, args.sparsity, allocation, progress=False
        )
        seconds = time.time() - start
        weights = sum(r["shape"][0] * r["shape"][1] for r in records)
        rows.append(
            {
                "method": f"{method}-{allocation}",
                "layers_per_stack": args.layers,
                "linears": len(records),
                "weights": weights,
                "seconds": seconds,
                "seconds_32_layers": seconds * scale,
            }
        )
        del model
    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    print(
        f"cpu threads {args.threads}, os cpus {os.cpu_count()}, "
        f"sparsity {args.sparsity}"
    )
    print(
        "| method | blocks/stack | weights | seconds | "
        "seconds at 32+32 blocks |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['layers_per_stack']} | {r['weights']} "
            f"| {r['seconds']:.1f} | {r['seconds_32_layers']:.1f} |"
        )
    print(f"k-means mixed / magnitude time ratio: {ratio:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args), "results": rows, "ratio": ratio},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()

"""Speed of the optional int4 / 2:4 fast path (:mod:`sb_compress.fastpath`).

A wav2vec2 model with wav2vec2-base's shapes (``Wav2Vec2Config()``
defaults, random weights) is compressed one-shot with the real Plan and
written with the real packed export, for int4 (group 128) and int4 + 2:4
(group 128). Each folder is then loaded twice: plainly
(``load_packed``, every Linear dense with the unpacked weights) and
through :func:`sb_compress.fastpath.accelerate` (``Int4Linear`` /
``Sparse24Linear``), both in bfloat16 on the same device. The table gives
the encoder's latency on a batch of 10 s inputs for each, the speedup of
the fast path over the dense run of the same weights, the largest output
difference relative to the output's scale, and one FFN Linear's matmul
time alone (768 -> 3072) over the batch's frames and over a few rows
(``--small-m``: 1, 16, 128, as in step-by-step decoding).

On a machine without CUDA the 2:4 layers stay dense (the report says
why) and int4 runs PyTorch's CPU kernel.

Usage::

    python benchmarks/fastpath_speed.py --json fastpath_speed.json

Authors
 * sb_compress team 2026
"""

import argparse
import json
import os
import platform
import tempfile
import time

import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from sb_compress import Plan
from sb_compress.export.pack import (
    load_packed,
    plan_codes,
    save_packed_atomic,
)
from sb_compress.fastpath import accelerate

#: name -> Plan modifiers.
SETTINGS = {
    "int4 g128": [{"method": "quant", "bits": 4, "group_size": 128}],
    "int4 g128 + 2:4": [
        {"method": "nm", "n": 2, "m": 4},
        {"method": "quant", "bits": 4, "group_size": 128},
    ],
}


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="default: cuda if any")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--small-m",
        type=int,
        nargs="*",
        default=[1, 16, 128],
        help="also time the FFN Linear on this many rows (decoding-like)",
    )
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def synchronize(device):
    """Waits for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def latency(function, device, repeats, warmup):
    """Median seconds of ``function()`` over ``repeats`` runs."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


def export(name, state, config, folder):
    """Writes one setting's packed folder; returns its path."""
    model = Wav2Vec2Model(config).eval()
    model.load_state_dict(state)
    plan = Plan(model, SETTINGS[name])
    plan.prepare()
    plan.harden()
    codes = plan_codes(plan)
    output = os.path.join(folder, name.replace(" ", "").replace(":", "_"))
    save_packed_atomic(plan.finalized_model(), codes, output)
    return output


@torch.no_grad()
def measure(name, folder, args, device, audio):
    """Times the dense and the fast model of one folder; returns its row."""
    dense = load_packed(folder).to(device=device, dtype=torch.bfloat16)
    fast, report = accelerate(folder, device=device)

    def run(model):
        return model(audio).last_hidden_state

    expected = run(dense).float()
    difference = (run(fast).float() - expected).abs().max()
    relative = float(difference / expected.abs().max())
    dense_s = latency(lambda: run(dense), device, args.repeats, args.warmup)
    fast_s = latency(lambda: run(fast), device, args.repeats, args.warmup)
    frames = expected.shape[0] * expected.shape[1]
    layer = "encoder.layers.0.feed_forward.intermediate_dense"
    x = torch.randn(frames, 768, device=device, dtype=torch.bfloat16)
    dense_layer = dense.get_submodule(layer)
    fast_layer = fast.get_submodule(layer)
    layer_dense_s = latency(
        lambda: dense_layer(x), device, args.repeats, args.warmup
    )
    layer_fast_s = latency(
        lambda: fast_layer(x), device, args.repeats, args.warmup
    )
    small = {}
    for rows in args.small_m:
        x = torch.randn(rows, 768, device=device, dtype=torch.bfloat16)
        small[str(rows)] = {
            "dense_ms": 1000
            * latency(lambda: dense_layer(x), device, args.repeats, 2),
            "fast_ms": 1000
            * latency(lambda: fast_layer(x), device, args.repeats, 2),
        }
        small[str(rows)]["speedup"] = (
            small[str(rows)]["dense_ms"] / small[str(rows)]["fast_ms"]
        )
    return {
        "setting": name,
        "ffn_linear_small_m": small,
        "kernels": report["counts"],
        "reasons": sorted(
            {v for v in report["layers"].values() if v.startswith("dense")}
        ),
        "latency_dense_s": dense_s,
        "latency_fast_s": fast_s,
        "speedup": dense_s / fast_s,
        "max_relative_difference": relative,
        "ffn_linear_dense_ms": 1000 * layer_dense_s,
        "ffn_linear_fast_ms": 1000 * layer_fast_s,
        "ffn_linear_speedup": layer_dense_s / layer_fast_s,
        "frames": frames,
    }


@torch.no_grad()
def sparse_backends(device, frames, args):
    """Raw 2:4 matmul times (768 -> 3072) per backend and dtype (CUDA)."""
    from torch.sparse import SparseSemiStructuredTensor as Sparse
    from torch.sparse import to_sparse_semi_structured

    from sb_compress.methods.nm import nm_mask

    results = []
    weight = torch.randn(3072, 768, device=device)
    weight = weight * nm_mask(weight, 2, 4)
    for dtype in (torch.float16, torch.bfloat16):
        dense = weight.to(dtype)
        for backend in ("cusparselt", "cutlass"):
            Sparse._FORCE_CUTLASS = backend == "cutlass"
            name = str(dtype).replace("torch.", "")
            for rows in [frames] + list(args.small_m):
                x = torch.randn(rows, 768, device=device, dtype=dtype)
                dense_s = latency(
                    lambda: torch.nn.functional.linear(x, dense),
                    device,
                    args.repeats,
                    2,
                )
                try:  # a backend may be missing for this GPU or build
                    sparse = to_sparse_semi_structured(dense)
                    sparse_s = latency(
                        lambda: torch.nn.functional.linear(x, sparse),
                        device,
                        args.repeats,
                        2,
                    )
                except RuntimeError as error:
                    results.append(
                        {"dtype": name, "backend": backend, "error": str(error)}
                    )
                    break
                results.append(
                    {
                        "dtype": name,
                        "backend": backend,
                        "rows": rows,
                        "dense_ms": 1000 * dense_s,
                        "sparse_ms": 1000 * sparse_s,
                        "speedup": dense_s / sparse_s,
                    }
                )
    Sparse._FORCE_CUTLASS = False
    print("\nraw 2:4 matmul, 768 -> 3072:")
    print("| dtype | backend | rows | dense ms | 2:4 ms | speedup |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['dtype']} | {r['backend']} | - | {r['error'][:60]} |")
            continue
        print(
            f"| {r['dtype']} | {r['backend']} | {r['rows']} | "
            f"{r['dense_ms']:.3f} | {r['sparse_ms']:.3f} | "
            f"{r['speedup']:.2f} |"
        )
    return results


def print_table(rows, device):
    """Markdown table of the rows."""
    print(f"\ndevice: {device}")
    print(
        "| setting | kernels | dense s | fast s | speedup | "
        "FFN Linear dense ms | fast ms | speedup | max rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kernels = ", ".join(f"{k} {v}" for k, v in r["kernels"].items())
        print(
            f"| {r['setting']} | {kernels} | {r['latency_dense_s']:.4f} | "
            f"{r['latency_fast_s']:.4f} | {r['speedup']:.2f} | "
            f"{r['ffn_linear_dense_ms']:.3f} | "
            f"{r['ffn_linear_fast_ms']:.3f} | "
            f"{r['ffn_linear_speedup']:.2f} | "
            f"{r['max_relative_difference']:.2e} |"
        )
    print("\nFFN Linear (768 -> 3072) alone, rows = tokens in the call:")
    print("| setting | rows | dense ms | fast ms | speedup |")
    print("|---|---|---|---|---|")
    for r in rows:
        for m, t in r["ffn_linear_small_m"].items():
            print(
                f"| {r['setting']} | {m} | {t['dense_ms']:.3f} | "
                f"{t['fast_ms']:.3f} | {t['speedup']:.2f} |"
            )


def main():
    """Runs the benchmark."""
    args = parse_arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    torch.manual_seed(args.seed)
    config = Wav2Vec2Config(num_hidden_layers=args.layers)
    state = Wav2Vec2Model(config).state_dict()
    audio = torch.randn(args.batch, int(args.seconds * 16000))
    audio = audio.to(device=device, dtype=torch.bfloat16)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in SETTINGS:
            path = export(name, state, config, folder)
            rows.append(measure(name, path, args, device, audio))
            print(rows[-1], flush=True)
    print_table(rows, device)
    backends = []
    if device.type == "cuda":
        backends = sparse_backends(device, rows[0]["frames"], args)
    if args.json:
        name = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        )
        result = {
            "model": "Wav2Vec2Config() defaults (wav2vec2-base shapes), "
            f"{args.layers} layers, random weights, bfloat16",
            "input": f"{args.batch} x {args.seconds} s",
            "device": name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rows": rows,
            "sparse_backends": backends,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

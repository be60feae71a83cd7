"""Bytes on disk of packed low-bit / N:M exports (format ``packed``).

A wav2vec2 model with wav2vec2-base's shapes (``Wav2Vec2Config()``
defaults, random weights; 72 targeted Linears of attention and FFN, 85M
weights) is compressed one-shot (round to nearest, N:M by magnitude) with
each setting and written with the real export
(:func:`sb_compress.export.pack.save_packed_atomic`). The table gives the
bytes of the targeted layers in ``packed_model.safetensors`` (codes, N:M
indices and fp16 scales: everything needed to rebuild them) against the
same layers in fp32, the bits per targeted weight, and the size of the
whole file. Each export is loaded back and checked bit for bit.

Usage::

    python benchmarks/quant_bytes.py --json quant_bytes.json

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
    packed_sizes,
    plan_codes,
    read_packed,
    save_packed_atomic,
)

#: name -> (bits, group size, N:M); group size None = per output channel.
SETTINGS = {
    "int8": (8, None, None),
    "int4": (4, None, None),
    "int4 g128": (4, 128, None),
    "int4 + 2:4": (4, None, (2, 4)),
    "int4 + 2:4 g128": (4, 128, (2, 4)),
    "int2 + 1:4": (2, None, (1, 4)),
    "int2 + 1:4 g128": (2, 128, (1, 4)),
}
#: Issue 5's targets: fraction of the fp32 bytes of the targeted layers.
TARGETS = {"int4 + 2:4": 0.096, "int2 + 1:4": 0.035}


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS
    )
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def modifiers(bits, group_size, nm):
    """Plan modifiers of one setting."""
    out = []
    if nm:
        out.append({"method": "nm", "n": nm[0], "m": nm[1]})
    out.append({"method": "quant", "bits": bits, "group_size": group_size})
    return out


def measure(name, state, config, folder):
    """Exports one setting, loads it back; returns its row."""
    bits, group_size, nm = SETTINGS[name]
    model = Wav2Vec2Model(config).eval()
    model.load_state_dict(state)
    started = time.perf_counter()
    plan = Plan(model, modifiers(bits, group_size, nm))
    plan.prepare()
    plan.harden()
    codes = plan_codes(plan)
    final = plan.finalized_model()
    output = os.path.join(folder, name.replace(" ", "").replace(":", "_"))
    save_packed_atomic(final, codes, output)
    export_s = time.perf_counter() - started
    sizes = packed_sizes(output)
    started = time.perf_counter()
    loaded, _ = read_packed(output)
    load_s = time.perf_counter() - started
    exact = all(
        torch.equal(
            loaded[f"{s.name}.weight"].view(torch.int32),
            s.module.weight.detach().view(torch.int32),
        )
        for s in plan.modifiers[-1].layers
    )
    targeted = sizes["targeted"]
    return {
        "setting": name,
        "bits": bits,
        "group_size": group_size,
        "nm": f"{nm[0]}:{nm[1]}" if nm else None,
        "targeted_bytes": targeted["bytes_on_disk"],
        "targeted_fp32_bytes": targeted["fp32_bytes"],
        "fraction_of_fp32": targeted["fraction_of_fp32"],
        "bits_per_weight": targeted["bits_per_weight"],
        "file_bytes": sizes["file"]["bytes_on_disk"],
        "file_bits_per_weight": sizes["file"]["bits_per_weight"],
        "target": TARGETS.get(name),
        "meets_target": (
            targeted["fraction_of_fp32"] <= TARGETS[name]
            if name in TARGETS
            else None
        ),
        "bit_exact_reload": exact,
        "export_s": round(export_s, 1),
        "load_s": round(load_s, 1),
    }


def table(rows, fp32):
    """The Markdown table."""
    lines = [
        "| setting | targeted bytes | % of fp32 | bits/weight | whole file "
        "| target | bit-exact reload |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| fp32 | {fp32['targeted']:,} | 100.00% | 32.000 | "
        f"{fp32['file']:,} | | |",
    ]
    for row in rows:
        target = ""
        if row["target"] is not None:
            verdict = "met" if row["meets_target"] else "NOT met"
            target = f"<= {row['target']:.1%}: {verdict}"
        lines.append(
            f"| {row['setting']} | {row['targeted_bytes']:,} | "
            f"{row['fraction_of_fp32']:.2%} | {row['bits_per_weight']:.3f} | "
            f"{row['file_bytes']:,} | {target} | {row['bit_exact_reload']} |"
        )
    return "\n".join(lines)


def main():
    """Runs the benchmark."""
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = Wav2Vec2Config(num_hidden_layers=args.layers)
    dense = Wav2Vec2Model(config).eval()
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    params = sum(p.numel() for p in dense.parameters())
    targeted = sum(
        s.module.weight.numel()
        for s in Plan(dense, [{"method": "quant"}]).modifiers[0].layers
    )
    fp32 = {"targeted": 4 * targeted, "file": 4 * params}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.settings:
            rows.append(measure(name, state, config, folder))
            print(f"{name}: {rows[-1]['fraction_of_fp32']:.2%}", flush=True)
    print(table(rows, fp32))
    if args.json:
        result = {
            "model": "Wav2Vec2Config() defaults (wav2vec2-base shapes), "
            f"{args.layers} layers, random weights",
            "targeted_weights": targeted,
            "params_total": params,
            "fp32": fp32,
            "rows": rows,
            "threads": args.threads,
            "machine": platform.platform(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

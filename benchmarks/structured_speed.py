"""CPU latency of a structurally pruned wav2vec2 against the dense model.

Builds a wav2vec2 model with wav2vec2-base's shapes from transformers'
``Wav2Vec2Config`` defaults (CNN front-end 7 x 512 channels, 12 layers,
hidden 768, FFN 3072, 12 heads; random weights, nothing downloaded), gates
it with ``sb_compress.Plan(model, [{"method": "hardconcrete", ...}])`` and
sets the gates to an uneven per-layer pattern of the kind structured
pruning learns (more heads and FFN units kept in lower layers, the last
layer's attention removed, the CNN channels thinned): the pattern's FFN
widths are scaled so that the encoder (``model.encoder``: transformer
layers and positional convolution) keeps ``--keep`` of its parameters.
The deterministic masks are shrunk with ``sb_compress.export.shrink`` and
the shrunk model is checked against the gated one (max abs difference).

Latency: one forward of ``--seconds`` of audio (batch 1) under
``torch.inference_mode``, dense and shrunk alternating after ``--warmup``
runs each, median of ``--repeats`` (``speedup``); the JSON also gives the
ratio of the fastest runs, the median of the per-pair ratios and the ratio
of median process CPU times, steadier on a shared machine. One training
step (forward, loss, backward, Adam; a batch of ``--train-batch`` x
``--train-seconds`` of audio) with the gates inserted (all of them but the
CNN's) is also timed against the same step of the dense model (ratio of
medians).

Usage::

    python benchmarks/structured_speed.py --json structured_speed.json

Authors
 * sb_compress team 2026
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from sb_compress import Plan
from sb_compress.export.shrink import count_params, shrink

#: Kept heads per layer (of 12); 0 removes the layer's attention.
HEADS = [7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 0]
#: Relative FFN width per layer, scaled to meet the parameter budget.
FFN_PROFILE = [1.3, 1.3, 1.2, 1.2, 1.1, 1.0, 1.0, 0.9, 0.9, 0.8, 0.7, 0.6]
#: Kept channels of the CNN front-end's layers (of 512; the last is kept).
#: The CNN's compute sits in its early layers (16k and 8k frames for 10 s).
CONV = [320, 288, 288, 320, 320, 352]


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--keep", type=float, default=0.28)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-seconds", type=float, default=4.0)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-conv", action="store_true")
    return parser.parse_args()


def _units_for_budget(model, budget_ffn):
    """Per-layer FFN widths following FFN_PROFILE with ~budget params."""
    width = model.config.hidden_size
    per_unit = 2 * width + 1
    total_units = budget_ffn / per_unit
    scale = total_units / sum(FFN_PROFILE)
    limit = model.config.intermediate_size
    return [min(limit, max(1, round(scale * f))) for f in FFN_PROFILE]


def _pattern(model, keep):
    """Heads and FFN widths per layer meeting ``keep`` of the encoder."""
    config = model.config
    width, head_dim = config.hidden_size, width_per_head(config)
    encoder = count_params(model.encoder)
    fixed = encoder - len(model.encoder.layers) * _layer_params(config)
    layer_norms = 4 * width * len(model.encoder.layers)
    attention = sum(
        h * head_dim * (4 * width + 3) + (width if h else 0) for h in HEADS
    )
    budget = keep * encoder - fixed - layer_norms - attention
    ffn_bias = width * len(FFN_PROFILE)
    return HEADS, _units_for_budget(model, budget - ffn_bias)


def width_per_head(config):
    """Head dimension."""
    return config.hidden_size // config.num_attention_heads


def _layer_params(config):
    width, ffn = config.hidden_size, config.intermediate_size
    return (
        4 * (width * width + width)
        + 2 * width * ffn
        + ffn
        + width
        + (4 * width)
    )


def _set_gate(gate, keep_index):
    with torch.no_grad():
        gate.log_alpha.fill_(-10.0)
        gate.log_alpha[keep_index] = 10.0


def gated_model(config, conv):
    """The dense model, and a copy gated with the benchmark's pattern."""
    torch.manual_seed(0)
    dense = Wav2Vec2Model(config).eval()
    gated = Wav2Vec2Model(config).eval()
    gated.load_state_dict(dense.state_dict())
    structures = ["heads", "dims", "ffn", "layers"] + (["conv"] if conv else [])
    plan = Plan(
        gated,
        [
            {
                "method": "hardconcrete",
                "sparsity": 0.72,
                "structures": structures,
            }
        ],
    )
    plan.prepare()
    return dense, gated, plan


def apply_pattern(plan, model, keep, conv):
    """Sets the gates to the uneven pattern; returns it."""
    modifier = plan.modifiers[0]
    heads, units = _pattern(model, keep)
    head_dim = width_per_head(model.config)
    for index, (h, u) in enumerate(zip(heads, units)):
        attention = modifier.block_gates[("attention", index)]
        _set_gate(attention.block, [0] if h else [])
        _set_gate(attention.head, list(range(h)))
        _set_gate(attention.qk, list(range(h * head_dim)))
        _set_gate(attention.v, list(range(h * head_dim)))
        ffn = modifier.block_gates[("ffn", index)]
        _set_gate(ffn.block, [0])
        _set_gate(ffn.unit, list(range(u)))
    if conv:
        for gate, channels in zip(
            modifier.block_gates[("conv", None)].list, CONV
        ):
            _set_gate(gate, list(range(channels)))
    return {"heads": heads, "ffn": units, "conv": CONV if conv else None}


def _time(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _timed(function):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def latencies(dense, shrunk, seconds, repeats, warmup):
    """Wall and CPU times of both models' forwards, alternating."""
    audio = torch.randn(1, int(16000 * seconds))
    wall = {"dense": [], "shrunk": []}
    cpu = {"dense": [], "shrunk": []}
    with torch.inference_mode():
        for _ in range(warmup):
            dense(audio)
            shrunk(audio)
        for i in range(repeats):
            order = [("dense", dense), ("shrunk", shrunk)]
            for name, model in order if i % 2 == 0 else order[::-1]:
                w, c = _timed(lambda: model(audio))
                wall[name].append(w)
                cpu[name].append(c)
    return wall, cpu


def train_step_ratio(config, seconds, steps, batch):
    """Median training-step time with the gates over the dense step."""
    dense, gated, plan = gated_model(config, conv=False)
    audio = torch.randn(batch, int(16000 * seconds))
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1e-5)
    own = {id(p) for p in plan.own_parameters()}
    gated_opt = torch.optim.Adam(
        [p for p in gated.parameters() if id(p) not in own], lr=1e-5
    )
    gate_opt = torch.optim.Adam(plan.optimizer_groups())
    multiplier_opt = torch.optim.Adam(plan.multiplier_groups(), maximize=True)

    def dense_step():
        dense_opt.zero_grad()
        dense(audio).last_hidden_state.pow(2).mean().backward()
        dense_opt.step()

    def gated_step():
        for optimizer in (gated_opt, gate_opt, multiplier_opt):
            optimizer.zero_grad()
        loss = gated(audio).last_hidden_state.pow(2).mean() + plan.loss()
        loss.backward()
        for optimizer in (gated_opt, gate_opt, multiplier_opt):
            optimizer.step()
        plan.on_step()

    dense.train()
    gated.train()
    dense.config.layerdrop = gated.config.layerdrop = 0.0
    dense_step()
    gated_step()
    times = {"dense": [], "gated": []}
    for i in range(steps):
        order = [("dense", dense_step), ("gated", gated_step)]
        for name, step in order if i % 2 == 0 else order[::-1]:
            times[name].append(_time(step))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return medians["gated"] / medians["dense"], medians


def main():
    """Builds, shrinks, checks and times; prints a table, writes JSON."""
    args = parse_arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    conv = not args.no_conv
    config = Wav2Vec2Config(layerdrop=0.0)
    dense, gated, plan = gated_model(config, conv)
    pattern = apply_pattern(plan, gated, args.keep, conv)
    modifier = plan.modifiers[0]
    structure = modifier.structure()
    shrunk = shrink(gated, structure).eval()
    check = torch.randn(1, 16000)
    with torch.inference_mode():
        max_diff = (
            (gated(check).last_hidden_state - shrunk(check).last_hidden_state)
            .abs()
            .max()
            .item()
        )
    times, cpu_times = latencies(
        dense, shrunk, args.seconds, args.repeats, args.warmup
    )
    medians = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    pairs = [d / s for d, s in zip(times["dense"], times["shrunk"])]
    ratio, step_medians = train_step_ratio(
        config, args.train_seconds, args.train_steps, args.train_batch
    )
    result = {
        "dense_params": count_params(dense.encoder),
        "shrunk_params": count_params(shrunk.encoder),
        "latency_dense_s": medians["dense"],
        "latency_shrunk_s": medians["shrunk"],
        "speedup": medians["dense"] / medians["shrunk"],
        "encoder_keep": count_params(shrunk.encoder)
        / count_params(dense.encoder),
        "total_params_dense": count_params(dense),
        "total_params_shrunk": count_params(shrunk),
        "max_abs_diff_gated_vs_shrunk": max_diff,
        "pattern": pattern,
        "speedup_fastest": min(times["dense"]) / min(times["shrunk"]),
        "speedup_median_of_pairs": statistics.median(pairs),
        "speedup_cpu_time": cpu["dense"] / cpu["shrunk"],
        "latencies_s": times,
        "cpu_times_s": cpu_times,
        "train_step_ratio_gated_over_dense": ratio,
        "train_step_s": step_medians,
        "audio_seconds": args.seconds,
        "train_audio": f"{args.train_batch} x {args.train_seconds:g} s",
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    print(f"encoder params  dense {result['dense_params']:>11,}")
    print(
        f"                shrunk {result['shrunk_params']:>10,} "
        f"({result['encoder_keep']:.1%})"
    )
    print(
        f"whole model     dense {result['total_params_dense']:>11,}  shrunk "
        f"{result['total_params_shrunk']:,}"
    )
    print(
        f"latency ({args.seconds:g} s audio) dense "
        f"{medians['dense']:.3f} s  shrunk {medians['shrunk']:.3f} s  "
        f"speedup {result['speedup']:.2f}x"
    )
    print(
        f"speedup of the fastest runs {result['speedup_fastest']:.2f}x, "
        f"median of pairs {result['speedup_median_of_pairs']:.2f}x, "
        f"process CPU time {result['speedup_cpu_time']:.2f}x"
    )
    print(f"training step with gates / dense: {ratio:.2f}")
    print(f"max |gated - shrunk| = {max_diff:.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

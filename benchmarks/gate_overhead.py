"""Training step time with self-pinching gates against the same step without.

Builds a wav2vec2 model with wav2vec2-base's shapes from transformers'
``Wav2Vec2Config`` defaults (12 layers, hidden 768, FFN 3072, 12 heads;
random weights, nothing downloaded), or from the config of ``--source``,
and a linear CTC head over 32 characters. Two copies with the same weights
are trained on the same random batch: one dense, one with
``sb_compress.Plan(model, [{"method": "pinch", ...}])`` on its attention
and FFN Linears. One step is zero_grad, forward, CTC loss (+ the plan's
sparsity loss), backward, the model's Adam step (and for the gated copy the
thresholds' Adam step, the multipliers' ascent step and ``plan.on_step``).

The two copies alternate step by step (dense then gated, then gated then
dense, ...) after warm-up steps, so both see the same machine load; the
result is the ratio of the median step times, reported with
``torch.get_num_threads()``, next to the ratio of the fastest steps and of
the median process CPU times (steadier than wall time on a shared machine;
with one thread it is the work done). ``layerdrop`` is set to 0 so that
every step runs every layer, and the CNN feature encoder is frozen as in
wav2vec2 fine-tuning (``--train-feature-encoder`` trains it too). The gates' own
forward and backward are also timed alone, without the model, to say how
much of the difference is theirs; ``--profile`` adds the torch profiler's
operators whose self time grows most from dense to gated steps.

Usage::

    python benchmarks/gate_overhead.py --json gate_overhead.json
    python benchmarks/gate_overhead.py --steps 4 --profile

Authors
 * sb_compress team 2026
"""

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import Wav2Vec2Config, Wav2Vec2Model

from sb_compress import Plan

VOCABULARY = 32


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source",
        default=None,
        help="transformers folder whose config to use (default: "
        "Wav2Vec2Config() defaults, i.e. wav2vec2-base shapes)",
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--targets", nargs="+", default=["attention", "ffn"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-feature-encoder", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile dense and gated steps, print the operators that grow",
    )
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def build_model(source, seed):
    """Returns a randomly initialised wav2vec2 model (layerdrop off)."""
    if source is None:
        config = Wav2Vec2Config()
    else:
        config = Wav2Vec2Config.from_pretrained(source)
    config.layerdrop = 0.0
    torch.manual_seed(seed)
    return Wav2Vec2Model(config)


class Trainer:
    """One model, its CTC head, its optimizers and (optionally) a plan."""

    def __init__(self, model, plan=None, train_feature_encoder=False):
        self.model = model.train()
        if not train_feature_encoder:
            model.freeze_feature_encoder()
        self.head = torch.nn.Linear(model.config.hidden_size, VOCABULARY)
        self.plan = plan
        own = set()
        self.optimizers = []
        if plan is not None:
            plan.prepare()
            plan.resolve_schedule(1000)
            own = {id(p) for p in plan.own_parameters()}
            self.optimizers.append(torch.optim.Adam(plan.optimizer_groups()))
            if plan.multiplier_groups():
                self.optimizers.append(
                    torch.optim.Adam(plan.multiplier_groups(), maximize=True)
                )
        params = [
            p
            for p in list(model.parameters()) + list(self.head.parameters())
            if p.requires_grad and id(p) not in own
        ]
        self.optimizers.insert(0, torch.optim.Adam(params, lr=1e-5))

    def step(self, batch):
        """One training step; returns its wall and process CPU seconds."""
        audio, targets, target_lengths = batch
        start = time.perf_counter()
        start_cpu = time.process_time()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        hidden = self.model(audio).last_hidden_state
        log_probs = self.head(hidden).log_softmax(-1).transpose(0, 1)
        frames = torch.full(
            (audio.shape[0],), log_probs.shape[0], dtype=torch.long
        )
        loss = F.ctc_loss(log_probs, targets, frames, target_lengths)
        if self.plan is not None:
            extra = self.plan.loss()
            if extra is not None:
                loss = loss + extra
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        if self.plan is not None:
            self.plan.on_step()
        return time.perf_counter() - start, time.process_time() - start_cpu


def make_batch(batch_size, seconds, seed):
    """Random audio and random character targets (about 12 chars/s)."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * 16000)
    audio = torch.randn(batch_size, samples, generator=generator)
    length = max(1, int(12 * seconds))
    targets = torch.randint(
        1, VOCABULARY, (batch_size, length), generator=generator
    )
    lengths = torch.full((batch_size,), length, dtype=torch.long)
    return audio, targets, lengths


def gates_alone(plan, repeats=3):
    """Median time of the gates' own forward and backward over all gated
    layers (mask, gated weight, mask sum), without the model."""
    layers = plan.modifiers[0].layers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for spec in layers:
            parametrization = spec.module.parametrizations.weight
            original = parametrization.original
            gate = parametrization[0]
            gated = gate(original)
            gated.sum().add(gate.last_mask_sum).backward()
            gate.last_mask_sum = None
        times.append(time.perf_counter() - start)
        for spec, gate in zip(layers, plan.modifiers[0].gates):
            spec.module.parametrizations.weight.original.grad = None
            gate.theta.grad = None
    return statistics.median(times)


def profile_steps(trainer, batch, steps):
    """Self CPU time per step of each operator (ms), by the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(batch)
    return {
        event.key: event.self_cpu_time_total / 1e3 / steps
        for event in prof.key_averages()
    }


def profile_difference(dense, gated, batch, steps, rows=15):
    """Prints the operators whose self time grows most with the gates
    (after one profiled step to warm the profiler up)."""
    profile_steps(dense, batch, 1)
    dense_ms = profile_steps(dense, batch, steps)
    gated_ms = profile_steps(gated, batch, steps)
    keys = set(dense_ms) | set(gated_ms)
    delta = {k: gated_ms.get(k, 0.0) - dense_ms.get(k, 0.0) for k in keys}
    print(
        f"\nProfiler, self CPU ms per step ({steps} steps each): "
        f"dense {sum(dense_ms.values()):.0f}, gated "
        f"{sum(gated_ms.values()):.0f}"
    )
    print("| operator | dense ms | gated ms | difference ms |")
    print("|---|---|---|---|")
    for key in sorted(delta, key=delta.get, reverse=True)[:rows]:
        print(
            f"| {key} | {dense_ms.get(key, 0.0):.1f} | "
            f"{gated_ms.get(key, 0.0):.1f} | {delta[key]:+.1f} |"
        )
    return {"dense_ms": dense_ms, "gated_ms": gated_ms}


def measure(args):
    """Runs the interleaved measurement; returns the results dict."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dense_model = build_model(args.source, args.seed)
    gated_model = copy.deepcopy(dense_model)
    plan = Plan(
        gated_model,
        [
            {
                "method": "pinch",
                "sparsity": args.sparsity,
                "targets": args.targets,
            }
        ],
    )
    gated_weights = sum(spec.numel for spec in plan.modifiers[0].layers)
    dense = Trainer(dense_model, None, args.train_feature_encoder)
    gated = Trainer(gated_model, plan, args.train_feature_encoder)
    gated.head.load_state_dict(dense.head.state_dict())
    batch = make_batch(args.batch_size, args.seconds, args.seed)

    times = {"dense": [], "gates": []}
    cpu_times = {"dense": [], "gates": []}
    total = args.warmup + args.steps
    for i in tqdm(range(total), desc="step pairs"):
        order = [("dense", dense), ("gates", gated)]
        if i % 2:
            order.reverse()
        for name, trainer in order:
            elapsed, cpu = trainer.step(batch)
            if i >= args.warmup:
                times[name].append(elapsed)
                cpu_times[name].append(cpu)
    gate_seconds = gates_alone(plan)
    profiled = None
    if args.profile:
        profiled = profile_difference(dense, gated, batch, args.profile_steps)

    dense_median = statistics.median(times["dense"])
    gated_median = statistics.median(times["gates"])
    pairs = [g / d for d, g in zip(times["dense"], times["gates"])]
    return {
        "model": "wav2vec2 (" + (args.source or "Wav2Vec2Config()") + ")",
        "layers": dense_model.config.num_hidden_layers,
        "hidden_size": dense_model.config.hidden_size,
        "intermediate_size": dense_model.config.intermediate_size,
        "gated_layers": len(plan.modifiers[0].layers),
        "gated_weights": gated_weights,
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "train_feature_encoder": args.train_feature_encoder,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "dense_s": times["dense"],
        "gates_s": times["gates"],
        "dense_median_s": dense_median,
        "gates_median_s": gated_median,
        "ratio": gated_median / dense_median,
        "ratio_median_of_pairs": statistics.median(pairs),
        "ratio_min": min(times["gates"]) / min(times["dense"]),
        "dense_cpu_s": cpu_times["dense"],
        "gates_cpu_s": cpu_times["gates"],
        "ratio_cpu": statistics.median(cpu_times["gates"])
        / statistics.median(cpu_times["dense"]),
        "gates_alone_s": gate_seconds,
        "profile": profiled,
        "soft_sparsity": float(plan.modifiers[0].last_sparsity),
    }


def print_table(result):
    """Prints the step times and the ratio."""
    print(
        f"\n{result['model']}: {result['gated_layers']} gated Linears "
        f"({result['gated_weights'] / 1e6:.1f}M weights), batch "
        f"{result['batch_size']} x {result['seconds']:g} s, "
        f"{result['threads']} threads, median of {result['steps']} steps"
    )
    print("| step | median s | min s | max s | median CPU s |")
    print("|---|---|---|---|---|")
    for name in ("dense", "gates"):
        values = result[f"{name}_s"]
        print(
            f"| {name} | {statistics.median(values):.3f} | "
            f"{min(values):.3f} | {max(values):.3f} | "
            f"{statistics.median(result[f'{name}_cpu_s']):.3f} |"
        )
    print(
        f"ratio gates/dense: {result['ratio']:.3f} (median wall), "
        f"{result['ratio_median_of_pairs']:.3f} (median of paired ratios), "
        f"{result['ratio_min']:.3f} (min wall), {result['ratio_cpu']:.3f} "
        "(median process CPU)"
    )
    print(
        f"gates alone (forward + backward of the {result['gated_layers']} "
        f"masks, no model): {result['gates_alone_s']:.3f} s = "
        f"{result['gates_alone_s'] / result['dense_median_s']:.1%} of a "
        "dense step"
    )


def main():
    """Measures, prints the table, writes the JSON."""
    args = parse_arguments()
    result = measure(args)
    print_table(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

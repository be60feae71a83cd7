"""Training memory and step time of folded encoders against the unfolded
dense ones; parameter and byte reduction; inference time at each depth.

Two models, random weights built from configs (nothing downloaded):

* ``wav2vec2``: wav2vec2-base's shapes (transformers' ``Wav2Vec2Config``
  defaults: CNN front-end, 12 layers, hidden 768, FFN 3072), its CNN
  frozen as in the CTC recipe, a linear CTC head (32 labels); a batch of
  ``--batch`` x ``--seconds`` s of audio;
* ``conformer``: SpeechBrain's ``TransformerASR`` with a Conformer encoder
  as in ``recipes/.../hparams/fold_conformer.yaml`` (12 layers, d_model
  144, 4 heads, FFN 576, RelPosMHAXL, input 640), a linear CTC head; a
  batch of ``--batch`` x ``--frames`` frames of random features.

Each is folded by ``sb_compress.methods.fold.FoldEncoder`` to
``--physical`` blocks (evenly spaced seeds) unfolded to 12 layers, and one
training step (forward, CTC loss, backward, Adam) is measured in three
modes, each in a fresh process:

* ``dense``: the unfolded 12-layer model, one forward (plain training);
* ``folded``: the folded model trained at its largest depth only (the same
  compute on shared weights);
* ``joint``: the folded model trained as ``CompressionBrain`` trains it:
  the forwards at 12 layers, at the seed depth and at a drawn depth, the
  KL term (``FoldEncoder.joint_loss``), one backward.

Step time: median of ``--steps`` steps after ``--warmup``. Memory: peak
resident memory of the process (Linux ``VmHWM``, reset after the imports)
minus its resident memory before the model is built: parameters,
gradients, Adam state, activations and allocator slack; ``state_mb`` is
the exact size of parameters + gradients + Adam's two moments. Bytes:
the dense model's safetensors file against the folded export's
(``save_folded``).
Inference: one forward (``torch.inference_mode``, batch 1) at every
depth of the folded model and of the dense model, median of
``--repeats``.

Usage::

    python benchmarks/fold.py --json benchmarks/out/fold.json

Authors
 * sb_compress team 2026
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

MODES = ("dense", "folded", "joint")
MODELS = ("wav2vec2", "conformer")
LABELS = 32


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--physical", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--infer-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def _rss():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _reset_peak():
    """Resets the kernel's peak resident memory of this process (VmHWM);
    ``False`` where it cannot (then the peak since start is read)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _import_model_libraries():
    import speechbrain.lobes.models.transformer.TransformerASR  # noqa: F401
    import transformers  # noqa: F401

    import sb_compress.methods.fold  # noqa: F401

    # torch's lazily created buffers and thread pools, before measuring
    x = torch.randn(4, 16, 100, requires_grad=True)
    conv = torch.nn.Conv1d(16, 16, 3)
    F.gelu(conv(x)).softmax(-1).sum().backward()


def build(name):
    """The dense 12-layer model, a CTC head and a batch maker."""
    torch.manual_seed(0)
    if name == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        model = Wav2Vec2Model(Wav2Vec2Config(layerdrop=0.0))
        model.freeze_feature_encoder()
        width = model.config.hidden_size

        def forward(model, x):
            return model(x).last_hidden_state

        def inputs(batch, seconds=None, frames=None):
            return torch.randn(batch, int(16000 * seconds))

    elif name == "conformer":
        from speechbrain.lobes.models.transformer.TransformerASR import (
            TransformerASR,
        )

        model = TransformerASR(
            tgt_vocab=LABELS,
            input_size=640,
            d_model=144,
            nhead=4,
            num_encoder_layers=12,
            num_decoder_layers=0,
            d_ffn=576,
            dropout=0.1,
            encoder_module="conformer",
            attention_type="RelPosMHAXL",
            normalize_before=True,
            causal=False,
        )
        width = 144

        def forward(model, x):
            return model.encode(x, torch.ones(x.shape[0]))

        def inputs(batch, seconds=None, frames=None):
            frames = frames or int(seconds * 25)
            return torch.randn(batch, frames, 640)

    else:
        raise ValueError(f"model {name!r}: one of {MODELS}")
    head = torch.nn.Linear(width, LABELS)
    return model, head, forward, inputs


def _fold(model, physical):
    from sb_compress.methods.fold import FoldEncoder

    fold = FoldEncoder(physical=physical, max_depth=12)
    fold.validate("fold")
    fold.bind(model, "fold")
    fold.prepare()
    return fold


def _ctc(log_probs):
    batch, frames, _ = log_probs.shape
    targets = torch.randint(1, LABELS, (batch, max(1, frames // 4)))
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        torch.full((batch,), frames),
        torch.full((batch,), targets.shape[1]),
        zero_infinity=True,
    )


def worker(args):
    """One model in one mode in this process: prints its JSON line."""
    name, mode = args.worker.split(":")
    _import_model_libraries()
    before = _rss()
    peak_reset = _reset_peak()
    model, head, forward, inputs = build(name)
    fold = _fold(model, args.physical) if mode != "dense" else None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-5)
    state_bytes = 4 * sum(p.numel() * p.element_size() for p in params)
    x = inputs(args.batch, seconds=args.seconds, frames=args.frames)

    def scores():
        return head(forward(model, x)).log_softmax(-1)

    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        rng = torch.get_rng_state()
        log_probs = scores()
        loss = _ctc(log_probs)
        if mode == "joint":
            fold.on_step(step)

            def run(depth):
                torch.set_rng_state(rng)
                with fold.depth(depth):
                    out = scores()
                return _ctc(out), (out, None)

            loss = loss + fold.joint_loss((log_probs, None), run)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = _peak()
    print(
        json.dumps(
            {
                "model": name,
                "mode": mode,
                "step_s": statistics.median(times),
                "step_times_s": times,
                "peak_mb": (peak - before) / 2**20,
                "state_mb": state_bytes / 2**20,
                "trainable_params": sum(p.numel() for p in params),
                "peak_reset": peak_reset,
            }
        )
    )


def _spawn(args, name, mode):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        f"{name}:{mode}",
        "--physical",
        str(args.physical),
        "--batch",
        str(args.batch),
        "--seconds",
        str(args.seconds),
        "--frames",
        str(args.frames),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _file_bytes(state, folder, name):
    from safetensors.torch import save_file

    path = os.path.join(folder, name)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return os.path.getsize(path)


def _infer_ms(model, forward, x, repeats):
    model.eval()
    times = []
    with torch.inference_mode():
        forward(model, x)
        for _ in range(repeats):
            start = time.perf_counter()
            forward(model, x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def static_numbers(args, name):
    """Parameters, bytes and inference time per depth of one model."""
    from sb_compress.export.folded import save_folded
    from sb_compress.methods.fold import parameter_counts

    model, _, forward, inputs = build(name)
    model.eval()
    x = inputs(1, seconds=args.infer_seconds)
    dense_ms = _infer_ms(model, forward, x, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        dense_bytes = _file_bytes(model.state_dict(), tmp, "dense.safetensors")
        fold = _fold(model, args.physical)
        save_folded(model, os.path.join(tmp, "folded"))
        folded_bytes = os.path.getsize(
            os.path.join(tmp, "folded", "model.safetensors")
        )
    counts = parameter_counts(model)
    per_depth = {}
    for depth in range(args.physical, 13):
        with fold.depth(depth):
            per_depth[str(depth)] = _infer_ms(model, forward, x, args.repeats)
    return {
        "params_dense": counts["logical"][12],
        "params_physical": counts["physical"],
        "params_reduction": 1 - counts["physical"] / counts["logical"][12],
        "bytes_dense": dense_bytes,
        "bytes_folded": folded_bytes,
        "bytes_reduction": 1 - folded_bytes / dense_bytes,
        "infer_ms_dense_12": dense_ms,
        "infer_ms_folded": per_depth,
    }


def main():
    """Runs every model and mode; prints a table, writes JSON."""
    args = parse_arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("json", "worker")
        },
        "models": {},
    }
    for name in args.models:
        runs = {mode: _spawn(args, name, mode) for mode in MODES}
        entry = {"train": runs, **static_numbers(args, name)}
        dense = runs["dense"]
        for mode in ("folded", "joint"):
            entry[f"{mode}_step_ratio"] = runs[mode]["step_s"] / dense["step_s"]
            entry[f"{mode}_peak_ratio"] = (
                runs[mode]["peak_mb"] / dense["peak_mb"]
            )
            entry[f"{mode}_state_ratio"] = (
                runs[mode]["state_mb"] / dense["state_mb"]
            )
        result["models"][name] = entry
    result["load_average_after"] = os.getloadavg()
    _print_table(result)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def _print_table(result):
    print(
        f"{'model':10} {'mode':7} {'step s':>7} {'x dense':>7} "
        f"{'peak MB':>8} {'x dense':>7} {'state MB':>8} {'x dense':>7}"
    )
    for name, entry in result["models"].items():
        for mode, run in entry["train"].items():
            ratios = (
                (1.0, 1.0, 1.0)
                if mode == "dense"
                else (
                    entry[f"{mode}_step_ratio"],
                    entry[f"{mode}_peak_ratio"],
                    entry[f"{mode}_state_ratio"],
                )
            )
            print(
                f"{name:10} {mode:7} {run['step_s']:7.2f} {ratios[0]:7.2f} "
                f"{run['peak_mb']:8.0f} {ratios[1]:7.2f} "
                f"{run['state_mb']:8.0f} {ratios[2]:7.2f}"
            )
    print()
    for name, entry in result["models"].items():
        print(
            f"{name}: params {entry['params_dense']:,} -> "
            f"{entry['params_physical']:,} "
            f"(-{100 * entry['params_reduction']:.1f}%), bytes "
            f"{entry['bytes_dense']:,} -> {entry['bytes_folded']:,} "
            f"(-{100 * entry['bytes_reduction']:.1f}%)"
        )
        depths = ", ".join(
            f"{d}: {ms:.0f}" for d, ms in entry["infer_ms_folded"].items()
        )
        print(
            f"  inference ms, dense 12: {entry['infer_ms_dense_12']:.0f}; "
            f"folded by depth {depths}"
        )


if __name__ == "__main__":
    main()

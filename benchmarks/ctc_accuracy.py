"""WER of a Whisper encoder + CTC head fine-tuned dense and while pruned.

Starts from a pretrained Whisper encoder (a local transformers folder, e.g.
tiny.en; the decoder is dropped) with a fresh linear CTC head over
characters, fine-tunes it on a training CSV and decodes a dev CSV greedily
(SpeechBrain CSVs: ``ID,duration,wav,spk_id,wrd``, ``wav`` relative to the
CSV's folder). Methods, each with the same number of steps, the same batches
in the same order and the same seed:

- ``dense``: no compression;
- ``magnitude``: gradual magnitude pruning (cubic schedule);
- ``pinch``: self-pinching gates (Lagrangian control);
- ``kmeans``: data-free k-means (mixed allocation) once at the start, mask
  frozen while fine-tuning;
- ``fold2``, ``fold3`` (``foldN``): the encoder folded to ``N`` physical
  blocks (seeds: evenly spaced pretrained layers) unfolded to its full
  depth, trained jointly as ``CompressionBrain`` trains a ``fold``
  modifier (task loss at the full depth, the seed depth and a drawn
  depth, KL from the full depth to the seed depth), then decoded at every
  depth from ``N`` to the full one. The dense model is also decoded with
  only its first layers at those depths (no retraining), for reference.

All target the attention and FFN Linears of the encoder through
``sb_compress.Plan``. After training the plan is hardened, the model is
rebuilt with ``plan.finalized_model()`` (masks baked, no
parametrization) and the sparsity is counted on its weights. The table
gives sparsity, WER and WER relative to dense.

CPU budget: Whisper pads every input to 30 s (3000 mel frames, 1500
positions). Here the log-mel features (``WhisperFeatureExtractor``, audio
zero-padded as Whisper does) are computed once per utterance for
``--max-seconds`` (default: the longest utterance, rounded up to a
second), the encoder's ``embed_positions`` is sliced to that many positions
and ``config.max_source_positions`` set to match. Batches group utterances
of similar length and are trimmed to their longest utterance rounded up to
a second; the encoder is then run by :func:`encode`, which is
``WhisperEncoder.forward`` without its fixed-length check, reading the
first positions of the table. Training and decoding use the same rule.

Usage::

    python /path/to/make_speech_set.py /tmp/speech --split train \\
        --n 1500 --skip 2000
    python benchmarks/ctc_accuracy.py --source /path/to/whisper-tiny.en \\
        --train-csv /tmp/speech/train.csv --csv /path/to/dev.csv \\
        --steps 300 --json ctc_accuracy.json

Authors
 * sb_compress team 2026
"""

import argparse
import csv
import json
import math
import os
import platform
import random
import re
import time

import jiwer
import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import WhisperFeatureExtractor, WhisperModel

from sb_compress import Plan

ALPHABET = " ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
BLANK = 0
METHODS = ("dense", "magnitude", "pinch", "kmeans", "fold2", "fold3")
SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="Whisper folder")
    parser.add_argument("--train-csv", required=True, help="training CSV")
    parser.add_argument("--csv", required=True, help="dev CSV (decoded)")
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS
    )
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--targets", nargs="+", default=["attention", "ffn"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4, help="encoder")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument(
        "--limit-train", type=int, default=None, help="first N only"
    )
    parser.add_argument("--limit-dev", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument(
        "--magnitude-ramp",
        type=float,
        default=0.6,
        help="magnitude ramp_steps, fraction of the run",
    )
    parser.add_argument("--magnitude-update-every", type=int, default=5)
    parser.add_argument("--pinch-lr", type=float, default=0.05)
    parser.add_argument("--pinch-multiplier-lr", type=float, default=0.05)
    parser.add_argument(
        "--pinch-ramp",
        type=float,
        default=0.6,
        help="pinch ramp_steps, fraction of the run (0: thresholds start "
        "at the target quantile)",
    )
    parser.add_argument("--pinch-kappa-start", type=float, default=0.1)
    parser.add_argument("--pinch-kappa-end", type=float, default=0.001)
    parser.add_argument(
        "--fold-kl-weight",
        type=float,
        default=1.0,
        help="fold methods: weight of the KL term (FoldEncoder.kl_weight)",
    )
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--device", default=None, help="default: cuda when available"
    )
    parser.add_argument("--json", default=None, help="write results here")
    return parser.parse_args()


def read_csv(path, limit=None):
    """Returns ``[(wav path, duration, words)]`` of a SpeechBrain CSV."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if limit is not None:
        rows = rows[:limit]
    return [
        (os.path.join(folder, r["wav"]), float(r["duration"]), r["wrd"])
        for r in rows
    ]


def normalise(text):
    """Upper case, characters outside the alphabet dropped."""
    text = re.sub(r"[^A-Z' ]", " ", text.upper())
    return " ".join(text.split())


def encode_text(text):
    """Character indices (blank is 0, so ALPHABET[i] is index i + 1)."""
    return [ALPHABET.index(c) + 1 for c in normalise(text)]


def decode_greedy(log_probs, frames):
    """Greedy CTC: argmax, collapse repeats, drop blanks."""
    texts = []
    for best, length in zip(log_probs.argmax(-1), frames):
        best = torch.unique_consecutive(best[:length]).tolist()
        texts.append("".join(ALPHABET[i - 1] for i in best if i != BLANK))
    return [" ".join(t.split()) for t in texts]


def load_features(utterances, extractor, seconds, desc):
    """Log-mel features of every utterance, zero-padded to ``seconds``."""
    samples = int(seconds * SAMPLE_RATE)
    features = []
    for path, _, _ in tqdm(utterances, desc=desc):
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
        out = extractor(
            audio,
            sampling_rate=SAMPLE_RATE,
            padding="max_length",
            max_length=samples,
            truncation=True,
            return_tensors="np",
        )
        features.append(torch.from_numpy(out.input_features[0]))
    return torch.stack(features)


def make_batches(utterances, batch_size):
    """Batches of utterances of similar duration (indices)."""
    order = sorted(range(len(utterances)), key=lambda i: utterances[i][1])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(features, utterances, batch, device="cpu"):
    """Features trimmed to the batch's longest utterance (whole seconds,
    even frame count), targets, and output frames per utterance, on
    ``device``."""
    longest = max(utterances[i][1] for i in batch)
    frames = int(math.ceil(longest)) * FRAMES_PER_SECOND
    frames = min(frames, features.shape[-1])
    mel = features[batch, :, :frames]
    out_frames = torch.tensor(
        [min(frames // 2, math.ceil(utterances[i][1] * 50) + 1) for i in batch]
    )
    texts = [encode_text(utterances[i][2]) for i in batch]
    targets = torch.tensor([c for t in texts for c in t], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    return (
        mel.to(device),
        targets.to(device),
        lengths.to(device),
        out_frames.to(device),
    )


def encode(encoder, features):
    """``WhisperEncoder.forward`` for inputs shorter than its table: the
    first ``frames / 2`` positional embeddings are added."""
    hidden = F.gelu(encoder.conv1(features))
    hidden = F.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
    for layer in encoder.layers:
        hidden = layer(hidden, None)
    return encoder.layer_norm(hidden)


def load_encoder(source, seconds):
    """Whisper without its decoder (float32), positions sliced to
    ``seconds``."""
    model = WhisperModel.from_pretrained(source).float()
    model.decoder = None
    positions = int(seconds * FRAMES_PER_SECOND) // 2
    table = model.encoder.embed_positions.weight.data[:positions].clone()
    model.encoder.embed_positions = torch.nn.Embedding.from_pretrained(
        table, freeze=False
    )
    model.config.max_source_positions = positions
    return model


def method_modifiers(args):
    """The Plan modifiers of each compressed method."""
    common = {"sparsity": args.sparsity, "targets": args.targets}
    return {
        "magnitude": {
            "method": "magnitude",
            "ramp_steps": args.magnitude_ramp,
            "update_every": args.magnitude_update_every,
            **common,
        },
        "pinch": {
            "method": "pinch",
            "ramp_steps": args.pinch_ramp,
            "lr": args.pinch_lr,
            "multiplier_lr": args.pinch_multiplier_lr,
            "kappa_start": args.pinch_kappa_start,
            "kappa_end": args.pinch_kappa_end,
            **common,
        },
        "kmeans": {"method": "kmeans", "allocation": "mixed", **common},
        **{
            method: {
                "method": "fold",
                "physical": fold_physical(method),
                "kl_weight": args.fold_kl_weight,
            }
            for method in METHODS
            if fold_physical(method)
        },
    }


def hard_sparsity(model, plan):
    """Fraction of zeros in the targeted weights of ``model``."""
    modules = dict(model.named_modules())
    zeros = total = 0
    for name in plan.targeted_names():
        weight = modules[name].weight
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total


def fold_physical(method):
    """``N`` of a ``foldN`` method, else ``None``."""
    match = re.fullmatch(r"fold(\d+)", method)
    return int(match.group(1)) if match else None


def ctc_loss(log_probs, targets, frames, lengths):
    """Mean CTC loss of a batch (``log_probs``: batch, frames, labels)."""
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        frames,
        lengths,
        blank=BLANK,
        zero_infinity=True,
    )


def train_one(method, args, data, batch_order, device):
    """Fine-tunes one method; returns its results."""
    torch.manual_seed(args.seed)
    model = load_encoder(args.source, data["seconds"]).to(device)
    head = torch.nn.Linear(model.config.d_model, len(ALPHABET) + 1)
    head.to(device)
    plan = None
    own = set()
    extra_optimizers = []
    physical = fold_physical(method)
    if method != "dense":
        modifier = method_modifiers(args)[method]
        plan = Plan(model, [modifier])
        plan.prepare()
        plan.resolve_schedule(args.steps)
        own = {id(p) for p in plan.own_parameters()}
        if plan.optimizer_groups():
            extra_optimizers.append(torch.optim.Adam(plan.optimizer_groups()))
        if plan.multiplier_groups():
            extra_optimizers.append(
                torch.optim.Adam(plan.multiplier_groups(), maximize=True)
            )
    encoder_params = [
        p for p in model.parameters() if p.requires_grad and id(p) not in own
    ]
    optimizer = torch.optim.Adam(
        [
            {"params": encoder_params, "lr": args.lr},
            {"params": list(head.parameters()), "lr": args.head_lr},
        ]
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    model.train()
    head.train()
    train = data["train"]
    losses = []
    start = time.perf_counter()
    for step, batch in enumerate(tqdm(batch_order, desc=method)):
        scale = min(1.0, (step + 1) / max(1, args.warmup_steps))
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * scale
        mel, targets, lengths, frames = collate(
            data["train_features"], train, batch, device
        )
        batch_ctc = (targets, frames, lengths)
        log_probs = head(encode(model.encoder, mel)).log_softmax(-1)
        loss = ctc_loss(log_probs, targets, frames, lengths)
        extra = None
        if physical is not None:
            extra = joint_fold_loss(
                plan.modifiers[0], model, head, mel, log_probs, batch_ctc
            )
        elif plan is not None:
            extra = plan.loss()
        total = loss if extra is None else loss + extra
        optimizer.zero_grad(set_to_none=True)
        for other in extra_optimizers:
            other.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(encoder_params, 5.0)
        optimizer.step()
        for other in extra_optimizers:
            other.step()
        if plan is not None:
            plan.on_step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start

    training = {
        "steps": len(batch_order),
        "train_seconds": train_seconds,
        "first_loss": float(np.mean(losses[:10])),
        "last_loss": float(np.mean(losses[-10:])),
    }
    if physical is not None:
        results = fold_results(method, plan, model, head, data, args, device)
        return results | training
    sparsity = 0.0
    soft = None
    if plan is not None:
        if method == "pinch":
            soft = float(plan.modifiers[0].last_sparsity)
        plan.harden()
        model = plan.finalized_model()
        sparsity = hard_sparsity(model, plan)
    wer, hypotheses = evaluate(model, head, data, args.batch_size, device)
    depth_wers = {}
    if method == "dense":
        depth_wers = truncated_wers(model, head, data, args, device)
    return {
        "method": method,
        "depth_wers": depth_wers,
        "settings": plan.settings() if plan is not None else None,
        **training,
        "soft_sparsity": soft,
        "sparsity": sparsity,
        "wer": wer,
        "examples": hypotheses[:3],
    }


def joint_fold_loss(fold, model, head, mel, log_probs, batch_ctc):
    """The fold modifier's extra terms on this batch (see
    ``FoldEncoder.joint_loss``): the same features through the encoder at
    the seed depth and at the drawn depth."""
    frames = batch_ctc[1]
    relative = frames.float() / log_probs.shape[1]

    def run(depth):
        with fold.depth(depth):
            student = head(encode(model.encoder, mel)).log_softmax(-1)
        return ctc_loss(student, *batch_ctc), (student, relative)

    return fold.joint_loss((log_probs, relative), run)


def fold_results(method, plan, model, head, data, args, device):
    """WER of a folded model at every depth, with its parameter counts."""
    from sb_compress.methods.fold import parameter_counts

    fold = plan.modifiers[0]
    depth_wers, examples = {}, {}
    for depth in range(fold.physical, fold.max_depth + 1):
        with fold.depth(depth):
            wer, hypotheses = evaluate(
                model, head, data, args.batch_size, device
            )
        depth_wers[depth] = wer
        examples[depth] = hypotheses[:3]
    return {
        "method": method,
        "settings": plan.settings(),
        "depth_wers": depth_wers,
        "parameters": parameter_counts(model),
        "soft_sparsity": None,
        "sparsity": 0.0,
        "wer": depth_wers[fold.max_depth],
        "examples": examples[fold.max_depth],
    }


def truncated_wers(model, head, data, args, device):
    """WER of a dense model run with only its first layers: every depth
    below the full one that a ``foldN`` method is decoded at."""
    physical = [fold_physical(m) for m in args.methods if fold_physical(m)]
    layers = model.encoder.layers
    wers = {}
    for depth in range(min(physical, default=len(layers)), len(layers)):
        model.encoder.layers = layers[:depth]
        try:
            wers[depth], _ = evaluate(
                model, head, data, args.batch_size, device
            )
        finally:
            model.encoder.layers = layers
    return wers


@torch.no_grad()
def evaluate(model, head, data, batch_size, device):
    """Greedy CTC WER (percent) on the dev set."""
    model.eval()
    head.eval()
    dev = data["dev"]
    references, hypotheses = [], []
    for batch in make_batches(dev, batch_size):
        mel, _, _, frames = collate(data["dev_features"], dev, batch, device)
        log_probs = head(encode(model.encoder, mel)).log_softmax(-1)
        hypotheses += decode_greedy(log_probs, frames)
        references += [normalise(dev[i][2]) for i in batch]
    wer = 100.0 * jiwer.wer(references, hypotheses)
    return wer, list(zip(references, hypotheses))


def batch_schedule(batches, steps, seed):
    """The same batch order for every method: shuffled epoch by epoch."""
    rng = random.Random(seed)
    order = []
    while len(order) < steps:
        epoch = list(batches)
        rng.shuffle(epoch)
        order += epoch
    return order[:steps]


def print_table(results):
    """Prints sparsity, WER and WER relative to dense, then the WER per
    depth of the fold methods (and of the dense model truncated)."""
    dense = next((r["wer"] for r in results if r["method"] == "dense"), None)
    print("\n| method | sparsity | WER % | rel. to dense | train min |")
    print("|---|---|---|---|---|")
    for r in results:
        relative = "-"
        if dense:
            relative = f"{100.0 * (r['wer'] - dense) / dense:+.1f}%"
        print(
            f"| {r['method']} | {100 * r['sparsity']:.1f}% | "
            f"{r['wer']:.2f} | {relative} | {r['train_seconds'] / 60:.1f} |"
        )
    rows = [r for r in results if r.get("depth_wers")]
    if not rows:
        return
    print("\n| method | depth | WER % | rel. to dense (full depth) |")
    print("|---|---|---|---|")
    for r in rows:
        wers = dict(r["depth_wers"])
        if r["method"] == "dense":
            wers[max(wers) + 1] = r["wer"]
        for depth, wer in sorted(wers.items()):
            relative = "-"
            if dense:
                relative = f"{100.0 * (wer - dense) / dense:+.1f}%"
            print(f"| {r['method']} | {depth} | {wer:.2f} | {relative} |")


def main():
    """Prepares the data once, trains every method, prints the table."""
    args = parse_arguments()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    train = read_csv(args.train_csv, args.limit_train)
    dev = read_csv(args.csv, args.limit_dev)
    seconds = args.max_seconds or math.ceil(max(d for _, d, _ in train + dev))
    extractor = WhisperFeatureExtractor.from_pretrained(args.source)
    data = {
        "train": train,
        "dev": dev,
        "seconds": seconds,
        "train_features": load_features(train, extractor, seconds, "train"),
        "dev_features": load_features(dev, extractor, seconds, "dev"),
    }
    batches = make_batches(train, args.batch_size)
    order = batch_schedule(batches, args.steps, args.seed)
    results = []
    for method in args.methods:
        results.append(train_one(method, args, data, order, device))
        print_table(results)
    summary = {
        "source": args.source,
        "train_csv": args.train_csv,
        "dev_csv": args.csv,
        "train_utterances": len(train),
        "dev_utterances": len(dev),
        "epochs": args.steps * args.batch_size / len(train),
        "max_seconds": seconds,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else "cpu"
        ),
        "torch": torch.__version__,
        "arguments": vars(args),
        "results": results,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()

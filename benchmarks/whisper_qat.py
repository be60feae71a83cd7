"""Quantization-aware fine-tuning of Whisper (encoder and decoder, NLL loss).

Fine-tunes a pretrained Whisper checkpoint (a local transformers folder,
e.g. tiny.en) on a training CSV with the usual token-level NLL (cross
entropy on the transcript after Whisper's prefix tokens), once dense and
once per low-bit setting, each with the same steps, batches and seed, then
decodes a dev CSV greedily (no timestamps) and counts WER and insertions.
The settings are :class:`sb_compress.Plan` modifiers over every
transformer Linear of encoder and decoder (self- and cross-attention,
FFN), the same blocks as ``hparams/quant.yaml``: N:M masks (refreshed
every ``--nm-update-every`` steps) then fake quantization with a
straight-through estimator. After training the plan is hardened and
written with the real packed export; the table gives its bytes for the
targeted layers and the whole file.

Options beyond the plain recipe:

- ``--teacher DIR`` distils a dense Whisper's token posteriors into every
  compressed setting: ``(1 - a) NLL + a T^2 KL(teacher || student)`` with
  ``a = --distill-weight`` and ``T = --distill-temperature``; the dense
  run's ``--save-dense DIR`` writes such a teacher;
- ``--learn-scales`` trains the quantization scales of every setting;
  ``--nm-freeze-after S`` stops refreshing N:M masks after step ``S``;
- ``--context-seconds S`` fine-tunes every setting, dense included, with
  an ``S``-second encoder context instead of Whisper's 30 s (the first
  rows of the positional table are kept): about 3x cheaper at 11 s, for
  runs on a CPU. Utterances longer than the context are an error;
- ``--precision bf16`` runs the training forwards (student and teacher)
  under bfloat16 autocast (about 1.9x faster on a CPU with AMX); the
  weights, the optimizer and the dev decoding stay float32;
- ``--lr-schedule linear`` decays the learning rate linearly to 0 after
  the warm-up (default: constant);
- ``--cache DIR`` keeps the log-mel features of each CSV there (keyed by
  the CSV's path, size and modification time, the context and the
  limit), so later runs skip the feature extraction.

``--train-csv`` takes several CSVs (their utterances are concatenated).

SpeechBrain CSVs: ``ID,duration,wav,spk_id,wrd`` with ``wav`` relative to
the CSV's folder. Transcripts (upper case in these CSVs) are trained in
sentence case; WER is computed on upper-cased words without punctuation.

Usage::

    python benchmarks/whisper_qat.py --source /path/to/whisper-tiny.en \\
        --train-csv /tmp/speech/train.csv --csv /path/to/dev.csv \\
        --steps 1000 --json whisper_qat.json

Authors
 * sb_compress team 2026
"""

import argparse
import contextlib
import csv
import hashlib
import json
import os
import random
import tempfile
import time

import jiwer
import soundfile
import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from sb_compress import Plan
from sb_compress.evaluate import normalise
from sb_compress.export.pack import packed_sizes, plan_codes, save_packed_atomic

#: name -> (bits, group size, N:M, learnt scales); None bits = dense.
SETTINGS = {
    "dense": (None, None, None, False),
    "int8": (8, None, None, False),
    "int4": (4, None, None, False),
    "int4+2:4": (4, None, (2, 4), False),
    "int2+1:4": (2, None, (1, 4), True),
}


def parse_arguments():
    """Returns the command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="Whisper folder")
    parser.add_argument(
        "--train-csv", required=True, nargs="+", help="one or more CSVs"
    )
    parser.add_argument("--csv", required=True, help="dev CSV (decoded)")
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument(
        "--lr-schedule", choices=("constant", "linear"), default="constant"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="autocast dtype of the training forwards",
    )
    parser.add_argument(
        "--cache", default=None, help="folder for cached log-mel features"
    )
    parser.add_argument("--nm-update-every", type=int, default=50)
    parser.add_argument(
        "--nm-freeze-after",
        type=int,
        default=None,
        help="last step at which N:M masks are refreshed (default: never "
        "frozen)",
    )
    parser.add_argument(
        "--learn-scales",
        action="store_true",
        help="learnt quantization scales for every quantized setting "
        "(int2 always learns them)",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="Whisper folder whose token posteriors are distilled into "
        "every compressed setting (e.g. the dense run's --save-dense)",
    )
    parser.add_argument("--distill-weight", type=float, default=0.5)
    parser.add_argument("--distill-temperature", type=float, default=1.0)
    parser.add_argument(
        "--save-dense",
        default=None,
        help="folder to save the dense fine-tuned model to (a teacher)",
    )
    parser.add_argument(
        "--context-seconds",
        type=float,
        default=30.0,
        help="encoder context: Whisper's 30 s, or shorter for speed (the "
        "positional table is cut; every setting, dense included, is then "
        "fine-tuned at that context)",
    )
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-dev", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: cuda if any")
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def read_csv(path, limit=None):
    """``[(wav path, words)]`` of a SpeechBrain CSV."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [(os.path.join(folder, r["wav"]), r["wrd"]) for r in rows]


def read_csvs(paths, limit=None):
    """The utterances of several CSVs, in order, the first ``limit``."""
    utterances = [u for path in paths for u in read_csv(path)]
    return utterances[:limit]


def cached_features(processor, paths, limit, frames, cache, desc):
    """:func:`load_features` of the CSVs' utterances, read from or written
    to ``cache`` (``None``: no cache)."""
    utterances = read_csvs(paths, limit)
    if cache is None:
        return utterances, load_features(processor, utterances, desc, frames)
    key = json.dumps(
        [
            [os.path.abspath(p), os.path.getsize(p), os.path.getmtime(p)]
            for p in paths
        ]
        + [limit, frames]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = os.path.join(cache, f"{desc}-{digest}.pt")
    if os.path.exists(path):
        return utterances, torch.load(path)
    features = load_features(processor, utterances, desc, frames)
    os.makedirs(cache, exist_ok=True)
    torch.save(features, path + ".tmp")
    os.replace(path + ".tmp", path)
    return utterances, features


def sentence_case(text):
    """``"HELLO THERE I'M"`` -> ``"Hello there i'm"``."""
    text = " ".join(text.split()).lower()
    return text[:1].upper() + text[1:]


def load_features(processor, utterances, desc, frames=3000):
    """Log-mel features of every utterance: Whisper's 30 s, cut to the
    first ``frames`` (exact: the padding only adds frames at the end)."""
    features = []
    for path, _ in tqdm(utterances, desc=desc):
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != 16000:
            raise ValueError(f"{path}: {rate} Hz, expected 16000")
        if len(audio) > frames * 160:
            raise ValueError(
                f"{path}: {len(audio) / 16000:.2f} s, longer than the "
                f"encoder context ({frames / 100:.2f} s); raise "
                "--context-seconds"
            )
        out = processor.feature_extractor(
            audio, sampling_rate=16000, return_tensors="pt"
        )
        features.append(out.input_features[0, :, :frames].to(torch.float16))
    return torch.stack(features)


def label_ids(processor, text, start_token):
    """Token ids after the decoder start token, ending with end-of-text."""
    ids = processor.tokenizer(sentence_case(text)).input_ids
    if ids and ids[0] == start_token:
        ids = ids[1:]
    return ids


def modifiers(setting, args):
    """Plan modifiers of a setting (empty for dense)."""
    bits, group_size, nm, learn_scales = SETTINGS[setting]
    out = []
    if nm:
        out.append(
            {
                "method": "nm",
                "n": nm[0],
                "m": nm[1],
                "update_every": args.nm_update_every,
                "end_step": args.nm_freeze_after,
            }
        )
    if bits:
        out.append(
            {
                "method": "quant",
                "bits": bits,
                "group_size": group_size,
                "learn_scales": learn_scales or args.learn_scales,
            }
        )
    return out


def shorten_context(model, frames):
    """Cuts Whisper's encoder to ``frames`` mel frames (two per position)
    by keeping the first rows of its positional table; a no-op when the
    model already has that context."""
    encoder = model.model.encoder
    positions = frames // 2
    if encoder.embed_positions.num_embeddings == positions:
        return model
    table = encoder.embed_positions.weight.data[:positions].clone()
    encoder.embed_positions = torch.nn.Embedding(positions, table.shape[1])
    encoder.embed_positions.weight.data.copy_(table)
    encoder.embed_positions.requires_grad_(False)
    model.config.max_source_positions = positions
    encoder.config.max_source_positions = positions
    return model


def load_model(source, args, device):
    """A Whisper model in float32 at the context of ``--context-seconds``."""
    model = WhisperForConditionalGeneration.from_pretrained(source)
    model = shorten_context(model.float(), context_frames(args))
    model.config.forced_decoder_ids = None
    return model.to(device)


def context_frames(args):
    """Mel frames of the encoder context (even)."""
    return 2 * round(args.context_seconds * 50)


def distillation_loss(logits, teacher_logits, labels, temperature):
    """``T^2 KL(teacher || student)`` of the token posteriors, averaged
    over the label positions."""
    keep = labels != -100
    student = torch.log_softmax(logits[keep] / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_logits[keep] / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(
        student, teacher, log_target=True, reduction="batchmean"
    )
    return kl * temperature**2


def lr_scale(step, steps, args):
    """Learning-rate factor at ``step``: linear warm-up, then constant or
    a linear decay to 0 at ``steps``."""
    warmup = max(1, args.warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    if args.lr_schedule == "constant":
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - warmup))


def autocast(args):
    """bfloat16 autocast on the training device for ``--precision bf16``."""
    if args.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(args.device_type, dtype=torch.bfloat16)


def batch_order(count, batch_size, steps, seed):
    """The same shuffled batches for every setting."""
    rng = random.Random(seed)
    order = []
    while len(order) < steps:
        indices = list(range(count))
        rng.shuffle(indices)
        order += [
            indices[i : i + batch_size]
            for i in range(0, count - batch_size + 1, batch_size)
        ]
    return order[:steps]


def train_one(setting, args, data, order, device, teacher=None):
    """Fine-tunes one setting (distilling ``teacher``'s token posteriors
    into a compressed one, if given); returns its row."""
    torch.manual_seed(args.seed)
    model = load_model(args.source, args, device)
    if setting == "dense":
        teacher = None
    plan = None
    own = set()
    extra = []
    if setting != "dense":
        plan = Plan(model, modifiers(setting, args))
        plan.prepare()
        plan.resolve_schedule(args.steps)
        own = {id(p) for p in plan.own_parameters()}
        if plan.optimizer_groups():
            extra.append(torch.optim.Adam(plan.optimizer_groups()))
    params = [p for p in model.parameters() if p.requires_grad]
    params = [p for p in params if id(p) not in own]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()
    losses = []
    started = time.perf_counter()
    for step, batch in enumerate(tqdm(order, desc=setting)):
        scale = lr_scale(step, len(order), args)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        features = data["train_features"][batch].to(device).float()
        labels = [data["train_labels"][i] for i in batch]
        longest = max(len(x) for x in labels)
        padded = torch.full((len(batch), longest), -100, dtype=torch.long)
        for row, ids in enumerate(labels):
            padded[row, : len(ids)] = torch.tensor(ids)
        padded = padded.to(device)
        with autocast(args):
            output = model(input_features=features, labels=padded)
            loss = output.loss
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(
                        input_features=features, labels=padded
                    ).logits
        if teacher is not None:
            distilled = distillation_loss(
                output.logits.float(),
                teacher_logits.float(),
                padded,
                args.distill_temperature,
            )
            weight = args.distill_weight
            loss = (1 - weight) * loss + weight * distilled
        optimizer.zero_grad(set_to_none=True)
        for other in extra:
            other.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        for other in extra:
            other.step()
        if plan is not None:
            plan.on_step()
        losses.append(loss.item())
    train_s = time.perf_counter() - started
    if setting == "dense" and args.save_dense:
        model.save_pretrained(args.save_dense)
        data["processor"].save_pretrained(args.save_dense)

    sizes = None
    if plan is not None:
        plan.harden()
        codes = plan_codes(plan)
        model = plan.finalized_model()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "packed")
            save_packed_atomic(model.cpu(), codes, path)
            sizes = packed_sizes(path)
        model.to(device)
    row = {
        "setting": setting,
        "steps": len(order),
        "train_s": train_s,
        "first_loss": sum(losses[:20]) / max(1, len(losses[:20])),
        "last_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "settings": plan.settings() if plan is not None else None,
        "distilled": teacher is not None,
        "sizes": sizes,
    }
    row.update(evaluate(model, data, args, device))
    return row


@torch.no_grad()
def evaluate(model, data, args, device):
    """Greedy WER (%) and error counts on the dev set."""
    model.eval()
    processor = data["processor"]
    hypotheses = []
    features = data["dev_features"]
    for start in range(0, len(features), args.batch_size):
        batch = features[start : start + args.batch_size].to(device).float()
        tokens = model.generate(
            input_features=batch,
            do_sample=False,
            num_beams=1,
            return_timestamps=False,
            max_new_tokens=args.max_new_tokens,
        )
        hypotheses += processor.batch_decode(tokens, skip_special_tokens=True)
    hypotheses = [normalise(h) for h in hypotheses]
    references = [normalise(r) for _, r in data["dev"]]
    out = jiwer.process_words(references, hypotheses)
    return {
        "wer": 100 * out.wer,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "examples": list(zip(references, hypotheses))[:3],
    }


def print_table(rows):
    """Markdown table: WER, insertions, bytes."""
    dense = next((r["wer"] for r in rows if r["setting"] == "dense"), None)
    print(
        "\n| setting | dev WER % | rel. to dense | insertions | "
        "targeted bytes | % of fp32 | whole file bytes | train min |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        relative = f"{100 * (r['wer'] - dense) / dense:+.1f}%" if dense else "-"
        sizes = r["sizes"]
        if sizes:
            targeted = sizes["targeted"]["bytes_on_disk"]
            fraction = f"{100 * sizes['targeted']['fraction_of_fp32']:.2f}%"
            whole = f"{sizes['file']['bytes_on_disk']:,}"
            targeted = f"{targeted:,}"
        else:
            targeted, fraction, whole = "fp32", "100%", "-"
        print(
            f"| {r['setting']} | {r['wer']:.2f} | {relative} | "
            f"{r['insertions']} | {targeted} | {fraction} | {whole} | "
            f"{r['train_s'] / 60:.1f} |"
        )


def main():
    """Prepares the data once, trains every setting, prints the table."""
    args = parse_arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    processor = WhisperProcessor.from_pretrained(args.source)
    start_token = WhisperForConditionalGeneration.from_pretrained(
        args.source
    ).config.decoder_start_token_id
    frames = context_frames(args)
    if not 0 < frames <= 3000:
        raise ValueError(
            f"--context-seconds {args.context_seconds}: must be in (0, 30]"
        )
    args.device_type = device.type
    train, train_features = cached_features(
        processor, args.train_csv, args.limit_train, frames, args.cache, "train"
    )
    dev, dev_features = cached_features(
        processor, [args.csv], args.limit_dev, frames, args.cache, "dev"
    )
    data = {
        "processor": processor,
        "dev": dev,
        "train_features": train_features,
        "train_labels": [
            label_ids(processor, t, start_token) for _, t in train
        ],
        "dev_features": dev_features,
    }
    order = batch_order(len(train), args.batch_size, args.steps, args.seed)
    teacher = None
    if args.teacher:
        teacher = load_model(args.teacher, args, device).eval()
        teacher.requires_grad_(False)
    rows = []
    for setting in args.settings:
        rows.append(train_one(setting, args, data, order, device, teacher))
        print_table(rows)
    if args.json:
        result = {
            "source": args.source,
            "train_utterances": len(train),
            "dev_utterances": len(dev),
            "epochs": args.steps * args.batch_size / len(train),
            "device": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else "cpu"
            ),
            "torch": torch.__version__,
            "arguments": vars(args),
            "rows": rows,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""The ``sb-compress`` command line: one-shot compression and reports.

Compress a model with no data and no training, then inspect the result::

    sb-compress oneshot --source openai/whisper-tiny --method kmeans \\
        --sparsity 0.1 --allocation mixed --output whisper-tiny-kmeans10
    sb-compress report whisper-tiny-kmeans10 --plot sparsity.png
    sb-compress oneshot --source facebook/wav2vec2-base --method quant \\
        --bits 4 --group-size 128 --nm 2:4 --output w2v2-int4-24 --packed

The output folder loads with transformers' ``from_pretrained`` (same
class as the source, pruned weights stored as zeros) and with SpeechBrain's
wrappers (``source=<folder>``); it holds the source's processor files and
``compression_report.json`` / ``.md``. Bad input exits with code 2 and one
line on stderr, writing nothing.

Authors
 * sb_compress team 2026
"""

import argparse
import contextlib
import os
import re
import shlex
import sys
import time

PROG = "sb-compress"
METHODS = ("magnitude", "kmeans", "quant")
BITS = (8, 4, 3, 2)
ALLOCATIONS = ("uniform", "mixed")
SCOPES = ("encoder", "decoder", "all")


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and never exit."""

    def error(self, message):
        raise UsageError(message)


def _sparsity(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def _nm_pattern(text):
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not N:M, e.g. 2:4")
    n, m = int(match.group(1)), int(match.group(2))
    if m not in (2, 4, 8, 16):
        raise argparse.ArgumentTypeError(f"{text}: M must be 2, 4, 8 or 16")
    if not 1 <= n <= m:
        raise argparse.ArgumentTypeError(f"{text}: N must be in [1, M]")
    return n, m


def build_parser():
    """Builds the argument parser of ``sb-compress``.

    Returns
    -------
    argparse.ArgumentParser

    Example
    -------
    >>> args = build_parser().parse_args(["report", "out"])
    >>> args.command, args.folder, args.plot
    ('report', 'out', None)
    """
    parser = _Parser(
        prog=PROG,
        description="Compress speech foundation models (sb_compress).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    oneshot = commands.add_parser(
        "oneshot",
        help="data-free, training-free compression of a transformers model",
        description="Prune a wav2vec2 / HuBERT / WavLM / Whisper model with "
        "no data and no training, and save it as a transformers folder.",
    )
    oneshot.add_argument(
        "--source",
        required=True,
        help="hub id or local transformers folder (with or without a CTC "
        "or LM head)",
    )
    oneshot.add_argument("--method", required=True, choices=METHODS)
    oneshot.add_argument(
        "--sparsity",
        type=_sparsity,
        help="fraction of the targeted weights to prune, in [0, 1) "
        "(magnitude, kmeans)",
    )
    oneshot.add_argument(
        "--allocation",
        default="uniform",
        choices=ALLOCATIONS,
        help="uniform: same sparsity (magnitude) or same K (kmeans) in every "
        "layer; mixed: global threshold (magnitude) or per-layer K "
        "minimising the error (kmeans)",
    )
    oneshot.add_argument(
        "--scope",
        default="all",
        choices=SCOPES,
        help="which stacks to compress (Whisper has both; default all)",
    )
    oneshot.add_argument(
        "--targets",
        nargs="+",
        metavar="REGEX",
        help="roles (q, ffn, attention...) or regexes over module names "
        "(plain or 're:'-prefixed); default: every transformer Linear",
    )
    oneshot.add_argument(
        "--ignore",
        nargs="+",
        metavar="REGEX",
        help="same syntax; matching layers are left untouched",
    )
    oneshot.add_argument("--output", required=True, metavar="DIR")
    oneshot.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR if it exists and is not empty",
    )
    oneshot.add_argument(
        "--share-centroids",
        action="store_true",
        help="kmeans: snap kept weights to their cluster centroid",
    )
    oneshot.add_argument(
        "--merge-channels",
        action="store_true",
        help="kmeans: merge FFN hidden units instead of pruning weights",
    )
    oneshot.add_argument(
        "--bits",
        type=int,
        choices=BITS,
        help="quant: bits per weight, round to nearest (default 4; 2 is "
        "ternary)",
    )
    oneshot.add_argument(
        "--group-size",
        type=_positive_int,
        metavar="G",
        help="quant: one scale per G weights along the input axis "
        "(default: one per output channel)",
    )
    oneshot.add_argument(
        "--nm",
        type=_nm_pattern,
        metavar="N:M",
        help="quant: keep the N largest of every M weights along the input "
        "axis (2:4, 1:4, 4:8) before quantizing",
    )
    oneshot.add_argument(
        "--packed",
        action="store_true",
        help="quant: store packed codes, N:M indices and fp16 scales "
        "(format packed, read by sb_compress.load_compressed) instead of "
        "dense fake-quantized weights",
    )
    report = commands.add_parser(
        "report",
        help="print the per-layer table of a compressed folder",
        description="Print the per-layer table and summary of a folder "
        "written by sb-compress or CompressionBrain.",
    )
    report.add_argument("folder", metavar="DIR")
    report.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw a layers x roles sparsity heatmap",
    )
    evaluate = commands.add_parser(
        "eval",
        help="WER and real-time factor of a model on a SpeechBrain CSV",
        description="Decode a SpeechBrain CSV (ID, duration, wav, spk_id, "
        "wrd) with a CTC or Whisper model, original or compressed; write "
        "summary.json and utterances.csv.",
    )
    evaluate.add_argument(
        "--source",
        required=True,
        metavar="DIR",
        help="a hub folder (sb-compress export: run through EncoderASR / "
        "WhisperASR), a CTC recipe's output folder, a transformers *ForCTC "
        "or Whisper folder, or any folder sb_compress wrote",
    )
    evaluate.add_argument("--csv", required=True, metavar="CSV")
    evaluate.add_argument("--batch-size", type=_positive_int, default=8)
    evaluate.add_argument("--limit", type=_positive_int, default=None)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--output",
        default="eval_results",
        metavar="DIR",
        help="results folder (default: eval_results)",
    )
    sweep = commands.add_parser(
        "sweep",
        help="one-shot methods x settings, each evaluated; Pareto plot",
        description="Compress SRC with every method and setting, evaluate "
        "each (and the dense source) on CSV, and write sweep.json, sweep.md "
        "and pareto.png to DIR.",
    )
    sweep.add_argument("--source", required=True, metavar="SRC")
    sweep.add_argument("--csv", required=True, metavar="CSV")
    sweep.add_argument("--methods", default="magnitude,kmeans,quant")
    sweep.add_argument("--sparsity", default="0.1,0.2,0.3,0.5")
    sweep.add_argument("--bits", default="8,4")
    sweep.add_argument("--group-size", type=_positive_int, default=None)
    sweep.add_argument("--batch-size", type=_positive_int, default=8)
    sweep.add_argument("--limit", type=_positive_int, default=None)
    sweep.add_argument("--device", default="cpu")
    sweep.add_argument("--output", required=True, metavar="DIR")
    export = commands.add_parser(
        "export",
        help="write a SpeechBrain hub folder (EncoderASR / WhisperASR)",
        description="Write HUB_DIR, a folder in the layout of SpeechBrain "
        "hub repos (hyperparams.yaml with a pretrainer, checkpoint files, "
        "config.json naming the interface, README.md) that "
        "speechbrain.inference.ASR.EncoderASR.from_hparams (the CTC "
        "recipe's output folder or its compressed/ folder) or "
        "WhisperASR.from_hparams (any Whisper folder) loads.",
    )
    export.add_argument(
        "source",
        metavar="CHECKPOINT_OR_DIR",
        help="a CTC or Whisper recipe's output folder or its compressed/ "
        "folder (the exported checkpoint), a one-shot Whisper folder or a "
        "Whisper transformers folder",
    )
    export.add_argument("--output", required=True, metavar="HUB_DIR")
    export.add_argument(
        "--overwrite", action="store_true", help="replace HUB_DIR"
    )
    export.add_argument(
        "--beam-size",
        type=_positive_int,
        default=1,
        help="Whisper: the searcher's beam (1: greedy)",
    )
    export.add_argument(
        "--license",
        help="the model card's license, e.g. apache-2.0 (default: the "
        "compressed folder's card's, else 'other': the base model's applies)",
    )
    export.add_argument(
        "--base-model",
        metavar="HUB_ID",
        help="the model card's base_model (default: the report's source or "
        "the recipe's wav2vec2_hub / whisper_hub)",
    )
    export.add_argument(
        "--repo-id",
        metavar="NAME",
        help="the Hub repo the card's loading example names (default: "
        "HUB_DIR's name)",
    )
    push = commands.add_parser(
        "push",
        help="upload a model folder to the Hugging Face Hub",
        description="Upload HUB_DIR to the Hub repo NAME (created if "
        "missing) with huggingface_hub; --dry-run lists what would go.",
    )
    push.add_argument("folder", metavar="HUB_DIR")
    push.add_argument("--repo-id", required=True, metavar="NAME")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true")
    return parser


def normalize_patterns(values, option):
    """Maps plain values to ``re:<value>`` unless they name a role.

    Arguments
    ---------
    values : list of str or None
        ``--targets`` or ``--ignore`` values.
    option : str
        The option, named in errors.

    Returns
    -------
    list of str or None
        Entries :func:`sb_compress.models.select_linears` accepts.

    Raises
    ------
    UsageError
        When a regex does not compile.

    Example
    -------
    >>> normalize_patterns(["ffn", "layers\\\\.0\\\\.", "re:fc1"], "--targets")
    ['ffn', 're:layers\\\\.0\\\\.', 're:fc1']
    """
    from sb_compress.models import ALL_ROLES, ROLE_GROUPS

    if not values:
        return None
    entries = []
    for value in values:
        if value in ROLE_GROUPS or value in ALL_ROLES:
            entries.append(value)
            continue
        entry = value if value.startswith("re:") else f"re:{value}"
        try:
            re.compile(entry[3:])
        except re.error as error:
            raise UsageError(f"{option} {value!r}: bad regex ({error})")
        entries.append(entry)
    return entries


def _check_oneshot_args(args):
    """Cheap checks, before the model is loaded."""
    from sb_compress.export import check_output_dir, check_source

    quant_flags = [
        flag
        for flag, value in (
            ("--bits", args.bits),
            ("--group-size", args.group_size),
            ("--nm", args.nm),
            ("--packed", args.packed or None),
        )
        if value is not None
    ]
    if args.method == "quant":
        for flag, value in (
            ("--sparsity", args.sparsity),
            ("--share-centroids", args.share_centroids or None),
            ("--merge-channels", args.merge_channels or None),
        ):
            if value is not None:
                raise UsageError(f"{flag} does not apply to --method quant")
    elif quant_flags:
        raise UsageError(f"{quant_flags[0]} needs --method quant")
    elif args.sparsity is None:
        raise UsageError(f"--method {args.method} needs --sparsity")
    if args.method == "magnitude" and (
        args.share_centroids or args.merge_channels
    ):
        flag = (
            "--share-centroids"
            if args.share_centroids
            else ("--merge-channels")
        )
        raise UsageError(f"{flag} needs --method kmeans")
    targets = normalize_patterns(args.targets, "--targets")
    ignore = normalize_patterns(args.ignore, "--ignore")
    source_dir = check_source(args.source)
    output = os.path.abspath(args.output)
    if source_dir is not None and os.path.abspath(source_dir) == output:
        raise UsageError(
            "--output is the --source folder; write to another folder"
        )
    check_output_dir(output, args.overwrite)
    return targets, ignore


def _check_targets(model, scope, targets, ignore):
    """Checks the layer selection right after loading, before compressing."""
    from sb_compress.models import adapter_for, select_linears

    specs = adapter_for(model).linears(scope)
    if not specs:
        raise UsageError(f"--scope {scope}: the model has no such layers")
    return select_linears(specs, targets, ignore, where="--targets")


def _check_quant_shapes(specs, args):
    """Checks that --group-size and --nm split every targeted layer."""
    for spec in specs:
        in_features = spec.module.weight.shape[1]
        if args.group_size and in_features % args.group_size:
            raise UsageError(
                f"--group-size {args.group_size} does not divide in_features "
                f"= {in_features} of {spec.name}; choose a divisor"
            )
        if args.nm and in_features % args.nm[1]:
            raise UsageError(
                f"--nm {args.nm[0]}:{args.nm[1]}: M does not divide "
                f"in_features = {in_features} of {spec.name}"
            )


def _format_bytes(size):
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def format_result(report, output):
    """The short summary printed after ``oneshot``.

    Arguments
    ---------
    report : dict
        The report written next to the model.
    output : str
        The output folder.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_result({"achieved_sparsity": 0.5,
    ...     "target_sparsity": 0.5, "params_nonzero": 5,
    ...     "params_targeted": 10, "params_total": 20,
    ...     "bytes_on_disk": 2048, "elapsed_s": 1.0}, "out"))
    sparsity 50.00% (target 50.00%) over 10 targeted weights
    params   5 nonzero targeted, 20 total
    size     2.0 KB on disk
    time     1.00 s
    output   out
    """
    lines = [
        f"sparsity {report['achieved_sparsity']:.2%} (target "
        f"{report['target_sparsity']:.2%}) over "
        f"{report['params_targeted']} targeted weights",
        f"params   {report['params_nonzero']} nonzero targeted, "
        f"{report['params_total']} total",
        f"size     {_format_bytes(report['bytes_on_disk'])} on disk",
        f"time     {report['elapsed_s']:.2f} s",
        f"output   {output}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_transformers():
    """Silences transformers' progress bars and warnings while loading and
    saving, so that errors stay one line and the output stays short."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def run_oneshot(args):
    """Runs ``sb-compress oneshot``; returns the exit code."""
    from sb_compress.card import write_model_card
    from sb_compress.export import (
        load_source,
        resolve_source,
        save_pretrained_atomic,
    )
    from sb_compress.oneshot import compress_oneshot
    from sb_compress.report import build_report, write_report

    targets, ignore = _check_oneshot_args(args)
    with _quiet_transformers():
        source_dir = resolve_source(args.source)
        model = load_source(source_dir)
    specs = _check_targets(model, args.scope, targets, ignore)
    if args.method == "quant":
        _check_quant_shapes(specs, args)
        return run_oneshot_quant(args, model, source_dir, targets, ignore)
    started = time.perf_counter()
    layers = compress_oneshot(
        model,
        args.method,
        args.sparsity,
        allocation=args.allocation,
        scope=args.scope,
        targets=targets,
        ignore=ignore,
        share_centroids=args.share_centroids,
        merge_channels=args.merge_channels,
        progress=True,
    )
    elapsed_s = time.perf_counter() - started
    written = {}

    def write_report_files(folder):
        written["report"] = build_report(
            model,
            layers,
            args.method,
            target_sparsity=args.sparsity,
            allocation=args.allocation,
            scope=args.scope,
            elapsed_s=round(elapsed_s, 3),
            folder=folder,
            source=args.source,
            targets=targets,
            ignore=ignore,
            share_centroids=args.share_centroids,
            merge_channels=args.merge_channels,
        )
        write_report(folder, written["report"])
        write_model_card(
            folder, written["report"], args.command_line, args.output
        )

    with _quiet_transformers():
        output = save_pretrained_atomic(
            model,
            args.output,
            source_dir=source_dir,
            overwrite=args.overwrite,
            extra_files=write_report_files,
        )
    print(format_result(written["report"], output))
    return 0


def quant_modifiers(args, targets, ignore):
    """The ``nm`` and ``quant`` modifier settings of ``oneshot`` options.

    Arguments
    ---------
    args : argparse.Namespace
        ``bits``, ``group_size``, ``nm``, ``scope``.
    targets, ignore : list of str or None
        Normalized layer selection.

    Returns
    -------
    list of dict
        Modifier mappings for :class:`sb_compress.Plan`.

    Example
    -------
    >>> import argparse
    >>> args = argparse.Namespace(bits=None, group_size=None, nm=(2, 4),
    ...     scope="all")
    >>> [m["method"] for m in quant_modifiers(args, None, None)]
    ['nm', 'quant']
    """
    common = {"targets": targets, "ignore": ignore, "scope": args.scope}
    modifiers = []
    if args.nm:
        modifiers.append({"method": "nm", "n": args.nm[0], "m": args.nm[1]})
    modifiers.append(
        {
            "method": "quant",
            "bits": args.bits or 4,
            "group_size": args.group_size,
        }
    )
    return [dict(m, **common) for m in modifiers]


def run_oneshot_quant(args, model, source_dir, targets, ignore):
    """Round-to-nearest quantization (after N:M pruning with ``--nm``),
    saved packed or dense; returns the exit code."""
    from sb_compress.card import write_model_card
    from sb_compress.export import save_pretrained_atomic
    from sb_compress.export.pack import (
        add_packed_sizes,
        plan_codes,
        save_packed_atomic,
    )
    from sb_compress.plan import Plan
    from sb_compress.report import build_report, write_report

    started = time.perf_counter()
    plan = Plan(model, quant_modifiers(args, targets, ignore), name="oneshot")
    plan.prepare()
    plan.harden()
    codes = plan_codes(plan) if args.packed else None
    final = plan.finalized_model()
    records = plan.layer_records()
    elapsed_s = time.perf_counter() - started
    method = "+".join(m.method for m in plan.modifiers)
    written = {}

    def write_report_files(folder):
        report = build_report(
            final,
            records,
            method,
            target_sparsity=1 - args.nm[0] / args.nm[1] if args.nm else 0.0,
            scope=args.scope,
            elapsed_s=round(elapsed_s, 3),
            folder=folder,
            format="packed" if args.packed else "dense",
            source=args.source,
            targets=targets,
            ignore=ignore,
            modifiers=plan.settings(),
        )
        if args.packed:
            add_packed_sizes(report, folder)
        write_report(folder, report)
        write_model_card(folder, report, args.command_line, args.output)
        written["report"] = report

    with _quiet_transformers():
        if args.packed:
            output = save_packed_atomic(
                final,
                codes,
                args.output,
                source_dir=source_dir,
                overwrite=args.overwrite,
                extra_files=write_report_files,
            )
        else:
            output = save_pretrained_atomic(
                final,
                args.output,
                source_dir=source_dir,
                overwrite=args.overwrite,
                extra_files=write_report_files,
            )
    report = written["report"]
    print(format_result(report, output))
    if args.packed:
        targeted = report["targeted"]
        print(
            f"packed   {targeted['bits_per_weight']:.3f} bits per targeted "
            f"weight ({targeted['fraction_of_fp32']:.2%} of fp32), "
            f"{report['bits_per_weight']:.3f} over the whole file"
        )
    return 0


def run_report(args):
    """Runs ``sb-compress report``; returns the exit code."""
    from sb_compress.report import (
        format_layer_table,
        format_structure_table,
        format_summary,
        plot_sparsity_heatmap,
        plot_structure,
        read_report,
    )

    report = read_report(args.folder)
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot {args.plot}: must end with .png")
    structure = format_structure_table(report)
    if report.get("layers") or not structure:
        print(format_layer_table(report))
        print()
    if structure:
        print(structure)
        print()
    print(format_summary(report))
    if args.plot:
        if report.get("layers"):
            plot_sparsity_heatmap(report, args.plot)
            print(f"heatmap  {args.plot}")
        else:
            plot_structure(report, args.plot)
            print(f"structure plot  {args.plot}")
    return 0


def run_eval(args):
    """Runs ``sb-compress eval``; returns the exit code."""
    from sb_compress.evaluate import evaluate, write_results

    with _quiet_transformers():
        summary, rows = evaluate(
            args.source, args.csv, args.batch_size, args.device, args.limit
        )
    paths = write_results(args.output, summary, rows)
    print(
        f"WER      {summary['wer']:.2f}% ({summary['errors']} errors / "
        f"{summary['words']} words, {summary['utterances']} utterances)"
    )
    print(
        f"errors   {summary['substitutions']} substitutions, "
        f"{summary['deletions']} deletions, {summary['insertions']} "
        "insertions"
    )
    print(
        f"RTF      {summary['rtf']:.3f} ({summary['decode_s']:.1f} s for "
        f"{summary['audio_s']:.1f} s of audio on {summary['device']})"
    )
    print(f"results  {paths[0]}, {paths[1]}")
    return 0


def run_sweep(args):
    """Runs ``sb-compress sweep``; returns the exit code."""
    from sb_compress.sweep import check_settings, parse_list
    from sb_compress.sweep import run_sweep as sweep

    methods = parse_list(args.methods, str, "--methods")
    sparsities = parse_list(args.sparsity, float, "--sparsity")
    bits = parse_list(args.bits, int, "--bits")
    check_settings(methods, sparsities, bits)
    with _quiet_transformers():
        records = sweep(
            args.source,
            args.csv,
            args.output,
            methods,
            sparsities,
            bits,
            args.group_size,
            args.batch_size,
            args.device,
            args.limit,
        )
    from sb_compress.sweep import format_markdown

    print(format_markdown(records))
    print(f"written  {args.output}/sweep.json, sweep.md, pareto.png")
    return 0


def run_export(args):
    """Runs ``sb-compress export``; returns the exit code."""
    from sb_compress.hub import export_any

    with _quiet_transformers():
        interface = export_any(
            args.source,
            args.output,
            args.overwrite,
            args.command_line,
            args.beam_size,
            license=args.license,
            base_model=args.base_model,
            name=args.repo_id,
        )
    print(f"hub folder  {args.output}")
    print(
        f"load with   {interface}.from_hparams("
        f"source={args.output!r}, savedir=...)"
    )
    return 0


def run_push(args):
    """Runs ``sb-compress push``; returns the exit code."""
    from sb_compress.hub import push

    result = push(args.folder, args.repo_id, args.private, args.dry_run)
    for path, size in result["files"]:
        print(f"{_format_bytes(size):>10}  {path}")
    total = _format_bytes(result["bytes"])
    if result["uploaded"]:
        print(
            f"pushed   {len(result['files'])} files, {total} to {result['url']}"
        )
    else:
        print(
            f"dry run  {len(result['files'])} files, {total} would go to "
            f"{args.repo_id}"
        )
    return 0


def _input_errors():
    from sb_compress.evaluate import EvaluationError
    from sb_compress.export import CompressedFormatError, SourceError
    from sb_compress.hub import HubError, PushError
    from sb_compress.models import TargetError, UnsupportedModelError
    from sb_compress.report import ReportError
    from sb_compress.sweep import SweepError

    return (
        EvaluationError,
        HubError,
        PushError,
        SweepError,
        UsageError,
        SourceError,
        UnsupportedModelError,
        TargetError,
        ReportError,
        CompressedFormatError,
        FileExistsError,
    )


def main(argv=None):
    """Runs ``sb-compress``.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on bad input (one line on stderr, nothing written).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        arguments = sys.argv[1:] if argv is None else list(argv)
        args.command_line = " ".join(
            [PROG] + [shlex.quote(str(a)) for a in arguments]
        )
        if args.command == "oneshot":
            return run_oneshot(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "sweep":
            return run_sweep(args)
        if args.command == "push":
            return run_push(args)
        if args.command == "export":
            return run_export(args)
        return run_report(args)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    except _input_errors() as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

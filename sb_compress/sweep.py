"""A compression sweep: one-shot methods x settings, each evaluated.

:func:`run_sweep` compresses a source with ``sb-compress oneshot`` for
every method and setting (magnitude and k-means at each sparsity,
quantization at each bit width, packed), evaluates the dense source and
every result with :func:`sb_compress.evaluate.evaluate`, and writes to the
output folder:

- ``sweep.json``: one record per model (method, setting, achieved
  sparsity, bytes on disk, WER, real-time factor, folder);
- ``sweep.md``: the same as a Markdown table;
- ``pareto.png``: WER against bytes on disk (one line per method, dense
  marked) beside WER against sparsity (pruning methods).

Bytes on disk are those of the weight files. Pruned models are written
dense (zeros stored), so their bytes equal the source's: only
quantization moves left on the first panel, and the second panel shows
what pruning costs. Each model lives in its own sub-folder with its
``eval/`` results; a re-run skips the models already compressed and the
evaluations already done on the same CSV and utterances; ``sweep.json``
and ``sweep.md`` are rewritten after every model, the plot at the end
(each file whole, through a temporary file).

Authors
 * sb_compress team 2026
"""

import json
import os

from sb_compress.evaluate import evaluate, write_results

METHODS = ("magnitude", "kmeans", "quant")


class SweepError(ValueError):
    """Bad sweep settings."""


def parse_list(text, kind, option):
    """``"0.1,0.2"`` -> ``[0.1, 0.2]`` with a clear error.

    Example
    -------
    >>> parse_list("0.1, 0.3", float, "--sparsity")
    [0.1, 0.3]
    """
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise SweepError(f"{option} {text}: {error}") from error
    if not values:
        raise SweepError(f"{option} is empty")
    return values


def check_settings(methods, sparsities, bits):
    """Fails before any work on an unknown method, a sparsity outside
    [0, 1) or unsupported bits."""
    from sb_compress.methods.quant import SUPPORTED_BITS

    for method in methods:
        if method not in METHODS:
            raise SweepError(
                f"--methods {method}: unknown; choose from {', '.join(METHODS)}"
            )
    for value in sparsities:
        if not 0.0 <= value < 1.0:
            raise SweepError(f"--sparsity {value}: must be in [0, 1)")
    for value in bits:
        if value not in SUPPORTED_BITS:
            raise SweepError(
                f"--bits {value}: unsupported; choose "
                + ", ".join(str(b) for b in SUPPORTED_BITS)
            )


def configurations(methods, sparsities, bits, group_size=None):
    """``(name, oneshot arguments, method, setting)`` of every model."""
    out = []
    for method in methods:
        if method == "quant":
            for b in bits:
                arguments = ["--method", "quant", "--bits", str(b), "--packed"]
                if group_size:
                    arguments += ["--group-size", str(group_size)]
                out.append((f"quant-int{b}", arguments, "quant", f"int{b}"))
            continue
        for s in sparsities:
            arguments = ["--method", method, "--sparsity", str(s)]
            if method == "kmeans":
                arguments += ["--allocation", "mixed"]
            out.append((f"{method}-{s:g}", arguments, method, s))
    return out


def weight_bytes(folder):
    """Bytes of a folder's weight files (safetensors / bin)."""
    total = 0
    for name in os.listdir(folder):
        if name.endswith((".safetensors", ".bin")):
            total += os.path.getsize(os.path.join(folder, name))
    return total


def _evaluated(folder, source, csv_path, batch_size, device, limit):
    """The evaluation of ``source`` in ``folder/eval``, reused when it was
    done on the same CSV and utterances."""
    from sb_compress.evaluate import read_csv

    results = os.path.join(folder, "eval")
    path = os.path.join(results, "summary.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        same_csv = os.path.abspath(summary.get("csv", "")) == os.path.abspath(
            csv_path
        )
        if same_csv and summary.get("utterances") == len(
            read_csv(csv_path, limit)
        ):
            return summary
    summary, rows = evaluate(source, csv_path, batch_size, device, limit)
    write_results(results, summary, rows)
    return summary


def _compress(source, folder, arguments):
    """``sb-compress oneshot`` into ``folder`` (its own code path: bad
    settings raise the CLI's errors), unless already there."""
    import shlex

    from sb_compress.cli import PROG, build_parser, run_oneshot

    if os.path.isfile(os.path.join(folder, "compression_report.json")):
        return
    argv = ["oneshot", "--source", source, "--output", folder, *arguments]
    args = build_parser().parse_args(argv)
    args.command_line = " ".join([PROG] + [shlex.quote(a) for a in argv])
    run_oneshot(args)


def _record(name, method, setting, summary, **values):
    record = {"name": name, "method": method, "setting": setting}
    record.update(values)
    record.update(
        {
            key: summary[key]
            for key in ("wer", "rtf", "insertions")
            if key in summary
        }
    )
    return record


def run_sweep(
    source,
    csv_path,
    output,
    methods=METHODS,
    sparsities=(0.1, 0.2, 0.3, 0.5),
    bits=(8, 4),
    group_size=None,
    batch_size=8,
    device="cpu",
    limit=None,
):
    """Runs the sweep; returns the records written to ``sweep.json``.

    Arguments
    ---------
    source : str
        A local transformers folder (CTC model with tokenizer, or Whisper).
    csv_path : str
        SpeechBrain CSV to evaluate on.
    output : str
        Output folder (created; models go to sub-folders).
    methods : sequence of str
        Among ``magnitude``, ``kmeans``, ``quant``.
    sparsities : sequence of float
        For magnitude and k-means.
    bits : sequence of int
        For quant.
    group_size : int, optional
        Quantization group size (default: per output channel).
    batch_size, device, limit
        See :func:`sb_compress.evaluate.evaluate`.

    Returns
    -------
    list of dict
    """
    from sb_compress.evaluate import read_csv
    from sb_compress.export import resolve_source

    check_settings(methods, sparsities, bits)
    read_csv(csv_path, limit)  # a bad CSV fails before any work
    source_dir = resolve_source(source)
    os.makedirs(output, exist_ok=True)
    dense = _evaluated(
        os.path.join(output, "dense"),
        source_dir,
        csv_path,
        batch_size,
        device,
        limit,
    )
    records = [
        _record(
            "dense",
            "dense",
            None,
            dense,
            achieved_sparsity=0.0,
            bytes_on_disk=weight_bytes(source_dir),
            folder=source,
        )
    ]
    write_sweep(output, records, csv_path, plot=False)
    for name, arguments, method, setting in configurations(
        methods, sparsities, bits, group_size
    ):
        folder = os.path.join(output, name)
        _compress(source, folder, arguments)
        with open(os.path.join(folder, "compression_report.json")) as f:
            report = json.load(f)
        summary = _evaluated(
            folder, folder, csv_path, batch_size, device, limit
        )
        size = (report.get("file") or {}).get("bytes_on_disk")
        records.append(
            _record(
                name,
                method,
                setting,
                summary,
                achieved_sparsity=report.get("achieved_sparsity"),
                bytes_on_disk=size or weight_bytes(folder),
                folder=folder,
            )
        )
        write_sweep(output, records, csv_path, plot=False)
    write_sweep(output, records, csv_path)
    return records


def format_markdown(records):
    """The sweep as a Markdown table.

    Example
    -------
    >>> print(format_markdown([{"name": "dense", "method": "dense",
    ...     "setting": None, "achieved_sparsity": 0.0, "insertions": 3,
    ...     "bytes_on_disk": 2048, "wer": 9.5, "rtf": 0.1}]).splitlines()[2])
    | dense | dense | - | 0.0% | 2,048 | 100.0% | 9.50 | 3 | 0.100 |
    """
    dense = records[0]["bytes_on_disk"] or 1
    lines = [
        "| model | method | setting | sparsity | bytes on disk | "
        "% of dense | WER % | insertions | RTF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        setting = "-" if r["setting"] is None else str(r["setting"])
        sparsity = r["achieved_sparsity"] or 0.0
        lines.append(
            f"| {r['name']} | {r['method']} | {setting} | {sparsity:.1%} | "
            f"{r['bytes_on_disk']:,} | {r['bytes_on_disk'] / dense:.1%} | "
            f"{r['wer']:.2f} | {r.get('insertions', '-')} | {r['rtf']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_pareto(records, png_path):
    """WER against bytes on disk (per method, dense marked) and WER
    against achieved sparsity.

    Returns
    -------
    str
        ``png_path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (size_axis, sparsity_axis) = plt.subplots(
        1, 2, figsize=(11, 4), layout="constrained"
    )
    dense = records[0]
    for axis, x in ((size_axis, "bytes_on_disk"), (sparsity_axis, None)):
        value = dense["bytes_on_disk"] / 1e6 if x else 0.0
        axis.scatter(
            [value],
            [dense["wer"]],
            marker="*",
            s=200,
            color="black",
            label="dense",
            zorder=3,
        )
    for method in [
        m for m in METHODS if any(r["method"] == m for r in records)
    ]:
        rows = [r for r in records if r["method"] == method]
        rows.sort(key=lambda r: r["bytes_on_disk"])
        size_axis.plot(
            [r["bytes_on_disk"] / 1e6 for r in rows],
            [r["wer"] for r in rows],
            marker="o",
            label=method,
        )
        if method == "quant":
            continue
        rows.sort(key=lambda r: r["achieved_sparsity"] or 0.0)
        sparsity_axis.plot(
            [r["achieved_sparsity"] or 0.0 for r in rows],
            [r["wer"] for r in rows],
            marker="o",
            label=method,
        )
    size_axis.set_xlabel("bytes on disk (MB)")
    sparsity_axis.set_xlabel("fraction of zero weights")
    for axis in (size_axis, sparsity_axis):
        axis.set_ylabel("WER %")
        axis.grid(alpha=0.3)
        axis.legend()
    size_axis.set_title("WER against size")
    sparsity_axis.set_title("WER against sparsity")
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def write_sweep(output, records, csv_path=None, plot=True):
    """Writes ``sweep.json``, ``sweep.md`` and ``pareto.png``, each
    through a temporary file renamed into place.

    Arguments
    ---------
    output : str
        The sweep's folder.
    records : list of dict
        The dense model first, then one per compressed model.
    csv_path : str, optional
        Recorded in ``sweep.json``.
    plot : bool
        Also draw ``pareto.png``.
    """
    data = {"csv": csv_path, "models": records}
    for name, text in (
        ("sweep.json", json.dumps(data, indent=2)),
        ("sweep.md", format_markdown(records)),
    ):
        path = os.path.join(output, name)
        with open(path + ".partial", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".partial", path)
    if not plot:
        return
    path = os.path.join(output, "pareto.png")
    plot_pareto(records, path + ".partial.png")
    os.replace(path + ".partial.png", path)

"""Counts, bytes, per-layer tables and plots of a compressed model.

A report is a plain dict, saved next to the model files as
``compression_report.json`` (for programs) and ``compression_report.md``
(for people). :func:`build_report` makes one from a live model and the
per-layer records a method returns; the one-shot CLI and
``CompressionBrain`` both use it, so every result is described the same way.

Authors
 * sb_compress team 2026
"""

import json
import math
import os
import re

import numpy as np
import torch

REPORT_JSON = "compression_report.json"
REPORT_MD = "compression_report.md"

#: Keys every report has, in the order the summaries show them.
SUMMARY_KEYS = (
    "format",
    "method",
    "allocation",
    "scope",
    "target_sparsity",
    "achieved_sparsity",
    "params_total",
    "params_targeted",
    "params_nonzero",
    "bytes_on_disk",
    "bytes_dense",
    "elapsed_s",
)

#: Columns of the per-layer tables: (key, header).
LAYER_COLUMNS = (
    ("name", "layer"),
    ("role", "role"),
    ("shape", "shape"),
    ("sparsity", "sparsity"),
    ("clusters", "clusters"),
    ("error", "error"),
)


class ReportError(ValueError):
    """A compression report is missing, unreadable or incomplete."""


def _root_model(model):
    from sb_compress.models import UnsupportedModelError, unwrap_model

    try:
        return unwrap_model(model)
    except UnsupportedModelError:
        return model


def _counted_parameters(model):
    """Yields (name, parameter), skipping the extra parameters that
    parametrizations (masks, gates, thresholds) add next to ``original``."""
    for name, parameter in model.named_parameters():
        if ".parametrizations." in name:
            leaf = name.rsplit(".", 1)[-1]
            if not leaf.startswith("original"):
                continue
        yield name, parameter


def _original_weight(module):
    """The stored weight of a layer (under its parametrizations, if any)."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations.weight.original
    return module.weight


def count_parameters(model, layers):
    """Counts the parameters of a model and the nonzero targeted weights.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model or a SpeechBrain wrapper around one; layer
        names are relative to the transformers model.
    layers : list of str or dict
        Dotted names of the targeted Linear layers, whose ``.weight`` is
        read (a parametrized weight counts as masked), or
        ``{name: bool keep-mask}`` to count the weights a hard mask would
        keep (``modifier.keep_masks()`` during training).

    Returns
    -------
    dict
        ``params_total``, ``params_targeted``, ``params_nonzero`` (over
        the targeted weights), ``achieved_sparsity`` (over the same) and
        ``bytes_dense`` (parameters and buffers stored densely).

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = model[0].weight[0].zero_()
    >>> counts = count_parameters(model, ["0"])
    >>> counts["params_total"], counts["params_nonzero"]
    (10, 4)
    >>> counts["achieved_sparsity"], counts["bytes_dense"]
    (0.5, 40)
    """
    root = _root_model(model)
    total = 0
    dense_bytes = 0
    for _, parameter in _counted_parameters(root):
        total += parameter.numel()
        dense_bytes += parameter.numel() * parameter.element_size()
    for buffer in root.buffers():
        dense_bytes += buffer.numel() * buffer.element_size()
    masks = layers if isinstance(layers, dict) else dict.fromkeys(layers)
    targeted = 0
    nonzero = 0
    with torch.no_grad():
        for name, keep in masks.items():
            module = root.get_submodule(name)
            if keep is None:
                kept = module.weight != 0
            else:
                kept = keep.bool() & (_original_weight(module) != 0)
            targeted += kept.numel()
            nonzero += int(torch.count_nonzero(kept))
    sparsity = 1.0 - nonzero / targeted if targeted else 0.0
    return {
        "params_total": total,
        "params_targeted": targeted,
        "params_nonzero": nonzero,
        "achieved_sparsity": sparsity,
        "bytes_dense": dense_bytes,
    }


def folder_bytes(folder, exclude=(REPORT_JSON, REPORT_MD)):
    """Sums the sizes of the files under a folder.

    Arguments
    ---------
    folder : str
        Folder to measure (recursively).
    exclude : tuple of str
        File names left out (by default the report files themselves).

    Returns
    -------
    int
        Bytes on disk of the files.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "a.bin"), "wb") as f:
    ...     _ = f.write(b"1234")
    >>> folder_bytes(folder)
    4
    """
    size = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name in exclude:
                continue
            size += os.path.getsize(os.path.join(root, name))
    return size


def _layer_index(name):
    found = re.findall(r"layers\.(\d+)\.", name)
    return int(found[-1]) if found else 0


def _layer_record(layer):
    """Turns a LinearSpec-like object or a dict into a plain dict."""
    if isinstance(layer, dict):
        record = dict(layer)
    elif isinstance(layer, str):
        record = {"name": layer}
    else:
        record = {
            "name": layer.name,
            "role": layer.role,
            "stack": layer.stack,
            "layer": layer.layer,
        }
    if "name" not in record:
        raise ReportError(f"layer record {record!r} has no 'name'")
    name = record["name"]
    record.setdefault("role", name.rsplit(".", 1)[-1])
    record.setdefault("stack", "decoder" if "decoder." in name else "encoder")
    record.setdefault("layer", _layer_index(name))
    return record


def layer_records(model, layers):
    """Per-layer records with shape and sparsity measured on the model.

    Arguments
    ---------
    model : torch.nn.Module
        The compressed model (or a SpeechBrain wrapper around it).
    layers : list
        Dicts with at least ``name`` (e.g. what ``compress_oneshot``
        returns), :class:`~sb_compress.models.LinearSpec` objects or
        plain layer names. Extra keys (``clusters``, ``error``...) are kept.

    Returns
    -------
    list of dict
        ``name``, ``role``, ``stack``, ``layer``, ``shape``, ``sparsity``,
        ``clusters`` (``None`` when the method has none) and the given keys.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> layer_records(model, ["0"])[0]["shape"]
    [2, 4]
    """
    root = _root_model(model)
    records = []
    with torch.no_grad():
        for layer in layers:
            record = _layer_record(layer)
            weight = root.get_submodule(record["name"]).weight
            nonzero = int(torch.count_nonzero(weight))
            record["shape"] = list(weight.shape)
            record["sparsity"] = 1.0 - nonzero / weight.numel()
            record.setdefault("clusters", None)
            records.append(record)
    return records


def build_report(
    model,
    layers,
    method,
    target_sparsity=None,
    allocation=None,
    scope=None,
    elapsed_s=None,
    folder=None,
    **extra,
):
    """Describes a compressed model: counts, sparsity, bytes, layers.

    Arguments
    ---------
    model : torch.nn.Module
        The compressed model (transformers model or SpeechBrain wrapper).
    layers : list
        The targeted layers, see :func:`layer_records`.
    method : str
        Name of the method (``magnitude``, ``kmeans``...).
    target_sparsity : float, optional
        The sparsity asked for.
    allocation : str, optional
        How sparsity was spread over layers (``uniform``, ``mixed``).
    scope : str, optional
        ``encoder``, ``decoder`` or ``all``.
    elapsed_s : float, optional
        Seconds the compression took.
    folder : str, optional
        Folder holding the saved model files; ``bytes_on_disk`` is their
        size (``None`` when not given).
    **extra
        More keys to store as they are (e.g. ``wer={"dev": 12.3}``,
        ``source="openai/whisper-tiny"``, ``format="dense"``).

    Returns
    -------
    dict
        See :data:`SUMMARY_KEYS`, plus ``layers`` and the extra keys.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> report = build_report(model, ["0"], "magnitude", 0.0, wer=None)
    >>> report["achieved_sparsity"], report["params_targeted"]
    (0.0, 8)
    """
    records = layer_records(model, layers)
    counts = count_parameters(model, [r["name"] for r in records])
    report = {
        "format": extra.pop("format", "dense"),
        "method": method,
        "allocation": allocation,
        "scope": scope,
        "target_sparsity": target_sparsity,
        "achieved_sparsity": counts["achieved_sparsity"],
        "params_total": counts["params_total"],
        "params_targeted": counts["params_targeted"],
        "params_nonzero": counts["params_nonzero"],
        "bytes_on_disk": folder_bytes(folder) if folder else None,
        "bytes_dense": counts["bytes_dense"],
        "elapsed_s": elapsed_s,
    }
    config = getattr(_root_model(model), "config", None)
    if config is not None:
        report["model_type"] = getattr(config, "model_type", None)
        report["architectures"] = getattr(config, "architectures", None)
    report.update(extra)
    report["layers"] = records
    return report


def _format_value(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) for v in value):
            return "x".join(str(v) for v in value)
        if all(isinstance(v, str) for v in value):
            return ", ".join(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _summary_rows(report):
    rows = []
    for key in SUMMARY_KEYS:
        if key in report:
            rows.append((key, _format_value(report[key])))
    for key, value in report.items():
        if key in SUMMARY_KEYS or key in ("layers", "layers_structure"):
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                rows.append((f"{key}.{sub}", _format_value(sub_value)))
        else:
            rows.append((key, _format_value(value)))
    return rows


def _layer_rows(report):
    return [
        [_format_value(layer.get(key)) for key, _ in LAYER_COLUMNS]
        for layer in report.get("layers", [])
    ]


def _aligned(header, rows):
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(header, *rows)
    ]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
        for line in lines
    )


def format_layer_table(report):
    """The per-layer table as aligned plain text, for the terminal.

    Arguments
    ---------
    report : dict
        A report from :func:`build_report`.

    Returns
    -------
    str

    Example
    -------
    >>> report = {"layers": [{"name": "fc", "role": "ffn_in",
    ...     "shape": [2, 4], "sparsity": 0.5, "clusters": None}]}
    >>> print(format_layer_table(report).splitlines()[2])
    fc     ffn_in  2x4    0.5       -         -
    """
    header = [title for _, title in LAYER_COLUMNS]
    return _aligned(header, _layer_rows(report))


def format_summary(report):
    """The summary (method, sparsity, counts, bytes, time, extras) as
    aligned plain text.

    Arguments
    ---------
    report : dict
        A report from :func:`build_report`.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_summary({"method": "kmeans", "wer": {"dev": 9.5}}))
    method   kmeans
    wer.dev  9.5
    """
    rows = _summary_rows(report)
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


#: Columns of the structure tables (shrunk models).
STRUCTURE_HEADER = ("layer", "heads", "q/k dims", "v dims", "FFN width")


def _kept(value, original):
    if original is None:
        return str(value)
    return f"{value}/{original}"


def _structure_rows(report):
    original = report.get("original") or {}
    heads = original.get("heads")
    head_dim = original.get("head_dim")
    width = None if heads is None else heads * head_dim
    rows = []
    for record in report.get("layers_structure", []):
        if "conv_channels" in record:
            continue
        row = [str(record["layer"])]
        if "heads" in record:
            row += [
                _kept(record["heads"], heads),
                _kept(sum(record["qk_dims"]), width),
                _kept(sum(record["v_dims"]), width),
            ]
        else:
            row += ["-", "-", "-"]
        ffn = record.get("ffn_width")
        row.append(
            "-" if ffn is None else _kept(ffn, original.get("ffn_width"))
        )
        rows.append(row)
    return rows


def _conv_row(report):
    for record in report.get("layers_structure", []):
        if "conv_channels" in record:
            kept = record["conv_channels"]
            original = (report.get("original") or {}).get("conv_channels")
            if original:
                return ", ".join(f"{k}/{o}" for k, o in zip(kept, original))
            return ", ".join(str(k) for k in kept)
    return None


def _params_row(report):
    kept, dense = report.get("params_total"), report.get("params_dense")
    if kept is None or not dense:
        return None
    return f"{kept:,}/{dense:,} ({kept / dense:.1%})"


def format_structure_table(report):
    """Kept heads, q/k and v dimensions and FFN width per layer of a
    shrunk model (``kept/original``), then the CNN's channels and the
    model's parameters, as aligned plain text.

    Arguments
    ---------
    report : dict
        A report with ``layers_structure`` (format ``shrunk``).

    Returns
    -------
    str
        Empty when the report has no structure.

    Example
    -------
    >>> report = {"original": {"heads": 4, "head_dim": 16, "ffn_width": 128},
    ...     "layers_structure": [{"layer": 0, "heads": 1, "qk_dims": [16],
    ...     "v_dims": [8], "ffn_width": 40}]}
    >>> print(format_structure_table(report).splitlines()[2])
    0      1/4    16/64     8/64    40/128
    """
    rows = _structure_rows(report)
    if not rows:
        return ""
    text = _aligned(list(STRUCTURE_HEADER), rows)
    conv = _conv_row(report)
    if conv:
        text += f"\nCNN channels (kept/original): {conv}"
    params = _params_row(report)
    if params:
        text += f"\nparameters (kept/original): {params}"
    return text


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = (cell.replace("|", "\\|") for cell in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(report):
    """The report as Markdown: a summary table and a per-layer table.

    Arguments
    ---------
    report : dict
        A report from :func:`build_report`.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_markdown({"method": "magnitude"}).splitlines()[0])
    # Compression report
    """
    parts = [
        "# Compression report",
        "",
        _markdown_table(["key", "value"], _summary_rows(report)),
        "",
    ]
    if report.get("layers") or not report.get("layers_structure"):
        parts += [
            "## Layers",
            "",
            _markdown_table(
                [title for _, title in LAYER_COLUMNS], _layer_rows(report)
            ),
            "",
        ]
    structure = _structure_rows(report)
    if structure:
        parts += [
            "## Structure (kept/original)",
            "",
            _markdown_table(list(STRUCTURE_HEADER), structure),
            "",
        ]
        conv = _conv_row(report)
        if conv:
            parts += [f"CNN channels (kept/original): {conv}", ""]
        params = _params_row(report)
        if params:
            parts += [f"Parameters (kept/original): {params}", ""]
    return "\n".join(parts)


def write_report(folder, report):
    """Writes ``compression_report.json`` and ``compression_report.md``.

    Arguments
    ---------
    folder : str
        Existing folder (usually the one holding the model files).
    report : dict
        A report from :func:`build_report`.

    Returns
    -------
    tuple of str
        Paths of the JSON and Markdown files.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> json_path, _ = write_report(folder, {"method": "magnitude"})
    >>> read_report(folder)["method"]
    'magnitude'
    """
    json_path = os.path.join(folder, REPORT_JSON)
    md_path = os.path.join(folder, REPORT_MD)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(format_markdown(report))
    return json_path, md_path


def read_report(folder):
    """Reads the ``compression_report.json`` of a folder.

    Arguments
    ---------
    folder : str
        Folder written by the CLI, ``CompressionBrain`` or
        :func:`write_report`.

    Returns
    -------
    dict

    Raises
    ------
    ReportError
        Naming the file when it is missing or not a JSON object.
    """
    path = os.path.join(folder, REPORT_JSON)
    if not os.path.isdir(folder):
        raise ReportError(f"{folder}: no such folder")
    if not os.path.isfile(path):
        raise ReportError(
            f"{path} is missing: {folder} was not written by sb_compress"
        )
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path} is corrupt: {error}") from error
    if not isinstance(report, dict):
        raise ReportError(f"{path} is corrupt: not a JSON object")
    return report


def _heatmap_grid(layers, stack):
    """Returns (roles, layers x roles sparsity grid) of one stack; NaN
    where a layer has no such role."""
    chosen = [layer for layer in layers if layer.get("stack") == stack]
    roles = []
    for layer in chosen:
        if layer["role"] not in roles:
            roles.append(layer["role"])
    depth = max(int(layer["layer"]) for layer in chosen) + 1
    grid = np.full((depth, len(roles)), np.nan)
    for layer in chosen:
        sparsity = layer.get("sparsity")
        if sparsity is not None:
            grid[int(layer["layer"]), roles.index(layer["role"])] = sparsity
    return roles, grid


def _annotate_cells(axis, grid):
    for (row, column), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axis.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value < 0.6 else "black",
            )


def plot_sparsity_heatmap(report, png_path):
    """Draws per-layer sparsity as a layers x roles heatmap, one panel
    per stack (encoder, decoder), with a colour bar.

    Arguments
    ---------
    report : dict
        A report from :func:`build_report` (its ``layers``).
    png_path : str
        Where to write the PNG.

    Returns
    -------
    str
        ``png_path``.

    Example
    -------
    >>> import tempfile
    >>> layers = [{"name": f"layers.{i}.fc", "role": "ffn_in",
    ...     "stack": "encoder", "layer": i, "sparsity": 0.1 * i}
    ...     for i in range(3)]
    >>> path = os.path.join(tempfile.mkdtemp(), "map.png")
    >>> plot_sparsity_heatmap({"method": "magnitude", "layers": layers},
    ...     path) == path
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [_layer_record(layer) for layer in report.get("layers", [])]
    if not layers:
        raise ReportError("the report has no layers to plot")
    stacks = []
    for layer in layers:
        if layer["stack"] not in stacks:
            stacks.append(layer["stack"])
    grids = [(stack, *_heatmap_grid(layers, stack)) for stack in stacks]
    height = max(2.5, 0.35 * max(g.shape[0] for _, _, g in grids) + 1.5)
    width = sum(1.5 + 0.6 * len(roles) for _, roles, _ in grids) + 1.5
    figure, axes = plt.subplots(
        1,
        len(grids),
        figsize=(width, height),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [len(roles) for _, roles, _ in grids]},
    )
    image = None
    for axis, (stack, roles, grid) in zip(axes[0], grids):
        image = axis.imshow(
            grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto"
        )
        axis.set_title(stack)
        axis.set_xticks(range(len(roles)))
        axis.set_xticklabels(roles, rotation=45, ha="right")
        axis.set_yticks(range(grid.shape[0]))
        axis.set_ylabel("layer")
        if grid.size <= 400:
            _annotate_cells(axis, grid)
    figure.colorbar(image, ax=list(axes[0]), label="sparsity")
    achieved = report.get("achieved_sparsity")
    title = " ".join(
        str(report[key]) for key in ("method", "allocation") if report.get(key)
    )
    title = title or "compression"
    if achieved is not None:
        title += f": {achieved:.1%} sparse"
    figure.suptitle(title)
    figure.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return png_path


def structure_panels(report):
    """What :func:`plot_structure` draws: per layer, the kept heads, the
    kept q/k and v dimensions (summed over heads) and the FFN width, each
    with its original size; a removed block counts 0.

    Arguments
    ---------
    report : dict
        A report with ``layers_structure`` (format ``shrunk``).

    Returns
    -------
    layers : list of int
        The layer indices.
    panels : list of (str, dict, int or None)
        ``(title, {series label: values per layer}, original size)``.

    Example
    -------
    >>> report = {"original": {"heads": 2, "head_dim": 8, "ffn_width": 32},
    ...     "layers_structure": [{"layer": 0, "heads": 1, "qk_dims": [8],
    ...     "v_dims": [5], "ffn_width": 20}, {"layer": 1, "ffn_width": 9}]}
    >>> layers, panels = structure_panels(report)
    >>> panels[1]
    ('attention dims', {'q/k': [8, 0], 'v': [5, 0]}, 16)
    """
    records = [r for r in report.get("layers_structure", []) if "layer" in r]
    if not records:
        raise ReportError("the report has no per-layer structure to plot")
    original = report.get("original") or {}
    width = None
    if original.get("heads") and original.get("head_dim"):
        width = original["heads"] * original["head_dim"]
    heads = {"heads": [r.get("heads", 0) for r in records]}
    dims = {
        "q/k": [sum(r.get("qk_dims", [])) for r in records],
        "v": [sum(r.get("v_dims", [])) for r in records],
    }
    ffn = {"FFN": [r.get("ffn_width") or 0 for r in records]}
    panels = [
        ("kept heads", heads, original.get("heads")),
        ("attention dims", dims, width),
        ("FFN width", ffn, original.get("ffn_width")),
    ]
    return [r["layer"] for r in records], panels


def plot_structure(report, png_path):
    """Draws a shrunk model's kept heads, attention dimensions (q/k and v)
    and FFN width per layer as bars (:func:`structure_panels`), the
    original sizes as dashed lines.

    Arguments
    ---------
    report : dict
        A report with ``layers_structure`` (format ``shrunk``).
    png_path : str
        Where to write the PNG.

    Returns
    -------
    str
        ``png_path``.

    Example
    -------
    >>> import tempfile
    >>> report = {"original": {"heads": 4, "head_dim": 16, "ffn_width": 64},
    ...     "layers_structure": [{"layer": i, "heads": 4 - i,
    ...     "qk_dims": [16] * (4 - i), "v_dims": [16] * (4 - i),
    ...     "ffn_width": 64 - 20 * i} for i in range(3)]}
    >>> path = os.path.join(tempfile.mkdtemp(), "structure.png")
    >>> plot_structure(report, path) == path
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, panels = structure_panels(report)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.5), layout="constrained")
    for axis, (title, series, limit) in zip(axes, panels):
        bar = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * bar
            positions = [layer + offset for layer in layers]
            axis.bar(positions, values, width=bar, label=label)
        if limit:
            axis.axhline(limit, color="black", linestyle="--", label="original")
            axis.set_ylim(0, limit * 1.3)
        axis.legend(loc="upper right", ncol=len(series) + 1, fontsize="small")
        axis.set_title(title)
        axis.set_xlabel("layer")
        axis.set_xticks(layers)
    ratio = report.get("params_ratio")
    title = report.get("method") or "structured pruning"
    if ratio is not None:
        title += f": {ratio:.1%} of the parameters kept"
    figure.suptitle(title)
    figure.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return png_path

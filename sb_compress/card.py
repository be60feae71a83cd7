"""Model cards: ``README.md`` with Hugging Face front matter.

:func:`model_card` turns a compression report into the card a Hub repo
shows: base model, method and settings, achieved sparsity, parameters,
bytes on disk, the WER table, the command that produced the model and how
to load it. Every number comes from the report, so the card and
``compression_report.json`` never disagree. ``sb-compress oneshot`` and
``CompressionBrain``'s export write it next to the model.

Authors
 * sb_compress team 2026
"""

import json
import os
import shlex
import sys

CARD = "README.md"

_PIPELINE = {
    "whisper": "automatic-speech-recognition",
    "wav2vec2": "automatic-speech-recognition",
    "hubert": "automatic-speech-recognition",
    "wavlm": "automatic-speech-recognition",
}


def _base_model(source):
    """A hub id stays; a local path becomes its folder name."""
    if not source:
        return None
    source = str(source).rstrip("/")
    if source.count("/") == 1 and not os.path.exists(source):
        return source
    return os.path.basename(source)


def _front_matter(report):
    lines = ["---", "library_name: transformers"]
    base = _base_model(report.get("source"))
    if base and "/" in base:
        lines.append(f"base_model: {base}")
    pipeline = _PIPELINE.get(report.get("model_type"))
    if pipeline:
        lines.append(f"pipeline_tag: {pipeline}")
    tags = ["sb_compress", "speechbrain", "compressed"]
    method = str(report.get("method") or "")
    if any(m in method for m in ("magnitude", "kmeans", "pinch", "nm")):
        tags.append("pruning")
    if "quant" in method:
        tags.append("quantization")
    if report.get("format") == "shrunk":
        tags.append("structured-pruning")
    lines.append("tags:")
    lines += [f"- {tag}" for tag in tags]
    if report.get("wer"):
        lines += ["metrics:", "- wer"]
    lines.append("---")
    return lines


def _number(value, digits=2):
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _facts(report):
    rows = []
    keys = (
        ("method", "method"),
        ("format", "format"),
        ("allocation", "allocation"),
        ("target_sparsity", "target sparsity"),
        ("achieved_sparsity", "achieved sparsity"),
        ("params_total", "parameters"),
        ("params_targeted", "targeted parameters"),
        ("params_nonzero", "non-zero targeted parameters"),
        ("params_dense", "parameters before shrinking"),
        ("bytes_on_disk", "bytes on disk"),
        ("bits_per_weight", "bits per weight (whole file)"),
    )
    for key, title in keys:
        value = report.get(key)
        if value is None:
            continue
        if key.endswith("sparsity"):
            value = f"{100 * value:.2f}%"
        rows.append((title, _number(value, 3)))
    targeted = report.get("targeted") or {}
    if "bits_per_weight" in targeted:
        rows.append(
            (
                "bits per targeted weight",
                _number(targeted["bits_per_weight"], 3),
            )
        )
    return rows


def model_card(report, command=None, folder_name=None):
    """The Markdown model card of a compression report.

    Arguments
    ---------
    report : dict
        ``compression_report.json``'s content.
    command : str, optional
        The command that produced the model.
    folder_name : str, optional
        Used in the loading example.

    Returns
    -------
    str

    Example
    -------
    >>> card = model_card({"method": "kmeans", "achieved_sparsity": 0.3,
    ...     "params_total": 1000, "source": "openai/whisper-tiny.en",
    ...     "model_type": "whisper", "wer": {"dev": 24.2}})
    >>> "base_model: openai/whisper-tiny.en" in card
    True
    >>> "| achieved sparsity | 30.00% |" in card
    True
    """
    name = folder_name or "this-folder"
    base = _base_model(report.get("source")) or "the source model"
    lines = _front_matter(report)
    lines += [
        "",
        f"# {name}",
        "",
        f"`{base}` compressed with "
        "[sb_compress](https://github.com/) (a SpeechBrain plugin): "
        f"method `{report.get('method')}`.",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {title} | {value} |" for title, value in _facts(report)]
    if report.get("modifiers"):
        lines += [
            "",
            "## Settings",
            "",
            "```json",
            json.dumps(report["modifiers"], indent=2),
            "```",
        ]
    wer = report.get("wer") or {}
    if wer:
        lines += ["", "## Word error rate", "", "| test set | WER % |"]
        lines.append("|---|---|")
        lines += [f"| {k} | {_number(float(v))} |" for k, v in wer.items()]
    if command:
        lines += ["", "## How it was made", "", "```bash", command, "```"]
    lines += [
        "",
        "## How to load it",
        "",
        "```python",
        "import sb_compress  # pip install sb_compress",
        f'model = sb_compress.load_compressed("{name}")',
        "```",
        "",
    ]
    if report.get("format", "dense") == "dense":
        lines += [
            "The weights are stored dense (pruned weights are zeros), so "
            "transformers' `from_pretrained` and SpeechBrain's wrappers "
            "(`source=` this folder) read it as well.",
            "",
        ]
    else:
        lines += [
            f"The `{report.get('format')}` format needs sb_compress to load "
            "(`load_compressed` rebuilds the model and checks every tensor).",
            "",
        ]
    return "\n".join(lines)


def current_command():
    """The command line of this process, quoted for a shell."""
    program = os.path.basename(sys.argv[0]) if sys.argv else "python"
    return " ".join([program] + [shlex.quote(a) for a in sys.argv[1:]])


def write_model_card(folder, report, command=None, name=None):
    """Writes ``README.md`` into ``folder``; returns its path.

    Arguments
    ---------
    folder : str
        Where to write (may be a staging folder).
    report : dict
        The folder's compression report.
    command : str, optional
        The command that produced the model.
    name : str, optional
        The model's final folder (default: ``folder``), for the title and
        the loading example.

    Returns
    -------
    str
    """
    path = os.path.join(folder, CARD)
    name = os.path.basename(os.path.normpath(name or folder))
    with open(path, "w", encoding="utf-8") as f:
        f.write(model_card(report, command, name))
    return path

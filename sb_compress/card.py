"""Model cards: ``README.md`` with Hugging Face front matter.

:func:`model_card` turns a compression report into the card a Hub repo
shows: base model, method and settings, achieved sparsity, parameters,
bytes on disk, the WER table, the command that produced the model and how
to load it. Every number comes from the report, so the card and
``compression_report.json`` never disagree. ``sb-compress oneshot`` and
``CompressionBrain``'s export write it next to the model;
``sb-compress export`` writes the card of a SpeechBrain hub folder
(``library_name: speechbrain``, loading with ``EncoderASR`` /
``WhisperASR.from_hparams``), carrying over the command that produced the
model from the compressed folder's own card.

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


#: The front matter's license when none is known: the base model's applies.
UNKNOWN_LICENSE = "other"


def _front_matter(report, library="transformers", license=None):
    lines = ["---", f"library_name: {library}"]
    lines.append(f"license: {license or UNKNOWN_LICENSE}")
    base = _base_model(report.get("source"))
    if base and "/" in base:
        lines.append(f"base_model: {base}")
    pipeline = _PIPELINE.get(report.get("model_type"))
    if pipeline:
        lines.append(f"pipeline_tag: {pipeline}")
    tags = ["sb_compress", "speechbrain"]
    method = str(report.get("method") or "")
    if method:
        tags.append("compressed")
    if any(m in method for m in ("magnitude", "kmeans", "pinch", "nm")):
        tags.append("pruning")
    if "quant" in method:
        tags.append("quantization")
    if report.get("format") == "shrunk":
        tags.append("structured-pruning")
    if report.get("format") == "folded":
        tags.append("folded")
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
        ("params_dense", "parameters of the original model"),
        ("physical_blocks", "physical blocks (folded)"),
        ("min_depth", "smallest depth"),
        ("max_depth", "largest depth"),
        ("params_reduction", "parameter reduction"),
        ("bytes_on_disk", "bytes on disk"),
        ("bits_per_weight", "bits per weight (whole file)"),
    )
    for key, title in keys:
        value = report.get(key)
        if value is None:
            continue
        if key.endswith(("sparsity", "reduction")):
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


def _title(name, report):
    """The folder's name, unless it is a generic one (``hub``...)."""
    if name and name not in ("hub", "compressed", "this-folder"):
        return name
    base = _base_model(report.get("source")) or report.get("model_type")
    method = report.get("method") or "dense"
    return f"{base or 'model'} ({method}, sb_compress)"


def _description(report, name, library="transformers", license=None):
    """Front matter, title, facts, settings and the WER table."""
    base = _base_model(report.get("source")) or "the source model"
    lines = _front_matter(report, library, license)
    if report.get("method"):
        what = (
            f"`{base}` compressed with sb_compress (a SpeechBrain plugin): "
            f"method `{report['method']}`."
        )
    else:
        what = f"`{base}` as it is (not compressed), packaged by sb_compress."
    lines += ["", f"# {_title(name, report)}", "", what, ""]
    lines += [
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
        if report.get("wer_depth"):
            lines += ["", f"Measured at depth {report['wer_depth']}."]
    return lines


#: The card's section holding the commands that produced the model.
MADE_HEADING = "## How it was made"


def _how_it_was_made(commands):
    commands = [c for c in commands if c]
    if not commands:
        return []
    return ["", MADE_HEADING, "", "```bash", *commands, "```"]


def model_card(report, command=None, folder_name=None, license=None):
    """The Markdown model card of a compression report.

    Arguments
    ---------
    report : dict
        ``compression_report.json``'s content.
    command : str, optional
        The command that produced the model.
    folder_name : str, optional
        Used in the loading example.
    license : str, optional
        The front matter's license (default ``other``: the base model's).

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
    lines = _description(report, name, license=license)
    lines += _how_it_was_made([command])
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


def hub_model_card(report, interface, archive, name, commands=(), license=None):
    """The model card of a SpeechBrain hub folder (``sb-compress export``).

    Arguments
    ---------
    report : dict
        The compressed folder's report.
    interface : str
        ``EncoderASR`` or ``WhisperASR``.
    archive : str
        The file holding the compressed folder (``encoder.ckpt``...).
    name : str
        The hub folder's name (or repo id), for the loading example.
    commands : sequence of str
        The commands that produced the model, oldest first.
    license : str, optional
        The front matter's license (default ``other``).

    Returns
    -------
    str

    Example
    -------
    >>> card = hub_model_card({"method": "quant", "format": "packed",
    ...     "model_type": "wav2vec2", "bytes_on_disk": 2048}, "EncoderASR",
    ...     "encoder.ckpt", "w2v2-int4", ["sb-compress export x"])
    >>> "library_name: speechbrain" in card
    True
    >>> 'EncoderASR.from_hparams(source="w2v2-int4"' in card
    True
    """
    lines = _description(report, name, "speechbrain", license)
    lines += _how_it_was_made(commands)
    transcript = (
        'asr.transcribe_file("audio.wav")[0].words'
        if interface == "WhisperASR"
        else 'asr.transcribe_file("audio.wav")'
    )
    lines += [
        "",
        "## How to load it",
        "",
        "```python",
        "# pip install sb_compress  (hyperparams.yaml builds its classes)",
        f"from speechbrain.inference.ASR import {interface}",
        f'asr = {interface}.from_hparams(source="{name}", '
        f'savedir="pretrained_models/{os.path.basename(name)}")',
        f"print({transcript})",
        "```",
        "",
        f"`{archive}` is the compressed folder (format "
        f"`{report.get('format', 'dense')}`) as a tar file; "
        "`sb_compress.load_compressed(<extracted folder>)` loads the model "
        "from it without SpeechBrain.",
        "",
    ]
    if report.get("format") == "folded":
        lines[-1:] = [
            "",
            f"Any depth from {report.get('min_depth')} to "
            f"{report.get('max_depth')} (default {report.get('max_depth')}):"
            f' `{interface}.from_hparams(..., overrides={{"depth": d}})`.',
            "",
        ]
    if not license:
        lines += [
            "License: not recorded; the base model's license applies "
            "(`sb-compress export --license` sets it).",
            "",
        ]
    return "\n".join(lines)


def card_commands(folder):
    """The commands in the ``How it was made`` section of the card in
    ``folder`` (none if there is no card).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_model_card(folder, {"method": "kmeans"}, "sb-compress x")
    >>> card_commands(folder)
    ['sb-compress x']
    """
    path = os.path.join(folder, CARD)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if MADE_HEADING not in text:
        return []
    block = text.split(MADE_HEADING, 1)[1].split("```bash\n", 1)
    if len(block) < 2:
        return []
    return [line for line in block[1].split("```", 1)[0].splitlines() if line]


def card_license(folder):
    """The ``license`` of the card in ``folder``, unless unknown."""
    path = os.path.join(folder, CARD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith("---\n"):
        return None
    for line in text.split("---\n")[1].splitlines():
        key, _, value = line.partition(":")
        if key == "license" and value.strip() != UNKNOWN_LICENSE:
            return value.strip() or None
    return None


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

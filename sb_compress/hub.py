"""Uploading a model folder to the Hugging Face Hub (``sb-compress push``).

:func:`push` checks the folder and the repo id, lists what would be sent
(``dry_run``), and otherwise uploads with ``huggingface_hub``
(``create_repo`` then ``upload_folder``). It fails before touching the
network when no token is configured, and turns an unreachable hub into one
clear message.

Authors
 * sb_compress team 2026
"""

import json
import os
import re

#: ``owner/name`` or ``name``, as the Hub accepts them.
REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


class PushError(ValueError):
    """The folder can't be pushed (bad input, no token, no network)."""


def folder_files(folder):
    """``[(relative path, bytes)]`` of every file under ``folder``, sorted.

    Hidden files and folders (``.git``, ``.cache``) are left out, as
    ``upload_folder`` leaves them out.
    """
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            files.append((os.path.relpath(path, folder), os.path.getsize(path)))
    return files


def check_push(folder, repo_id):
    """Fails with a message naming the problem; returns the file list."""
    if not os.path.isdir(folder):
        raise PushError(f"{folder}: no such folder")
    if not REPO_ID.match(repo_id or ""):
        raise PushError(
            f"--repo-id {repo_id!r}: expected NAME or OWNER/NAME (letters, "
            "digits, '-', '_', '.')"
        )
    files = folder_files(folder)
    if not files:
        raise PushError(f"{folder} is empty: nothing to push")
    return files


def push(folder, repo_id, private=False, dry_run=False, token=None):
    """Uploads ``folder`` to the Hub repo ``repo_id``.

    Arguments
    ---------
    folder : str
        The folder to upload.
    repo_id : str
        ``OWNER/NAME`` (or ``NAME`` under the token's user).
    private : bool
        Create the repo private.
    dry_run : bool
        Only list the files and sizes; no token and no network needed.
    token : str, optional
        Default: the configured one (``HF_TOKEN`` or ``hf auth login``).

    Returns
    -------
    dict
        ``files`` (``[(path, bytes)]``), ``bytes``, ``uploaded`` (bool) and,
        after an upload, ``url``.

    Raises
    ------
    PushError
        On a bad folder or repo id, a missing token, or an unreachable
        hub; nothing is uploaded.
    """
    files = check_push(folder, repo_id)
    result = {
        "files": files,
        "bytes": sum(size for _, size in files),
        "uploaded": False,
    }
    if dry_run:
        return result
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN "
            "(nothing was uploaded; --dry-run lists the files)"
        )
    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as error:  # network, auth and offline-mode errors alike
        raise PushError(
            f"could not create {repo_id} on the Hub: {_why(error)} (nothing "
            "was uploaded)"
        ) from error
    try:
        api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            ignore_patterns=[".*", "*/.*"],  # as folder_files lists them
            commit_message="Upload with sb-compress push",
        )
    except Exception as error:
        raise PushError(
            f"could not upload to {repo_id}: {_why(error)} (the upload is "
            "one commit: nothing was committed)"
        ) from error
    result.update(uploaded=True, url=str(url))
    return result


def _why(error):
    """One line on a Hub error: offline mode, no network, or the message."""
    name = type(error).__name__
    message = " ".join(str(error).split())[:300]
    if "Offline" in name:
        return "offline mode is on (unset HF_HUB_OFFLINE)"
    if "Connect" in name or "Timeout" in name:
        return f"the Hub is unreachable, check the network ({name}: {message})"
    return f"{name}: {message}"


# --------------------------------------------------------------------------
# SpeechBrain hub folders (``sb-compress export``)
# --------------------------------------------------------------------------

#: The compressed folder as one tar file, named as SpeechBrain's Pretrainer
#: fetches a loadable called ``encoder`` (``<name>.ckpt`` in the source).
ARCHIVE = "encoder.ckpt"
#: The CTC labels, likewise for the loadable ``tokenizer``.
HUB_LABELS = "tokenizer.ckpt"
LABEL_ENCODER = "label_encoder.txt"
HUB_CONFIG = "config.json"

_HYPERPARAMS_CTC = """\
# SpeechBrain inference file written by `sb-compress export`.
# Load with:
#   from speechbrain.inference.ASR import EncoderASR
#   asr = EncoderASR.from_hparams(source="<this folder or hub id>",
#                                 savedir="pretrained_models/<name>")
#   asr.transcribe_file("audio.wav")
# The model itself (backbone, head) is in {archive}, a tar of the recipe's
# compressed folder; sb_compress rebuilds it (dense, packed or shrunk) when
# the Pretrainer loads that file. {labels} holds the CTC labels.

sample_rate: 16000
blank_index: {blank}
{depth}
encoder: !new:sb_compress.hub.CompressedCTC{encoder_args}

tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder

decoding_function: !name:speechbrain.decoders.ctc.ctc_greedy_decode
    blank_id: !ref <blank_index>

modules:
    encoder: !ref <encoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        tokenizer: !ref <tokenizer>
"""


class HubError(ValueError):
    """A folder can't be exported as a SpeechBrain hub folder."""


def _describe_layer(name, layer):
    import torch

    kind = type(layer).__module__ + "." + type(layer).__name__
    if kind == "speechbrain.nnet.linear.Linear":
        linear = layer.w
        return {
            "type": "linear",
            "key": f"{name}.w" if name else "w",
            "in": linear.in_features,
            "out": linear.out_features,
            "bias": linear.bias is not None,
        }
    if kind == "speechbrain.nnet.normalization.LayerNorm":
        norm = layer.norm
        return {
            "type": "layer_norm",
            "key": f"{name}.norm" if name else "norm",
            "shape": list(norm.normalized_shape),
            "eps": norm.eps,
            "affine": norm.elementwise_affine,
        }
    if isinstance(layer, torch.nn.Linear):
        return {
            "type": "linear",
            "key": name,
            "in": layer.in_features,
            "out": layer.out_features,
            "bias": layer.bias is not None,
        }
    if isinstance(layer, torch.nn.LayerNorm):
        return {
            "type": "layer_norm",
            "key": name,
            "shape": list(layer.normalized_shape),
            "eps": layer.eps,
            "affine": layer.elementwise_affine,
        }
    if isinstance(layer, torch.nn.LeakyReLU):
        return {"type": "leaky_relu", "slope": layer.negative_slope}
    for cls, label in (
        (torch.nn.ReLU, "relu"),
        (torch.nn.GELU, "gelu"),
        (torch.nn.Tanh, "tanh"),
        (torch.nn.Dropout, "identity"),
        (torch.nn.Identity, "identity"),
    ):
        if isinstance(layer, cls):
            return {"type": label}
    raise HubError(f"{name or 'module'}: no hub layout for {kind}")


def _describe_module(module):
    kind = type(module).__module__ + "." + type(module).__name__
    if kind == "speechbrain.nnet.containers.Sequential":
        return [
            _describe_layer(n, child) for n, child in module.named_children()
        ]
    return [_describe_layer("", module)]


def describe_recipe(wrapper, modules):
    """How a recipe's extra modules are built, for :class:`CompressedCTC`.

    Arguments
    ---------
    wrapper : torch.nn.Module
        The SpeechBrain wrapper the plan compresses (its ``output_norm``
        and ``normalize_wav`` are recorded).
    modules : dict
        ``{name: module}`` applied after the backbone, in this order.

    Returns
    -------
    dict
        ``{"backbone": {...}, "modules": [{"name", "layers"}] }``; a module
        of an unsupported kind is recorded with ``"error"``.
    """
    out = {
        "backbone": {
            "wrapper": type(wrapper).__name__,
            "output_norm": bool(getattr(wrapper, "output_norm", False)),
            "normalize_wav": bool(getattr(wrapper, "normalize_wav", False)),
        },
        "modules": [],
    }
    if hasattr(wrapper, "_hop_length"):  # SpeechBrain's Whisper wrapper
        out["backbone"].update(
            n_fft=int(wrapper._n_fft),
            hop_length=int(wrapper._hop_length),
            n_samples=int(wrapper._n_samples),
            # the encoder halves the mel frames; the recipe keeps
            # ceil(samples / samples_per_frame) of its 30 s output
            samples_per_frame=2 * int(wrapper._hop_length),
        )
    for name, module in modules.items():
        try:
            out["modules"].append(
                {"name": name, "layers": _describe_module(module)}
            )
        except HubError as error:
            out["modules"].append({"name": name, "error": str(error)})
    return out


def _build_layers(layers, state, prefix):
    import torch

    built = []
    for layer in layers:
        kind = layer["type"]
        if kind == "linear":
            module = torch.nn.Linear(layer["in"], layer["out"], layer["bias"])
        elif kind == "layer_norm":
            module = torch.nn.LayerNorm(
                layer["shape"],
                eps=layer["eps"],
                elementwise_affine=layer["affine"],
            )
        elif kind == "leaky_relu":
            module = torch.nn.LeakyReLU(layer["slope"])
        elif kind == "relu":
            module = torch.nn.ReLU()
        elif kind == "gelu":
            module = torch.nn.GELU()
        elif kind == "tanh":
            module = torch.nn.Tanh()
        else:
            module = torch.nn.Identity()
        if "key" in layer:
            key = ".".join(p for p in (prefix, layer["key"]) if p)
            params = {
                k[len(key) + 1 :]: v
                for k, v in state.items()
                if k.startswith(key + ".")
            }
            module.load_state_dict(params, strict=True)
        built.append(module)
    return torch.nn.Sequential(*built)


def _compressed_ctc_class():
    import torch
    import torch.nn.functional as F
    from speechbrain.utils.checkpoints import (
        mark_as_transfer,
        register_checkpoint_hooks,
    )

    @register_checkpoint_hooks
    class CompressedCTC(torch.nn.Module):
        """A compressed CTC model, built when the Pretrainer loads it.

        ``forward(wavs, wav_lens)`` gives CTC log-probabilities, as
        SpeechBrain's ``EncoderASR`` expects of its ``encoder`` module:
        the backbone (read with :func:`sb_compress.load_compressed`, in
        whatever format it was exported) behaves as SpeechBrain's
        wrapper did in training (input and output normalisation, padding
        mask), then the recipe's modules run in order.
        """

        def __init__(self, depth=None):
            super().__init__()
            self.depth = depth
            self.backbone = None
            self.head = torch.nn.Sequential()
            self.settings = {}

        @mark_as_transfer
        def _load(self, path):
            folder = _unpack(path)
            self.load_folder(folder)

        def load_folder(self, folder):
            """Builds the model from an exported recipe folder (a folded
            one at ``depth``, default its largest)."""
            from safetensors.torch import load_file

            from sb_compress.export import load_compressed
            from sb_compress.export.recipe import (
                RECIPE_LAYOUT,
                RECIPE_MODULES,
            )
            from sb_compress.report import read_report

            with open(os.path.join(folder, RECIPE_LAYOUT)) as f:
                layout = json.load(f)
            state = load_file(os.path.join(folder, RECIPE_MODULES))
            options = {}
            if self.depth is not None:
                format = read_report(folder).get("format", "dense")
                if format != "folded":
                    raise HubError(
                        f"depth={self.depth}: only folded models have a "
                        f"depth to choose (this one is {format})"
                    )
                options["depth"] = int(self.depth)
            self.backbone = load_compressed(folder, **options).float().eval()
            self.settings = layout["backbone"]
            if self.settings["wrapper"] == "Whisper":
                from transformers import WhisperFeatureExtractor

                extractor = WhisperFeatureExtractor.from_pretrained(folder)
                filters = torch.as_tensor(
                    extractor.mel_filters, dtype=torch.float32
                )
                if filters.shape[0] != extractor.feature_size:
                    filters = filters.T
                self.register_buffer("mel_filters", filters)
            parts = []
            for module in layout["modules"]:
                if "error" in module:
                    raise HubError(module["error"])
                parts.append(
                    _build_layers(module["layers"], state, module["name"])
                )
            self.head = torch.nn.Sequential(*parts)

        def forward(self, wavs, wav_lens=None):
            """CTC log-probabilities (batch, frames, labels)."""
            from speechbrain.dataio.dataio import length_to_mask

            if self.backbone is None:
                raise HubError("CompressedCTC was not loaded: use from_hparams")
            if self.settings["wrapper"] == "Whisper":
                return self.head(self._whisper_features(wavs)).log_softmax(-1)
            mask = None
            if wav_lens is not None:
                lengths = torch.round(wav_lens * wavs.shape[1])
                mask = length_to_mask(lengths, wavs.shape[1]).long()
            if self.settings.get("normalize_wav"):
                wavs = F.layer_norm(wavs, wavs.shape[1:])
            out = self.backbone(wavs, attention_mask=mask).last_hidden_state
            if self.settings.get("output_norm"):
                out = F.layer_norm(out, out.shape[1:])
            return self.head(out).log_softmax(-1)

        def _whisper_features(self, wavs):
            """SpeechBrain's Whisper wrapper (encoder only): audio padded
            to 30 s, log-mel, encoder; then the frames the audio covers."""
            n_samples = self.settings["n_samples"]
            samples = wavs.shape[1]
            if samples > n_samples:
                audio = wavs[:, :n_samples]
            else:
                audio = F.pad(wavs, (0, n_samples - samples))
            n_fft = self.settings["n_fft"]
            window = torch.hann_window(n_fft, device=audio.device)
            stft = torch.stft(
                audio,
                n_fft,
                self.settings["hop_length"],
                window=window,
                return_complex=True,
            )
            power = stft[..., :-1].abs() ** 2
            mel = torch.clamp(self.mel_filters @ power, min=1e-10).log10()
            mel = torch.maximum(mel, mel.max() - 8.0)
            mel = (mel + 4.0) / 4.0
            out = self.backbone.encoder(mel).last_hidden_state
            frames = -(-samples // self.settings["samples_per_frame"])
            return out[:, :frames]

    return CompressedCTC


def _unpack(path):
    """Extracts the archive ``path`` (the Pretrainer's link or copy in its
    savedir) to ``<path>.d`` beside it, never beside the file it links to
    (the hub folder or the Hugging Face cache stay untouched); again only
    when the archive changed."""
    import tarfile

    from sb_compress.export.save import staged_folder

    folder = os.path.abspath(path) + ".d"
    stat = os.stat(path)
    stamp = f"{os.path.realpath(path)} {stat.st_size} {stat.st_mtime_ns}"
    marker = os.path.join(folder, ".complete")
    if os.path.isfile(marker):
        with open(marker) as f:
            if f.read() == stamp:
                return folder
    with staged_folder(folder) as staging:
        with tarfile.open(path) as archive:
            archive.extractall(staging, filter="data")
        with open(os.path.join(staging, ".complete"), "w") as f:
            f.write(stamp)
    return folder


def __getattr__(name):
    if name == "CompressedCTC":
        cls = _compressed_ctc_class()
        globals()["CompressedCTC"] = cls
        return cls
    if name in ("CompressedWhisper", "LazyWhisperSearcher"):
        whisper, searcher = _whisper_classes()
        globals().update(
            CompressedWhisper=whisper, LazyWhisperSearcher=searcher
        )
        return globals()[name]
    raise AttributeError(f"module 'sb_compress.hub' has no attribute {name!r}")


def _is_checkpoint(folder):
    """A SpeechBrain checkpoint (``CKPT+...``) or the ``save/`` folder
    holding them."""
    if os.path.isfile(os.path.join(folder, "CKPT.yaml")):
        return True
    return os.path.isdir(folder) and any(
        name.startswith("CKPT+") for name in os.listdir(folder)
    )


def _compressed_folder(source):
    """The exported folder inside ``source`` (a recipe output folder or the
    folder itself)."""
    if not os.path.isdir(source):
        raise HubError(f"{source}: no such folder")
    if _is_checkpoint(source):
        raise HubError(
            f"{source} is a SpeechBrain checkpoint, which holds training "
            "state, not the compressed model: give the run's output folder "
            "(re-running the recipe with the same --output_folder resumes "
            "from its last checkpoint and writes compressed/ and hub/)"
        )
    if os.path.isfile(os.path.join(source, "compression_report.json")):
        return source
    inner = os.path.join(source, "compressed")
    if os.path.isfile(os.path.join(inner, "compression_report.json")):
        return inner
    raise HubError(
        f"{source}: no compression_report.json here or in {inner}; give a "
        "folder written by a recipe (its output folder or compressed/), by "
        "sb-compress oneshot, or a Whisper transformers folder"
    )


#: hparams keys of the recipes naming the pretrained model they start from.
_SOURCE_KEYS = ("wav2vec2_hub", "whisper_hub")


def recipe_base_model(folder):
    """The pretrained model a recipe started from: its ``wav2vec2_hub`` /
    ``whisper_hub`` in the ``hyperparams.yaml`` of ``folder`` or of its
    parent (the run's output folder); None if not found.

    Example
    -------
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with open(os.path.join(run, "hyperparams.yaml"), "w") as f:
    ...     _ = f.write("seed: 1\\nwav2vec2_hub: facebook/wav2vec2-base\\n")
    >>> recipe_base_model(os.path.join(run, "compressed"))
    'facebook/wav2vec2-base'
    """
    for candidate in (folder, os.path.dirname(os.path.abspath(folder))):
        path = os.path.join(candidate, "hyperparams.yaml")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                value = value.split(" #")[0].strip()
                if key in _SOURCE_KEYS and value and not value.startswith("!"):
                    return value
    return None


def _archive(folder, path):
    """Tars the compressed folder's files (not its card, hidden files or a
    sweep's ``eval/`` results)."""
    import tarfile

    with tarfile.open(path, "w") as archive:
        for name in sorted(os.listdir(folder)):
            if name in ("README.md", "eval") or name.startswith("."):
                continue
            archive.add(os.path.join(folder, name), arcname=name)


def _write_hub_folder(output, overwrite, files, card):
    """Writes ``output`` all or nothing: ``files(staging)`` writes the
    folder's files, then ``README.md`` gets ``card``."""
    from sb_compress.export.save import check_output_dir, staged_folder

    check_output_dir(output, overwrite)
    with staged_folder(output) as staging:
        files(staging)
        with open(os.path.join(staging, "README.md"), "w") as f:
            f.write(card)
    return output


def _card(report, folder, interface, archive, output, options):
    """The hub folder's model card: the report's numbers, the commands
    that made the compressed folder (from its own card) and the export."""
    from sb_compress.card import card_commands, card_license, hub_model_card
    from sb_compress.report import folder_bytes

    report = dict(report)
    if report.get("bytes_on_disk") is None:  # shrunk reports may lack it
        report["bytes_on_disk"] = folder_bytes(folder)
    base = options.get("base_model") or report.get("source")
    report["source"] = base or recipe_base_model(folder)
    commands = card_commands(folder) + [options.get("command")]
    license = options.get("license") or card_license(folder)
    name = os.path.basename(os.path.normpath(output))
    return hub_model_card(
        report,
        interface,
        archive,
        options.get("name") or name,
        commands,
        license,
    )


def export_hub(source, output, overwrite=False, command=None, **options):
    """Writes a SpeechBrain hub folder for a recipe's compressed CTC model.

    Arguments
    ---------
    source : str
        The recipe's output folder or its ``compressed/`` folder.
    output : str
        The hub folder (written atomically).
    overwrite : bool
        Replace an existing non-empty ``output``.
    command : str, optional
        The export command, recorded in the model card after the one that
        produced the compressed folder.
    **options
        ``license``, ``base_model`` (hub id) and ``name`` (the repo id the
        card's loading example uses) for the model card.

    Returns
    -------
    str
        ``output``.

    Raises
    ------
    HubError
        On a folder that is not a recipe's CTC export.
    """
    import shutil

    from sb_compress.export.recipe import RECIPE_LAYOUT
    from sb_compress.report import read_report

    folder = _compressed_folder(source)
    report = read_report(folder)
    if not report.get("model_type"):  # shrunk reports may lack it
        report["model_type"] = _model_type(folder)
    layout_path = os.path.join(folder, RECIPE_LAYOUT)
    if not os.path.isfile(layout_path):
        raise HubError(
            f"{folder}: no {RECIPE_LAYOUT}; `export` handles the CTC "
            "recipe's exports and Whisper folders (a one-shot wav2vec2 / "
            "HuBERT / WavLM folder is a transformers folder: push it as it "
            "is)"
        )
    with open(layout_path) as f:
        layout = json.load(f)
    wrapper = layout["backbone"]["wrapper"]
    if wrapper not in ("Wav2Vec2", "HuBERT", "WavLM", "Whisper"):
        raise HubError(
            f"{folder}: a {wrapper} backbone; `export` handles the CTC "
            "recipe's wav2vec2 / HuBERT / WavLM / Whisper-encoder exports"
        )
    for module in layout["modules"]:
        if "error" in module:
            raise HubError(f"{folder}: {module['error']}")
    labels = os.path.join(folder, LABEL_ENCODER)
    if not os.path.isfile(labels):
        raise HubError(f"{folder}: no {LABEL_ENCODER} (the CTC labels)")
    blank = _blank_index(labels)
    folded = report.get("format") == "folded"
    depth, encoder_args = "", ""
    if folded:
        depth = (
            f"# folded: any depth from {report.get('min_depth')} to "
            f"{report.get('max_depth')} (null: the largest)\ndepth: null\n"
        )
        encoder_args = "\n    depth: !ref <depth>"
    hyperparams = _HYPERPARAMS_CTC.format(
        archive=ARCHIVE,
        labels=HUB_LABELS,
        blank=blank,
        depth=depth,
        encoder_args=encoder_args,
    )
    config = {
        "speechbrain_interface": "EncoderASR",
        "sb_compress_format": report.get("format", "dense"),
        "model_type": report.get("model_type"),
    }

    def files(staging):
        _archive(folder, os.path.join(staging, ARCHIVE))
        shutil.copy(labels, os.path.join(staging, HUB_LABELS))
        with open(os.path.join(staging, "hyperparams.yaml"), "w") as f:
            f.write(hyperparams)
        with open(os.path.join(staging, HUB_CONFIG), "w") as f:
            json.dump(config, f, indent=2)

    options["command"] = command
    card = _card(report, folder, "EncoderASR", ARCHIVE, output, options)
    return _write_hub_folder(output, overwrite, files, card)


def _model_type(folder):
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("model_type")


def _blank_index(labels):
    from speechbrain.dataio.encoder import CTCTextEncoder

    encoder = CTCTextEncoder()
    encoder.load(labels)
    return int(encoder.get_blank_index())


# --------------------------------------------------------------------------
# Whisper (WhisperASR)
# --------------------------------------------------------------------------

_HYPERPARAMS_WHISPER = """\
# SpeechBrain inference file written by `sb-compress export`.
# Load with:
#   from speechbrain.inference.ASR import WhisperASR
#   asr = WhisperASR.from_hparams(source="<this folder or hub id>",
#                                 savedir="pretrained_models/<name>")
#   asr.transcribe_file("audio.wav")
# The model is in {archive}, a tar of the compressed folder; sb_compress
# rebuilds it (dense, packed or shrunk) into SpeechBrain's Whisper wrapper
# when the Pretrainer loads that file.

sample_rate: 16000
language: null
normalized_transcripts: False
beam_size: {beam}

whisper: !new:sb_compress.hub.CompressedWhisper

decoder: !new:sb_compress.hub.LazyWhisperSearcher
    whisper: !ref <whisper>
    beam_size: !ref <beam_size>

modules:
    whisper: !ref <whisper>
    decoder: !ref <decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        whisper: !ref <whisper>
"""

#: The Whisper archive, named after the loadable ``whisper``.
WHISPER_ARCHIVE = "whisper.ckpt"


def _whisper_classes():
    import shutil

    import torch
    from speechbrain.utils.checkpoints import (
        mark_as_transfer,
        register_checkpoint_hooks,
    )

    @register_checkpoint_hooks
    class CompressedWhisper(torch.nn.Module):
        """SpeechBrain's Whisper wrapper around a compressed Whisper, built
        when the Pretrainer loads its archive; attributes and calls go to
        the wrapper (``tokenizer``, ``forward_encoder``, ``_get_mel``...)."""

        def __init__(self):
            super().__init__()
            self.wrapper = None

        @mark_as_transfer
        def _load(self, path):
            from speechbrain.integrations.huggingface.whisper import Whisper

            from sb_compress.export import load_compressed

            folder = _unpack(path)
            dense = os.path.join(folder, "transformers")
            report = os.path.join(folder, "compression_report.json")
            if not os.path.isfile(report):
                dense = folder  # a plain transformers folder
            elif not os.path.isfile(os.path.join(dense, "config.json")):
                model = load_compressed(folder)
                model.save_pretrained(dense + ".partial")
                for name in os.listdir(folder):
                    if name.endswith((".json", ".txt", ".tiktoken")) and not (
                        name.startswith("compression_report")
                        or name == "config.json"
                    ):
                        shutil.copy(
                            os.path.join(folder, name), dense + ".partial"
                        )
                os.replace(dense + ".partial", dense)
            wrapper = Whisper(source=dense, save_path=folder + ".sb")
            if not wrapper.is_multilingual and wrapper.language is None:
                wrapper.language = "en"  # no language tokens to detect
            self.wrapper = wrapper

        def forward(self, *args, **kwargs):
            """The wrapper's forward."""
            return self.wrapper(*args, **kwargs)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                wrapper = self.__dict__.get("_modules", {}).get("wrapper")
                if wrapper is None:
                    raise
                return getattr(wrapper, name)

    class LazyWhisperSearcher(torch.nn.Module):
        """SpeechBrain's Whisper greedy (``beam_size`` 1) or beam searcher,
        built on first use, once the Whisper model is loaded."""

        def __init__(self, whisper, beam_size=1, **options):
            super().__init__()
            self.__dict__["_whisper"] = whisper
            self.__dict__["_real"] = None
            self.beam_size = beam_size
            self.options = options

        def searcher(self):
            """The real searcher."""
            from speechbrain.decoders.seq2seq import (
                S2SWhisperBeamSearcher,
                S2SWhisperGreedySearcher,
            )

            if self.__dict__["_real"] is None:
                wrapper = self.__dict__["_whisper"].wrapper
                options = {"min_decode_ratio": 0.0, "max_decode_ratio": 1.0}
                options.update(self.options)
                if self.beam_size > 1:
                    real = S2SWhisperBeamSearcher(
                        module=[wrapper], beam_size=self.beam_size, **options
                    )
                else:
                    real = S2SWhisperGreedySearcher(model=wrapper, **options)
                self.__dict__["_real"] = real
            return self.__dict__["_real"]

        def forward(self, *args, **kwargs):
            """The real searcher's forward."""
            return self.searcher()(*args, **kwargs)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.searcher(), name)

    return CompressedWhisper, LazyWhisperSearcher


def export_whisper_hub(
    source, output, overwrite=False, command=None, beam=1, **options
):
    """Writes a SpeechBrain hub folder (``WhisperASR``) for a Whisper
    folder: a one-shot or recipe export, or a plain transformers folder.

    Arguments
    ---------
    source : str
        The folder (or a recipe output folder holding ``compressed/``).
    output : str
        The hub folder (written atomically).
    overwrite : bool
        Replace an existing non-empty ``output``.
    command : str, optional
        Recorded in the model card.
    beam : int
        Beam size of the folder's searcher (1: greedy).
    **options
        ``license``, ``base_model`` and ``name``, see :func:`export_hub`.

    Returns
    -------
    str
        ``output``.
    """
    from sb_compress.report import read_report

    try:
        folder = _compressed_folder(source)
        report = read_report(folder)
    except HubError:
        if _is_checkpoint(source):
            raise
        folder = source
        report = {"format": "dense", "model_type": "whisper", "method": None}
        report["source"] = source
    hyperparams = _HYPERPARAMS_WHISPER.format(
        archive=WHISPER_ARCHIVE, beam=beam
    )
    config = {
        "speechbrain_interface": "WhisperASR",
        "sb_compress_format": report.get("format", "dense"),
        "model_type": "whisper",
    }

    def files(staging):
        _archive(folder, os.path.join(staging, WHISPER_ARCHIVE))
        with open(os.path.join(staging, "hyperparams.yaml"), "w") as f:
            f.write(hyperparams)
        with open(os.path.join(staging, HUB_CONFIG), "w") as f:
            json.dump(config, f, indent=2)

    options["command"] = command
    card = _card(report, folder, "WhisperASR", WHISPER_ARCHIVE, output, options)
    return _write_hub_folder(output, overwrite, files, card)


def export_any(source, output, overwrite=False, command=None, beam=1, **opts):
    """:func:`export_whisper_hub` for Whisper folders, else
    :func:`export_hub` (CTC recipe exports).

    Arguments
    ---------
    source : str
        A recipe's output folder or its ``compressed/`` folder, a one-shot
        Whisper folder or a Whisper transformers folder.
    output : str
        The hub folder.
    overwrite : bool
        Replace an existing non-empty ``output``.
    command : str, optional
        Recorded in the model card.
    beam : int
        Whisper: the searcher's beam.
    **opts
        ``license``, ``base_model``, ``name``: see :func:`export_hub`.

    Returns
    -------
    str
        The interface the folder is for (``EncoderASR`` or ``WhisperASR``).
    """
    if not os.path.isdir(source):
        raise HubError(f"{source}: no such folder")
    inner = os.path.join(source, "compressed")
    folder = inner if os.path.isdir(inner) else source
    config_path = os.path.join(folder, "config.json")
    config = {}
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
    if "speechbrain_interface" in config:
        raise HubError(
            f"{source} is already a SpeechBrain hub folder "
            f"({config['speechbrain_interface']}): push it as it is"
        )
    from sb_compress.export.recipe import RECIPE_LAYOUT

    recipe = os.path.isfile(os.path.join(folder, RECIPE_LAYOUT))
    if config.get("model_type") == "whisper" and not recipe:
        export_whisper_hub(folder, output, overwrite, command, beam, **opts)
        return "WhisperASR"
    export_hub(source, output, overwrite, command, **opts)
    return "EncoderASR"

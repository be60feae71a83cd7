"""Loading sources and saving / loading compressed models as folders.

A compressed model is a folder that transformers' ``from_pretrained`` and
SpeechBrain's wrappers (``source=<folder>``) read: config, safetensors,
the source's processor / tokenizer files, and ``compression_report.json``
whose ``format`` key tells :func:`load_compressed` how to rebuild it
(``dense`` here; shrunk, packed and folded formats register their own
loaders with :func:`register_format`).

Folders are written atomically: everything goes to a hidden sibling folder
that is renamed into place at the end, so an interrupted run leaves no
half-written model behind.

Authors
 * sb_compress team 2026
"""

import contextlib
import fnmatch
import json
import os
import re
import shutil
import tempfile

import torch

from sb_compress.models import UnsupportedModelError, unwrap_model
from sb_compress.report import ReportError, read_report

#: ``model_type`` values of the families sb_compress compresses.
SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "whisper")

#: Files of the source copied next to the compressed weights (when the
#: model's own ``save_pretrained`` did not write them).
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "tokenizer*.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "normalizer.json",
    "generation_config.json",
    "chat_template*",
    "*.tiktoken",
)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceError(ValueError):
    """A source model is missing, unreachable or not a transformers
    model folder."""


class CompressedFormatError(ValueError):
    """A compressed folder is missing a file, has a corrupt one, or uses a
    format no loader is registered for."""


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _read_config(folder, error_class):
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise error_class(
            f"{path} is missing: {folder} is not a transformers model folder"
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise error_class(f"{path} is corrupt: {error}") from error
    if not isinstance(config, dict):
        raise error_class(f"{path} is corrupt: not a JSON object")
    return config


def check_model_type(config, where):
    """Checks that a config dict describes a supported model family.

    Arguments
    ---------
    config : dict
        The content of a ``config.json``.
    where : str
        The folder or hub id, named in the error.

    Returns
    -------
    str
        The ``model_type``.

    Raises
    ------
    UnsupportedModelError
        When the family is not one of :data:`SUPPORTED_MODEL_TYPES`.

    Example
    -------
    >>> check_model_type({"model_type": "hubert"}, "folder")
    'hubert'
    """
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{where}: model_type {model_type!r} is not supported; "
            "sb_compress compresses " + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    return model_type


def looks_like_hub_id(source):
    """Whether a source that is not a local folder names a hub repository.

    Arguments
    ---------
    source : str
        ``owner/name`` or a path.

    Returns
    -------
    bool

    Example
    -------
    >>> looks_like_hub_id("openai/whisper-tiny")
    True
    >>> looks_like_hub_id("./models/whisper")
    False
    """
    return bool(_HUB_ID.match(source)) and not os.path.exists(source)


def check_source(source):
    """Cheap checks of a source before loading it.

    Arguments
    ---------
    source : str
        Local transformers folder or hub id.

    Returns
    -------
    str or None
        The local folder, or ``None`` for a hub id (checked when loaded).

    Raises
    ------
    SourceError
        When a local source is missing or has no readable ``config.json``.
    UnsupportedModelError
        When its ``model_type`` is not supported.
    """
    if os.path.isdir(source):
        check_model_type(_read_config(source, SourceError), source)
        return source
    if looks_like_hub_id(source):
        return None
    raise SourceError(
        f"source {source!r}: no such folder (nor a hub id like "
        "'openai/whisper-tiny')"
    )


def resolve_source(source):
    """Returns a local folder holding the source model.

    Arguments
    ---------
    source : str
        Local transformers folder, or hub id downloaded (config, weights,
        processor files) to the Hugging Face cache.

    Returns
    -------
    str
        The local folder.

    Raises
    ------
    SourceError
        When the folder is missing or the hub cannot be reached.
    """
    if check_source(source) is not None:
        return source
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
        folder = snapshot_download(source, allow_patterns=patterns)
        if not any(
            os.path.isfile(os.path.join(folder, name))
            for name in _WEIGHT_FILES[:2]
        ):
            folder = snapshot_download(
                source, allow_patterns=patterns + ["pytorch_model*.bin"]
            )
    except Exception as error:
        raise SourceError(
            f"source {source!r} is not a local folder and could not be "
            f"fetched from the Hugging Face hub ({_first_line(error)})"
        ) from error
    check_model_type(_read_config(folder, SourceError), source)
    return folder


def model_class_for(config):
    """The transformers class that loads a model with this config.

    Arguments
    ---------
    config : dict or transformers.PretrainedConfig
        Its ``architectures`` (e.g. ``["Wav2Vec2ForCTC"]``) pick the class.

    Returns
    -------
    type
        The first known class of ``architectures``, else ``AutoModel``.

    Example
    -------
    >>> model_class_for({"architectures": ["HubertModel"]}).__name__
    'HubertModel'
    >>> model_class_for({"architectures": ["NoSuchModel"]}).__name__
    'AutoModel'
    """
    import transformers

    if isinstance(config, dict):
        architectures = config.get("architectures")
    else:
        architectures = getattr(config, "architectures", None)
    for name in architectures or []:
        model_class = getattr(transformers, name, None)
        if isinstance(model_class, type) and issubclass(
            model_class, transformers.PreTrainedModel
        ):
            return model_class
    return transformers.AutoModel


def _load_folder(folder, config, **kwargs):
    model = model_class_for(config).from_pretrained(folder, **kwargs)
    model.eval()
    return model


def load_source(source, **kwargs):
    """Loads a source model with the class its config names.

    Arguments
    ---------
    source : str
        Local transformers folder or hub id (wav2vec2, HuBERT, WavLM or
        Whisper; with or without a CTC or LM head).
    **kwargs
        Passed to ``from_pretrained`` (e.g. ``dtype``).

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, e.g. ``Wav2Vec2ForCTC`` or
        ``WhisperForConditionalGeneration``.

    Raises
    ------
    SourceError, UnsupportedModelError
        With one line naming the source and the problem.
    """
    folder = resolve_source(source)
    config = _read_config(folder, SourceError)
    try:
        return _load_folder(folder, config, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        raise SourceError(
            f"source {source!r} could not be loaded: {_first_line(error)}"
        ) from error


def copy_processor_files(source_dir, output_dir):
    """Copies the source's processor, tokenizer, feature-extractor and
    generation files that the output folder does not have yet.

    Arguments
    ---------
    source_dir : str
        Folder of the source model.
    output_dir : str
        Folder of the compressed model.

    Returns
    -------
    list of str
        Names of the copied files.
    """
    copied = []
    for name in sorted(os.listdir(source_dir)):
        path = os.path.join(source_dir, name)
        if not os.path.isfile(path):
            continue
        if not any(fnmatch.fnmatch(name, p) for p in PROCESSOR_FILES):
            continue
        target = os.path.join(output_dir, name)
        if not os.path.exists(target):
            shutil.copy2(path, target)
            copied.append(name)
    return copied


def _write_extra_files(folder, extra_files):
    if callable(extra_files):
        extra_files(folder)
        return
    for name, content in extra_files.items():
        relative = os.path.normpath(name)
        if os.path.isabs(relative) or relative.startswith(".."):
            raise ValueError(f"extra_files[{name!r}]: must stay in the folder")
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        with open(path, "wb") as f:
            f.write(content)


def check_output_dir(output_dir, overwrite=False):
    """Checks that a folder may receive a model.

    Arguments
    ---------
    output_dir : str
        Target folder.
    overwrite : bool
        Whether an existing, non-empty folder may be replaced.

    Raises
    ------
    FileExistsError
        When it is a file, or a non-empty folder and not ``overwrite``.
    """
    if not os.path.lexists(output_dir):
        return
    if not os.path.isdir(output_dir) or os.path.islink(output_dir):
        raise FileExistsError(f"output {output_dir} exists and is not a folder")
    if os.listdir(output_dir) and not overwrite:
        raise FileExistsError(
            f"output {output_dir} exists and is not empty; choose another "
            "folder or pass --overwrite (overwrite=True)"
        )


def _move_into_place(staging, output_dir):
    if os.path.isdir(output_dir) and not os.listdir(output_dir):
        os.rmdir(output_dir)
    if not os.path.lexists(output_dir):
        os.rename(staging, output_dir)
        return
    parent, name = os.path.split(output_dir)
    aside = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    os.rmdir(aside)
    os.rename(output_dir, aside)
    try:
        os.rename(staging, output_dir)
    except BaseException:
        os.rename(aside, output_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(output_dir):
    """Yields a hidden sibling folder (``.<name>.tmp-*``) to write into;
    when the ``with`` body ends without an exception it replaces
    ``output_dir`` (see :func:`_move_into_place`), otherwise it is removed
    and ``output_dir`` is left as it was.

    Arguments
    ---------
    output_dir : str
        The folder the staged files become.

    Yields
    ------
    str
        The staging folder's path.

    Example
    -------
    >>> folder = os.path.join(tempfile.mkdtemp(), "out")
    >>> with staged_folder(folder) as staging:
    ...     open(os.path.join(staging, "a.txt"), "w").close()
    >>> os.listdir(folder)
    ['a.txt']
    """
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield staging
        _move_into_place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_not_parametrized(model):
    from torch.nn.utils import parametrize

    for name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear)
        if is_linear and parametrize.is_parametrized(module):
            raise ValueError(
                f"{name or 'model'} still has parametrizations (masks or "
                "gates); call the modifiers' finalize(model) before saving"
            )


def save_pretrained_atomic(
    model, output_dir, source_dir=None, overwrite=False, extra_files=None
):
    """Saves a transformers model as a folder, all or nothing.

    The model, the source's processor files and the extra files are
    written to a hidden sibling folder (``.<name>.tmp-*``) that is renamed
    to ``output_dir`` at the end; with ``overwrite`` the old folder is moved
    aside first and deleted last. On any exception the hidden folder is
    removed and ``output_dir`` is left as it was.

    Arguments
    ---------
    model : torch.nn.Module
        transformers model or SpeechBrain wrapper around one, with no
        parametrizations left.
    output_dir : str
        Folder to create (or replace, with ``overwrite``).
    source_dir : str, optional
        Folder of the source model, whose processor / tokenizer /
        feature-extractor / generation files are copied when missing.
    overwrite : bool
        Replace an existing non-empty ``output_dir``.
    extra_files : callable or dict, optional
        ``f(folder)`` called on the hidden folder after the model files
        are written (e.g. to measure them and write the report), or
        ``{name: bytes or str}``.

    Returns
    -------
    str
        The absolute path of ``output_dir``.

    Raises
    ------
    FileExistsError
        When ``output_dir`` exists, is not empty and not ``overwrite``.

    Example
    -------
    >>> import tempfile
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8,),
    ...     conv_stride=(5,), conv_kernel=(10,),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> folder = os.path.join(tempfile.mkdtemp(), "out")
    >>> path = save_pretrained_atomic(HubertModel(config), folder,
    ...     extra_files={"notes.txt": "pruned"})
    >>> sorted(os.listdir(path))
    ['config.json', 'model.safetensors', 'notes.txt']
    """
    model = unwrap_model(model)
    _check_not_parametrized(model)
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir, overwrite)
    with staged_folder(output_dir) as staging:
        model.save_pretrained(staging)
        if source_dir is not None:
            copy_processor_files(source_dir, staging)
        if extra_files is not None:
            _write_extra_files(staging, extra_files)
    return output_dir


_LOADERS = {}


def register_format(name):
    """Registers the loader of a compressed format (decorator).

    Arguments
    ---------
    name : str
        Value of the report's ``format`` key.

    Returns
    -------
    callable
        Decorator of ``loader(folder, report, **options) -> module``.

    Example
    -------
    >>> @register_format("example")
    ... def load_example(folder, report, **options):
    ...     return None
    >>> "example" in registered_formats()
    True
    """

    def decorator(loader):
        _LOADERS[name] = loader
        return loader

    return decorator


def registered_formats():
    """Names of the formats :func:`load_compressed` reads.

    Returns
    -------
    list of str
    """
    return sorted(_LOADERS)


def _check_weight_files(folder):
    from safetensors import safe_open

    present = [
        n for n in _WEIGHT_FILES if os.path.isfile(os.path.join(folder, n))
    ]
    if not present:
        raise CompressedFormatError(
            f"{os.path.join(folder, 'model.safetensors')} is missing"
        )
    files = []
    for index_name in ("model.safetensors.index.json",):
        if index_name in present:
            index_path = os.path.join(folder, index_name)
            try:
                with open(index_path, encoding="utf-8") as f:
                    files = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, ValueError, KeyError) as error:
                raise CompressedFormatError(
                    f"{index_path} is corrupt: {_first_line(error)}"
                ) from error
    if "model.safetensors" in present:
        files.append("model.safetensors")
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CompressedFormatError(f"{path} is missing")
        try:
            with safe_open(path, framework="pt") as handle:
                handle.keys()
        except Exception as error:
            raise CompressedFormatError(
                f"{path} is corrupt: {_first_line(error)}"
            ) from error


@register_format("dense")
def load_dense(folder, report, **options):
    """Loads a dense folder (pruned weights stored as zeros).

    Arguments
    ---------
    folder : str
        Folder with config, safetensors and report.
    report : dict
        Its compression report.
    **options
        Passed to ``from_pretrained``.

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, of the class its config names.
    """
    config = _read_config(folder, CompressedFormatError)
    check_model_type(config, folder)
    _check_weight_files(folder)
    return _load_folder(folder, config, **options)


def load_compressed(folder, **options):
    """Loads a compressed folder back into a runnable model.

    Arguments
    ---------
    folder : str
        Written by ``sb-compress`` or ``CompressionBrain``.
    **options
        Passed to the format's loader.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    CompressedFormatError
        Naming the missing or corrupt file, or the unknown format.
    """
    try:
        report = read_report(folder)
    except ReportError as error:
        raise CompressedFormatError(str(error)) from error
    name = report.get("format", "dense")
    if name not in _LOADERS:
        raise CompressedFormatError(
            f"{folder}: format {name!r} has no loader; known formats: "
            + ", ".join(registered_formats())
        )
    return _LOADERS[name](folder, report, **options)

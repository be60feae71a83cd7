"""Shrunk exports: structured pruning results made physically smaller.

:func:`shrink` turns a model gated by
:class:`~sb_compress.methods.hardconcrete.HardConcretePruning` into a plain
transformers model whose encoder layers keep only their surviving heads,
q/k and v dims and FFN units (sliced Linears; removed blocks output zero
and lose their pre-LayerNorm). :func:`save_shrunk` writes it as
``model.safetensors`` plus ``config.json`` whose ``sb_compress_structure``
key records every layer's kept heads, dims and FFN units, and a
``compression_report.json`` with ``"format": "shrunk"``;
``sb_compress.load_compressed(folder)`` rebuilds it. The result is the
module a SpeechBrain wrapper uses as its ``.model``.

Authors
 * sb_compress team 2026
"""

import copy
import os

import torch

from sb_compress.export.save import (
    CompressedFormatError,
    _read_config,
    check_model_type,
    model_class_for,
    register_format,
    save_pretrained_atomic,
)
from sb_compress.models import unwrap_model
from sb_compress.models.shrunk import (
    apply_structure,
    attention_geometry,
    encoder_layers,
    slice_state,
)

STRUCTURE_KEY = "sb_compress_structure"


def dense_state(model):
    """State dict of a gated model with plain keys: each parametrized
    weight's original, no gate parameters.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model, possibly with parametrizations.

    Returns
    -------
    dict
    """
    from torch.nn.utils import parametrize

    model = unwrap_model(model)
    gated = [
        name
        for name, module in model.named_modules()
        if parametrize.is_parametrized(module, "weight")
        and any(hasattr(p, "hard_mask") for p in module.parametrizations.weight)
    ]
    state = {}
    for key, value in model.state_dict().items():
        owner = next(
            (n for n in gated if key.startswith(f"{n}.parametrizations.")),
            None,
        )
        if owner is not None:
            if key == f"{owner}.parametrizations.weight.original":
                state[f"{owner}.weight"] = value.detach().clone()
            continue
        state[key] = value.detach().clone()
    return state


def _fresh_model(config, decoder, model_class=None):
    model_class = model_class or model_class_for(config)
    model = model_class(copy.deepcopy(config))
    if not decoder:
        base = getattr(model, "model", model)
        if hasattr(base, "decoder"):
            base.decoder = None
    return model.eval()


def _has_decoder(model):
    base = getattr(model, "model", model)
    return getattr(base, "decoder", None) is not None


@torch.no_grad()
def shrink(model, structure):
    """A new, plain model with the layers of ``structure``.

    Arguments
    ---------
    model : torch.nn.Module
        The gated (or dense) model or its SpeechBrain wrapper; its original
        weights are sliced (gates with deterministic masks are binary, so
        the kept units compute exactly what they computed gated).
    structure : dict
        ``{layer: {"attention": ..., "ffn": ...}}``, e.g.
        ``HardConcretePruning.structure()``.

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, on the source's device.
    """
    source = unwrap_model(model)
    check_structure(source, structure)
    state = dense_state(source)
    shrunk = _fresh_model(source.config, _has_decoder(source), type(source))
    sliced = slice_state(shrunk, structure, state)
    apply_structure(shrunk, structure)
    shrunk.load_state_dict(sliced, strict=True)
    return shrunk.to(next(source.parameters()).device).eval()


def check_structure(model, structure):
    """Raises ``CompressedFormatError`` naming the layer when ``structure``
    does not fit ``model`` (index out of range, unsorted, duplicated)."""
    heads, head_dim, _ = attention_geometry(model)
    layers = encoder_layers(model)
    if not isinstance(structure, dict):
        raise CompressedFormatError(f"{STRUCTURE_KEY}: must be a mapping")

    def check_indices(values, limit, where):
        if not isinstance(values, list) or any(
            not isinstance(v, int) or not 0 <= v < limit for v in values
        ):
            raise CompressedFormatError(
                f"{where} = {values!r}: must be a list of indices in "
                f"[0, {limit})"
            )
        if values != sorted(set(values)):
            raise CompressedFormatError(
                f"{where} = {values!r}: indices must be sorted and unique"
            )

    for key, spec in structure.items():
        where = f"{STRUCTURE_KEY}[{key!r}]"
        if key == "conv":
            _check_conv(model, spec, where, check_indices)
            continue
        if not str(key).isdigit() or int(key) >= len(layers):
            raise CompressedFormatError(
                f"{where}: the encoder has {len(layers)} layers"
            )
        attention = spec.get("attention", {})
        if attention:
            check_indices(attention.get("heads"), heads, f"{where}.heads")
            for name in ("qk", "v"):
                dims = attention.get(name)
                if not isinstance(dims, list) or len(dims) != len(
                    attention["heads"]
                ):
                    raise CompressedFormatError(
                        f"{where}.{name}: one list of dims per kept head"
                    )
                for i, values in enumerate(dims):
                    check_indices(values, head_dim, f"{where}.{name}[{i}]")
        units = spec.get("ffn")
        if "ffn" in spec and units is not None:
            width = model.config.to_dict().get("intermediate_size") or (
                model.config.encoder_ffn_dim
            )
            check_indices(units, width, f"{where}.ffn")


def _check_conv(model, channels, where, check_indices):
    if model.config.model_type == "whisper":
        raise CompressedFormatError(f"{where}: Whisper has no conv gates")
    widths = list(model.config.conv_dim)
    if not isinstance(channels, list) or len(channels) != len(widths) - 1:
        raise CompressedFormatError(
            f"{where}: one list of kept channels per conv layer but the "
            f"last ({len(widths) - 1})"
        )
    for i, kept in enumerate(channels):
        check_indices(kept, widths[i], f"{where}[{i}]")


def structure_summary(structure):
    """Per-layer sizes for reports: heads, q/k and v dims, FFN width.

    Arguments
    ---------
    structure : dict
        See :func:`shrink`.

    Returns
    -------
    list of dict
        One record per listed layer, in layer order.

    Example
    -------
    >>> structure_summary({"1": {"attention": None, "ffn": [0, 5]}})
    [{'layer': 1, 'heads': 0, 'qk_dims': [], 'v_dims': [], 'ffn_width': 2}]
    """
    records = []
    if "conv" in structure:
        records.append({"conv_channels": [len(c) for c in structure["conv"]]})
    for key in sorted((k for k in structure if k != "conv"), key=int):
        spec = structure[key]
        record = {"layer": int(key)}
        if "attention" in spec:
            attention = spec["attention"] or {"heads": [], "qk": [], "v": []}
            record["heads"] = len(attention["heads"])
            record["qk_dims"] = [len(d) for d in attention["qk"]]
            record["v_dims"] = [len(d) for d in attention["v"]]
        if "ffn" in spec:
            units = spec["ffn"]
            record["ffn_width"] = 0 if units is None else len(units)
        records.append(record)
    return records


def original_geometry(model):
    """Sizes of the unpruned encoder, for reports: layers, heads, head
    size, FFN width and (wav2vec2 family) CNN channels.

    Arguments
    ---------
    model : torch.nn.Module
        The gated (unshrunk) model or its SpeechBrain wrapper.

    Returns
    -------
    dict
    """
    from sb_compress.models import unwrap_model
    from sb_compress.models.shrunk import attention_geometry

    model = unwrap_model(model)
    config = model.config
    heads, head_dim, _ = attention_geometry(model)
    if hasattr(config, "encoder_ffn_dim"):
        ffn, layers = config.encoder_ffn_dim, config.encoder_layers
    else:
        ffn, layers = config.intermediate_size, config.num_hidden_layers
    out = {"layers": layers, "heads": heads, "head_dim": head_dim}
    out["ffn_width"] = ffn
    if getattr(config, "conv_dim", None):
        out["conv_channels"] = list(config.conv_dim)
    return out


def count_params(model):
    """Number of parameters of a module (shared tensors counted once)."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return int(sum(seen.values()))


def _modifier_of(plan_or_modifier):
    if hasattr(plan_or_modifier, "structure"):
        return plan_or_modifier
    for modifier in getattr(plan_or_modifier, "modifiers", []):
        if hasattr(modifier, "structure"):
            return modifier
    raise ValueError(
        "shrinking needs a hardconcrete modifier (or a plan holding one)"
    )


def save_shrunk(
    plan_or_modifier,
    folder,
    source_dir=None,
    overwrite=False,
    report_extra=None,
    extra_files=None,
):
    """Shrinks the gated model of a hardconcrete modifier and saves it.

    Arguments
    ---------
    plan_or_modifier : sb_compress.Plan or HardConcretePruning
        Prepared, with trained gates.
    folder : str
        Output folder (written atomically).
    source_dir : str, optional
        Folder whose processor / tokenizer files are copied (those of a
        SpeechBrain wrapper the plan is bound to are saved anyway).
    overwrite : bool
        Replace an existing non-empty folder.
    report_extra : dict, optional
        More keys for ``compression_report.json``.
    extra_files : callable, optional
        ``extra_files(staging_folder)`` writes more files into the folder
        (after its report) before it is moved into place.

    Returns
    -------
    transformers.PreTrainedModel
        The shrunk model that was saved.
    """
    modifier = _modifier_of(plan_or_modifier)
    structure = modifier.structure()
    shrunk = shrink(modifier.model, structure)
    shrunk.config.update({STRUCTURE_KEY: structure})
    dense = count_params(modifier.model) - sum(
        g.log_alpha.numel() for g in modifier.all_gates()
    )
    report = {
        "format": "shrunk",
        "method": modifier.method,
        "params_dense": dense,
        "params_total": count_params(shrunk),
        "params_ratio": count_params(shrunk) / dense,
        "target_sparsity": modifier.sparsity,
        "original": original_geometry(modifier.model),
        "layers_structure": structure_summary(structure),
    }
    report.update(report_extra or {})

    wrapper = getattr(plan_or_modifier, "model", None)

    def write_report(staging):
        from sb_compress.report import write_report as write_files

        for attribute in ("feature_extractor", "tokenizer"):
            processor = getattr(wrapper, attribute, None)
            if hasattr(processor, "save_pretrained"):
                processor.save_pretrained(staging)
        write_files(staging, report)
        if extra_files is not None:
            extra_files(staging)

    try:
        save_pretrained_atomic(
            shrunk,
            folder,
            source_dir=source_dir,
            overwrite=overwrite,
            extra_files=write_report,
        )
    finally:
        del shrunk.config.sb_compress_structure
    return shrunk


def _read_tensors(folder):
    from safetensors import safe_open

    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise CompressedFormatError(f"{path} is missing")
    try:
        with safe_open(path, framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise CompressedFormatError(f"{path} is corrupt: {error}") from error


def _check_state(model, tensors, folder):
    expected = model.state_dict()
    path = os.path.join(folder, "model.safetensors")
    tied = _tied_keys(model)
    missing = [k for k in expected if k not in tensors and k not in tied]
    if missing:
        raise CompressedFormatError(
            f"{path}: tensor {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = [k for k in tensors if k not in expected]
    if unexpected:
        raise CompressedFormatError(
            f"{path}: tensor {unexpected[0]!r} is not part of the model "
            f"that config.json's {STRUCTURE_KEY} describes"
        )
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CompressedFormatError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"config.json's {STRUCTURE_KEY} gives "
                f"{tuple(expected[key].shape)}"
            )


def _tied_keys(model):
    """Keys whose tensor another key of the state dict shares (tied
    embeddings, which ``save_pretrained`` stores once)."""
    owners, tied = {}, set()
    for key, value in model.state_dict(keep_vars=True).items():
        pointer = value.data_ptr()
        if pointer in owners and value.numel():
            tied.add(key)
        owners.setdefault(pointer, key)
    return tied


@register_format("shrunk")
def load_shrunk(folder, report, **options):
    """Rebuilds a shrunk model from its folder.

    Arguments
    ---------
    folder : str
        Written by :func:`save_shrunk`.
    report : dict
        Its compression report.
    **options
        ``device`` (default ``cpu``).

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, with per-layer heads, dims and FFN widths.

    Raises
    ------
    CompressedFormatError
        Naming the missing, unexpected or misshapen tensor, or the layer
        whose recorded structure does not fit the model.
    """
    from transformers import AutoConfig

    del report
    raw = _read_config(folder, CompressedFormatError)
    check_model_type(raw, folder)
    if STRUCTURE_KEY not in raw:
        raise CompressedFormatError(
            f"{os.path.join(folder, 'config.json')}: no {STRUCTURE_KEY} key"
        )
    structure = raw[STRUCTURE_KEY]
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, STRUCTURE_KEY):
        delattr(config, STRUCTURE_KEY)
    tensors = _read_tensors(folder)
    decoder = raw.get("model_type") != "whisper" or any(
        ".decoder." in k or k.startswith("decoder.") for k in tensors
    )
    model = _fresh_model(config, decoder)
    check_structure(model, structure)
    apply_structure(model, structure)
    _check_state(model, tensors, folder)
    model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    return model.to(options.get("device", "cpu")).eval()

"""Folded exports: each physical block stored once, any depth at load time.

safetensors refuses tensors that share memory, and a folded model's
logical layers are its physical blocks several times over. The folder
therefore holds the ``N_p``-layer model (physical block ``i`` under
``<encoder>.layers.<i>``) and records the fold (seeds, unfold map,
``N_f``) in ``config.json``; :func:`load_folded`, registered as format
``folded``, rebuilds the model and unfolds it to the depth asked::

    model = sb_compress.load_compressed(folder, depth=6)

A transformers model's folder is a transformers folder of the physical
model (``config.json`` with an ``sb_compress_fold`` entry). A SpeechBrain
Conformer's ``config.json`` also holds its constructor arguments
(:mod:`sb_compress.models.conformer`). The report lists the physical
parameters (stored) and the logical parameters at every depth.

Authors
 * sb_compress team 2026
"""

import json
import os

from sb_compress.export.save import (
    CompressedFormatError,
    _read_config,
    check_output_dir,
    model_class_for,
    register_format,
    staged_folder,
)
from sb_compress.methods.fold import (
    FOLD_KEY,
    FoldError,
    LayerStack,
    fold_encoder,
    parameter_counts,
    physical_state,
    set_depth,
    unfold_order,
)
from sb_compress.models.conformer import build_conformer, describe_conformer

#: ``config.json`` key of a SpeechBrain model's constructor arguments.
SPEECHBRAIN_KEY = "speechbrain"
WEIGHTS = "model.safetensors"


def is_folded(plan):
    """Whether a plan folds its model (its export is format ``folded``)."""
    return any(m.method == "fold" for m in plan.modifiers)


def _fold_record(info):
    return {k: v for k, v in info.items() if k != "depth"}


def _config(stack):
    """The ``config.json`` content of the physical model."""
    info = _fold_record(stack.info)
    if stack.config is None:
        spec = describe_conformer(stack.root, num_layers=info["physical"])
        _check_rebuilds(spec, stack)
        return {FOLD_KEY: info, SPEECHBRAIN_KEY: spec}
    config = stack.config.to_dict()
    config[stack.count_key] = info["physical"]
    base = getattr(stack.root, "model", stack.root)
    if hasattr(base, "decoder") and base.decoder is None:
        info["drop_decoder"] = True
    config[FOLD_KEY] = info
    config["architectures"] = [type(stack.root).__name__]
    return config


def _check_rebuilds(spec, stack):
    """Raises unless the described Conformer has the physical state's keys
    and shapes (checked before anything is written)."""
    rebuilt = build_conformer(spec).state_dict()
    state = physical_state(stack.root)
    for key in sorted(set(rebuilt) ^ set(state)):
        raise FoldError(
            f"the Conformer cannot be described for export: state key "
            f"{key!r} differs after rebuilding {spec['class']}"
        )
    for key, value in state.items():
        if tuple(rebuilt[key].shape) != tuple(value.shape):
            raise FoldError(
                f"the Conformer cannot be described for export: {key!r} "
                f"has shape {tuple(value.shape)}, rebuilt "
                f"{tuple(rebuilt[key].shape)}"
            )


def folded_report(model):
    """The report keys of a folded model: fold, physical and logical
    parameters.

    Arguments
    ---------
    model : torch.nn.Module
        A folded model.

    Returns
    -------
    dict
    """
    stack = LayerStack(model)
    info = stack.info
    counts = parameter_counts(model)
    dense = counts["logical"][info["max_depth"]]
    return {
        "format": "folded",
        "method": "fold",
        "model_type": stack.model_type,
        "physical_blocks": info["physical"],
        "min_depth": info["physical"],
        "max_depth": info["max_depth"],
        "original_depth": info["original_depth"],
        "unfold_map": info["mode"],
        "seeds": info["seeds"],
        "unfold_order_max_depth": unfold_order(
            info["physical"], info["max_depth"], info["mode"]
        ),
        "params_total": counts["physical"],
        "params_physical": counts["physical"],
        "params_dense": dense,
        "params_logical": {str(d): n for d, n in counts["logical"].items()},
        "params_reduction": 1.0 - counts["physical"] / dense,
    }


def save_folded(
    model, folder, overwrite=False, report_extra=None, extra_files=None
):
    """Writes a folded model with each physical block stored once.

    Arguments
    ---------
    model : torch.nn.Module
        Folded (:func:`sb_compress.methods.fold.fold_encoder`): a
        transformers model, a SpeechBrain wrapper around one, or a
        SpeechBrain Conformer.
    folder : str
        Output folder, written atomically.
    overwrite : bool
        Replace an existing non-empty folder.
    report_extra : dict, optional
        More keys for ``compression_report.json``.
    extra_files : callable, optional
        ``extra_files(staging_folder)``, called after the model and its
        report are written, before the folder is moved into place.

    Returns
    -------
    dict
        The report.

    Example
    -------
    >>> import tempfile
    >>> import torch
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder)
    >>> from sb_compress.methods.fold import fold_encoder
    >>> encoder = fold_encoder(ConformerEncoder(4, 16, 32, 2), 2).eval()
    >>> folder = os.path.join(tempfile.mkdtemp(), "folded")
    >>> report = save_folded(encoder, folder)
    >>> report["params_physical"] < report["params_dense"]
    True
    >>> x, pos = torch.randn(1, 5, 16), torch.randn(1, 9, 16)
    >>> loaded = load_folded(folder, report, depth=3)
    >>> _ = set_depth(encoder, 3)
    >>> torch.equal(loaded(x, pos_embs=pos)[0], encoder(x, pos_embs=pos)[0])
    True
    """
    from safetensors.torch import save_file

    from sb_compress.report import folder_bytes, write_report

    stack = LayerStack(model)
    if stack.info is None:
        raise FoldError("the model is not folded (see fold_encoder)")
    config = _config(stack)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in physical_state(model).items()
    }
    report = folded_report(model)
    report.update(report_extra or {})
    folder = os.path.abspath(folder)
    check_output_dir(folder, overwrite)
    with staged_folder(folder) as staging:
        save_file(state, os.path.join(staging, WEIGHTS))
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        report["bytes_on_disk"] = folder_bytes(staging)
        write_report(staging, report)
        if extra_files is not None:
            extra_files(staging)
    return report


def export_folded_plan(
    plan, folder, other_modules, results, elapsed_s, label_encoder
):
    """The recipe export of a plan with a fold modifier (see
    :func:`sb_compress.export.recipe.export_plan`).

    Returns
    -------
    dict
        The report written.
    """
    from sb_compress.card import current_command, write_model_card
    from sb_compress.export.recipe import _write_recipe_files
    from sb_compress.report import read_report

    results = results or {}
    wer = results.get("wer") or {}
    stack = LayerStack(plan.model)
    info = stack.info
    # a module holding the folded encoder (e.g. an EncoderWrapper listed
    # beside it) is the model itself, not one of the recipe's others
    other_modules = {
        name: module
        for name, module in (other_modules or {}).items()
        if not any(m is stack.owner for m in module.modules())
    }
    extra = {
        "step": int(plan.step),
        "modifiers": plan.settings(),
        "elapsed_s": elapsed_s,
        "test_wer": next(iter(wer.values()), None),
        "wer": wer or None,
        "cer": results.get("cer") or None,
        "wer_depth": info["depth"],
    }

    def write_extras(staging):
        _write_recipe_files(staging, plan, other_modules, label_encoder)
        write_model_card(
            staging, read_report(staging), current_command(), folder
        )

    return save_folded(
        plan.model,
        folder,
        overwrite=True,
        report_extra=extra,
        extra_files=write_extras,
    )


def _build_transformers(folder, config, info):
    import transformers

    model_config = transformers.AutoConfig.from_pretrained(folder)
    setattr(model_config, FOLD_KEY, None)
    model_class = model_class_for(config)
    if model_class is transformers.AutoModel:
        model = model_class.from_config(model_config)
    else:
        model = model_class(model_config)
    if info.get("drop_decoder"):
        getattr(model, "model", model).decoder = None
    return model


def _load_state(model, path, tied=("proj_out.weight",)):
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise CompressedFormatError(f"{path} is missing")
    try:
        state = load_file(path)
    except Exception as error:
        raise CompressedFormatError(f"{path} is corrupt: {error}") from error
    expected = set(model.state_dict())
    missing = sorted(expected - set(state) - set(tied))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        key, what = (
            (missing[0], "missing")
            if missing
            else (unexpected[0], "unexpected")
        )
        raise CompressedFormatError(
            f"{path}: tensor {key!r} {what} for {type(model).__name__}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        message = " ".join(str(error).split())[:500]
        raise CompressedFormatError(
            f"{path} does not fit {type(model).__name__}: {message}"
        ) from error


@register_format("folded")
def load_folded(folder, report, depth=None, **options):
    """Loads a folded folder, unfolded to ``depth``.

    Arguments
    ---------
    folder : str
        Written by :func:`save_folded`.
    report : dict
        Its compression report.
    depth : int, optional
        Logical depth in ``[N_p, N_f]`` (default: ``N_f``).
    **options
        ``dtype``: cast the model.

    Returns
    -------
    torch.nn.Module
        The transformers model or SpeechBrain Conformer, in eval mode.

    Raises
    ------
    CompressedFormatError
        On a depth outside ``[N_p, N_f]``, a missing or corrupt file.
    """
    config = _read_config(folder, CompressedFormatError)
    info = config.get(FOLD_KEY)
    if not info:
        raise CompressedFormatError(
            f"{folder}/config.json has no {FOLD_KEY}: not a folded model"
        )
    depth = info["max_depth"] if depth is None else int(depth)
    if not info["physical"] <= depth <= info["max_depth"]:
        raise CompressedFormatError(
            f"{folder}: depth {depth}: this model unfolds to "
            f"{info['physical']}..{info['max_depth']} layers (depth=N with "
            f"{info['physical']} <= N <= {info['max_depth']})"
        )
    if SPEECHBRAIN_KEY in config:
        model = build_conformer(config[SPEECHBRAIN_KEY], info["physical"])
    else:
        model = _build_transformers(folder, config, info)
    _load_state(model, os.path.join(folder, WEIGHTS))
    fold_encoder(
        model,
        info["physical"],
        info["max_depth"],
        info["mode"],
        list(range(info["physical"])),
    )
    record = LayerStack(model).info
    record["seeds"] = info["seeds"]
    record["original_depth"] = info["original_depth"]
    set_depth(model, depth)
    if "dtype" in options:
        model.to(options["dtype"])
    return model.eval()


__all__ = [
    "export_folded_plan",
    "folded_report",
    "is_folded",
    "load_folded",
    "save_folded",
]

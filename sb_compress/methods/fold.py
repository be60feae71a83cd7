"""Foldable encoders: a few physical blocks unfolded to many logical layers.

METHODS.md section 6. A seed of ``N_p`` physical transformer blocks
(chosen pretrained layers) is unfolded to logical depth ``d`` by an unfold
map; the logical layers share the physical blocks' modules, so only
``N_p`` blocks exist in memory and on disk, and the depth is chosen at
load time anywhere in ``[N_p, N_f]``.

Unfold maps (0-based physical indices, ``N_p = 3``, ``d = 7``):

- ``cyclic`` (default): ``0 1 2 0 1 2 0`` (``i mod N_p``);
- ``repeat-each``: ``0 0 0 1 1 2 2`` (each block in turn, the first ones
  taking the extra repeats);
- ``repeat-top``: ``0 1 2 2 2 2 2`` (every block once, the last one
  repeated).

:func:`fold_encoder` folds the encoder of a wav2vec2 / HuBERT / WavLM or
Whisper model in place, :func:`set_depth` changes its logical depth, and
:func:`save_folded` / ``load_compressed(DIR, depth=d)`` (format
``folded``) store each physical block once and rebuild any depth.

Not here yet (issue 6): the joint multi-depth training with KL
self-distillation inside ``CompressionBrain``, SpeechBrain's Conformer,
the recipes and the benchmarks.

Authors
 * sb_compress team 2026
"""

import json
import os

import torch

UNFOLD_MAPS = ("cyclic", "repeat-each", "repeat-top")
#: Config key recording the fold (physical seeds, map, depths).
FOLD_KEY = "sb_compress_fold"


class FoldError(ValueError):
    """Bad fold settings or an out-of-range depth."""


def unfold_order(physical, depth, mode="cyclic"):
    """The physical block of every logical layer.

    Arguments
    ---------
    physical : int
        Number of physical blocks ``N_p`` (>= 1).
    depth : int
        Logical depth ``d`` (>= ``N_p``).
    mode : str
        ``cyclic``, ``repeat-each`` or ``repeat-top``.

    Returns
    -------
    list of int

    Example
    -------
    >>> unfold_order(3, 7, "cyclic")
    [0, 1, 2, 0, 1, 2, 0]
    >>> unfold_order(3, 7, "repeat-each")
    [0, 0, 0, 1, 1, 2, 2]
    >>> unfold_order(3, 7, "repeat-top")
    [0, 1, 2, 2, 2, 2, 2]
    """
    if mode not in UNFOLD_MAPS:
        raise FoldError(
            f"unfold map {mode!r}: choose from {', '.join(UNFOLD_MAPS)}"
        )
    if physical < 1:
        raise FoldError(f"physical blocks = {physical}: must be >= 1")
    if depth < physical:
        raise FoldError(
            f"depth {depth} is below the {physical} physical blocks"
        )
    if mode == "cyclic":
        return [i % physical for i in range(depth)]
    if mode == "repeat-top":
        return list(range(physical)) + [physical - 1] * (depth - physical)
    base, extra = divmod(depth, physical)
    order = []
    for block in range(physical):
        order += [block] * (base + (1 if block < extra else 0))
    return order


def _base(model):
    return getattr(model, "model", model)


def _layers_owner(model):
    """``(module holding .layers, config attribute of the layer count)``."""
    base = _base(model)
    config = base.config
    if config.model_type == "whisper":
        return base.encoder, "encoder_layers"
    if config.model_type in ("wav2vec2", "hubert", "wavlm"):
        return base.encoder, "num_hidden_layers"
    raise FoldError(
        f"model_type {config.model_type!r}: folding supports wav2vec2, "
        "hubert, wavlm and whisper"
    )


def fold_info(model):
    """The fold of a folded model (``None`` when it is not folded)."""
    return getattr(_base(model).config, FOLD_KEY, None)


def fold_encoder(model, physical, max_depth=None, mode="cyclic", seeds=None):
    """Folds a model's encoder in place.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        wav2vec2 / HuBERT / WavLM or Whisper.
    physical : int
        Number of physical blocks ``N_p``.
    max_depth : int, optional
        Largest logical depth ``N_f`` (default: the original depth).
    mode : str
        Unfold map, see :func:`unfold_order`.
    seeds : list of int, optional
        The pretrained layers the physical blocks start from (default:
        evenly spaced, the first and last included). WavLM's first seed
        must be layer 0 (it holds the relative position bias).

    Returns
    -------
    torch.nn.Module
        ``model``, unfolded to ``max_depth``.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=16,
    ...     num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
    ...     conv_dim=(8,), conv_stride=(5,), conv_kernel=(10,),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2))
    >>> _ = fold_encoder(model, 2)
    >>> fold_info(model)["seeds"], len(model.encoder.layers)
    ([0, 3], 4)
    """
    owner, key = _layers_owner(model)
    if fold_info(model) is not None:
        raise FoldError("the model is already folded")
    original = len(owner.layers)
    max_depth = original if max_depth is None else max_depth
    if not 1 <= physical <= original:
        raise FoldError(
            f"physical = {physical}: must be in [1, {original}] (the "
            "encoder's layers)"
        )
    if max_depth < physical:
        raise FoldError(
            f"max_depth = {max_depth}: must be >= physical = {physical}"
        )
    if seeds is None:
        if physical == 1:
            seeds = [0]
        else:
            step = (original - 1) / (physical - 1)
            seeds = [round(i * step) for i in range(physical)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != physical or len(set(seeds)) != physical:
        raise FoldError(f"seeds = {seeds}: need {physical} distinct layers")
    if any(not 0 <= s < original for s in seeds):
        raise FoldError(f"seeds = {seeds}: layers are 0 to {original - 1}")
    config = _base(model).config
    if config.model_type == "wavlm" and seeds[0] != 0:
        raise FoldError(
            "WavLM: the first seed must be layer 0 (its relative position "
            "bias feeds every layer)"
        )
    blocks = torch.nn.ModuleList(owner.layers[s] for s in seeds)
    owner.sb_compress_blocks = blocks
    setattr(
        config,
        FOLD_KEY,
        {
            "physical": physical,
            "seeds": seeds,
            "mode": mode,
            "max_depth": max_depth,
            "original_depth": original,
            "key": key,
        },
    )
    set_depth(model, max_depth)
    return model


def set_depth(model, depth):
    """Unfolds a folded model to ``depth`` logical layers (shared blocks).

    Raises
    ------
    FoldError
        When ``depth`` is outside ``[N_p, N_f]``.
    """
    info = fold_info(model)
    if info is None:
        raise FoldError("the model is not folded (see fold_encoder)")
    if not info["physical"] <= depth <= info["max_depth"]:
        raise FoldError(
            f"depth {depth}: this model unfolds to "
            f"{info['physical']}..{info['max_depth']} layers"
        )
    owner, key = _layers_owner(model)
    blocks = owner.sb_compress_blocks
    order = unfold_order(info["physical"], depth, info["mode"])
    # The logical list holds references: parameters() lists each once.
    owner.layers = torch.nn.ModuleList(blocks[i] for i in order)
    setattr(_base(model).config, key, depth)
    info["depth"] = depth
    return model


def physical_state(model):
    """The state dict with each physical block once, under
    ``encoder.layers.<i>`` for physical block ``i``.

    Returns
    -------
    dict
    """
    owner, _ = _layers_owner(model)
    base = _base(model)
    prefix = "model." if base is not model else ""
    state = {}
    for key, value in model.state_dict().items():
        if ".sb_compress_blocks." in key:
            continue
        if key.startswith(f"{prefix}encoder.layers."):
            continue
        state[key] = value
    for index, block in enumerate(owner.sb_compress_blocks):
        for key, value in block.state_dict().items():
            state[f"{prefix}encoder.layers.{index}.{key}"] = value
    return state


def save_folded(model, folder, overwrite=False, report_extra=None):
    """Writes a folded model with each physical block stored once.

    The folder is a transformers folder of the ``N_p``-layer model (its
    config records the fold) plus ``compression_report.json`` with format
    ``folded`` and the physical and logical parameter counts.

    Returns
    -------
    dict
        The report.
    """
    from safetensors.torch import save_file

    from sb_compress.export.save import _move_into_place, check_output_dir
    from sb_compress.report import write_report

    info = dict(fold_info(model) or {})
    if not info:
        raise FoldError("the model is not folded (see fold_encoder)")
    check_output_dir(folder, overwrite)
    state = {
        k: v.detach().contiguous() for k, v in physical_state(model).items()
    }
    physical_params = sum(v.numel() for v in state.values())
    owner, _ = _layers_owner(model)
    per_block = sum(p.numel() for p in owner.sb_compress_blocks[0].parameters())
    logical_params = physical_params + per_block * (
        info["max_depth"] - info["physical"]
    )
    config = _base(model).config.to_dict()
    config[info["key"]] = info["physical"]
    config[FOLD_KEY] = {k: v for k, v in info.items() if k != "depth"}
    base = _base(model)
    if hasattr(base, "decoder") and base.decoder is None:
        config[FOLD_KEY]["drop_decoder"] = True
    config["architectures"] = [type(model).__name__]
    report = {
        "format": "folded",
        "method": "fold",
        "model_type": config.get("model_type"),
        "physical_blocks": info["physical"],
        "max_depth": info["max_depth"],
        "unfold_map": info["mode"],
        "seeds": info["seeds"],
        "params_physical": physical_params,
        "params_logical_max_depth": logical_params,
    }
    report.update(report_extra or {})
    parent = os.path.dirname(os.path.abspath(folder)) or "."
    import tempfile

    staging = tempfile.mkdtemp(prefix=".sb_compress_", dir=parent)
    try:
        save_file(state, os.path.join(staging, "model.safetensors"))
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        write_report(staging, report)
        _move_into_place(staging, folder)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _register():
    from sb_compress.export.save import (
        CompressedFormatError,
        _read_config,
        model_class_for,
        register_format,
    )

    @register_format("folded")
    def load_folded(folder, report, depth=None, **options):
        """Loads a folded folder at ``depth`` (default: its largest)."""
        import transformers
        from safetensors.torch import load_file

        config = _read_config(folder, CompressedFormatError)
        info = config.get(FOLD_KEY)
        if not info:
            raise CompressedFormatError(
                f"{folder}/config.json has no {FOLD_KEY}: not a folded model"
            )
        model_config = transformers.AutoConfig.from_pretrained(folder)
        setattr(model_config, FOLD_KEY, None)
        model_class = model_class_for(config)
        if model_class is transformers.AutoModel:
            model = model_class.from_config(model_config)
        else:
            model = model_class(model_config)
        if info.get("drop_decoder"):
            _base(model).decoder = None
        path = os.path.join(folder, "model.safetensors")
        if not os.path.isfile(path):
            raise CompressedFormatError(f"{path} is missing")
        state = load_file(path)
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            message = " ".join(str(error).split())[:500]
            raise CompressedFormatError(
                f"{path} does not fit {type(model).__name__}: {message}"
            ) from error
        expected = set(model.state_dict())
        missing = sorted(expected - set(state))
        tied = {"proj_out.weight"}
        missing = [k for k in missing if k not in tied]
        if missing:
            raise CompressedFormatError(
                f"{path}: tensor {missing[0]!r} missing"
            )
        fold_encoder(
            model,
            info["physical"],
            info["max_depth"],
            info["mode"],
            list(range(info["physical"])),
        )
        fold_info(model)["seeds"] = info["seeds"]
        depth = info["max_depth"] if depth is None else int(depth)
        try:
            set_depth(model, depth)
        except FoldError as error:
            raise CompressedFormatError(f"{folder}: {error}") from error
        if "dtype" in options:
            model.to(options["dtype"])
        return model.eval()

    return load_folded


load_folded = _register()

"""SpeechBrain's Conformer: where its layer stack lives, and how to rebuild
it from a description.

SpeechBrain models are built from hparams files, not from a saved config,
so an export that wants to rebuild one records its constructor arguments.
:func:`describe_conformer` reads them back from a live
``TransformerASR`` (``encoder_module: conformer``, no decoder: a CTC
model) or ``ConformerEncoder``, and :func:`build_conformer` constructs the
module again; exports check that the rebuilt module has the same state
keys and shapes before writing anything.

Authors
 * sb_compress team 2026
"""

import importlib

import torch

#: Module prefixes a description may name a class from (a downloaded
#: config never imports anything else).
ALLOWED_PREFIXES = ("speechbrain.", "torch.nn.")


class ConformerError(ValueError):
    """Not a SpeechBrain Conformer, or one this module cannot describe."""


def _classes():
    from speechbrain.lobes.models.transformer.Conformer import (
        ConformerEncoder,
    )
    from speechbrain.lobes.models.transformer.TransformerASR import (
        EncoderWrapper,
        TransformerASR,
    )

    return ConformerEncoder, TransformerASR, EncoderWrapper


def conformer_root(module):
    """The ``TransformerASR`` or ``ConformerEncoder`` inside wrappers.

    Arguments
    ---------
    module : torch.nn.Module
        A ``TransformerASR`` with a Conformer encoder, its
        ``EncoderWrapper``, a ``ConformerEncoder``, or any of them in
        ``DistributedDataParallel``.

    Returns
    -------
    torch.nn.Module or None
        ``None`` when the module is none of these.
    """
    encoder_class, asr_class, wrapper_class = _classes()
    for _ in range(3):
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(module, wrapper_class):
            module = module.transformer
    if isinstance(module, encoder_class):
        return module
    if isinstance(module, asr_class) and isinstance(
        getattr(module, "encoder", None), encoder_class
    ):
        return module
    return None


def conformer_encoder(root):
    """The ``ConformerEncoder`` of a root from :func:`conformer_root`."""
    encoder_class, _, _ = _classes()
    return root if isinstance(root, encoder_class) else root.encoder


def _path(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(path):
    if not path.startswith(ALLOWED_PREFIXES):
        raise ConformerError(
            f"class {path!r}: a description may only name classes from "
            + ", ".join(ALLOWED_PREFIXES)
        )
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConformerError(f"class {path!r} not found ({error})") from None


def _heads(attention):
    if hasattr(attention, "num_heads"):
        return int(attention.num_heads)
    if hasattr(attention, "att"):
        return int(attention.att.num_heads)
    raise ConformerError(
        f"cannot read the number of heads of {type(attention).__name__}"
    )


def _encoder_arguments(encoder):
    layer = encoder.layers[0]
    ffn = layer.ffn_module1[1].ffn
    conv = layer.convolution_module
    return {
        "d_model": int(ffn[0].in_features),
        "d_ffn": int(ffn[0].out_features),
        "nhead": _heads(layer.mha_layer),
        "kernel_size": int(conv.kernel_size),
        "bias": conv.conv.bias is not None,
        "dropout": float(layer.drop.p),
        "causal": bool(conv.causal),
        "attention_type": encoder.attention_type,
        "output_hidden_states": bool(encoder.output_hidden_states),
        "layerdrop_prob": float(encoder.layerdrop_prob),
    }, _path(type(ffn[1]))


def describe_conformer(root, num_layers=None):
    """The constructor arguments of a Conformer, as plain JSON data.

    Arguments
    ---------
    root : torch.nn.Module
        A ``TransformerASR`` (Conformer encoder, no decoder) or a
        ``ConformerEncoder`` (see :func:`conformer_root`).
    num_layers : int, optional
        Encoder layers to record (default: the module's own).

    Returns
    -------
    dict
        ``{"class": <dotted path>, "kwargs": {...}}``; activation classes
        are dotted paths.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder)
    >>> spec = describe_conformer(ConformerEncoder(2, 16, 32, 2))
    >>> spec["kwargs"]["num_layers"], spec["kwargs"]["d_ffn"]
    (2, 32)
    >>> build_conformer(spec).layers[1].mha_layer.num_heads
    2
    """
    encoder_class, _, _ = _classes()
    encoder = conformer_encoder(root)
    arguments, activation = _encoder_arguments(encoder)
    layers = len(encoder.layers) if num_layers is None else int(num_layers)
    if isinstance(root, encoder_class):
        kwargs = dict(arguments, num_layers=layers, activation=activation)
        return {"class": _path(type(root)), "kwargs": kwargs}
    if hasattr(root, "decoder"):
        raise ConformerError(
            "a TransformerASR with a decoder: only CTC models "
            "(num_decoder_layers: 0) can be described"
        )
    max_length = 2500
    for name in ("positional_encoding_decoder", "positional_encoding"):
        table = getattr(getattr(root, name, None), "pe", None)
        if table is not None:
            max_length = int(table.shape[-2])
            break
    kwargs = {
        "tgt_vocab": 1,  # no decoder: unused
        "input_size": int(root.custom_src_module.layers[0].w.in_features),
        "d_model": arguments["d_model"],
        "nhead": arguments["nhead"],
        "num_encoder_layers": layers,
        "num_decoder_layers": 0,
        "d_ffn": arguments["d_ffn"],
        "dropout": arguments["dropout"],
        "positional_encoding": root.positional_encoding_type,
        "normalize_before": True,  # a Conformer requires it
        "kernel_size": arguments["kernel_size"],
        "bias": arguments["bias"],
        "encoder_module": "conformer",
        "conformer_activation": activation,
        "attention_type": root.attention_type,
        "max_length": max_length,
        "causal": bool(root.causal),
        "output_hidden_states": arguments["output_hidden_states"],
        "layerdrop_prob": arguments["layerdrop_prob"],
    }
    return {"class": _path(type(root)), "kwargs": kwargs}


def build_conformer(spec, num_layers=None):
    """Builds the module a :func:`describe_conformer` spec describes.

    Arguments
    ---------
    spec : dict
        ``{"class": ..., "kwargs": ...}``.
    num_layers : int, optional
        Encoder layers to build instead of the recorded number.

    Returns
    -------
    torch.nn.Module
        Freshly initialised, in eval mode.
    """
    cls = _import(spec["class"])
    kwargs = dict(spec["kwargs"])
    for key in ("activation", "conformer_activation"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _import(kwargs[key])
    if num_layers is not None:
        key = "num_layers" if "num_layers" in kwargs else "num_encoder_layers"
        kwargs[key] = int(num_layers)
    return cls(**kwargs).eval()

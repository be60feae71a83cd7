"""Model adapters: where the layers, heads and FFNs of each family live.

``adapter_for(module)`` accepts a transformers model, a SpeechBrain
wrapper (``speechbrain.integrations.huggingface.Wav2Vec2``, ``Whisper``...)
or either of them wrapped in ``DistributedDataParallel``, and returns the
family's :class:`ModelAdapter`. ``select_linears`` turns ``targets`` /
``ignore`` lists (role names or ``re:`` regexes) into the layers to compress.

Authors
 * sb_compress team 2026
"""

import re

from .base import (
    ALL_ROLES,
    ATTENTION_ROLES,
    CROSS_ATTENTION_ROLES,
    FFN_ROLES,
    ROLE_GROUPS,
    LinearSpec,
    ModelAdapter,
)
from .families import Wav2Vec2Adapter, WhisperAdapter

__all__ = [
    "ALL_ROLES",
    "ATTENTION_ROLES",
    "CROSS_ATTENTION_ROLES",
    "FFN_ROLES",
    "ROLE_GROUPS",
    "LinearSpec",
    "ModelAdapter",
    "TargetError",
    "UnsupportedModelError",
    "Wav2Vec2Adapter",
    "WhisperAdapter",
    "adapter_for",
    "output_dim",
    "select_linears",
    "unwrap_model",
]

_FAMILIES = {
    "wav2vec2": Wav2Vec2Adapter,
    "hubert": Wav2Vec2Adapter,
    "wavlm": Wav2Vec2Adapter,
    "data2vec-audio": Wav2Vec2Adapter,
    "whisper": WhisperAdapter,
}


class UnsupportedModelError(ValueError):
    """The module is not a model family sb_compress knows."""


class TargetError(ValueError):
    """A ``targets`` / ``ignore`` entry is malformed or matches no layer."""


def unwrap_model(module):
    """Returns the transformers model inside wrappers.

    Arguments
    ---------
    module : torch.nn.Module
        A transformers model, a SpeechBrain HF wrapper (``.model``), or
        either wrapped in ``DistributedDataParallel`` (``.module``).

    Returns
    -------
    torch.nn.Module
        The transformers ``PreTrainedModel``.
    """
    seen = 0
    while seen < 4:
        if hasattr(module, "config") and hasattr(module, "base_model_prefix"):
            return module
        if hasattr(module, "module"):
            module = module.module
        elif hasattr(module, "model"):
            module = module.model
        else:
            break
        seen += 1
    raise UnsupportedModelError(
        f"{type(module).__name__} is not a transformers model nor a "
        "SpeechBrain wrapper around one; pass the wav2vec2/HuBERT/WavLM/"
        "Whisper module (e.g. hparams['wav2vec2'])"
    )


def adapter_for(module):
    """Returns the adapter of the module's model family.

    Arguments
    ---------
    module : torch.nn.Module
        See :func:`unwrap_model`.

    Returns
    -------
    ModelAdapter

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> adapter = adapter_for(HubertModel(config))
    >>> [s.role for s in adapter.linears()][:6]
    ['q', 'k', 'v', 'out', 'ffn_in', 'ffn_out']
    """
    model = unwrap_model(module)
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _FAMILIES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: "
            + ", ".join(sorted(_FAMILIES))
        )
    return _FAMILIES[model_type](model)


def _expand(entry, where):
    if not isinstance(entry, str) or not entry:
        raise TargetError(f"{where}: {entry!r} must be a role or 're:<regex>'")
    if entry.startswith("re:"):
        try:
            return ("regex", re.compile(entry[3:]))
        except re.error as error:
            raise TargetError(f"{where}: bad regex {entry!r} ({error})")
    if entry in ROLE_GROUPS:
        return ("roles", set(ROLE_GROUPS[entry]))
    if entry in ALL_ROLES:
        return ("roles", {entry})
    raise TargetError(
        f"{where}: {entry!r} is neither a role ("
        + ", ".join(list(ROLE_GROUPS) + list(ALL_ROLES))
        + ") nor a regex written 're:<regex>'"
    )


def _matches(spec, matcher):
    kind, value = matcher
    if kind == "roles":
        return spec.role in value
    return value.search(spec.name) is not None


def select_linears(specs, targets=None, ignore=None, where="targets"):
    """Selects the layers to compress.

    Arguments
    ---------
    specs : list of LinearSpec
        Candidates, from ``adapter.linears(scope)``.
    targets : list of str, optional
        Role names (``q``, ``ffn``, ``attention``...) or ``re:<regex>``
        searched in the layer names. ``None`` keeps every candidate.
    ignore : list of str, optional
        Same syntax; matching layers are removed.
    where : str
        Name of the setting, used in error messages.

    Returns
    -------
    list of LinearSpec

    Raises
    ------
    TargetError
        When an entry is malformed or a ``targets`` entry matches nothing.
    """
    if isinstance(targets, str):
        targets = [targets]
    if isinstance(ignore, str):
        ignore = [ignore]
    selected = list(specs)
    if targets:
        matchers = [
            (entry, _expand(entry, f"{where}[{i}]"))
            for i, entry in enumerate(targets)
        ]
        for i, (entry, matcher) in enumerate(matchers):
            if not any(_matches(s, matcher) for s in specs):
                raise TargetError(
                    f"{where}[{i}] = {entry!r} matches no layer; layer names "
                    f"look like {specs[0].name!r}"
                    if specs
                    else f"{where}[{i}] = {entry!r}: the model has no layer"
                )
        selected = [
            s for s in specs if any(_matches(s, m) for _, m in matchers)
        ]
    if ignore:
        ignorers = [
            _expand(entry, f"ignore[{i}]") for i, entry in enumerate(ignore)
        ]
        selected = [
            s for s in selected if not any(_matches(s, m) for m in ignorers)
        ]
    if not selected:
        raise TargetError(
            f"{where} and ignore leave no layer to compress; drop an ignore "
            "pattern or widen the targets"
        )
    return selected


def output_dim(module):
    """Width of the encoder's output features (``hidden_size`` or
    ``d_model``), for sizing a recipe's head from the loaded model.

    Arguments
    ---------
    module : torch.nn.Module
        See :func:`unwrap_model`.

    Returns
    -------
    int
    """
    config = unwrap_model(module).config
    for key in ("hidden_size", "d_model"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise UnsupportedModelError(
        f"cannot tell the output size of {type(config).__name__}"
    )

"""Physically shrunk transformer blocks: per-layer heads, head dims and FFN
widths.

A *structure* says what each encoder layer keeps::

    {"attention": None | {"heads": [h, ...],        # original head indices
                          "qk": [[j, ...], ...],    # kept q/k dims per head
                          "v": [[j, ...], ...],     # kept v dims per head
                          "bias": bool},            # out_proj bias kept
     "ffn": None | [u, ...]}                        # kept FFN units

``None`` removes the sub-block (its output is zero; a pre-LayerNorm
in front of it goes too). :func:`apply_structure` rebuilds the layers of a
transformers model (wav2vec2, HuBERT, WavLM, Whisper encoder) with these
sizes; :func:`slice_state` slices a dense state dict to them. The same
function builds the model when it is shrunk and when it is loaded back, so
the shapes agree by construction.

Authors
 * sb_compress team 2026
"""

import warnings

import torch
import torch.nn.functional as F

from .families import WhisperAdapter


def _linear(n_in, n_out, bias=True):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element")
        return torch.nn.Linear(n_in, n_out, bias=bias)


class ShrunkAttention(torch.nn.Module):
    """Self-attention with any subset of heads, each with its own q/k and v
    widths, in place of a transformers attention module.

    Arguments
    ---------
    embed_dim : int
        Model width.
    heads : list of int
        Original indices of the kept heads.
    qk_dims : list of int
        Number of q/k dims of each kept head.
    v_dims : list of int
        Number of v dims of each kept head.
    scaling : float
        Score scale of the original model (``head_dim ** -0.5``).
    kind : str
        ``wav2vec2`` (also HuBERT), ``wavlm`` or ``whisper``: the call
        signature and return value of the module replaced.
    out_bias : bool
        Whether the block keeps ``out_proj.bias`` (False: the block is
        removed and returns zeros).
    k_bias : bool
        Whether ``k_proj`` has a bias (Whisper's has none).
    dropout : float
        Attention dropout in training.
    wavlm : dict, optional
        ``num_heads`` and ``head_dim`` of the original WavLM layer,
        ``num_buckets``, ``max_distance``, ``relative_bias`` (layer 0
        computes the position bias) and ``gated`` (the block is alive and
        keeps its GRU gate).

    Example
    -------
    >>> attn = ShrunkAttention(8, heads=[0, 3], qk_dims=[2, 1],
    ...     v_dims=[2, 2], scaling=0.5)
    >>> attn(torch.randn(2, 5, 8))[0].shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        embed_dim,
        heads,
        qk_dims,
        v_dims,
        scaling,
        kind="wav2vec2",
        out_bias=True,
        k_bias=True,
        dropout=0.0,
        wavlm=None,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.heads = [int(h) for h in heads]
        self.qk_dims = [int(d) for d in qk_dims]
        self.v_dims = [int(d) for d in v_dims]
        self.num_heads = len(self.heads)
        self.scaling = float(scaling)
        self.kind = kind
        self.dropout = dropout
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        self.q_proj = _linear(embed_dim, n_qk)
        self.k_proj = _linear(embed_dim, n_qk, bias=k_bias)
        self.v_proj = _linear(embed_dim, n_v)
        self.out_proj = _linear(n_v, embed_dim, bias=out_bias)
        self.wavlm = dict(wavlm) if wavlm else None
        if self.wavlm is not None:
            if self.wavlm.get("relative_bias"):
                self.rel_attn_embed = torch.nn.Embedding(
                    self.wavlm["num_buckets"], self.wavlm["num_heads"]
                )
            if self.wavlm.get("gated", True):
                self.gru_rel_pos_const = torch.nn.Parameter(
                    torch.ones(1, self.num_heads, 1, 1)
                )
                self.gru_rel_pos_linear = _linear(self.wavlm["head_dim"], 8)
        self._groups = self._head_groups()

    def _head_groups(self):
        """Groups heads of equal (q/k, v) widths: one batched attention per
        group. Returns tuples (positions, qk index, v index, dqk, dv)."""
        qk_start, v_start = [0], [0]
        for dqk, dv in zip(self.qk_dims, self.v_dims):
            qk_start.append(qk_start[-1] + dqk)
            v_start.append(v_start[-1] + dv)
        signatures = {}
        for i, sig in enumerate(zip(self.qk_dims, self.v_dims)):
            signatures.setdefault(sig, []).append(i)
        groups = []
        for (dqk, dv), positions in signatures.items():
            qk_index = [
                j
                for i in positions
                for j in range(qk_start[i], qk_start[i + 1])
            ]
            v_index = [
                j for i in positions for j in range(v_start[i], v_start[i + 1])
            ]
            groups.append(
                (
                    torch.tensor(positions),
                    torch.tensor(qk_index, dtype=torch.long),
                    torch.tensor(v_index, dtype=torch.long),
                    dqk,
                    dv,
                )
            )
        return groups

    def compute_bias(self, length):
        """WavLM's relative position bias ``(num_heads, T, T)`` (layer 0)."""
        from transformers.models.wavlm.modeling_wavlm import WavLMAttention

        device = self.rel_attn_embed.weight.device
        position = torch.arange(length, dtype=torch.long, device=device)
        relative = position[None, :] - position[:, None]
        buckets = WavLMAttention._relative_positions_bucket(self, relative)
        return self.rel_attn_embed(buckets).permute([2, 0, 1])

    @property
    def num_buckets(self):
        """WavLM's number of buckets (read by its bucket function)."""
        return self.wavlm["num_buckets"]

    @property
    def max_distance(self):
        """WavLM's maximum bucket distance."""
        return self.wavlm["max_distance"]

    def _wavlm_bias(self, hidden_states, position_bias, attention_mask):
        batch, length, _ = hidden_states.shape
        total = self.wavlm["num_heads"]
        chunks = hidden_states.view(batch, length, total, -1)
        chunks = chunks[:, :, self.heads].permute(0, 2, 1, 3)
        proj = self.gru_rel_pos_linear(chunks)
        proj = proj.view(chunks.shape[:-1] + (2, 4)).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        bias = position_bias.view(batch, total, length, length)[:, self.heads]
        bias = gate * bias
        if attention_mask is not None:
            padded = ~attention_mask.bool()[:, None, None, :]
            bias = bias.masked_fill(padded, float("-inf"))
        return bias

    def _attend(self, query, key, value, mask):
        batch, length, _ = query.shape
        dropout = self.dropout if self.training else 0.0
        outputs = []
        for positions, qk_index, v_index, dqk, dv in self._groups:
            n = len(positions)
            if len(self._groups) == 1:
                q, k, v = query, key, value
                group_mask = mask
            else:
                q = query.index_select(-1, qk_index.to(query.device))
                k = key.index_select(-1, qk_index.to(query.device))
                v = value.index_select(-1, v_index.to(query.device))
                group_mask = mask
                if mask is not None and mask.dim() == 4 and mask.shape[1] > 1:
                    group_mask = mask[:, positions.to(mask.device)]
            v = v.view(batch, length, n, dv).transpose(1, 2)
            if dqk == 0:
                scores = query.new_zeros(batch, n, length, length)
                if group_mask is not None:
                    if group_mask.dtype == torch.bool:
                        scores = scores.masked_fill(~group_mask, float("-inf"))
                    else:
                        scores = scores + group_mask
                weights = F.dropout(scores.softmax(-1), dropout, self.training)
                out = weights @ v
            else:
                q = q.view(batch, length, n, dqk).transpose(1, 2)
                k = k.view(batch, length, n, dqk).transpose(1, 2)
                out = F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=group_mask,
                    dropout_p=dropout,
                    scale=self.scaling,
                )
            outputs.append(
                (out.transpose(1, 2).reshape(batch, length, -1), v_index)
            )
        if len(outputs) == 1:
            return outputs[0][0]
        result = query.new_empty(batch, length, sum(self.v_dims))
        for out, v_index in outputs:
            result.index_copy_(-1, v_index.to(out.device), out)
        return result

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        position_bias=None,
        output_attentions=False,
        **kwargs,
    ):
        """Attention over the kept heads.

        Arguments
        ---------
        hidden_states : torch.Tensor
            ``(batch, time, embed_dim)``.
        attention_mask : torch.Tensor, optional
            As the replaced module receives it: a 4-D boolean or additive
            mask (wav2vec2, HuBERT, Whisper) or a ``(batch, time)`` padding
            mask (WavLM).
        position_bias : torch.Tensor, optional
            WavLM's position bias from layer 0.
        output_attentions : bool
            Ignored (no attention weights are returned).
        **kwargs
            Ignored.

        Returns
        -------
        tuple
            ``(output, None)``; for WavLM ``(output, None, position_bias)``.
        """
        del output_attentions, kwargs
        batch, length, _ = hidden_states.shape
        is_wavlm = self.wavlm is not None
        if is_wavlm and position_bias is None:
            bias = self.compute_bias(length)
            position_bias = bias.unsqueeze(0).repeat(batch, 1, 1, 1)
            position_bias = position_bias.view(-1, length, length)
        if self.num_heads == 0:
            out = hidden_states.new_zeros(batch, length, self.embed_dim)
            if self.out_proj.bias is not None:
                out = out + self.out_proj.bias
        else:
            if is_wavlm:
                mask = self._wavlm_bias(
                    hidden_states, position_bias, attention_mask
                )
            else:
                mask = attention_mask
            out = self._attend(
                self.q_proj(hidden_states),
                self.k_proj(hidden_states),
                self.v_proj(hidden_states),
                mask,
            )
            out = self.out_proj(out)
        if is_wavlm:
            return out, None, position_bias
        return out, None


def _family(model):
    model_type = model.config.model_type
    if model_type == "whisper":
        return "whisper"
    if model_type == "wavlm":
        return "wavlm"
    return "wav2vec2"


def encoder_layers(model):
    """The encoder's layer list of a transformers model (any head)."""
    if _family(model) == "whisper":
        return WhisperAdapter(model).layer_stacks()["encoder"]
    for attr in ("wav2vec2", "hubert", "wavlm"):
        if hasattr(model, attr):
            model = getattr(model, attr)
    return model.encoder.layers


def block_parts(model, layer):
    """Names of one encoder layer's parts: attention, FFN Linears and the
    pre-LayerNorms that go with each sub-block (``None`` when post-LN).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        Its config tells the family and the LayerNorm placement.
    layer : torch.nn.Module
        One encoder layer.

    Returns
    -------
    dict
        ``attention``, ``ffn_in``, ``ffn_out``, ``attention_norm``,
        ``ffn_norm`` (attribute paths relative to the layer).
    """
    if _family(model) == "whisper":
        return {
            "attention": "self_attn",
            "ffn_in": "fc1",
            "ffn_out": "fc2",
            "attention_norm": "self_attn_layer_norm",
            "ffn_norm": "final_layer_norm",
        }
    pre_ln = bool(getattr(model.config, "do_stable_layer_norm", False))
    return {
        "attention": "attention",
        "ffn_in": "feed_forward.intermediate_dense",
        "ffn_out": "feed_forward.output_dense",
        "attention_norm": "layer_norm" if pre_ln else None,
        "ffn_norm": "final_layer_norm" if pre_ln else None,
    }


def _get(module, path):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module, path, value):
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


def attention_geometry(model):
    """``(num_heads, head_dim, embed_dim)`` of the encoder attention."""
    config = model.config
    if _family(model) == "whisper":
        heads, width = config.encoder_attention_heads, config.d_model
    else:
        heads, width = config.num_attention_heads, config.hidden_size
    return heads, width // heads, width


def _shrunk_attention(model, index, old, spec):
    heads, head_dim, width = attention_geometry(model)
    family = _family(model)
    wavlm = None
    if family == "wavlm":
        wavlm = {
            "num_heads": heads,
            "head_dim": head_dim,
            "num_buckets": model.config.num_buckets,
            "max_distance": model.config.max_bucket_distance,
            "relative_bias": hasattr(old, "rel_attn_embed"),
            "gated": spec is not None,
        }
    if spec is None:
        kept, qk, v, bias = [], [], [], False
    else:
        kept = spec["heads"]
        qk = [len(d) for d in spec["qk"]]
        v = [len(d) for d in spec["v"]]
        bias = bool(spec.get("bias", True))
    dropout = getattr(old, "dropout", 0.0)
    return ShrunkAttention(
        width,
        kept,
        qk,
        v,
        head_dim**-0.5,
        kind=family,
        out_bias=bias,
        k_bias=family != "whisper",
        dropout=dropout if isinstance(dropout, float) else 0.0,
        wavlm=wavlm,
    )


def conv_layers(model):
    """The conv front-end layers of a wav2vec2 / HuBERT / WavLM model."""
    for attr in ("wav2vec2", "hubert", "wavlm"):
        if hasattr(model, attr):
            model = getattr(model, attr)
    return model.feature_extractor.conv_layers


def _conv_sizes(model, channels):
    """``(in, out)`` channels of every conv layer once ``channels`` (kept
    output channels of all layers but the last) are applied."""
    convs = conv_layers(model)
    sizes, kept_in = [], 1
    for i, layer in enumerate(convs):
        out = (
            len(channels[i]) if i < len(channels) else (layer.conv.out_channels)
        )
        sizes.append((kept_in, out))
        kept_in = out
    return sizes


def apply_conv_structure(model, channels):
    """Rebuilds the conv front-end with ``channels[i]`` kept output
    channels of conv layer ``i`` (all layers but the last).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        wav2vec2, HuBERT or WavLM with group-normalised conv layers.
    channels : list of list of int
        Kept channels per conv layer.
    """
    convs = conv_layers(model)
    for layer, (n_in, n_out) in zip(convs, _conv_sizes(model, channels)):
        old = layer.conv
        if (n_in, n_out) == (old.in_channels, old.out_channels):
            continue
        layer.conv = torch.nn.Conv1d(
            n_in,
            n_out,
            old.kernel_size[0],
            stride=old.stride[0],
            bias=old.bias is not None,
        )
        norm = getattr(layer, "layer_norm", None)
        if isinstance(norm, torch.nn.GroupNorm):
            layer.layer_norm = torch.nn.GroupNorm(n_out, n_out, affine=True)


def slice_conv_state(model, channels, state):
    """Slices the conv front-end tensors of a dense state dict in place.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The dense model.
    channels : list of list of int
        Kept channels per conv layer (all but the last).
    state : dict
        Dense state dict with plain keys.
    """
    convs = conv_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    for i, layer in enumerate(convs):
        prefix = names[id(layer)] + "."
        if i < len(channels):
            rows = torch.tensor(channels[i], dtype=torch.long)
            for key in (
                "conv.weight",
                "conv.bias",
                "layer_norm.weight",
                "layer_norm.bias",
            ):
                if prefix + key in state and (
                    key.startswith("conv")
                    or isinstance(
                        getattr(layer, "layer_norm", None), torch.nn.GroupNorm
                    )
                ):
                    state[prefix + key] = (
                        state[prefix + key].index_select(0, rows).clone()
                    )
        if i > 0 and i - 1 < len(channels):
            cols = torch.tensor(channels[i - 1], dtype=torch.long)
            key = prefix + "conv.weight"
            state[key] = state[key].index_select(1, cols).clone()


def apply_structure(model, structure):
    """Rebuilds the encoder layers of ``model`` in place with the sizes of
    ``structure`` (new, uninitialised modules where sizes change).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        wav2vec2, HuBERT, WavLM or Whisper.
    structure : dict
        ``{layer index (str or int): {"attention": ..., "ffn": ...}}``; see
        the module docstring. Layers not named are left as they are. The
        key ``"conv"`` lists the kept channels of the conv front-end's
        layers (all but the last).

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    layers = encoder_layers(model)
    for key, spec in structure.items():
        if key == "conv":
            apply_conv_structure(model, spec)
            continue
        index = int(key)
        layer = layers[index]
        parts = block_parts(model, layer)
        if "attention" in spec:
            old = _get(layer, parts["attention"])
            attention = spec["attention"]
            _set(
                layer,
                parts["attention"],
                _shrunk_attention(model, index, old, attention),
            )
            if attention is None and parts["attention_norm"]:
                _set(layer, parts["attention_norm"], torch.nn.Identity())
        if "ffn" in spec:
            units = spec["ffn"]
            width = _get(layer, parts["ffn_in"]).in_features
            n = 0 if units is None else len(units)
            _set(layer, parts["ffn_in"], _linear(width, n))
            _set(layer, parts["ffn_out"], _linear(n, width, units is not None))
            if units is None and parts["ffn_norm"]:
                _set(layer, parts["ffn_norm"], torch.nn.Identity())
    return model


def _rows(head_dim, heads, dims):
    return [h * head_dim + j for h, ds in zip(heads, dims) for j in ds]


def slice_layer_state(model, index, spec, state, prefix):
    """Slices the dense tensors of one encoder layer to ``spec``.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The dense model (for its geometry).
    index : int
        Layer index.
    spec : dict
        The layer's entry of the structure.
    state : dict
        Dense state dict (plain keys, no parametrizations); updated in
        place: tensors of removed parts are deleted, kept ones sliced.
    prefix : str
        Key prefix of the layer, e.g. ``encoder.layers.3.``.
    """
    heads, head_dim, _ = attention_geometry(model)
    layer = encoder_layers(model)[index]
    parts = block_parts(model, layer)
    if "attention" in spec:
        att = prefix + parts["attention"] + "."
        attention = spec["attention"]
        if attention is None:
            kept, qk, v = [], [], []
        else:
            kept, qk, v = attention["heads"], attention["qk"], attention["v"]
        qk_rows = torch.tensor(_rows(head_dim, kept, qk), dtype=torch.long)
        v_rows = torch.tensor(_rows(head_dim, kept, v), dtype=torch.long)
        for name, rows in (("q_proj", qk_rows), ("k_proj", qk_rows)):
            for kind in ("weight", "bias"):
                key = f"{att}{name}.{kind}"
                if key in state:
                    state[key] = state[key].index_select(0, rows).clone()
        for kind in ("weight", "bias"):
            key = f"{att}v_proj.{kind}"
            state[key] = state[key].index_select(0, v_rows).clone()
        key = f"{att}out_proj.weight"
        state[key] = state[key].index_select(1, v_rows).clone()
        if attention is None or not attention.get("bias", True):
            state.pop(f"{att}out_proj.bias", None)
        const = f"{att}gru_rel_pos_const"
        if const in state:
            kept_index = torch.tensor(kept, dtype=torch.long)
            state[const] = state[const].index_select(1, kept_index).clone()
            if attention is None:
                for key in (
                    const,
                    f"{att}gru_rel_pos_linear.weight",
                    f"{att}gru_rel_pos_linear.bias",
                ):
                    state.pop(key, None)
        if attention is None and parts["attention_norm"]:
            for kind in ("weight", "bias"):
                state.pop(f"{prefix}{parts['attention_norm']}.{kind}", None)
    if "ffn" in spec:
        units = spec["ffn"]
        rows = torch.tensor(units or [], dtype=torch.long)
        key_in, key_out = prefix + parts["ffn_in"], prefix + parts["ffn_out"]
        for kind in ("weight", "bias"):
            state[f"{key_in}.{kind}"] = (
                state[f"{key_in}.{kind}"].index_select(0, rows).clone()
            )
        state[f"{key_out}.weight"] = (
            state[f"{key_out}.weight"].index_select(1, rows).clone()
        )
        if units is None:
            state.pop(f"{key_out}.bias", None)
            if parts["ffn_norm"]:
                for kind in ("weight", "bias"):
                    state.pop(f"{prefix}{parts['ffn_norm']}.{kind}", None)


def layer_prefix(model, index):
    """State-dict key prefix of encoder layer ``index``."""
    layer = encoder_layers(model)[index]
    for name, module in model.named_modules():
        if module is layer:
            return name + "."
    raise KeyError(f"encoder layer {index} not found")


def slice_state(model, structure, state):
    """Slices a dense state dict of ``model`` to ``structure``.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The dense model the state belongs to.
    structure : dict
        See :func:`apply_structure`.
    state : dict
        Dense state dict with plain keys.

    Returns
    -------
    dict
        A new state dict matching ``apply_structure(model, structure)``.
    """
    state = dict(state)
    for key, spec in structure.items():
        if key == "conv":
            slice_conv_state(model, spec, state)
            continue
        index = int(key)
        slice_layer_state(model, index, spec, state, layer_prefix(model, index))
    return state

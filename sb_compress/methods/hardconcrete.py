"""Structured pruning with HardConcrete L0 gates and Lagrangian control.

Gates (Louizos et al.; DPHuBERT) sit on the units of each encoder layer:

* attention heads, and fine-grained attention dims: ``z_qk`` shared by a
  column of q and k (one q/k dim of one head), ``z_v`` shared by a column
  of v and a row of ``out_proj`` (a head dies when all its v dims die);
* FFN intermediate units;
* whole attention and FFN sub-blocks (a removed block outputs zero);
* optionally (``conv`` in ``structures``) the channels of the
  convolutional front-end, all layers but the last.

A gate with parameter ``log_alpha`` samples ``u ~ U(eps, 1 - eps)``,
``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``,
``z = clamp(s (r - l) + l, 0, 1)`` with ``beta = 2/3, l = -0.1, r = 1.1``;
the forward uses ``1[z > 0.5]`` and the backward passes through to ``z``
(straight-through). ``P(z != 0) = sigmoid(log_alpha - beta log(-l / r))``.
In eval the mask is deterministic: the top-k of
``sigmoid(0.8 log_alpha / beta)`` with ``k = round(sum P(z != 0))``.

The masks are parametrizations of the model's own weights (q and k rows,
``out_proj`` and FFN-output columns) plus forward hooks scaling a block's
output by its block gate: no module is wrapped (WavLM reads
``q_proj.weight`` directly). The gates' ``log_alpha`` live in the model's
``state_dict`` (and under DDP are averaged like any parameter).

The expected parameter count is exact: evaluated on the deterministic
masks it equals the parameter count of the shrunk model
(:mod:`sb_compress.export.shrink`), biases and pre-LayerNorms included.
With ``s = 1 - E[params] / params0`` over the gated blocks, the
regulariser is ``lambda1 (s - t) + lambda2 (s - t)**2`` with the
multipliers trained by gradient ascent and the target ``t`` ramped
linearly from 0 to ``sparsity`` over ``ramp_steps`` after
``warmup_steps``.

Authors
 * sb_compress team 2026
"""

import math

import torch

from sb_compress.models import adapter_for, unwrap_model
from sb_compress.models.shrunk import (
    _get,
    attention_geometry,
    block_parts,
    encoder_layers,
)

from .base import Modifier, check_sparsity, register

BETA = 2.0 / 3.0
LEFT = -0.1
RIGHT = 1.1
EPS = 1e-6

#: Units a HardConcrete modifier gates by default.
STRUCTURES = ("heads", "dims", "ffn", "layers")

#: Every unit it can gate: ``conv`` adds the output channels of the
#: convolutional front-end (wav2vec2 / HuBERT / WavLM with
#: ``feat_extract_norm="group"``; all conv layers but the last, whose
#: channels a LayerNorm normalises together).
ALL_STRUCTURES = STRUCTURES + ("conv",)


class _Clock:
    """Forward counter shared by the gates of one modifier: a gate draws a
    new sample on its first use in each forward."""

    def __init__(self):
        self.value = 0


class HardConcrete(torch.nn.Module):
    """A vector of HardConcrete gates.

    Arguments
    ---------
    n : int
        Number of gates.
    init_prob : float
        ``p0``: ``log_alpha ~ N(log((1 - p0) / p0), 0.01)``.
    clock : object, optional
        Shared counter with a ``value``; a new sample is drawn when it
        changes (default: every call).

    Example
    -------
    >>> gate = HardConcrete(4).eval()
    >>> gate()
    tensor([1., 1., 1., 1.])
    >>> bool(gate.l0().sum() > 3.9)
    True
    """

    def __init__(self, n, init_prob=0.01, clock=None):
        super().__init__()
        mean = math.log((1 - init_prob) / init_prob)
        self.n = int(n)
        self.log_alpha = torch.nn.Parameter(torch.empty(self.n))
        torch.nn.init.normal_(self.log_alpha, mean, 0.01)
        self.clock = clock
        self.hard = False
        self._cache = None
        self.last_l0 = None

    def l0(self):
        """Per-gate probability of being non-zero (differentiable)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-LEFT / RIGHT))

    def sample(self):
        """A straight-through sample: ``1[z > 0.5]`` forward, ``dz``
        backward."""
        u = torch.rand_like(self.log_alpha).clamp(EPS, 1 - EPS)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        z = (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)
        hard = (z > 0.5).to(z.dtype)
        return z + (hard - z).detach()

    @torch.no_grad()
    def deterministic(self):
        """Eval mask: top-k of ``sigmoid(0.8 log_alpha / beta)``, k the
        expected number of non-zero gates."""
        k = int(round(self.l0().sum().item()))
        mask = torch.zeros_like(self.log_alpha)
        if k > 0:
            score = torch.sigmoid(0.8 * self.log_alpha / BETA)
            mask[score.topk(k).indices] = 1.0
        return mask

    def forward(self):
        """The current mask: a sample in training, else deterministic.
        In training the expected L0 of this forward is kept in
        ``last_l0`` (with its graph) for the regulariser."""
        stochastic = self.training and not self.hard
        key = (
            stochastic,
            self.log_alpha._version,
            self.clock.value if stochastic and self.clock else None,
        )
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if stochastic:
            mask = self.sample()
            self.last_l0 = self.l0()
        else:
            mask = self.deterministic()
        if self.clock is not None or not stochastic:
            self._cache = (key, mask)
        return mask

    def forget(self):
        """Drops the cached mask and L0 (a new forward draws anew)."""
        self._cache = None
        self.last_l0 = None


class AttentionGates(torch.nn.Module):
    """Gates of one attention block: block, heads, q/k dims, v dims.

    Arguments
    ---------
    heads, head_dim : int
        Geometry of the block.
    structures : tuple of str
        Which of :data:`STRUCTURES` are gated.
    init_prob : float
        See :class:`HardConcrete`.
    clock : _Clock
        Shared forward counter.
    """

    def __init__(self, heads, head_dim, structures, init_prob, clock):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        width = heads * head_dim

        def gate(n, name):
            if name not in structures:
                return None
            return HardConcrete(n, init_prob, clock)

        self.block = gate(1, "layers")
        self.head = gate(heads, "heads")
        self.qk = gate(width, "dims")
        self.v = gate(width, "dims")

    def gates(self):
        """The gates that exist, by name."""
        names = ("block", "head", "qk", "v")
        return {n: getattr(self, n) for n in names if getattr(self, n)}

    def masks(self):
        """``(block (1,), head (H,), qk (H*d,), v (H*d,))`` current masks;
        absent gates give ones."""
        ones = self._ones
        block = self.block() if self.block is not None else ones(1)
        head = self.head() if self.head is not None else ones(self.heads)
        width = self.heads * self.head_dim
        qk = self.qk() if self.qk is not None else ones(width)
        v = self.v() if self.v is not None else ones(width)
        return block, head, qk, v

    def _ones(self, n):
        return torch.ones(n, device=self._device())

    def _device(self):
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")

    def column_mask(self, with_block=False):
        """Mask of ``out_proj``'s columns: head x v dim (x block)."""
        block, head, _, v = self.masks()
        mask = head.repeat_interleave(self.head_dim) * v
        return mask * block if with_block else mask


class FFNGates(torch.nn.Module):
    """Gates of one FFN block: block and intermediate units.

    Arguments
    ---------
    units : int
        Intermediate width.
    structures : tuple of str
        Which of :data:`STRUCTURES` are gated.
    init_prob : float
        See :class:`HardConcrete`.
    clock : _Clock
        Shared forward counter.
    """

    def __init__(self, units, structures, init_prob, clock):
        super().__init__()
        self.units = units
        self.block = (
            HardConcrete(1, init_prob, clock)
            if "layers" in structures
            else None
        )
        self.unit = (
            HardConcrete(units, init_prob, clock)
            if "ffn" in structures
            else None
        )

    def gates(self):
        """The gates that exist, by name."""
        names = ("block", "unit")
        return {n: getattr(self, n) for n in names if getattr(self, n)}

    def masks(self):
        """``(block (1,), unit (I,))`` current masks."""
        device = next(self.parameters()).device
        block = self.block() if self.block is not None else None
        unit = self.unit() if self.unit is not None else None
        if block is None:
            block = torch.ones(1, device=device)
        if unit is None:
            unit = torch.ones(self.units, device=device)
        return block, unit


class RowGate(torch.nn.Module):
    """Parametrization scaling output rows: q and k by the q/k dim gates,
    v by the v dim gates (:class:`AttentionGates`), the FFN's first Linear
    by the unit gates (:class:`FFNGates`). The gates are held by reference
    (they are registered once, on the block's :class:`ColumnGate`).

    Arguments
    ---------
    owner : AttentionGates or FFNGates
        The block's gates.
    which : str
        ``qk``, ``v`` or ``ffn``.
    """

    def __init__(self, owner, which):
        super().__init__()
        self._owner = [owner]
        self.which = which

    def _mask(self):
        masks = self._owner[0].masks()
        if self.which == "ffn":
            return masks[1]
        return masks[2] if self.which == "qk" else masks[3]

    def forward(self, weight):
        """Returns the row-gated weight."""
        return weight * self._mask().to(weight.dtype)[:, None]

    @torch.no_grad()
    def hard_mask(self, weight):
        """Keep-mask of the rows (deterministic gates; rows of removed
        heads and blocks included)."""
        owner = self._owner[0]
        masks = _deterministic(owner.masks, owner)
        if self.which == "ffn":
            keep = masks[1] * masks[0]
        else:
            block, head, qk, v = masks
            alive = _alive_heads(block, head, v, owner.head_dim)
            dims = qk if self.which == "qk" else v
            keep = dims * alive.repeat_interleave(owner.head_dim)
        return (keep > 0)[:, None].expand_as(weight).clone()


class ColumnGate(torch.nn.Module):
    """Parametrization scaling input columns: ``out_proj`` by head x v dim
    gates (:class:`AttentionGates`), FFN output by unit gates
    (:class:`FFNGates`). It owns the gates (they live in the model's
    ``state_dict``)."""

    def __init__(self, gates):
        super().__init__()
        self.gates = gates

    def _mask(self, with_block=False):
        if isinstance(self.gates, AttentionGates):
            return self.gates.column_mask(with_block)
        block, unit = self.gates.masks()
        return unit * block if with_block else unit

    def forward(self, weight):
        """Returns the column-gated weight."""
        return weight * self._mask().to(weight.dtype)[None, :]

    @torch.no_grad()
    def hard_mask(self, weight):
        """Keep-mask of the columns, block gate included."""
        mask = _deterministic(lambda: self._mask(True), self.gates)
        return (mask > 0)[None, :].expand_as(weight).clone()


class ChannelGate(torch.nn.Module):
    """Parametrization scaling the input channels of a convolution (the
    output channels of the conv layer before it) by their gates; it owns
    the gates.

    Arguments
    ---------
    gate : HardConcrete
        One gate per channel.
    """

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, weight):
        """Returns the channel-gated weight ``(out, in, kernel)``."""
        return weight * self.gate().to(weight.dtype)[None, :, None]

    @torch.no_grad()
    def hard_mask(self, weight):
        """Keep-mask of the input channels."""
        mask = self.gate.deterministic() > 0
        return mask[None, :, None].expand_as(weight).clone()


def conv_layers(model):
    """The conv front-end layers of a wav2vec2 / HuBERT / WavLM model."""
    return adapter_for(model).feature_extractor().conv_layers


def _deterministic(function, module):
    training = module.training
    module.eval()
    try:
        return function()
    finally:
        module.train(training)


def _alive_heads(block, head, v, head_dim):
    """Heads kept: block x head gate x (any v dim) — works on binary masks
    and, as ``1 - prod(1 - p)``, on probabilities."""
    v_any = 1.0 - (1.0 - v.view(-1, head_dim)).prod(-1)
    return block * head * v_any


def _block_output_hook(gates):
    def hook(module, args, output):
        block = gates.block()
        if isinstance(output, tuple):
            return (output[0] * block.to(output[0].dtype),) + output[1:]
        return output * block.to(output.dtype)

    return hook


class _ConvGates:
    """The channel gates of the conv front-end (held by the model's
    parametrizations; this only groups them)."""

    def __init__(self, gates):
        self.list = list(gates)

    def gates(self):
        """The gates by conv layer index."""
        return {str(i): g for i, g in enumerate(self.list)}


class HardConcretePruning(Modifier):
    """HardConcrete L0 gates on heads, attention dims, FFN units and whole
    blocks, with Lagrangian control of the expected sparsity.

    Arguments
    ---------
    sparsity : float
        Target fraction of the gated blocks' parameters to remove, [0, 1).
    targets, ignore : list of str, optional
        Roles or ``re:`` regexes (default: attention and FFN of every
        encoder layer). A block is gated when all its Linears are targeted.
    scope : str
        Only ``encoder``.
    start_step, end_step
        See :class:`~sb_compress.methods.base.Modifier`; after ``end_step``
        the gates are frozen and deterministic.
    structures : list of str
        Gated units, among ``heads``, ``dims``, ``ffn``, ``layers``.
    warmup_steps : int or float
        Steps after ``start_step`` with a target of 0.
    ramp_steps : int or float
        Steps over which the target grows linearly to ``sparsity``.
    lr : float
        Learning rate of ``log_alpha`` (Adam, no weight decay).
    multiplier_lr : float
        Learning rate of the multipliers (Adam, gradient ascent).
    init_prob : float
        ``p0`` of the ``log_alpha`` initialisation.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> model = HubertModel(config)
    >>> pruner = HardConcretePruning(sparsity=0.5, ramp_steps=10)
    >>> pruner.bind(model, "compression.modifiers[0]"); pruner.prepare()
    >>> round(pruner.expected_sparsity().item(), 1), pruner.target_sparsity(5)
    (0.0, 0.25)
    """

    method = "hardconcrete"
    schedule_keys = ("start_step", "end_step", "warmup_steps", "ramp_steps")

    def __init__(
        self,
        sparsity,
        targets=("attention", "ffn"),
        ignore=None,
        scope="encoder",
        start_step=0,
        end_step=None,
        structures=STRUCTURES,
        warmup_steps=0,
        ramp_steps=0,
        lr=0.02,
        multiplier_lr=0.02,
        init_prob=0.01,
    ):
        super().__init__(
            list(targets) if targets else None,
            ignore,
            scope,
            start_step,
            end_step,
        )
        self.sparsity = sparsity
        self.structures = tuple(structures)
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps
        self.lr = lr
        self.multiplier_lr = multiplier_lr
        self.init_prob = init_prob
        self.multipliers = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("last_sparsity", torch.zeros(()))
        self.blocks = []
        self._model_ref = []
        self._clock = _Clock()
        self._handles = []

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            sparsity=self.sparsity,
            structures=list(self.structures),
            warmup_steps=self.warmup_steps,
            ramp_steps=self.ramp_steps,
            lr=self.lr,
            multiplier_lr=self.multiplier_lr,
            init_prob=self.init_prob,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        if self.scope != "encoder":
            raise ValueError(
                f"{where}.scope = {self.scope!r}: hardconcrete prunes the "
                "encoder only; use scope: encoder"
            )
        check_sparsity(self.sparsity, f"{where}.sparsity")
        unknown = [s for s in self.structures if s not in ALL_STRUCTURES]
        if unknown or not self.structures:
            raise ValueError(
                f"{where}.structures = {list(self.structures)}: choose among "
                + ", ".join(ALL_STRUCTURES)
            )
        for key in ("lr", "multiplier_lr"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"{where}.{key} = {value!r}: must be a positive number"
                )
        if not 0.0 < self.init_prob < 1.0:
            raise ValueError(
                f"{where}.init_prob = {self.init_prob!r}: must be in (0, 1)"
            )

    def bind(self, model, where):
        """Selects the targeted layers and groups them into blocks."""
        super().bind(model, where)
        self._model_ref = [unwrap_model(model)]
        adapter_for(model)
        roles = {}
        for spec in self.layers:
            roles.setdefault(spec.layer, {})[spec.role] = spec
        self.blocks = []
        for index in sorted(roles):
            have = roles[index]
            attention = all(r in have for r in ("q", "k", "v", "out"))
            ffn = all(r in have for r in ("ffn_in", "ffn_out"))
            partial = [
                r
                for r in have
                if (r in ("q", "k", "v", "out") and not attention)
                or (r in ("ffn_in", "ffn_out") and not ffn)
            ]
            if partial:
                raise ValueError(
                    f"{where}.targets: layer {index} has "
                    f"{', '.join(sorted(partial))} targeted without the rest "
                    "of its block; hardconcrete gates whole attention (q, k, "
                    "v, out) and FFN (ffn_in, ffn_out) blocks"
                )
            if attention:
                self.blocks.append(("attention", index))
            if ffn:
                self.blocks.append(("ffn", index))
        if "conv" in self.structures:
            self._check_conv(where)

    def _check_conv(self, where):
        model = self.model
        if model.config.model_type == "whisper":
            raise ValueError(
                f"{where}.structures: 'conv' prunes the wav2vec2 / HuBERT / "
                "WavLM front-end; Whisper's has no channel gates"
            )
        if getattr(model.config, "feat_extract_norm", "group") != "group":
            raise ValueError(
                f"{where}.structures: 'conv' needs feat_extract_norm="
                "'group' (per-channel norms); this model normalises conv "
                "channels together (layer), so drop 'conv'"
            )
        self.blocks.append(("conv", None))

    @property
    def model(self):
        """The bound transformers model."""
        return self._model_ref[0]

    def prepare(self):
        """Registers the gates as parametrizations and block hooks."""
        model = self.model
        layers = encoder_layers(model)
        heads, head_dim, _ = attention_geometry(model)
        structures = self.structures
        device = next(model.parameters()).device
        self.block_gates = {}
        for kind, index in self.blocks:
            if kind == "conv":
                self._prepare_conv(device)
                continue
            layer = layers[index]
            parts = block_parts(model, layer)
            if kind == "attention":
                gates = AttentionGates(
                    heads, head_dim, structures, self.init_prob, self._clock
                ).to(device)
            else:
                units = _get(layer, parts["ffn_in"]).out_features
                gates = FFNGates(
                    units, structures, self.init_prob, self._clock
                ).to(device)
            if not gates.gates():
                continue
            if kind == "attention":
                attention = _get(layer, parts["attention"])
                register(attention.out_proj, ColumnGate(gates))
                if gates.qk is not None:
                    register(attention.q_proj, RowGate(gates, "qk"))
                    register(attention.k_proj, RowGate(gates, "qk"))
                register(attention.v_proj, RowGate(gates, "v"))
                hooked = attention
            else:
                output = _get(layer, parts["ffn_out"])
                register(output, ColumnGate(gates))
                register(_get(layer, parts["ffn_in"]), RowGate(gates, "ffn"))
                hooked = output
            if gates.block is not None:
                self._handles.append(
                    hooked.register_forward_hook(_block_output_hook(gates))
                )
            self.block_gates[(kind, index)] = gates
        layers_owner = next(
            m for m in model.modules() if getattr(m, "layers", None) is layers
        )
        self._handles.append(layers_owner.register_forward_pre_hook(self._tick))

    def _prepare_conv(self, device):
        convs = conv_layers(self.model)
        gates = torch.nn.ModuleList()
        for i in range(len(convs) - 1):
            gate = HardConcrete(
                convs[i].conv.out_channels, self.init_prob, self._clock
            ).to(device)
            register(convs[i + 1].conv, ChannelGate(gate))
            gates.append(gate)
        self.block_gates[("conv", None)] = _ConvGates(gates)
        owner = adapter_for(self.model).feature_extractor()
        self._handles.append(owner.register_forward_pre_hook(self._tick))

    def _tick(self, module, args):
        self._clock.value += 1

    def all_gates(self):
        """Every :class:`HardConcrete` of the modifier."""
        return [
            g
            for gates in self.block_gates.values()
            for g in gates.gates().values()
        ]

    def optimizer_groups(self):
        """The ``log_alpha`` of every gate, no weight decay."""
        return [
            {
                "params": [g.log_alpha for g in self.all_gates()],
                "lr": self.lr,
                "weight_decay": 0.0,
            }
        ]

    def multiplier_groups(self):
        """The two Lagrange multipliers (gradient ascent)."""
        return [
            {
                "params": [self.multipliers],
                "lr": self.multiplier_lr,
                "weight_decay": 0.0,
            }
        ]

    def target_sparsity(self, step):
        """Target sparsity at optimizer step ``step`` (linear ramp)."""
        begin = self.start_step + self.warmup_steps
        if step < begin:
            return 0.0
        if self.ramp_steps == 0:
            return float(self.sparsity)
        progress = min(1.0, (step - begin) / self.ramp_steps)
        return float(self.sparsity) * progress

    def _sizes(self):
        model = self.model
        heads, head_dim, width = attention_geometry(model)
        family = model.config.model_type
        return heads, head_dim, width, family

    def block_params(self, kind, index, probs):
        """Parameters of one gated block given its gates' keep values.

        Arguments
        ---------
        kind : str
            ``attention`` or ``ffn``.
        index : int
            Layer index.
        probs : tuple of torch.Tensor
            Keep probabilities (or binary masks) in the order of
            :meth:`AttentionGates.masks` / :meth:`FFNGates.masks`.

        Returns
        -------
        torch.Tensor
            The (expected) number of parameters of the block.
        """
        if kind == "conv":
            return self._conv_params(probs)
        heads, head_dim, width, family = self._sizes()
        layer = encoder_layers(self.model)[index]
        parts = block_parts(self.model, layer)
        norm_key = "attention_norm" if kind == "attention" else "ffn_norm"
        pre_norm = 2 * width if parts[norm_key] else 0
        if kind == "ffn":
            block, unit = probs
            return block[0] * (unit.sum() * (2 * width + 1) + width + pre_norm)
        block, head, qk, v = probs
        alive = _alive_heads(block, head, v, head_dim)
        k_bias = 0 if family == "whisper" else 1
        qk_per_head = qk.view(heads, head_dim).sum(-1)
        v_per_head = v.view(heads, head_dim).sum(-1)
        count = (alive * qk_per_head).sum() * (2 * width + 1 + k_bias)
        count = count + (alive * v_per_head).sum() * (2 * width + 1)
        constant = width + pre_norm
        if family == "wavlm":
            constant += head_dim * 8 + 8
            count = count + alive.sum()
        return count + block[0] * constant

    def _conv_params(self, probs):
        convs = conv_layers(self.model)
        total = 0.0
        kept_in = 1.0
        for i, layer in enumerate(convs):
            conv = layer.conv
            kept_out = probs[i].sum() if i < len(probs) else conv.out_channels
            kernel = conv.kernel_size[0]
            total = total + kept_out * kept_in * kernel
            if conv.bias is not None:
                total = total + kept_out
            norm = getattr(layer, "layer_norm", None)
            if norm is not None and norm.weight is not None:
                total = total + 2 * kept_out
            kept_in = kept_out
        return total

    def _probs(self, gates, deterministic):
        def value(gate, n):
            device = self.multipliers.device
            if gate is None:
                return torch.ones(n, device=device)
            if deterministic:
                return gate.deterministic()
            cached = gate.last_l0
            if cached is not None and cached.requires_grad:
                return cached
            with torch.no_grad():
                return gate.l0()

        if isinstance(gates, _ConvGates):
            return tuple(value(g, g.n) for g in gates.list)
        if isinstance(gates, AttentionGates):
            width = gates.heads * gates.head_dim
            return (
                value(gates.block, 1),
                value(gates.head, gates.heads),
                value(gates.qk, width),
                value(gates.v, width),
            )
        return value(gates.block, 1), value(gates.unit, gates.units)

    def expected_params(self, deterministic=False):
        """Expected parameters of the gated blocks. A gate that this step's
        forward did not use (a layer LayerDrop skipped) counts with its
        current probabilities but passes no gradient (under DDP a gate may
        only get gradients through the wrapped forward).

        Arguments
        ---------
        deterministic : bool
            Count with the eval masks: the exact size of the shrunk blocks.

        Returns
        -------
        torch.Tensor
        """
        total = 0.0
        for (kind, index), gates in self.block_gates.items():
            probs = self._probs(gates, deterministic)
            total = total + self.block_params(kind, index, probs)
        return total

    def dense_params(self):
        """Parameters of the gated blocks with every gate open."""
        total = 0.0
        for (kind, index), gates in self.block_gates.items():
            ones = tuple(torch.ones_like(p) for p in self._probs(gates, True))
            total = total + self.block_params(kind, index, ones)
        return int(round(float(total)))

    def expected_sparsity(self):
        """``1 - E[params] / params0`` over the gated blocks."""
        return 1.0 - self.expected_params() / self.dense_params()

    def _frozen(self, step):
        return self.end_step is not None and step >= self.end_step

    def loss(self):
        """``lambda1 (s - t) + lambda2 (s - t)**2`` of this step."""
        step = int(self.step)
        if step < self.start_step or self._frozen(step):
            return None
        sparsity = self.expected_sparsity()
        gap = sparsity - self.target_sparsity(step)
        self.last_sparsity.fill_(float(sparsity.detach()))
        for gate in self.all_gates():
            gate.last_l0 = None
        lambda1, lambda2 = self.multipliers
        return lambda1 * gap + lambda2 * gap * gap

    def on_step(self, step):
        """Advances the step; freezes the gates after ``end_step``."""
        super().on_step(step)
        frozen = self._frozen(step)
        for gate in self.all_gates():
            gate.last_l0 = None
            gate.log_alpha.requires_grad_(not frozen)
            gate.hard = frozen
            gate.forget()

    def harden(self):
        """Deterministic masks from now on (also in training mode); the
        output bias of a removed block is zeroed, so a dense export of the
        masked weights computes what the gated model does."""
        for gate in self.all_gates():
            gate.hard = True
            gate.forget()
        layers = encoder_layers(self.model)
        with torch.no_grad():
            for (kind, index), gates in self.block_gates.items():
                if kind == "conv" or gates.block is None:
                    continue
                if gates.block.deterministic()[0] > 0:
                    continue
                parts = block_parts(self.model, layers[index])
                if kind == "attention":
                    linear = _get(layers[index], parts["attention"]).out_proj
                else:
                    linear = _get(layers[index], parts["ffn_out"])
                if linear.bias is not None:
                    linear.bias.zero_()

    @torch.no_grad()
    def structure(self):
        """The deterministic structure, as :mod:`sb_compress.models.shrunk`
        describes it: ``{layer: {"attention": ..., "ffn": ...}}``."""
        out = {}
        for (kind, index), gates in self.block_gates.items():
            if kind == "conv":
                out["conv"] = [
                    g.deterministic().nonzero().flatten().tolist()
                    for g in gates.list
                ]
                continue
            masks = _deterministic(gates.masks, gates)
            entry = out.setdefault(str(index), {})
            if kind == "ffn":
                block, unit = masks
                alive = bool(block[0] > 0)
                entry["ffn"] = (
                    unit.nonzero().flatten().tolist() if alive else None
                )
                continue
            block, head, qk, v = masks
            if not bool(block[0] > 0):
                entry["attention"] = None
                continue
            d = gates.head_dim
            alive = _alive_heads(block, head, v, d)
            kept = alive.nonzero().flatten().tolist()
            entry["attention"] = {
                "heads": kept,
                "qk": [
                    qk[h * d : (h + 1) * d].nonzero().flatten().tolist()
                    for h in kept
                ],
                "v": [
                    v[h * d : (h + 1) * d].nonzero().flatten().tolist()
                    for h in kept
                ],
                "bias": True,
            }
        return out

    def layer_records(self):
        """Per-layer records with the kept heads, dims and FFN widths."""
        records = super().layer_records()
        structure = self.structure()
        for record in records:
            entry = structure.get(str(record["layer"]), {})
            if (
                record["role"] in ("q", "k", "v", "out")
                and "attention" in entry
            ):
                attention = entry["attention"]
                record["heads"] = len(attention["heads"]) if attention else 0
            if record["role"] in ("ffn_in", "ffn_out") and "ffn" in entry:
                units = entry["ffn"]
                record["ffn_width"] = len(units) if units is not None else 0
        return records

"""Foldable encoders: a few physical blocks unfolded to many logical layers.

METHODS.md section 6. A seed of ``N_p`` physical blocks (chosen
pretrained layers) is unfolded to logical depth ``d`` by an unfold map;
the logical layers are the physical blocks' own modules, so only ``N_p``
blocks exist in memory and on disk, and the depth is chosen at load time
anywhere in ``[N_p, N_f]``.

Unfold maps (0-based physical index of each logical layer, ``N_p = 3``,
``d = 7``):

- ``cyclic`` (default): ``0 1 2 0 1 2 0`` (layer ``i`` is block
  ``i mod N_p``);
- ``repeat-each``: ``0 0 0 1 1 2 2`` (each block in turn, repeated
  ``d // N_p`` times, the first ``d mod N_p`` blocks once more);
- ``repeat-top``: ``0 1 2 2 2 2 2`` (every block once, then the last one
  repeated).

Every map starts with block 0 and uses every block at every depth.

Folding works on the encoders of wav2vec2 / HuBERT / WavLM and Whisper
(transformers models, or SpeechBrain's wrappers around them) and on
SpeechBrain's Conformer (``TransformerASR`` with a Conformer encoder, its
``EncoderWrapper``, or a ``ConformerEncoder``): :func:`fold_encoder` folds
one in place, :func:`set_depth` changes its logical depth.

Trained jointly (:class:`FoldEncoder` in a ``compression:`` block, with
``CompressionBrain``), every step runs the recipe's forward at the largest
depth ``N_f``, at the seed depth ``N_p`` and at one depth ``d`` drawn
between them (the sandwich rule)::

    L = L_task(N_f) + seed_weight L_task(N_p) + sampled_weight L_task(d)
        + kl_weight T^2 KL(sg(p_Nf / T) || p_Np / T)

with the KL divergence of the frame-level posteriors (CTC), teacher side
detached, averaged over the valid frames. The exports
(:mod:`sb_compress.export.folded`, format ``folded``) store each physical
block once.

Authors
 * sb_compress team 2026
"""

import contextlib
import random

import torch
import torch.nn.functional as F

from sb_compress.models import UnsupportedModelError, adapter_for, unwrap_model
from sb_compress.models.conformer import conformer_encoder, conformer_root

from .base import Modifier, check_int

UNFOLD_MAPS = ("cyclic", "repeat-each", "repeat-top")
#: Key of the fold record: a transformers config attribute (saved with the
#: config), or an attribute of SpeechBrain's ``ConformerEncoder``.
FOLD_KEY = "sb_compress_fold"
#: The transformers families whose encoder folds, and the config key of
#: their encoder's layer count.
LAYER_COUNT_KEYS = {
    "wav2vec2": "num_hidden_layers",
    "hubert": "num_hidden_layers",
    "wavlm": "num_hidden_layers",
    "whisper": "encoder_layers",
}


class FoldError(ValueError):
    """Bad fold settings, an unfoldable model or an out-of-range depth."""


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


class LayerStack:
    """Where a model's encoder layers live and where its fold is recorded.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers wav2vec2 / HuBERT / WavLM / Whisper model, a
        SpeechBrain wrapper around one, or SpeechBrain's Conformer (see
        :func:`sb_compress.models.conformer.conformer_root`), possibly in
        ``DistributedDataParallel``.

    Raises
    ------
    FoldError
        For any other model.
    """

    def __init__(self, model):
        root = conformer_root(model)
        if root is not None:
            self.root = root
            self.owner = conformer_encoder(root)
            self.config = None
            self.count_key = None
            self.model_type = "conformer"
            return
        try:
            self.root = unwrap_model(model)
        except UnsupportedModelError:
            raise FoldError(
                f"{type(model).__name__}: folding supports wav2vec2, HuBERT, "
                "WavLM and Whisper (transformers models or SpeechBrain's "
                "wrappers) and SpeechBrain's Conformer (TransformerASR, "
                "EncoderWrapper or ConformerEncoder)"
            ) from None
        self.config = self.root.config
        self.model_type = self.config.model_type
        if self.model_type not in LAYER_COUNT_KEYS:
            raise FoldError(
                f"model_type {self.model_type!r}: folding supports "
                + ", ".join(LAYER_COUNT_KEYS)
                + " and SpeechBrain's Conformer"
            )
        self.count_key = LAYER_COUNT_KEYS[self.model_type]
        self.owner = adapter_for(self.root)._base().encoder

    @property
    def info(self):
        """The fold record (``None`` when the model is not folded)."""
        holder = self.owner if self.config is None else self.config
        return getattr(holder, FOLD_KEY, None)

    @info.setter
    def info(self, value):
        holder = self.owner if self.config is None else self.config
        setattr(holder, FOLD_KEY, value)

    def set_layers(self, layers):
        """Makes ``layers`` the encoder's layer list."""
        self.owner.layers = torch.nn.ModuleList(layers)
        if self.config is not None:
            setattr(self.config, self.count_key, len(self.owner.layers))

    def owner_prefix(self):
        """State-dict prefix of the module holding ``layers`` (``""``,
        ``"encoder."``, ``"wav2vec2.encoder."``...), relative to ``root``."""
        for name, module in self.root.named_modules():
            if module is self.owner:
                return f"{name}." if name else ""
        raise FoldError("the encoder is not a submodule of its model")


def fold_info(model):
    """The fold record of a model (``None`` when it is not folded).

    Arguments
    ---------
    model : torch.nn.Module
        See :class:`LayerStack`.

    Returns
    -------
    dict or None
        ``physical``, ``seeds``, ``mode``, ``max_depth``,
        ``original_depth`` and the current ``depth``.
    """
    return LayerStack(model).info


def default_seeds(original, physical):
    """Evenly spaced layers, the first and the last included.

    Example
    -------
    >>> default_seeds(12, 8)
    [0, 2, 3, 5, 6, 8, 9, 11]
    >>> default_seeds(4, 1)
    [0]
    """
    if physical == 1:
        return [0]
    step = (original - 1) / (physical - 1)
    return [int(i * step + 0.5) for i in range(physical)]


def check_fold(model, physical, max_depth=None, seeds=None):
    """Checks fold settings against a model; returns the resolved
    ``(max_depth, seeds)``.

    Raises
    ------
    FoldError
        Naming the setting (``physical``, ``max_depth``, ``seeds``).
    """
    stack = LayerStack(model)
    if stack.info is not None:
        raise FoldError("the model is already folded")
    original = len(stack.owner.layers)
    if not 1 <= physical <= original:
        raise FoldError(
            f"physical = {physical}: must be in [1, {original}] (the "
            "encoder's layers)"
        )
    max_depth = original if max_depth is None else max_depth
    if max_depth < physical:
        raise FoldError(
            f"max_depth = {max_depth}: must be >= physical = {physical}"
        )
    if seeds is None:
        seeds = default_seeds(original, physical)
    seeds = [int(s) for s in seeds]
    if len(seeds) != physical or len(set(seeds)) != physical:
        raise FoldError(f"seeds = {seeds}: need {physical} distinct layers")
    if any(not 0 <= s < original for s in seeds):
        raise FoldError(f"seeds = {seeds}: layers are 0 to {original - 1}")
    if stack.model_type == "wavlm" and seeds[0] != 0:
        raise FoldError(
            f"seeds = {seeds}: WavLM's first seed must be layer 0 (its "
            "relative position bias feeds every layer)"
        )
    return max_depth, seeds


def fold_encoder(model, physical, max_depth=None, mode="cyclic", seeds=None):
    """Folds a model's encoder in place.

    The physical blocks are the seed layers' own modules (registered as
    ``<encoder>.sb_compress_blocks``); the other layers are dropped.

    Arguments
    ---------
    model : torch.nn.Module
        See :class:`LayerStack`.
    physical : int
        Number of physical blocks ``N_p``.
    max_depth : int, optional
        Largest logical depth ``N_f`` (default: the original depth).
    mode : str
        Unfold map, see :func:`unfold_order`.
    seeds : list of int, optional
        The layers (0-based) the physical blocks start from (default:
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
    >>> _ = fold_encoder(model, 2, max_depth=5)
    >>> fold_info(model)["seeds"], len(model.encoder.layers)
    ([0, 3], 5)
    >>> model.encoder.layers[2] is model.encoder.layers[0]
    True
    """
    unfold_order(physical, physical, mode)
    max_depth, seeds = check_fold(model, physical, max_depth, seeds)
    stack = LayerStack(model)
    original = len(stack.owner.layers)
    blocks = torch.nn.ModuleList(stack.owner.layers[s] for s in seeds)
    stack.owner.sb_compress_blocks = blocks
    stack.info = {
        "physical": physical,
        "seeds": seeds,
        "mode": mode,
        "max_depth": max_depth,
        "original_depth": original,
    }
    set_depth(model, max_depth)
    return model


def set_depth(model, depth):
    """Unfolds a folded model to ``depth`` logical layers.

    Arguments
    ---------
    model : torch.nn.Module
        A model folded by :func:`fold_encoder`.
    depth : int
        In ``[N_p, N_f]``.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Raises
    ------
    FoldError
        When ``depth`` is outside ``[N_p, N_f]``.
    """
    stack = LayerStack(model)
    info = stack.info
    if info is None:
        raise FoldError("the model is not folded (see fold_encoder)")
    if not info["physical"] <= depth <= info["max_depth"]:
        raise FoldError(
            f"depth {depth}: this model unfolds to "
            f"{info['physical']}..{info['max_depth']} layers"
        )
    blocks = stack.owner.sb_compress_blocks
    order = unfold_order(info["physical"], depth, info["mode"])
    # The logical list holds references: parameters() lists each once.
    stack.set_layers(blocks[i] for i in order)
    info["depth"] = depth
    return model


def physical_state(model):
    """The state dict of the model (transformers model or Conformer root)
    with each physical block once, under ``<encoder>.layers.<i>`` for
    physical block ``i``: the state of the ``N_p``-layer model.

    Arguments
    ---------
    model : torch.nn.Module
        A folded model.

    Returns
    -------
    dict
    """
    stack = LayerStack(model)
    prefix = stack.owner_prefix()
    skipped = (f"{prefix}layers.", f"{prefix}sb_compress_blocks.")
    state = {
        key: value
        for key, value in stack.root.state_dict().items()
        if not key.startswith(skipped)
    }
    for index, block in enumerate(stack.owner.sb_compress_blocks):
        for key, value in block.state_dict().items():
            state[f"{prefix}layers.{index}.{key}"] = value
    return state


def parameter_counts(model):
    """Physical parameters and logical parameters at every depth.

    Arguments
    ---------
    model : torch.nn.Module
        A folded model.

    Returns
    -------
    dict
        ``physical`` (each shared parameter once: what is stored) and
        ``logical`` ``{depth: parameters of the unfolded model}``.
    """
    stack = LayerStack(model)
    info = stack.info
    unique = {id(p): p.numel() for p in stack.root.parameters()}
    blocks = [
        sum(p.numel() for p in block.parameters())
        for block in stack.owner.sb_compress_blocks
    ]
    outside = sum(unique.values()) - sum(blocks)
    logical = {}
    for depth in range(info["physical"], info["max_depth"] + 1):
        order = unfold_order(info["physical"], depth, info["mode"])
        logical[depth] = outside + sum(blocks[i] for i in order)
    return {"physical": sum(unique.values()), "logical": logical}


def posteriors_of(predictions):
    """The frame-level scores and relative lengths in a recipe's
    ``compute_forward`` output.

    Arguments
    ---------
    predictions : torch.Tensor or tuple
        A tensor ``(batch, frames, labels)`` (log-probabilities or
        logits), or a tuple starting with one, optionally followed by the
        relative lengths ``(batch,)`` (SpeechBrain's CTC recipes return
        ``(p_ctc, wav_lens, ...)``).

    Returns
    -------
    tuple
        ``(scores, lengths or None)``.

    Example
    -------
    >>> scores, lengths = posteriors_of((torch.zeros(2, 5, 3),
    ...     torch.tensor([1.0, 0.6]), None))
    >>> scores.shape, lengths.tolist()
    (torch.Size([2, 5, 3]), [1.0, 0.6000000238418579])
    """
    if torch.is_tensor(predictions):
        return predictions, None
    if not isinstance(predictions, (tuple, list)) or not predictions:
        raise FoldError(
            "the KL term needs frame-level scores: compute_forward returned "
            f"{type(predictions).__name__}; override "
            "CompressionBrain.fold_posteriors(predictions)"
        )
    scores = predictions[0]
    lengths = predictions[1] if len(predictions) > 1 else None
    if not (
        torch.is_tensor(lengths)
        and lengths.dim() == 1
        and lengths.shape[0] == scores.shape[0]
        and lengths.is_floating_point()
    ):
        lengths = None
    return scores, lengths


def depth_kl(teacher, student, lengths=None, temperature=1.0):
    """``T^2 KL(sg(softmax(teacher / T)) || softmax(student / T))`` per
    frame, averaged over the valid frames.

    Arguments
    ---------
    teacher, student : torch.Tensor
        Scores ``(batch, frames, labels)``: log-probabilities or logits.
    lengths : torch.Tensor, optional
        Relative lengths ``(batch,)``; frames past them are ignored.
    temperature : float
        ``T``.

    Returns
    -------
    torch.Tensor
        A scalar; no gradient reaches ``teacher``.

    Example
    -------
    >>> scores = torch.randn(2, 4, 3)
    >>> float(depth_kl(scores, scores))
    0.0
    >>> float(depth_kl(scores, torch.zeros(2, 4, 3))) > 0
    True
    """
    if teacher.shape != student.shape:
        raise FoldError(
            f"the KL term needs the same frames at every depth: "
            f"{tuple(teacher.shape)} at the largest depth, "
            f"{tuple(student.shape)} at the seed depth"
        )
    target = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    log_probs = F.log_softmax(student.float() / temperature, dim=-1)
    kl = (target.exp() * (target - log_probs)).sum(dim=-1)
    kl = kl.reshape(kl.shape[0], -1)
    if lengths is not None and kl.dim() == 2:
        frames = kl.shape[1]
        kept = torch.round(lengths.to(kl.device).float() * frames).clamp(min=1)
        valid = torch.arange(frames, device=kl.device)[None, :] < kept[:, None]
        kl = (kl * valid).sum() / valid.sum()
    else:
        kl = kl.mean()
    return kl * temperature**2


def _number(value, key, minimum=0.0, strict=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise ValueError(
            f"{key} = {value!r}: must be a number {bound} {minimum}"
        )


class FoldEncoder(Modifier):
    """Folds the encoder and trains its depths jointly (METHODS.md 6).

    Arguments
    ---------
    physical : int
        Physical blocks ``N_p``.
    max_depth : int, optional
        Largest logical depth ``N_f`` (default: the encoder's layers).
    unfold_map : str
        ``cyclic``, ``repeat-each`` or ``repeat-top`` (module docstring).
    seeds : list of int, optional
        Pretrained layers (0-based) the blocks start from; default evenly
        spaced, first and last included.
    depths : list of int, optional
        The depths ``d`` is drawn from (default: every depth strictly
        between ``N_p`` and ``N_f``).
    seed_weight : float
        ``alpha_p``, weight of the task loss at ``N_p``.
    sampled_weight : float
        ``alpha_d``, weight of the task loss at the drawn depth.
    kl_weight : float
        ``alpha_KL``, weight of the KL term from ``N_f`` to ``N_p``.
    temperature : float
        ``T`` of the KL term.
    start_step, end_step : int or float
        Steps between which the extra depths are trained (before and
        after: the largest depth only).

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=4,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> model = HubertModel(config)
    >>> fold = FoldEncoder(physical=2, max_depth=6)
    >>> fold.validate("compression.modifiers[0]")
    >>> fold.bind(model, "compression.modifiers[0]"); fold.prepare()
    >>> fold.seeds, len(model.encoder.layers)
    ([0, 3], 6)
    >>> with fold.depth(3):
    ...     len(model.encoder.layers)
    3
    >>> fold.sampled_depth(7) in (3, 4, 5)
    True
    """

    method = "fold"
    #: The plan holds no other modifier (the export shares blocks).
    exclusive = True

    def __init__(
        self,
        physical,
        max_depth=None,
        unfold_map="cyclic",
        seeds=None,
        depths=None,
        seed_weight=1.0,
        sampled_weight=1.0,
        kl_weight=1.0,
        temperature=1.0,
        start_step=0,
        end_step=None,
    ):
        super().__init__(None, None, "encoder", start_step, end_step)
        self.physical = physical
        self.max_depth = max_depth
        self.unfold_map = unfold_map
        self.seeds = None if seeds is None else list(seeds)
        self.depths = None if depths is None else list(depths)
        self.seed_weight = seed_weight
        self.sampled_weight = sampled_weight
        self.kl_weight = kl_weight
        self.temperature = temperature
        self._refs = []
        self._sums = {}

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        for key in ("targets", "ignore"):
            out.pop(key)
        out.update(
            physical=self.physical,
            max_depth=self.max_depth,
            unfold_map=self.unfold_map,
            seeds=self.seeds,
            depths=self.depths,
            seed_weight=self.seed_weight,
            sampled_weight=self.sampled_weight,
            kl_weight=self.kl_weight,
            temperature=self.temperature,
        )
        return out

    def validate(self, where):
        """Checks the settings' types and ranges, naming the key."""
        super().validate(where)
        check_int(self.physical, f"{where}.physical", 1)
        if self.max_depth is not None:
            check_int(self.max_depth, f"{where}.max_depth", self.physical)
        if self.unfold_map not in UNFOLD_MAPS:
            raise ValueError(
                f"{where}.unfold_map = {self.unfold_map!r}: choose from "
                + ", ".join(UNFOLD_MAPS)
            )
        if self.seeds is not None:
            for i, seed in enumerate(self.seeds):
                check_int(seed, f"{where}.seeds[{i}]", 0)
        if self.depths is not None:
            for i, depth in enumerate(self.depths):
                check_int(depth, f"{where}.depths[{i}]", self.physical)
        for key in ("seed_weight", "sampled_weight", "kl_weight"):
            _number(getattr(self, key), f"{where}.{key}")
        _number(self.temperature, f"{where}.temperature", strict=True)

    def bind(self, model, where):
        """Checks the settings against the model's encoder."""
        try:
            stack = LayerStack(model)
        except FoldError as error:
            raise ValueError(f"{where}: {error}") from None
        if stack.info is not None:
            raise ValueError(f"{where}: the model is already folded")
        try:
            self.max_depth, self.seeds = check_fold(
                model, self.physical, self.max_depth, self.seeds
            )
        except FoldError as error:
            raise ValueError(f"{where}.{error}") from None
        for i, depth in enumerate(self.depths or []):
            if depth > self.max_depth:
                raise ValueError(
                    f"{where}.depths[{i}] = {depth}: must be in "
                    f"[{self.physical}, {self.max_depth}] (physical, "
                    "max_depth)"
                )
        self._refs = [model]
        self.layers = []

    @property
    def model(self):
        """The bound model."""
        return self._refs[0]

    def prepare(self):
        """Folds the encoder, unfolded to ``max_depth``."""
        fold_encoder(
            self.model,
            self.physical,
            self.max_depth,
            self.unfold_map,
            self.seeds,
        )

    @contextlib.contextmanager
    def depth(self, depth):
        """Runs the ``with`` body at ``depth``, then returns to the depth
        before."""
        before = fold_info(self.model)["depth"]
        set_depth(self.model, depth)
        try:
            yield self.model
        finally:
            set_depth(self.model, before)

    def sampled_depth(self, step):
        """The depth ``d`` drawn for ``step`` (a function of the step, so a
        resumed run draws the same), or ``None`` when there is none."""
        choices = self.depths
        if choices is None:
            choices = list(range(self.physical + 1, self.max_depth))
        if not choices:
            return None
        return random.Random(int(step)).choice(sorted(choices))

    def _active(self, step):
        self.check_schedule_resolved()
        if step < self.start_step:
            return False
        return self.end_step is None or step < self.end_step

    def joint_loss(self, teacher, run):
        """The terms the smaller depths add to the task loss at ``N_f``.

        Arguments
        ---------
        teacher : tuple
            ``(scores, lengths)`` of the forward at ``N_f`` (see
            :func:`posteriors_of`).
        run : callable
            ``run(depth) -> (task loss, (scores, lengths))``: the recipe's
            forward and objectives at ``depth`` on the same batch.

        Returns
        -------
        torch.Tensor or None
            ``seed_weight L(N_p) + sampled_weight L(d) + kl_weight KL``.
        """
        step = int(self.step)
        if not self._active(step) or self.physical == self.max_depth:
            return None
        total = None
        if self.seed_weight or self.kl_weight:
            loss, student = run(self.physical)
            kl = depth_kl(teacher[0], student[0], teacher[1], self.temperature)
            total = self.seed_weight * loss + self.kl_weight * kl
            self._record(f"loss_depth{self.physical}", loss)
            self._record("kl", kl)
        sampled = self.sampled_depth(step)
        if sampled is not None and self.sampled_weight:
            loss, _ = run(sampled)
            term = self.sampled_weight * loss
            total = term if total is None else total + term
            self._record("loss_sampled_depth", loss)
        return total

    def _record(self, name, value):
        value_sum, count = self._sums.get(name, (0.0, 0))
        self._sums[name] = (value_sum + float(value.detach()), count + 1)

    def pop_stats(self):
        """Means of the extra terms since the last call (for the log)."""
        stats = {f"fold {k}": s / n for k, (s, n) in self._sums.items()}
        self._sums = {}
        return stats

"""Layer-to-layer distillation from a frozen copy of the unpruned model.

At a few encoder layers (1-based; default a third, two thirds and the
last), the student's hidden state goes through a learnt linear projection
and is compared with the teacher's at the same layer::

    L = sum_l l1_weight |P_l h_l - t_l|_1 + cos_weight (1 - cos(P_l h_l, t_l))

averaged over frames and features. The teacher is a frozen copy of the
model taken when the plan is built (its unmasked weights, should gates
already be in place)
and runs, in eval mode and without gradients, on the same input as the
student. The loss is added to whatever the recipe computes: alone
(task-agnostic, the recipe's loss being zero) or with the CTC loss.

The projections are the modifier's own parameters (in the Plan's state,
trained by the compression optimizer); under DDP their gradients are
averaged across ranks by a gradient hook. A layer that LayerDrop skipped
this step contributes no term.

Authors
 * sb_compress team 2026
"""

import copy

import torch
import torch.nn.functional as F

from sb_compress.models import unwrap_model
from sb_compress.models.shrunk import encoder_layers

from .base import Modifier


def _input_module(model):
    """The module whose forward takes the raw input: Whisper's encoder
    (the SpeechBrain wrapper calls it directly), else the model."""
    if model.config.model_type == "whisper":
        return getattr(model, "model", model).encoder
    return model


def _frozen_copy(student):
    """A plain copy of the student's unpruned weights: a fresh model of its
    class loaded with the originals of any masked weight (no gates, no
    hooks), in eval mode."""
    from sb_compress.export.shrink import (
        _fresh_model,
        _has_decoder,
        dense_state,
    )

    teacher = _fresh_model(
        copy.deepcopy(student.config), _has_decoder(student), type(student)
    )
    teacher.load_state_dict(dense_state(student))
    return teacher.to(next(student.parameters()).device).eval()


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _average_across_ranks(grad):
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            grad = grad.clone()
            torch.distributed.all_reduce(grad)
            grad /= world
    return grad


class LayerDistillation(Modifier):
    """Distils the hidden states of a frozen teacher into the student.

    Arguments
    ---------
    layers : list of int, optional
        1-based encoder layers to match (default: a third, two thirds
        and the last, e.g. 4, 8, 12 of 12).
    l1_weight : float
        Weight of the L1 term.
    cos_weight : float
        Weight of the cosine term ``1 - cos``.
    weight : float
        Overall weight of the distillation loss.
    lr : float
        Learning rate of the projections.
    start_step, end_step : int
        Steps between which the loss is added.

    Example
    -------
    >>> from transformers import HubertConfig, HubertModel
    >>> config = HubertConfig(hidden_size=16, num_hidden_layers=3,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    ...     conv_stride=(5, 4), conv_kernel=(10, 8),
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    >>> model = HubertModel(config).eval()
    >>> distill = LayerDistillation()
    >>> distill.bind(model, "compression.modifiers[0]"); distill.prepare()
    >>> distill.layers_matched
    [1, 2, 3]
    >>> _ = model(torch.randn(1, 800))
    >>> distill.loss().item() < 1e-4  # the student is still the teacher
    True
    """

    method = "distill"

    def __init__(
        self,
        layers=None,
        l1_weight=1.0,
        cos_weight=1.0,
        weight=1.0,
        lr=1e-3,
        start_step=0,
        end_step=None,
    ):
        super().__init__(None, None, "encoder", start_step, end_step)
        self.layers_setting = None if layers is None else list(layers)
        self.layers_matched = []
        self.l1_weight = l1_weight
        self.cos_weight = cos_weight
        self.weight = weight
        self.lr = lr
        self.projections = torch.nn.ModuleList()
        self._refs = {}
        self._handles = []
        self._student = {}
        self._inputs = None

    def settings(self):
        """User-facing settings."""
        out = super().settings()
        out.update(
            layers=self.layers_setting,
            l1_weight=self.l1_weight,
            cos_weight=self.cos_weight,
            weight=self.weight,
            lr=self.lr,
        )
        return out

    def validate(self, where):
        """Checks every setting, naming the key on error."""
        super().validate(where)
        for key in ("l1_weight", "cos_weight", "weight"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"{where}.{key} = {value!r}: must be a number >= 0"
                )
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ValueError(f"{where}.lr = {self.lr!r}: must be > 0")

    def bind(self, model, where):
        """Takes the frozen teacher copy and checks the layers."""
        student = unwrap_model(model)
        count = len(encoder_layers(student))
        layers = self.layers_setting
        if layers is None:
            layers = sorted({max(1, round(count * f)) for f in (1 / 3, 2 / 3)})
            layers = sorted(set(layers) | {count})
        for i, layer in enumerate(layers):
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ValueError(f"{where}.layers[{i}] = {layer!r}: an int")
            if not 1 <= layer <= count:
                raise ValueError(
                    f"{where}.layers[{i}] = {layer}: the encoder has layers "
                    f"1..{count}"
                )
        self.layers_matched = list(layers)
        teacher = _frozen_copy(student)
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self._refs = {"student": student, "teacher": teacher}
        width = student.config.to_dict().get("hidden_size") or (
            student.config.d_model
        )
        self.projections = torch.nn.ModuleList(
            torch.nn.Linear(width, width) for _ in self.layers_matched
        )
        with torch.no_grad():
            for projection in self.projections:
                projection.weight.copy_(torch.eye(width))
                projection.bias.zero_()
        self.layers = []

    def prepare(self):
        """Hooks the student's layers and input."""
        student = self._refs["student"]
        layers = encoder_layers(student)
        for layer in self.layers_matched:
            self._handles.append(
                layers[layer - 1].register_forward_hook(self._keep(layer))
            )
        self._handles.append(
            _input_module(student).register_forward_pre_hook(
                self._keep_inputs, with_kwargs=True
            )
        )
        for parameter in self.projections.parameters():
            parameter.register_hook(_average_across_ranks)

    def _keep(self, layer):
        def hook(module, args, output):
            self._student[layer] = _hidden(output)

        return hook

    def _keep_inputs(self, module, args, kwargs):
        self._student = {}
        self._inputs = (args, kwargs)

    def optimizer_groups(self):
        """The projections, at their own learning rate."""
        return [
            {
                "params": list(self.projections.parameters()),
                "lr": self.lr,
                "weight_decay": 0.0,
            }
        ]

    @torch.no_grad()
    def teacher_states(self):
        """The teacher's hidden states ``{layer: tensor}`` on the last
        student input."""
        teacher = self._refs["teacher"]
        device = next(iter(self._student.values())).device
        teacher.to(device)
        states = {}
        handles = [
            encoder_layers(teacher)[layer - 1].register_forward_hook(
                lambda m, a, o, layer=layer: states.__setitem__(
                    layer, _hidden(o)
                )
            )
            for layer in self.layers_matched
        ]
        try:
            args, kwargs = self._inputs
            _input_module(teacher)(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return states

    def distillation_loss(self):
        """The distillation loss of the last student forward (``None``
        if no matched layer ran)."""
        if not self._student or self._inputs is None:
            return None
        teacher = self.teacher_states()
        total = 0.0
        for projection, layer in zip(self.projections, self.layers_matched):
            if layer not in self._student:
                continue
            student = projection(self._student[layer])
            target = teacher[layer].to(student.dtype)
            l1 = (student - target).abs().mean()
            cos = F.cosine_similarity(student, target, dim=-1).mean()
            total = total + self.l1_weight * l1 + self.cos_weight * (1 - cos)
        return self.weight * total

    def loss(self):
        """Distillation loss of this step (between start and end step)."""
        step = int(self.step)
        if step < self.start_step or (
            self.end_step is not None and step >= self.end_step
        ):
            return None
        loss = self.distillation_loss()
        self._student = {}
        self._inputs = None
        return loss

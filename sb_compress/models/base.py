"""What every model adapter exposes: the prunable Linear layers by role.

A modifier never knows the model family; it asks an adapter for
``linears()`` and gets :class:`LinearSpec` records naming each Linear layer
of the transformer blocks with its role, its layer index and its stack
(``encoder`` or ``decoder``).

Authors
 * sb_compress team 2026
"""

from dataclasses import dataclass

import torch

#: Roles of the Linear layers inside a transformer block.
ATTENTION_ROLES = ("q", "k", "v", "out")
CROSS_ATTENTION_ROLES = ("cross_q", "cross_k", "cross_v", "cross_out")
FFN_ROLES = ("ffn_in", "ffn_out")
ALL_ROLES = ATTENTION_ROLES + CROSS_ATTENTION_ROLES + FFN_ROLES

#: Group names accepted wherever a role is accepted.
ROLE_GROUPS = {
    "attention": ATTENTION_ROLES,
    "self_attention": ATTENTION_ROLES,
    "cross_attention": CROSS_ATTENTION_ROLES,
    "ffn": FFN_ROLES,
    "all": ALL_ROLES,
}


@dataclass
class LinearSpec:
    """One prunable Linear layer of a transformer block.

    Arguments
    ---------
    name : str
        Dotted module name relative to the adapter's root model.
    module : torch.nn.Linear
        The layer itself.
    role : str
        One of :data:`ALL_ROLES`.
    layer : int
        Index of the transformer block in its stack.
    stack : str
        ``"encoder"`` or ``"decoder"``.
    """

    name: str
    module: torch.nn.Linear
    role: str
    layer: int
    stack: str

    @property
    def weight(self):
        """The layer's (possibly parametrized) weight tensor."""
        return self.module.weight

    @property
    def numel(self):
        """Number of weights in the layer (bias excluded)."""
        parametrizations = getattr(self.module, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            return parametrizations.weight.original.numel()
        return self.module.weight.numel()


class ModelAdapter:
    """Base class of the family adapters.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers ``PreTrainedModel`` of the adapter's family.
    """

    family = "base"

    def __init__(self, model):
        self.model = model

    def layer_stacks(self):
        """Returns ``{stack_name: ModuleList}`` of the transformer blocks."""
        raise NotImplementedError

    def block_linears(self, block):
        """Returns ``{role: Linear}`` for one transformer block."""
        raise NotImplementedError

    def linears(self, scope="all"):
        """Lists the prunable Linear layers of the transformer blocks.

        Arguments
        ---------
        scope : str
            ``"encoder"``, ``"decoder"`` or ``"all"``.

        Returns
        -------
        list of LinearSpec
            In model order (stack, layer, role).
        """
        if scope not in ("encoder", "decoder", "all"):
            raise ValueError(
                f"scope={scope!r}: must be one of encoder, decoder, all"
            )
        names = {id(m): n for n, m in self.model.named_modules()}
        specs = []
        for stack, layers in self.layer_stacks().items():
            if scope != "all" and stack != scope:
                continue
            for index, block in enumerate(layers):
                for role, linear in self.block_linears(block).items():
                    specs.append(
                        LinearSpec(
                            name=names[id(linear)],
                            module=linear,
                            role=role,
                            layer=index,
                            stack=stack,
                        )
                    )
        return specs

    def stacks(self):
        """Names of the stacks this model has (``encoder``, ``decoder``)."""
        return list(self.layer_stacks())

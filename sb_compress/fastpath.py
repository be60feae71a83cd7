"""Optional fast inference kernels for packed models (int4 and 2:4).

A packed folder stores the real integer codes and N:M positions of its
layers (see :mod:`sb_compress.export.pack`). :func:`accelerate` loads it
and replaces eligible Linear layers with modules that compute on those
compressed weights directly:

- :class:`Int4Linear`: group-wise int4 weights (groups of 32, 64, 128 or
  256 along the input axis, no N:M mask) through PyTorch's packed int4
  matmul (``torch._weight_int4pack_mm`` on CUDA, its ``_for_cpu`` twin on
  CPU), bfloat16 activations;
- :class:`Sparse24Linear`: 2:4 layers (quantized or not) as PyTorch
  semi-structured sparse tensors (``to_sparse_semi_structured``), float16
  or bfloat16 activations, CUDA only (compute capability 8.0 or newer).

Nothing here is needed to load or run a compressed model: where a kernel
is missing (2:4 on CPU, an old GPU, a PyTorch without the private int4
operators) the layer stays a plain Linear holding the unpacked weight and
the report says why. Int4 outputs equal the unpacked model's run in
bfloat16 up to the kernel's accumulation order; 2:4 outputs equal the
masked float16/bfloat16 Linear's likewise.

Authors
 * sb_compress team 2026
"""

import logging

import torch

from sb_compress.export.pack import _kept_count, unpack_bits
from sb_compress.methods.quant import qrange

logger = logging.getLogger(__name__)

#: Group sizes the packed int4 kernels accept.
INT4_GROUP_SIZES = (32, 64, 128, 256)
#: What :func:`accelerate` may use.
KINDS = ("int4", "sparse24")


class FastPathUnavailable(RuntimeError):
    """A requested kernel does not exist on this device or PyTorch."""


def int4_kernels(device):
    """``(pack, matmul)`` of PyTorch's int4 kernels for ``device``.

    Arguments
    ---------
    device : torch.device or str
        ``cpu`` or a CUDA device.

    Returns
    -------
    tuple of callables

    Raises
    ------
    FastPathUnavailable
        When this PyTorch build has no such operator.

    Example
    -------
    >>> pack, matmul = int4_kernels("cpu")
    """
    device = torch.device(device)
    if device.type == "cuda":
        names = ("_convert_weight_to_int4pack", "_weight_int4pack_mm")
    elif device.type == "cpu":
        names = (
            "_convert_weight_to_int4pack_for_cpu",
            "_weight_int4pack_mm_for_cpu",
        )
    else:
        raise FastPathUnavailable(f"no int4 kernel for device {device}")
    missing = [n for n in names if not hasattr(torch, n)]
    if missing:
        raise FastPathUnavailable(
            f"PyTorch {torch.__version__} has no torch.{missing[0]}"
        )
    return tuple(getattr(torch, n) for n in names)


def _inner_k_tiles(in_features):
    for tiles in (8, 4, 2):
        if in_features % (tiles * 16) == 0:
            return tiles
    return None


def int4_ineligibility(shape, group_size):
    """Why a ``shape`` (out x in) int4 layer can't use the kernel, or None.

    Example
    -------
    >>> int4_ineligibility((768, 3072), 128) is None
    True
    >>> int4_ineligibility((768, 3072), None)
    'int4 kernel needs groups of 32, 64, 128 or 256 (row-wise scales)'
    """
    rows, cols = shape
    if group_size not in INT4_GROUP_SIZES:
        what = "row-wise scales" if group_size is None else group_size
        return f"int4 kernel needs groups of 32, 64, 128 or 256 ({what})"
    if rows % 16:
        return f"int4 kernel needs out_features divisible by 16 ({rows})"
    if cols % group_size or _inner_k_tiles(cols) is None:
        return f"int4 kernel needs in_features divisible by 32 ({cols})"
    return None


class Int4Linear(torch.nn.Module):
    """A Linear computing on packed signed int4 codes with group scales.

    The weight is ``codes * scales`` (codes in [-8, 7], one scale per
    ``group_size`` inputs), what the packed export stores; it is handed to
    the kernel as unsigned ``codes + 8`` with zero points ``0``.

    Arguments
    ---------
    codes : torch.Tensor
        Integer codes (out x in) in [-8, 7].
    scales : torch.Tensor
        (out x in / group_size) scales.
    group_size : int
        32, 64, 128 or 256.
    bias : torch.Tensor, optional
        (out,) bias.
    device : str or torch.device
        Where the packed weight lives (``cpu`` or CUDA).

    Example
    -------
    >>> codes = torch.randint(-8, 8, (16, 64))
    >>> scales = torch.rand(16, 2) / 10
    >>> layer = Int4Linear(codes, scales, 32)
    >>> weight = (codes.view(16, 2, 32) * scales[..., None]).view(16, 64)
    >>> x = torch.randn(3, 64)
    >>> expected = x @ weight.to(torch.bfloat16).float().t()
    >>> torch.allclose(layer(x), expected, atol=0.05, rtol=0.02)
    True
    """

    def __init__(self, codes, scales, group_size, bias=None, device="cpu"):
        super().__init__()
        problem = int4_ineligibility(tuple(codes.shape), group_size)
        if problem:
            raise ValueError(problem)
        low, high = qrange(4)
        if int(codes.min()) < low or int(codes.max()) > high:
            raise ValueError("int4 codes must lie in [-8, 7]")
        device = torch.device(device)
        pack, self._matmul = int4_kernels(device)
        self.out_features, self.in_features = codes.shape
        self.group_size = group_size
        unsigned = (codes.to(torch.int32) - low).to(device)
        tiles = _inner_k_tiles(self.in_features)
        if device.type == "cuda":
            unsigned = (unsigned[:, ::2] << 4 | unsigned[:, 1::2]).to(
                torch.uint8
            )
        self.register_buffer("packed", pack(unsigned.contiguous(), tiles))
        scales_and_zeros = torch.stack(
            [scales.float().t(), torch.zeros_like(scales.float().t())], -1
        )
        self.register_buffer(
            "scales_and_zeros",
            scales_and_zeros.to(
                device=device, dtype=torch.bfloat16
            ).contiguous(),
        )
        if bias is not None:
            bias = torch.nn.Parameter(bias.detach().to(device), False)
        self.bias = bias

    def forward(self, x):
        """bfloat16 matmul on the packed weight; output in ``x``'s dtype."""
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = self._matmul(
            flat.contiguous(),
            self.packed,
            self.group_size,
            self.scales_and_zeros,
        )
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, "
            f"out_features={self.out_features}, group_size={self.group_size}"
        )


def sparse24_ineligibility(weight, device):
    """Why ``weight`` can't become a semi-structured 2:4 tensor, or None.

    Example
    -------
    >>> sparse24_ineligibility(torch.ones(64, 64), "cpu")
    '2:4 sparse kernels need a CUDA device'
    """
    device = torch.device(device)
    if device.type != "cuda":
        return "2:4 sparse kernels need a CUDA device"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "2:4 sparse kernels need compute capability 8.0 or newer"
    rows, cols = weight.shape
    if rows % 32 or cols % 64:
        return (
            f"2:4 kernel needs out % 32 == 0 and in % 64 == 0 ({rows}, {cols})"
        )
    nonzero = (weight.reshape(rows, -1, 4) != 0).sum(-1)
    if int(nonzero.max()) > 2:
        return "weight is not 2:4 sparse along its input axis"
    return None


class Sparse24Linear(torch.nn.Module):
    """A Linear whose weight is a semi-structured 2:4 sparse tensor (CUDA).

    Arguments
    ---------
    weight : torch.Tensor
        (out x in) with at most two nonzeros in every group of four inputs.
    bias : torch.Tensor, optional
        (out,) bias.
    dtype : torch.dtype
        float16 or bfloat16.
    device : str or torch.device
        A CUDA device.
    """

    def __init__(self, weight, bias=None, dtype=torch.float16, device="cuda"):
        super().__init__()
        problem = sparse24_ineligibility(weight, device)
        if problem:
            raise FastPathUnavailable(problem)
        from torch.sparse import to_sparse_semi_structured

        dense = weight.detach().to(device=device, dtype=dtype).contiguous()
        self.weight = torch.nn.Parameter(
            to_sparse_semi_structured(dense), requires_grad=False
        )
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype
        if bias is not None:
            bias = torch.nn.Parameter(
                bias.detach().to(device=device, dtype=dtype), False
            )
        self.bias = bias

    def forward(self, x):
        """``F.linear`` on the sparse weight; output in ``x``'s dtype."""
        out = torch.nn.functional.linear(
            x.to(self.dtype), self.weight, self.bias
        )
        return out.to(x.dtype)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}"
        )


def _set_module(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _layer_codes(entry, tensors):
    """Signed codes (out x in) and scales of an int4 layout entry."""
    rows, cols = entry["shape"]
    count = _kept_count(entry["shape"], entry["nm"])
    low, _ = qrange(entry["bits"])
    codes = unpack_bits(tensors[entry["tensors"]["codes"]], 4, count) + low
    return codes.reshape(rows, cols), tensors[entry["tensors"]["scales"]]


def _read_tensors(folder, keys):
    import os

    from safetensors import safe_open

    from sb_compress.export.pack import PACKED_FILE

    with safe_open(os.path.join(folder, PACKED_FILE), framework="pt") as f:
        return {key: f.get_tensor(key) for key in keys}


def accelerate(folder, device=None, kinds=KINDS, dtype=None):
    """Loads a packed folder with fast kernels where they apply.

    Arguments
    ---------
    folder : str
        A folder written with the ``packed`` format.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    kinds : sequence of str
        Kernels to use: ``"int4"`` and / or ``"sparse24"``.
    dtype : torch.dtype, optional
        Dtype of the rest of the model. Default bfloat16 (what the int4
        kernel computes in).

    Returns
    -------
    model : torch.nn.Module
        In eval mode on ``device``; feed it inputs of ``dtype``.
    report : dict
        ``{"device", "dtype", "layers": {name: kernel or "dense: why"},
        "counts": {kernel: n}}``.

    Raises
    ------
    ValueError
        On an unknown kind.
    """
    import os

    from sb_compress.export.pack import (
        PACKED_FILE,
        _read_header,
        _read_layout,
        load_packed,
    )

    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(
            f"unknown fast-path kind {unknown[0]!r}; choose from {KINDS}"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    dtype = dtype or torch.bfloat16
    model = load_packed(folder).to(device=device, dtype=dtype)
    path = os.path.join(folder, PACKED_FILE)
    layout, _, _ = _read_layout(path, _read_header(path))
    layers = {}
    for name, entry in layout["layers"].items():
        layers[name] = _accelerate_layer(
            model, name, entry, folder, device, kinds, dtype
        )
    counts = {}
    for kernel in layers.values():
        key = kernel.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    report = {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "layers": layers,
        "counts": counts,
    }
    logger.info("fast path on %s: %s", device, counts)
    return model.eval(), report


def _accelerate_layer(model, name, entry, folder, device, kinds, dtype):
    """Replaces one packed layer; returns the kernel used or why not."""
    linear = model.get_submodule(name)
    if entry["nm"] == [2, 4]:
        if "sparse24" not in kinds:
            return "dense: sparse24 not requested"
        problem = sparse24_ineligibility(linear.weight, device)
        if problem:
            return f"dense: {problem}"
        _set_module(
            model,
            name,
            Sparse24Linear(linear.weight, linear.bias, dtype, device),
        )
        return "sparse24"
    if entry["bits"] == 4 and entry["nm"] is None:
        if "int4" not in kinds:
            return "dense: int4 not requested"
        problem = int4_ineligibility(entry["shape"], entry["group_size"])
        if problem:
            return f"dense: {problem}"
        try:
            int4_kernels(device)
        except FastPathUnavailable as error:
            return f"dense: {error}"
        tensors = _read_tensors(folder, entry["tensors"].values())
        codes, scales = _layer_codes(entry, tensors)
        _set_module(
            model,
            name,
            Int4Linear(codes, scales, entry["group_size"], linear.bias, device),
        )
        return "int4"
    what = f"int{entry['bits']}" if entry["bits"] else "float"
    if entry["nm"]:
        what += f" + {entry['nm'][0]}:{entry['nm'][1]}"
    return f"dense: no kernel for {what}"

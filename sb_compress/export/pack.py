"""Packed low-bit and N:M storage in safetensors (format ``packed``).

A packed folder holds ``config.json`` (and the source's processor files),
``compression_report.json`` / ``.md`` and ``packed_model.safetensors``,
which has plain tensors only:

- every tensor of the model that is not a packed layer's weight (biases,
  norms, convolutions, untargeted layers) as it is;
- per packed layer ``<name>``:

  ``<name>.codes``    uint8, the integer codes as a bit stream: code
                      ``q`` is stored as ``q - qmin`` in ``bits`` bits
                      (int8: one per byte, int4: two per byte, int3: eight
                      in three bytes, int2: four per byte), row-major;
  ``<name>.scales``   float16 (out x groups), the quantizer's scales;
  ``<name>.indices``  uint8 bit stream of the kept weights' positions in
                      their N:M group, ``log2(M)`` bits each (2 bits for
                      M = 4, 3 bits for M = 8), in ascending order;
  ``<name>.values``   the kept weights themselves when the layer is N:M
                      but not quantized (its dtype).

  With N:M only the kept codes are stored (N per group), in row-major
  group order.

Bit streams are little-endian: value ``i`` of width ``w`` occupies bits
``[i*w, (i+1)*w)`` counted from the least significant bit of byte 0, and
the last byte is padded with zeros.

The safetensors metadata holds the JSON layout (``sb_compress.layout``:
per layer its shape, dtype, bits, group size, N:M pattern and tensor names;
per tensor its dtype, shape and CRC-32; tensors shared by several keys)
and the SHA-256 of that JSON (``sb_compress.layout_sha256``).
:func:`load_packed` (registered as format ``packed``, what
``sb_compress.load_compressed`` calls) checks all of it and names the
tensor at fault: a truncated file, a missing tensor, a wrong shape or
dtype, corrupted bytes or an edited layout fail to load. Unpacked weights
are bit-for-bit the fake-quantized (and masked) weights of training.

Authors
 * sb_compress team 2026
"""

import copy
import hashlib
import json
import math
import os
import zlib
from dataclasses import dataclass

import torch

from sb_compress.export.save import (
    CompressedFormatError,
    _read_config,
    _write_extra_files,
    check_model_type,
    check_output_dir,
    copy_processor_files,
    model_class_for,
    register_format,
    staged_folder,
)
from sb_compress.methods.quant import dequantize, qrange

PACKED_FILE = "packed_model.safetensors"
LAYOUT_KEY = "sb_compress.layout"
LAYOUT_SHA_KEY = "sb_compress.layout_sha256"
LAYOUT_VERSION = 1

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


@dataclass
class LayerCodes:
    """What the packed file stores for one layer.

    Arguments
    ---------
    weight : torch.Tensor
        The final (fake-quantized, masked) weight, out x in.
    bits : int, optional
        Bit width of ``codes``; ``None`` for an N:M layer kept in float.
    group_size : int, optional
        Weights per scale along the input axis (``None``: the whole row).
    codes : torch.Tensor, optional
        int8 codes (out x in).
    scales : torch.Tensor, optional
        float16 scales (out x groups).
    nm : tuple of int, optional
        ``(n, m)`` of the mask.
    mask : torch.Tensor, optional
        Bool keep-mask, exactly ``n`` per group of ``m``.
    """

    weight: torch.Tensor
    bits: int = None
    group_size: int = None
    codes: torch.Tensor = None
    scales: torch.Tensor = None
    nm: tuple = None
    mask: torch.Tensor = None


def pack_bits(values, width):
    """Packs unsigned integers of ``width`` bits into a uint8 bit stream.

    Arguments
    ---------
    values : torch.Tensor
        Integers in [0, 2**width), any shape (flattened row-major).
    width : int
        Bits per value, 1 to 8.

    Returns
    -------
    torch.Tensor
        uint8, ``ceil(len * width / 8)`` bytes.

    Example
    -------
    >>> pack_bits(torch.tensor([1, 2, 3, 0, 3]), 2).tolist()
    [57, 3]
    """
    flat = values.reshape(-1).to(torch.int64)
    if width == 8:
        return flat.to(torch.uint8)
    shifts = torch.arange(width, dtype=torch.int64)
    bits = ((flat[:, None] >> shifts) & 1).reshape(-1)
    padding = (-bits.numel()) % 8
    bits = torch.cat([bits, bits.new_zeros(padding)]).reshape(-1, 8)
    weights = 1 << torch.arange(8, dtype=torch.int64)
    return (bits * weights).sum(1).to(torch.uint8)


def unpack_bits(packed, width, count):
    """Inverse of :func:`pack_bits`.

    Arguments
    ---------
    packed : torch.Tensor
        uint8 bit stream.
    width : int
        Bits per value.
    count : int
        How many values to read.

    Returns
    -------
    torch.Tensor
        int64, ``count`` values.

    Example
    -------
    >>> unpack_bits(torch.tensor([57, 3], dtype=torch.uint8), 2, 5).tolist()
    [1, 2, 3, 0, 3]
    """
    flat = packed.reshape(-1).to(torch.int64)
    if width == 8:
        return flat[:count]
    bits = ((flat[:, None] >> torch.arange(8)) & 1).reshape(-1)
    bits = bits[: count * width].reshape(count, width)
    return (bits << torch.arange(width, dtype=torch.int64)).sum(1)


def packed_bytes(count, width):
    """Bytes of ``count`` values of ``width`` bits in a bit stream.

    Example
    -------
    >>> packed_bytes(10, 3)
    4
    """
    return math.ceil(count * width / 8)


def _index_width(m):
    return max(1, int(math.log2(m)))


def _kept_count(shape, nm):
    rows, cols = shape
    if nm is None:
        return rows * cols
    n, m = nm
    return rows * (cols // m) * n


def _kept_positions(mask, n, m, name):
    """In-group indices (ascending) of the kept weights, (out, in/m, n)."""
    groups = mask.reshape(mask.shape[0], -1, m)
    kept = groups.sum(-1)
    if not bool((kept == n).all()):
        raise ValueError(
            f"{name}: the mask is not {n}:{m} (a group keeps "
            f"{int(kept.min())} to {int(kept.max())} weights)"
        )
    order = torch.argsort((~groups).to(torch.int8), dim=-1, stable=True)
    return order[..., :n]


def pack_layer(name, layer):
    """Packed tensors and layout entry of one layer.

    Arguments
    ---------
    name : str
        Layer name (tensor keys are ``<name>.codes`` ...).
    layer : LayerCodes
        What to store.

    Returns
    -------
    tensors : dict
        ``key -> tensor``.
    entry : dict
        The layer's layout entry.

    Example
    -------
    >>> w = torch.tensor([[0.5, -1.0, 0.25, 0.0]])
    >>> codes = torch.tensor([[4, -7, 2, 0]], dtype=torch.int8)
    >>> scales = torch.tensor([[1 / 7]], dtype=torch.float16)
    >>> tensors, entry = pack_layer("fc", LayerCodes(w, 4, None, codes,
    ...     scales))
    >>> sorted(tensors), tensors["fc.codes"].tolist()
    (['fc.codes', 'fc.scales'], [28, 138])
    """
    weight = layer.weight
    rows, cols = weight.shape
    entry = {
        "shape": [rows, cols],
        "dtype": _dtype_name(weight.dtype),
        "bits": layer.bits,
        "group_size": None,
        "nm": list(layer.nm) if layer.nm else None,
        "tensors": {},
    }
    tensors = {}
    positions = None
    if layer.nm is not None:
        n, m = layer.nm
        positions = _kept_positions(layer.mask, n, m, name)
        key = f"{name}.indices"
        tensors[key] = pack_bits(positions, _index_width(m))
        entry["tensors"]["indices"] = key

    def kept(tensor):
        if positions is None:
            return tensor
        grouped = tensor.reshape(rows, -1, layer.nm[1])
        return torch.gather(grouped, -1, positions)

    if layer.bits is None:
        key = f"{name}.values"
        tensors[key] = kept(weight).reshape(-1).contiguous().clone()
        entry["tensors"]["values"] = key
        return tensors, entry
    group_size = layer.group_size or cols
    entry["group_size"] = group_size
    low, _ = qrange(layer.bits)
    unsigned = kept(layer.codes.to(torch.int64)) - low
    key = f"{name}.codes"
    tensors[key] = pack_bits(unsigned, layer.bits)
    entry["tensors"]["codes"] = key
    key = f"{name}.scales"
    tensors[key] = layer.scales.to(torch.float16).contiguous().clone()
    entry["tensors"]["scales"] = key
    return tensors, entry


def _expected_tensors(entry):
    """``role -> (dtype, shape)`` a layout entry implies."""
    rows, cols = entry["shape"]
    count = _kept_count(entry["shape"], entry["nm"])
    expected = {}
    if entry["nm"] is not None:
        width = _index_width(entry["nm"][1])
        expected["indices"] = ("uint8", [packed_bytes(count, width)])
    if entry["bits"] is None:
        expected["values"] = (entry["dtype"], [count])
    else:
        expected["codes"] = ("uint8", [packed_bytes(count, entry["bits"])])
        expected["scales"] = ("float16", [rows, cols // entry["group_size"]])
    return expected


def unpack_layer(name, entry, tensors):
    """Rebuilds a layer's weight from its packed tensors.

    Arguments
    ---------
    name : str
        Layer name.
    entry : dict
        Its layout entry (see :func:`pack_layer`).
    tensors : dict
        ``key -> tensor`` holding at least the entry's tensors.

    Returns
    -------
    torch.Tensor
        The weight (out x in), in the entry's dtype.

    Example
    -------
    >>> w = torch.tensor([[1.0, -1.75, 0.5, 0.0]])
    >>> codes = torch.tensor([[4, -7, 2, 0]], dtype=torch.int8)
    >>> scales = torch.tensor([[0.25]], dtype=torch.float16)
    >>> tensors, entry = pack_layer("fc", LayerCodes(w, 4, None, codes,
    ...     scales))
    >>> unpack_layer("fc", entry, tensors).tolist()
    [[1.0, -1.75, 0.5, 0.0]]
    """
    rows, cols = entry["shape"]
    dtype = _DTYPES[entry["dtype"]]
    count = _kept_count(entry["shape"], entry["nm"])
    roles = entry["tensors"]
    if entry["bits"] is None:
        values = tensors[roles["values"]].to(dtype)
    else:
        low, _ = qrange(entry["bits"])
        values = unpack_bits(tensors[roles["codes"]], entry["bits"], count)
        values = values + low
    if entry["nm"] is not None:
        n, m = entry["nm"]
        positions = unpack_bits(
            tensors[roles["indices"]], _index_width(m), count
        )
        dense = torch.zeros(rows, cols // m, m, dtype=values.dtype)
        dense.scatter_(
            -1, positions.reshape(rows, -1, n), values.reshape(rows, -1, n)
        )
        values = dense
    values = values.reshape(rows, cols)
    if entry["bits"] is None:
        return values
    scales = tensors[roles["scales"]]
    return dequantize(values, scales, entry["group_size"]).to(dtype)


def is_packable(plan):
    """Whether a plan has quantization or N:M modifiers (packed export).

    Arguments
    ---------
    plan : sb_compress.Plan

    Returns
    -------
    bool
    """
    return any(m.method in ("quant", "nm") for m in plan.modifiers)


@torch.no_grad()
def plan_codes(plan):
    """``{layer name: LayerCodes}`` of a plan's quantized and N:M layers,
    from the hardened parametrizations.

    Arguments
    ---------
    plan : sb_compress.Plan
        A prepared plan.

    Returns
    -------
    dict
    """
    plan.harden()
    final = plan.final_weights()
    layers = {}
    for modifier in plan.modifiers:
        if modifier.method == "nm":
            for name, (mask, n, m) in modifier.nm_masks().items():
                layer = layers.setdefault(name, LayerCodes(final[name]))
                layer.nm, layer.mask = (n, m), mask.cpu()
        elif modifier.method == "quant":
            for name, (codes, scales) in modifier.codes().items():
                layer = layers.setdefault(name, LayerCodes(final[name]))
                layer.bits = modifier.bits
                layer.group_size = modifier.group_size
                layer.codes, layer.scales = codes.cpu(), scales.cpu()
    for layer in layers.values():
        layer.weight = layer.weight.detach().cpu()
    return layers


def _crc(tensor):
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return zlib.crc32(data.numpy().tobytes())


def _plain_tensors(model, packed_names):
    """The model's other tensors, shared storage stored once."""
    skip = {f"{name}.weight" for name in packed_names}
    tensors, aliases, seen = {}, {}, {}
    for key, value in model.state_dict().items():
        if key in skip:
            continue
        value = value.detach().cpu()
        identity = (
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            value.dtype,
        )
        if value.numel() and identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.contiguous().clone()
    return tensors, aliases


def _drops_decoder(model):
    base = getattr(model, "model", model)
    return getattr(base, "decoder", True) is None


def write_packed(model, layers, folder):
    """Writes ``config.json`` and ``packed_model.safetensors`` of a model.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The finalized model (no parametrizations).
    layers : dict
        ``{layer name: LayerCodes}``, e.g. from :func:`plan_codes`.
    folder : str
        An existing folder.

    Returns
    -------
    str
        Path of the safetensors file.
    """
    from safetensors.torch import save_file

    tensors, aliases = _plain_tensors(model, layers)
    layout = {
        "version": LAYOUT_VERSION,
        "drop_decoder": _drops_decoder(model),
        "layers": {},
        "aliases": aliases,
        "tensors": {},
    }
    for name, layer in layers.items():
        packed, entry = pack_layer(name, layer)
        tensors.update(packed)
        layout["layers"][name] = entry
    for key, value in tensors.items():
        layout["tensors"][key] = {
            "dtype": _dtype_name(value.dtype),
            "shape": list(value.shape),
            "crc32": _crc(value),
        }
    text = json.dumps(layout, sort_keys=True)
    metadata = {
        LAYOUT_KEY: text,
        LAYOUT_SHA_KEY: hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "format": "pt",
    }
    path = os.path.join(folder, PACKED_FILE)
    save_file(tensors, path, metadata=metadata)
    config = copy.deepcopy(model.config)
    # The class the state dict belongs to (a SpeechBrain wrapper holds a
    # WhisperModel whose config may name WhisperForConditionalGeneration).
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():
        generation.save_pretrained(folder)
    return path


def save_packed_atomic(
    model,
    layers,
    output_dir,
    source_dir=None,
    overwrite=False,
    extra_files=None,
):
    """Saves a packed folder, all or nothing (as
    :func:`~sb_compress.export.save.save_pretrained_atomic`).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The finalized model.
    layers : dict
        ``{layer name: LayerCodes}``.
    output_dir : str
        Folder to create (or replace, with ``overwrite``).
    source_dir : str, optional
        Source folder whose processor files are copied.
    overwrite : bool
        Replace an existing non-empty ``output_dir``.
    extra_files : callable or dict, optional
        ``f(folder)`` called after the model files are written, or
        ``{name: bytes or str}``.

    Returns
    -------
    str
        The absolute path of ``output_dir``.
    """
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir, overwrite)
    with staged_folder(output_dir) as staging:
        write_packed(model, layers, staging)
        if source_dir is not None:
            copy_processor_files(source_dir, staging)
        if extra_files is not None:
            _write_extra_files(staging, extra_files)
    return output_dir


def _read_header(path):
    """The safetensors header; a short file names the tensor cut off."""
    if not os.path.isfile(path):
        raise CompressedFormatError(f"{path} is missing")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CompressedFormatError(
                f"{path} is truncated: {size} bytes, not even a header"
            )
        length = int.from_bytes(head, "little")
        if 8 + length > size:
            raise CompressedFormatError(
                f"{path} is truncated inside its header ({size} bytes, the "
                f"header needs {8 + length})"
            )
        try:
            header = json.loads(f.read(length))
        except ValueError as error:
            raise CompressedFormatError(
                f"{path} is corrupt: unreadable header ({error})"
            ) from error
    for key, info in header.items():
        if key == "__metadata__":
            continue
        end = 8 + length + info["data_offsets"][1]
        if end > size:
            raise CompressedFormatError(
                f"{path} is truncated: tensor {key!r} ends at byte {end}, "
                f"the file has {size} bytes"
            )
    return header


def _read_layout(path, header):
    metadata = header.get("__metadata__") or {}
    text = metadata.get(LAYOUT_KEY)
    if text is None:
        raise CompressedFormatError(
            f"{path}: no {LAYOUT_KEY!r} in its metadata; not a packed file"
        )
    try:
        layout = json.loads(text)
        layout["layers"], layout["tensors"]
    except (ValueError, KeyError, TypeError) as error:
        raise CompressedFormatError(
            f"{path}: the layout in its metadata is corrupt ({error})"
        ) from error
    if layout.get("version") != LAYOUT_VERSION:
        raise CompressedFormatError(
            f"{path}: layout version {layout.get('version')!r}; this "
            f"sb_compress reads version {LAYOUT_VERSION}"
        )
    return layout, text, metadata.get(LAYOUT_SHA_KEY)


def _check_tensor(path, key, tensors, dtype, shape, why):
    if key not in tensors:
        raise CompressedFormatError(f"{path}: tensor {key!r} is missing")
    tensor = tensors[key]
    if _dtype_name(tensor.dtype) != dtype or list(tensor.shape) != shape:
        raise CompressedFormatError(
            f"{path}: tensor {key!r} is {_dtype_name(tensor.dtype)} "
            f"{list(tensor.shape)}, expected {dtype} {shape} ({why})"
        )


def _check_layout(path, layout, tensors):
    for name, entry in layout["layers"].items():
        try:
            expected = _expected_tensors(entry)
            roles = entry["tensors"]
            keys = {role: roles[role] for role in expected}
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise CompressedFormatError(
                f"{path}: layout entry of layer {name!r} is corrupt "
                f"({type(error).__name__}: {error})"
            ) from error
        for role, (dtype, shape) in expected.items():
            why = f"{role} of layer {name}, {entry['shape']}"
            if entry["bits"] is not None:
                why += f", {entry['bits']} bits"
            if entry["nm"] is not None:
                why += f", {entry['nm'][0]}:{entry['nm'][1]}"
            _check_tensor(path, keys[role], tensors, dtype, shape, why)
    for key, info in layout["tensors"].items():
        _check_tensor(
            path, key, tensors, info["dtype"], info["shape"], "the layout"
        )
        if _crc(tensors[key]) != info["crc32"]:
            raise CompressedFormatError(
                f"{path}: tensor {key!r} is corrupt (CRC-32 mismatch)"
            )


def read_packed(folder):
    """Reads and checks a packed file; returns the model's state dict.

    Arguments
    ---------
    folder : str
        A packed folder.

    Returns
    -------
    state : dict
        ``key -> tensor`` with unpacked weights, aliases resolved.
    layout : dict
        The layout.

    Raises
    ------
    CompressedFormatError
        Naming the file and the tensor at fault.
    """
    from safetensors import safe_open

    path = os.path.join(folder, PACKED_FILE)
    header = _read_header(path)
    layout, text, sha = _read_layout(path, header)
    try:
        with safe_open(path, framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise CompressedFormatError(
            f"{path} is corrupt: {type(error).__name__}: {error}"
        ) from error
    _check_layout(path, layout, tensors)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != sha:
        raise CompressedFormatError(
            f"{path}: the layout does not match its SHA-256 "
            f"({LAYOUT_SHA_KEY}); the metadata was edited"
        )
    state = {}
    packed_keys = set()
    for name, entry in layout["layers"].items():
        state[f"{name}.weight"] = unpack_layer(name, entry, tensors)
        packed_keys.update(entry["tensors"].values())
    for key, tensor in tensors.items():
        if key not in packed_keys:
            state[key] = tensor
    for key, source in layout["aliases"].items():
        if source not in state:
            raise CompressedFormatError(
                f"{path}: tensor {key!r} aliases {source!r}, which is missing"
            )
        state[key] = state[source]
    return state, layout


@register_format("packed")
def load_packed(folder, report=None, **options):
    """Loads a packed folder into its transformers model.

    Arguments
    ---------
    folder : str
        Written by :func:`save_packed_atomic`.
    report : dict, optional
        Its compression report (unused: the layout is in the file).
    **options
        ``dtype``: cast the loaded model.

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, with the unpacked weights.

    Raises
    ------
    CompressedFormatError
        On a missing, truncated, corrupt or edited file, naming the tensor.
    """
    import transformers

    del report
    config = _read_config(folder, CompressedFormatError)
    check_model_type(config, folder)
    state, layout = read_packed(folder)
    model_config = transformers.AutoConfig.from_pretrained(folder)
    model_class = model_class_for(config)
    if model_class is transformers.AutoModel:
        model = model_class.from_config(model_config)
    else:
        model = model_class(model_config)
    if layout.get("drop_decoder"):
        getattr(model, "model", model).decoder = None
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        message = " ".join(str(error).split())
        raise CompressedFormatError(
            f"{os.path.join(folder, PACKED_FILE)} does not fit "
            f"{type(model).__name__}: {message[:500]}"
        ) from error
    if "dtype" in options:
        model.to(options["dtype"])
    return model.eval()


def packed_sizes(folder):
    """Bytes on disk and bits per weight of a packed file.

    Arguments
    ---------
    folder : str
        A packed folder.

    Returns
    -------
    dict
        ``targeted``: ``bytes_on_disk``, ``bits_per_weight``,
        ``fp32_bytes`` and ``fraction_of_fp32`` over the packed layers
        (codes, indices, values and scales); ``file``: ``name``,
        ``bytes_on_disk`` and ``bits_per_weight`` over all the model's
        parameters; ``layers``: ``name -> {bytes_on_disk,
        bits_per_weight}``.
    """
    path = os.path.join(folder, PACKED_FILE)
    header = _read_header(path)
    layout, _, _ = _read_layout(path, header)

    def nbytes(key):
        start, end = header[key]["data_offsets"]
        return end - start

    layers, total_bytes, total_weights = {}, 0, 0
    for name, entry in layout["layers"].items():
        size = sum(nbytes(key) for key in entry["tensors"].values())
        weights = entry["shape"][0] * entry["shape"][1]
        layers[name] = {
            "bytes_on_disk": size,
            "bits_per_weight": 8 * size / weights,
        }
        total_bytes += size
        total_weights += weights
    packed_keys = {
        k for e in layout["layers"].values() for k in e["tensors"].values()
    }
    other = sum(
        int(math.prod(info["shape"]))
        for key, info in header.items()
        if key != "__metadata__" and key not in packed_keys
    )
    other += sum(
        int(math.prod(layout["tensors"][source]["shape"]))
        for source in layout["aliases"].values()
    )
    file_bytes = os.path.getsize(path)
    params = total_weights + other
    return {
        "targeted": {
            "bytes_on_disk": total_bytes,
            "bits_per_weight": 8 * total_bytes / max(1, total_weights),
            "fp32_bytes": 4 * total_weights,
            "fraction_of_fp32": total_bytes / max(1, 4 * total_weights),
        },
        "file": {
            "name": PACKED_FILE,
            "bytes_on_disk": file_bytes,
            "bits_per_weight": 8 * file_bytes / max(1, params),
        },
        "layers": layers,
    }


def add_packed_sizes(report, folder):
    """Adds :func:`packed_sizes` to a report (in place): ``targeted``,
    ``file``, ``bits_per_weight`` (whole file) and per layer
    ``bytes_on_disk`` and ``bits_per_weight``.

    Arguments
    ---------
    report : dict
        From :func:`sb_compress.report.build_report`.
    folder : str
        The packed folder being written.

    Returns
    -------
    dict
        ``report``.
    """
    sizes = packed_sizes(folder)
    report["bits_per_weight"] = sizes["file"]["bits_per_weight"]
    report["targeted"] = sizes["targeted"]
    report["file"] = sizes["file"]
    for record in report.get("layers", []):
        record.update(sizes["layers"].get(record["name"], {}))
    return report

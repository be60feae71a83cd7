"""Packed low-bit / N:M exports: bit-exact round trips, sizes in the
report, and files that fail loudly when damaged."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Wav2Vec2Model, WhisperForConditionalGeneration

import sb_compress
from sb_compress import Plan
from sb_compress.cli import main
from sb_compress.export import CompressedFormatError
from sb_compress.export.pack import (
    LAYOUT_KEY,
    PACKED_FILE,
    pack_bits,
    unpack_bits,
)
from sb_compress.export.recipe import export_plan


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8])
def test_bit_streams_round_trip(width):
    values = torch.randint(0, 2**width, (37,))
    packed = pack_bits(values, width)
    assert packed.numel() == -(-37 * width // 8)
    assert torch.equal(unpack_bits(packed, width, 37), values)


def _wav2vec2(tiny_sources):
    return Wav2Vec2Model.from_pretrained(tiny_sources["wav2vec2"]).eval()


def _bits_equal(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def _export(model, modifiers, folder):
    plan = Plan(model, modifiers)
    plan.prepare()
    plan.harden()
    report = export_plan(plan, str(folder))
    return plan, report


COMBINATIONS = [
    (bits, nm)
    for bits in (8, 4, 3, 2, None)
    for nm in (None, (2, 4), (1, 4), (4, 8))
    if bits or nm
]


@pytest.mark.parametrize("bits, nm", COMBINATIONS)
def test_pack_then_load_is_bit_exact_for_every_bits_and_nm(
    tiny_sources, tmp_path, bits, nm
):
    model = _wav2vec2(tiny_sources)
    modifiers = []
    if nm:
        modifiers.append({"method": "nm", "n": nm[0], "m": nm[1]})
    if bits:
        modifiers.append({"method": "quant", "bits": bits, "group_size": 32})
    plan, report = _export(model, modifiers, tmp_path)
    loaded = sb_compress.load_compressed(str(tmp_path))
    for spec in plan.modifiers[-1].layers:
        expected = spec.module.weight.detach()
        assert _bits_equal(loaded.get_submodule(spec.name).weight, expected)
    x = torch.randn(1, 3200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(
            loaded(x).last_hidden_state, model(x).last_hidden_state
        )
    assert report["format"] == "packed"
    assert not (tmp_path / "model.safetensors").exists()


def test_whisper_encoder_and_decoder_pack_and_reload_exactly(
    tiny_sources, tmp_path
):
    model = WhisperForConditionalGeneration.from_pretrained(
        tiny_sources["whisper"]
    ).eval()
    _export(
        model,
        [{"method": "nm"}, {"method": "quant", "bits": 4, "group_size": 16}],
        tmp_path,
    )
    loaded = sb_compress.load_compressed(str(tmp_path))
    features = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        expected = model(features, decoder_input_ids=tokens).logits
        assert torch.equal(
            loaded(features, decoder_input_ids=tokens).logits, expected
        )


def test_report_has_bytes_and_bits_per_weight_of_targets_and_file(
    tiny_sources, tmp_path
):
    _, report = _export(
        _wav2vec2(tiny_sources),
        [{"method": "nm"}, {"method": "quant", "bits": 4}],
        tmp_path,
    )
    on_disk = json.loads((tmp_path / "compression_report.json").read_text())
    targeted, whole = on_disk["targeted"], on_disk["file"]
    weights = 12 * 64 * 64 + 2 * 2 * 64 * 128 - 4 * 64 * 64
    # 2 kept codes of 4 bits + 2 indices of 2 bits per 4 weights, fp16 scales
    rows = sum(r["shape"][0] for r in on_disk["layers"])
    assert targeted["bytes_on_disk"] == weights * 3 // 8 + 2 * rows
    assert targeted["bits_per_weight"] == pytest.approx(
        8 * targeted["bytes_on_disk"] / weights
    )
    assert whole["bytes_on_disk"] == os.path.getsize(tmp_path / PACKED_FILE)
    assert on_disk["bits_per_weight"] == whole["bits_per_weight"]
    layer = on_disk["layers"][0]
    assert layer["bits_per_weight"] == pytest.approx(3 + 16 / 64)


def _damage(folder, edit):
    path = os.path.join(folder, PACKED_FILE)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    layout = json.loads(metadata[LAYOUT_KEY])
    edit(tensors, layout, metadata)
    metadata[LAYOUT_KEY] = json.dumps(layout, sort_keys=True)
    save_file(tensors, path, metadata=metadata)


@pytest.fixture(scope="module")
def packed_folder(tiny_sources, tmp_path_factory):
    folder = tmp_path_factory.mktemp("packed") / "int4_24"
    _export(
        Wav2Vec2Model.from_pretrained(tiny_sources["wav2vec2"]).eval(),
        [{"method": "nm"}, {"method": "quant", "bits": 4}],
        folder,
    )
    return folder


def _copy(folder, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return str(target)


CODES = "encoder.layers.1.feed_forward.output_dense.codes"


def test_truncated_packed_file_fails_naming_the_tensor(packed_folder, tmp_path):
    folder = _copy(packed_folder, tmp_path)
    path = os.path.join(folder, PACKED_FILE)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(CompressedFormatError, match="is truncated: tensor '"):
        sb_compress.load_compressed(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t, lay, m: t.pop(CODES), f"tensor '{CODES}' is missing"),
        (
            lambda t, lay, m: t.__setitem__(CODES, t[CODES][:-1].clone()),
            f"tensor '{CODES}' is uint8 [2047], expected uint8 [2048]",
        ),
        (
            lambda t, lay, m: t[CODES].__setitem__(0, t[CODES][0] ^ 1),
            f"tensor '{CODES}' is corrupt (CRC-32 mismatch)",
        ),
        (
            lambda t, lay, m: lay["layers"][CODES[:-6]].__setitem__("bits", 2),
            f"tensor '{CODES}' is uint8 [2048], expected uint8 [1024]",
        ),
        (
            lambda t, lay, m: lay.__setitem__("drop_decoder", True),
            "the layout does not match its SHA-256",
        ),
    ],
    ids=["missing", "wrong_shape", "corrupted", "edited_bits", "edited"],
)
def test_damaged_packed_file_fails_to_load_with_a_message(
    packed_folder, tmp_path, edit, message
):
    folder = _copy(packed_folder, tmp_path)
    _damage(folder, edit)
    with pytest.raises(CompressedFormatError) as error:
        sb_compress.load_compressed(folder)
    assert message in str(error.value)


def test_cli_oneshot_quant_packed_loads_back_exactly(tiny_sources, tmp_path):
    output = tmp_path / "out"
    code = main(
        [
            "oneshot",
            "--source",
            tiny_sources["wav2vec2"],
            "--method",
            "quant",
            "--bits",
            "4",
            "--group-size",
            "32",
            "--nm",
            "2:4",
            "--output",
            str(output),
            "--packed",
        ]
    )
    assert code == 0
    report = json.loads((output / "compression_report.json").read_text())
    assert report["format"] == "packed" and report["method"] == "nm+quant"
    assert report["targeted"]["bits_per_weight"] == pytest.approx(3.5)
    assert (output / "preprocessor_config.json").exists()
    loaded = sb_compress.load_compressed(str(output))
    source = _wav2vec2(tiny_sources)
    plan = Plan(
        source,
        [{"method": "nm"}, {"method": "quant", "bits": 4, "group_size": 32}],
    )
    plan.prepare()
    for spec in plan.modifiers[1].layers:
        weight = loaded.get_submodule(spec.name).weight
        assert _bits_equal(weight, spec.module.weight.detach())


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--bits", "5"], "invalid choice: 5"),
        (
            ["--group-size", "48"],
            "--group-size 48 does not divide "
            "in_features = 64 of encoder.layers.0.attention.q_proj",
        ),
        (["--nm", "5:4"], "N must be in [1, M]"),
        (["--nm", "2-4"], "is not N:M"),
        (["--sparsity", "0.5"], "--sparsity does not apply to --method quant"),
    ],
)
def test_cli_bad_quant_settings_exit_2_with_one_line(
    tiny_sources, tmp_path, capsys, arguments, message
):
    output = tmp_path / "out"
    code = main(
        [
            "oneshot",
            "--source",
            tiny_sources["wav2vec2"],
            "--method",
            "quant",
            "--output",
            str(output),
            *arguments,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_packed_flag_needs_method_quant(tiny_sources, tmp_path, capsys):
    code = main(
        [
            "oneshot",
            "--source",
            tiny_sources["wav2vec2"],
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--packed",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "--packed needs --method quant" in capsys.readouterr().err

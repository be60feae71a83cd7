"""Shrunk exports: smaller for real, same outputs, loud when corrupted."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import sb_compress
from sb_compress import Plan
from sb_compress.export import CompressedFormatError
from sb_compress.export.save import load_source
from sb_compress.export.shrink import count_params, save_shrunk


def _pruned(source, seed=0):
    """A gated model with uneven gates, layer 1's attention removed and
    layer 0 left with one head."""
    model = load_source(source)
    if model.config.model_type == "whisper":
        model = model.model
        model.decoder = None
    plan = Plan(model, [{"method": "hardconcrete", "sparsity": 0.5}])
    plan.prepare()
    modifier = plan.modifiers[0]
    torch.manual_seed(seed)
    with torch.no_grad():
        for gate in modifier.all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
        removed = modifier.block_gates[("attention", 1)]
        removed.block.log_alpha.fill_(-10.0)
        single = modifier.block_gates[("attention", 0)]
        single.block.log_alpha.fill_(10.0)
        single.head.log_alpha.copy_(torch.tensor([-10.0, 10.0, -10.0, -10.0]))
        single.v.log_alpha[16:32].fill_(10.0)
    return model.eval(), plan, modifier


def _run(model, inputs):
    with torch.no_grad():
        if model.config.model_type == "whisper":
            return model.encoder(inputs).last_hidden_state
        return model(inputs).last_hidden_state


def _inputs(family):
    torch.manual_seed(3)
    if family == "whisper":
        return torch.randn(2, 80, 3000)
    return torch.randn(2, 6000)


@pytest.fixture(scope="module")
def shrunk_folders(tiny_sources, tmp_path_factory):
    """Each family pruned, its masked outputs, and its shrunk folder."""
    root = tmp_path_factory.mktemp("shrunk")
    out = {}
    for family in ("wav2vec2", "hubert", "wavlm", "whisper"):
        model, plan, modifier = _pruned(tiny_sources[family])
        folder = str(root / family)
        save_shrunk(plan, folder)
        inputs = _inputs(family)
        out[family] = (folder, inputs, _run(model, inputs), modifier)
    return out


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_shrunk_model_loads_with_masked_outputs(shrunk_folders, family):
    folder, inputs, expected, modifier = shrunk_folders[family]
    structure = modifier.structure()
    assert structure["1"]["attention"] is None
    assert structure["0"]["attention"]["heads"] == [1]
    qk_dims = {
        len(d)
        for s in structure.values()
        if s["attention"]
        for d in s["attention"]["qk"]
    }
    assert len(qk_dims) >= 1
    model = sb_compress.load_compressed(folder)
    assert _run(model, inputs).shape == expected.shape
    assert torch.allclose(_run(model, inputs), expected, atol=1e-4)
    with open(os.path.join(folder, "compression_report.json")) as f:
        report = json.load(f)
    assert report["format"] == "shrunk"
    assert report["params_total"] == count_params(model)
    assert report["params_total"] < report["params_dense"]
    assert report["layers_structure"][1]["heads"] == 0


def test_shrunk_model_serves_as_speechbrain_wrapper_model(
    tiny_sources, shrunk_folders, tmp_path
):
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    folder, inputs, expected, _ = shrunk_folders["wav2vec2"]
    wrapper = Wav2Vec2(
        tiny_sources["wav2vec2"], save_path=str(tmp_path), freeze=True
    )
    wrapper.model = sb_compress.load_compressed(folder)
    wrapper.eval()
    with torch.no_grad():
        out = wrapper(inputs)
    assert torch.allclose(out, expected, atol=1e-4)


def _copy(folder, tmp_path):
    import shutil

    target = str(tmp_path / "copy")
    shutil.copytree(folder, target)
    return target


def test_missing_tensor_is_named(shrunk_folders, tmp_path):
    folder = _copy(shrunk_folders["wav2vec2"][0], tmp_path)
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    del tensors["encoder.layers.0.feed_forward.output_dense.weight"]
    save_file(tensors, path)
    with pytest.raises(CompressedFormatError, match="output_dense.weight"):
        sb_compress.load_compressed(folder)


def test_wrong_shape_is_named(shrunk_folders, tmp_path):
    folder = _copy(shrunk_folders["wavlm"][0], tmp_path)
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    key = "encoder.layers.0.attention.q_proj.weight"
    tensors[key] = torch.cat([tensors[key], tensors[key][:1]])
    save_file(tensors, path)
    with pytest.raises(CompressedFormatError, match=r"q_proj\.weight.*shape"):
        sb_compress.load_compressed(folder)


def test_edited_config_is_named(shrunk_folders, tmp_path):
    folder = _copy(shrunk_folders["hubert"][0], tmp_path)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    structure = config["sb_compress_structure"]
    layer = next(k for k, v in structure.items() if v["ffn"])
    structure[layer]["ffn"] = structure[layer]["ffn"][:-1]
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(CompressedFormatError, match="intermediate_dense"):
        sb_compress.load_compressed(folder)
    structure[layer]["ffn"] = [10**6]
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(CompressedFormatError, match=rf"\['{layer}'\]\.ffn"):
        sb_compress.load_compressed(folder)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_conv_channels_shrink_exactly(tiny_sources, tmp_path, family):
    model = load_source(tiny_sources[family])
    structures = ["heads", "dims", "ffn", "layers", "conv"]
    plan = Plan(
        model,
        [{"method": "hardconcrete", "sparsity": 0.5, "structures": structures}],
    )
    plan.prepare()
    modifier = plan.modifiers[0]
    torch.manual_seed(0)
    with torch.no_grad():
        for gate in modifier.all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
    model.eval()
    inputs = _inputs(family)
    expected = _run(model, inputs)
    shrunk = save_shrunk(plan, str(tmp_path / "out"))
    kept = [len(c) for c in modifier.structure()["conv"]]
    assert all(0 < k < 32 for k in kept)
    dense = count_params(model) - sum(
        g.log_alpha.numel() for g in modifier.all_gates()
    )
    predicted = dense - modifier.dense_params()
    predicted += float(modifier.expected_params(deterministic=True))
    assert count_params(shrunk) == int(round(predicted))
    loaded = sb_compress.load_compressed(str(tmp_path / "out"))
    assert torch.allclose(_run(loaded, inputs), expected, atol=1e-4)


def test_conv_gates_refuse_whisper(tiny_sources):
    model = load_source(tiny_sources["whisper"])
    with pytest.raises(ValueError, match="structures: 'conv'"):
        Plan(
            model,
            [
                {
                    "method": "hardconcrete",
                    "sparsity": 0.5,
                    "structures": ["heads", "conv"],
                }
            ],
        )


def test_plan_on_speechbrain_whisper_encoder_shrinks_into_its_wrapper(
    tiny_sources, tmp_path
):
    from speechbrain.integrations.huggingface.whisper import Whisper

    wrapper = Whisper(
        tiny_sources["whisper"],
        save_path=str(tmp_path / "hub"),
        encoder_only=True,
        freeze=True,
    )
    plan = Plan(wrapper, [{"method": "hardconcrete", "sparsity": 0.5}])
    plan.prepare()
    torch.manual_seed(0)
    with torch.no_grad():
        for gate in plan.modifiers[0].all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
    wrapper.eval()
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        expected = wrapper(audio)
    gated = count_params(wrapper.model)
    save_shrunk(plan, str(tmp_path / "out"))
    wrapper.model = sb_compress.load_compressed(str(tmp_path / "out"))
    assert wrapper.model.decoder is None
    assert count_params(wrapper.model) < gated
    with torch.no_grad():
        assert torch.allclose(wrapper(audio), expected, atol=1e-4)


def test_report_cli_shows_kept_heads_dims_and_widths_and_plots_them(
    shrunk_folders, tmp_path, capsys
):
    from PIL import Image

    from sb_compress.cli import main

    folder, _, _, modifier = shrunk_folders["wav2vec2"]
    structure = modifier.structure()
    png = str(tmp_path / "structure.png")
    assert main(["report", folder, "--plot", png]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line}
    ffn0 = len(structure["0"]["ffn"] or [])
    qk0 = sum(len(d) for d in structure["0"]["attention"]["qk"])
    assert lines["layer"] == [
        "layer",
        "heads",
        "q/k",
        "dims",
        "v",
        "dims",
        "FFN",
        "width",
    ]
    assert lines["0"][1:3] == ["1/4", f"{qk0}/64"]
    assert lines["0"][4] == f"{ffn0}/128"
    assert lines["1"][1:4] == ["0/4", "0/64", "0/64"]
    assert "structure plot" in out
    with Image.open(png) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    markdown = open(os.path.join(folder, "compression_report.md")).read()
    assert "## Structure (kept/original)" in markdown
    assert f"| 0 | 1/4 | {qk0}/64 |" in markdown

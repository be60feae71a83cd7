"""Foldable encoders: unfold maps, shared blocks, folded exports."""

import json

import pytest
import torch
from safetensors import safe_open

import sb_compress
from sb_compress.export import CompressedFormatError
from sb_compress.export.save import load_source
from sb_compress.methods.fold import (
    FoldError,
    fold_encoder,
    fold_info,
    save_folded,
    set_depth,
    unfold_order,
)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("cyclic", [0, 1, 2, 0, 1, 2, 0, 1]),
        ("repeat-each", [0, 0, 0, 1, 1, 1, 2, 2]),
        ("repeat-top", [0, 1, 2, 2, 2, 2, 2, 2]),
    ],
)
def test_unfold_maps_give_the_documented_order(mode, expected):
    assert unfold_order(3, 8, mode) == expected
    assert unfold_order(3, 3, mode) == [0, 1, 2]


def test_bad_fold_settings_fail_with_a_message():
    with pytest.raises(FoldError, match="unfold map 'spiral'"):
        unfold_order(2, 4, "spiral")
    with pytest.raises(FoldError, match="below the 3 physical blocks"):
        unfold_order(3, 2)


def _encoder(family, tiny_sources):
    model = load_source(tiny_sources[family])
    if family == "whisper":
        model = model.model
        model.decoder = None
    return model.eval()


def _run(model, family):
    torch.manual_seed(1)
    with torch.no_grad():
        if family == "whisper":
            return model.encoder(torch.randn(1, 80, 3000)).last_hidden_state
        return model(torch.randn(1, 6000)).last_hidden_state


def _params(model):
    return sum({id(p): p.numel() for p in model.parameters()}.values())


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_folded_model_has_its_physical_count_and_shares_blocks(
    tiny_sources, family
):
    model = _encoder(family, tiny_sources)
    dense = _params(model)
    # the block left out (layer 1; WavLM's layer 0 holds extra parameters)
    block = sum(p.numel() for p in model.encoder.layers[1].parameters())
    fold_encoder(model, 1, max_depth=3)
    assert len(model.encoder.layers) == 3
    assert model.encoder.layers[0] is model.encoder.layers[2]
    # the tiny models have 2 layers: one block fewer
    assert _params(model) == dense - block
    assert fold_info(model)["seeds"] == [0]


def test_gradients_from_every_logical_position_reach_the_shared_block(
    tiny_sources,
):
    model = _encoder("wav2vec2", tiny_sources)
    fold_encoder(model, 1, max_depth=3)
    model.train()
    model.config.layerdrop = 0.0
    block = model.encoder.layers[0]
    outputs = []

    def keep(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden.retain_grad()
        outputs.append(hidden)

    hook = block.register_forward_hook(keep)
    out = model(torch.randn(1, 6000)).last_hidden_state
    out.pow(2).sum().backward()
    hook.remove()
    # one call per logical position, each on the path of the loss
    assert len(outputs) == 3
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in outputs)
    weight = block.feed_forward.output_dense.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "whisper"])
def test_export_then_load_at_each_depth_gives_the_same_outputs(
    tiny_sources, tmp_path, family
):
    model = _encoder(family, tiny_sources)
    fold_encoder(model, 1, max_depth=3, mode="cyclic")
    folder = tmp_path / "folded"
    report = save_folded(model, str(folder))
    assert report["format"] == "folded"
    assert report["params_physical"] < report["params_logical_max_depth"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    layer_keys = {
        k.split("encoder.layers.")[1].split(".")[0]
        for k in keys
        if k.startswith("encoder.layers.")
    }
    assert layer_keys == {"0"}  # the one physical block, once
    assert not any("sb_compress_blocks" in k for k in keys)
    for depth in (1, 2, 3):
        set_depth(model, depth)
        loaded = sb_compress.load_compressed(str(folder), depth=depth)
        assert len(loaded.encoder.layers) == depth
        assert torch.allclose(
            _run(loaded, family), _run(model, family), atol=1e-5
        )


def test_depth_outside_the_range_fails_clearly(tiny_sources, tmp_path):
    model = _encoder("wav2vec2", tiny_sources)
    fold_encoder(model, 1, max_depth=3)
    with pytest.raises(FoldError, match="unfolds to 1..3 layers"):
        set_depth(model, 4)
    folder = tmp_path / "folded"
    save_folded(model, str(folder))
    with pytest.raises(CompressedFormatError, match="depth 5"):
        sb_compress.load_compressed(str(folder), depth=5)
    config = json.loads((folder / "config.json").read_text())
    assert config["sb_compress_fold"]["max_depth"] == 3


def test_wavlm_first_seed_must_be_layer_zero(tiny_sources):
    model = _encoder("wavlm", tiny_sources)
    with pytest.raises(FoldError, match="first seed must be layer 0"):
        fold_encoder(model, 1, seeds=[1])

"""The foldable-encoder recipes on the embedded samples (marked: recipe).

``hparams/fold.yaml`` folds the tiny wav2vec2 (2 layers) to 1 physical
block unfolded to 3 logical layers; ``hparams/fold_conformer.yaml``
trains a small Conformer CTC model from scratch with 2 physical blocks
unfolded to 4 layers.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from speechbrain.inference.ASR import EncoderASR
from speechbrain.lobes.models.transformer.TransformerASR import (
    TransformerASR,
)

import sb_compress

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe


def _run(script, hparams, output, *extra):
    command = [
        sys.executable,
        os.path.join(RECIPE, script),
        os.path.join(RECIPE, "hparams", hparams),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--output_folder={output}",
        "--device=cpu",
        *extra,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    folder = output / "compressed"
    report = json.loads((folder / "compression_report.json").read_text())
    return folder, report


def _params(model):
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def _keys(path):
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_fold_recipe_folds_wav2vec2_and_loads_at_every_depth(tmp_path):
    folder, report = _run(
        "train.py",
        "fold.yaml",
        tmp_path,
        f"--wav2vec2_hub={os.path.join(SAMPLES, 'tiny_wav2vec2')}",
        "--number_of_epochs=1",
        "--batch_size=12",
        "--physical=1",
        "--max_depth=3",
    )
    assert report["format"] == "folded" and report["method"] == "fold"
    assert report["physical_blocks"] == 1 and report["max_depth"] == 3
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["wer_depth"] == 3
    assert report["params_physical"] < report["params_logical"]["2"]
    assert report["params_logical"]["3"] == report["params_dense"]
    log = (tmp_path / "train_log.txt").read_text()
    assert "fold kl" in log and "fold loss_depth1" in log
    keys = _keys(folder / "model.safetensors")
    layers = {k.split(".")[2] for k in keys if k.startswith("encoder.layers.")}
    assert layers == {"0"}  # the one physical block, once
    audio = torch.randn(1, 16000)
    for depth in (1, 2, 3):
        model = sb_compress.load_compressed(str(folder), depth=depth)
        assert len(model.encoder.layers) == depth
        assert _params(model) == report["params_physical"]
        with torch.no_grad():
            assert model(audio).last_hidden_state.shape[-1] == 64
    assert (folder / "recipe_modules.safetensors").is_file()
    # the recipe's SpeechBrain hub folder serves the largest depth
    asr = EncoderASR.from_hparams(
        source=str(tmp_path / "hub"), savedir=str(tmp_path / "hub_load")
    )
    assert len(asr.mods.encoder.backbone.encoder.layers) == 3
    assert asr.encode_batch(audio, torch.ones(1)).shape[-1] == 30


def test_fold_conformer_recipe_trains_from_scratch_and_loads_at_every_depth(
    tmp_path,
):
    folder, report = _run(
        "train_conformer.py",
        "fold_conformer.yaml",
        tmp_path,
        "--number_of_epochs=2",
        "--d_model=32",
        "--d_ffn=64",
        "--num_encoder_layers=4",
        "--physical=2",
        "--n_warmup_steps=10",
    )
    assert report["format"] == "folded" and report["model_type"] == "conformer"
    assert report["min_depth"] == 2 and report["max_depth"] == 4
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["step"] == 4
    others = _keys(folder / "recipe_modules.safetensors")
    assert {k.split(".")[0] for k in others} == {"CNN", "ctc_lin"}
    features = torch.randn(2, 25, 640)
    lengths = torch.tensor([1.0, 0.6])
    outputs = {}
    for depth in (2, 3, 4):
        model = sb_compress.load_compressed(str(folder), depth=depth)
        assert isinstance(model, TransformerASR)
        assert len(model.encoder.layers) == depth
        assert _params(model) == report["params_physical"]
        with torch.no_grad():
            outputs[depth] = model.encode(features, lengths)
    assert outputs[4].shape == (2, 25, 32)
    assert not torch.allclose(outputs[2], outputs[4])

"""The structured-pruning recipe on the embedded samples (minutes: marked).

Four optimizer steps cannot move HardConcrete gates from the paper's
initialisation (p0 = 0.01) to pruning, so these runs start the gates at
p0 = 0.2: the deterministic masks prune from the first step and the export
is checked end to end.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

import sb_compress

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe


def test_structured_recipe_prunes_and_reports(tmp_path):
    command = [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", "structured.yaml"),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--wav2vec2_hub={os.path.join(SAMPLES, 'tiny_wav2vec2')}",
        f"--output_folder={tmp_path}",
        "--number_of_epochs=1",
        "--device=cpu",
        "--init_prob=0.2",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    path = tmp_path / "compressed" / "compression_report.json"
    report = json.loads(path.read_text())
    assert report["method"] == "hardconcrete+distill"
    assert report["format"] == "shrunk"
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["params_nonzero"] < report["params_targeted"]
    assert report["params_total"] < report["params_dense"]
    assert report["original"]["heads"] == 4
    assert len(report["layers_structure"]) >= 2
    log = (tmp_path / "train_log.txt").read_text()
    assert "compression achieved_sparsity" in log
    folder = str(tmp_path / "compressed")
    shrunk = sb_compress.load_compressed(folder)
    params = sum(p.numel() for p in shrunk.parameters())
    assert params == report["params_total"]
    for name in ("recipe_modules.safetensors", "label_encoder.txt"):
        assert (tmp_path / "compressed" / name).is_file()
    assert (tmp_path / "compressed" / "compression_report.md").is_file()
    card = (tmp_path / "compressed" / "README.md").read_text()
    assert "- structured-pruning" in card and "| test-clean |" in card
    wrapper = Wav2Vec2(
        os.path.join(SAMPLES, "tiny_wav2vec2"), save_path=str(tmp_path / "w")
    )
    wrapper.model = shrunk
    with torch.no_grad():
        out = wrapper(torch.randn(1, 16000))
    assert out.shape[0] == 1 and torch.isfinite(out).all()


def test_task_agnostic_distillation_recipe_shrinks_without_labels(tmp_path):
    command = [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", "structured_distill.yaml"),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--wav2vec2_hub={os.path.join(SAMPLES, 'tiny_wav2vec2')}",
        f"--output_folder={tmp_path}",
        "--number_of_epochs=1",
        "--device=cpu",
        "--init_prob=0.2",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(
        (tmp_path / "compressed" / "compression_report.json").read_text()
    )
    assert report["format"] == "shrunk"
    assert report["method"] == "hardconcrete+distill"
    assert report["wer"] is None
    assert report["params_total"] < report["params_dense"]
    assert not list(tmp_path.glob("wer_*.txt"))
    assert not (tmp_path / "compressed" / "recipe_modules.safetensors").exists()
    log = (tmp_path / "train_log.txt").read_text()
    assert "valid loss" in log and "test loss" in log
    assert "WER" not in log
    shrunk = sb_compress.load_compressed(str(tmp_path / "compressed"))
    assert sum(p.numel() for p in shrunk.parameters()) == report["params_total"]

"""The LibriSpeech CTC recipe on the embedded samples (minutes: marked)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe


def _command(hparams, output, epochs, hub="tiny_wav2vec2", launcher=None):
    command = launcher or [sys.executable]
    return command + [
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", hparams),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--wav2vec2_hub={os.path.join(SAMPLES, hub)}",
        f"--output_folder={output}",
        f"--number_of_epochs={epochs}",
        "--device=cpu",
    ]


def _run(command, timeout=600):
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _report(output):
    path = os.path.join(output, "compressed", "compression_report.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize(
    "hparams, hub, method",
    [
        ("prune.yaml", "tiny_wav2vec2", "pinch"),
        ("magnitude.yaml", "tiny_wav2vec2", "magnitude"),
        ("cluster.yaml", "tiny_wav2vec2", "kmeans"),
        ("prune_whisper.yaml", "tiny_whisper", "pinch"),
        ("quant.yaml", "tiny_wav2vec2", "nm+quant"),
        ("quant_extreme.yaml", "tiny_wav2vec2", "nm+quant"),
    ],
)
def test_recipe_compresses_and_reports_on_the_embedded_samples(
    tmp_path, hparams, hub, method
):
    command = _command(hparams, tmp_path, epochs=1, hub=hub)
    if method == "pinch":
        # A ramp needs more steps than the debug run has to be followed.
        command.append("--compression_ramp_steps=0")
    _run(command)
    report = _report(tmp_path)
    assert report["method"] == method
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["test_wer"] == report["wer"]["test-clean"]
    assert report["params_nonzero"] < report["params_targeted"]
    if method == "kmeans":
        assert report["achieved_sparsity"] == pytest.approx(0.5, abs=0.005)
    if method == "pinch":
        assert report["achieved_sparsity"] > 0.3
    log = (tmp_path / "train_log.txt").read_text()
    assert "compression achieved_sparsity" in log
    assert "compression params_nonzero" in log
    wer_file = tmp_path / "wer_test-clean.txt"
    assert "%WER" in wer_file.read_text()
    compressed = tmp_path / "compressed"
    assert (compressed / "label_encoder.txt").exists()
    assert (compressed / "recipe_modules.safetensors").exists()


def test_compressed_encoder_loads_through_speechbrain_wrapper(tmp_path):
    _run(_command("cluster.yaml", tmp_path / "run", epochs=1))
    folder = str(tmp_path / "run" / "compressed")
    wrapper = Wav2Vec2(folder, save_path=str(tmp_path / "hub"))
    weights = load_file(os.path.join(folder, "model.safetensors"))
    name = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    loaded = wrapper.model.state_dict()[name]
    assert torch.equal(loaded, weights[name])
    assert float((loaded == 0).float().mean()) > 0.2
    assert wrapper(torch.randn(1, 8000)).shape[-1] == 64


def test_interrupted_recipe_resumes_to_the_same_compressed_model(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(_command("prune.yaml", straight, epochs=2))
    first = _command("prune.yaml", resumed, epochs=2)
    result = subprocess.run(
        first + ["--optimizer_step_limit=4"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _run(first)
    left = load_file(str(straight / "compressed" / "model.safetensors"))
    right = load_file(str(resumed / "compressed" / "model.safetensors"))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key
    assert _report(straight)["step"] == _report(resumed)["step"] == 8


def test_recipe_under_torchrun_with_gloo_writes_once(tmp_path):
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
    ]
    command = _command("prune.yaml", tmp_path, epochs=1, launcher=launcher)
    _run(command + ["--distributed_backend=gloo"])
    report = _report(tmp_path)
    assert report["step"] == 2
    assert sorted(os.listdir(tmp_path / "compressed")) == [
        "README.md",
        "compression_report.json",
        "compression_report.md",
        "config.json",
        "label_encoder.txt",
        "model.safetensors",
        "preprocessor_config.json",
        "recipe_modules.json",
        "recipe_modules.safetensors",
    ]

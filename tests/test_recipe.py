"""The LibriSpeech CTC recipe on the embedded samples (minutes: marked)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

import sb_compress

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe

#: HardConcrete gates start closed to pruning (p0 = 0.01, log_alpha 4.6);
#: Adam moves log_alpha by about its learning rate a step, so the debug
#: run's four steps prune with the target at once and a raised rate.
STRUCTURED_DEBUG = ["--ramp_steps=0", "--compression_lr=2", "--multiplier_lr=2"]


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


def _unlabelled_csvs(folder):
    """``ID,duration,wav`` CSVs of the embedded samples (no transcripts);
    returns the overrides that make the recipe read them."""
    import soundfile

    splits = {"train": "train-clean-100", "valid": "dev-clean"}
    splits["test"] = "test-clean"
    paths = {}
    for key, split in splits.items():
        root = os.path.join(SAMPLES, "mini_librispeech", split)
        rows = ["ID,duration,wav"]
        for base, _, files in sorted(os.walk(root)):
            for name in sorted(f for f in files if f.endswith(".flac")):
                wav = os.path.join(base, name)
                duration = soundfile.info(wav).duration
                rows.append(f"{name[:-5]},{duration},{wav}")
        paths[key] = str(folder / f"{split}.csv")
        with open(paths[key], "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return [
        "--skip_prep=True",
        f"--train_csv={paths['train']}",
        f"--valid_csv={paths['valid']}",
        f"--test_csv=[{paths['test']}]",
    ]


def _check_transcribed(output, report, method):
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["test_wer"] == report["wer"]["test-clean"]
    assert "%WER" in (output / "wer_test-clean.txt").read_text()
    compressed = output / "compressed"
    assert (compressed / "label_encoder.txt").exists()
    assert (compressed / "recipe_modules.safetensors").exists()
    if method == "kmeans":
        assert report["achieved_sparsity"] == pytest.approx(0.5, abs=0.005)
    if method == "pinch":
        assert report["achieved_sparsity"] > 0.3


def _check_distillation_only(output, report):
    assert report["wer"] is None and report["test_wer"] is None
    assert not list(output.glob("wer_*.txt"))
    compressed = output / "compressed"
    assert not (compressed / "recipe_modules.safetensors").exists()
    assert not (compressed / "label_encoder.txt").exists()
    log = (output / "train_log.txt").read_text()
    assert "valid loss" in log and "test loss" in log
    assert "WER" not in log and "CER" not in log


def _check_shrunk(output, report):
    """The gates pruned in training and the export is the smaller model."""
    assert report["format"] == "shrunk"
    assert report["modifiers"][0]["init_prob"] == 0.01
    assert report["achieved_sparsity"] > 0.05
    assert report["params_total"] < report["params_dense"]
    original = report["original"]
    layers = report["layers_structure"]
    assert [r["layer"] for r in layers] == [0, 1]
    assert any(
        r.get("ffn_width", 0) < original["ffn_width"]
        or sum(r.get("qk_dims", [])) < original["heads"] * original["head_dim"]
        for r in layers
    )
    folder = str(output / "compressed")
    shrunk = sb_compress.load_compressed(folder)
    params = sum(p.numel() for p in shrunk.parameters())
    assert params == report["params_total"]
    wrapper = Wav2Vec2(
        os.path.join(SAMPLES, "tiny_wav2vec2"), save_path=str(output / "w")
    )
    dense = sum(p.numel() for p in wrapper.model.parameters())
    assert params < dense == report["params_dense"]
    for record in layers:
        attention = shrunk.encoder.layers[record["layer"]].attention
        if record.get("heads"):
            assert attention.q_proj.out_features == sum(record["qk_dims"])
            assert attention.v_proj.out_features == sum(record["v_dims"])
        ffn = shrunk.encoder.layers[record["layer"]].feed_forward
        if record.get("ffn_width"):
            assert ffn.intermediate_dense.out_features == record["ffn_width"]
    card = (output / "compressed" / "README.md").read_text()
    assert "- structured-pruning" in card
    wrapper.model = shrunk
    with torch.no_grad():
        out = wrapper(torch.randn(1, 16000))
    assert out.shape[-1] == 64 and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "hparams, hub, method",
    [
        ("prune.yaml", "tiny_wav2vec2", "pinch"),
        ("magnitude.yaml", "tiny_wav2vec2", "magnitude"),
        ("cluster.yaml", "tiny_wav2vec2", "kmeans"),
        ("prune_whisper.yaml", "tiny_whisper", "pinch"),
        ("quant.yaml", "tiny_wav2vec2", "nm+quant"),
        ("quant_extreme.yaml", "tiny_wav2vec2", "nm+quant"),
        ("structured.yaml", "tiny_wav2vec2", "hardconcrete+distill"),
        ("structured_distill.yaml", "tiny_wav2vec2", "hardconcrete+distill"),
    ],
)
def test_recipe_compresses_and_reports_on_the_embedded_samples(
    tmp_path, hparams, hub, method
):
    output = tmp_path / "run"
    command = _command(hparams, output, epochs=1, hub=hub)
    if method == "pinch":
        # A ramp needs more steps than the debug run has to be followed.
        command.append("--compression_ramp_steps=0")
    if method == "hardconcrete+distill":
        command += STRUCTURED_DEBUG
    distill_only = hparams == "structured_distill.yaml"
    if distill_only:
        command += _unlabelled_csvs(tmp_path)
    _run(command)
    report = _report(output)
    assert report["method"] == method
    assert report["params_nonzero"] < report["params_targeted"]
    log = (output / "train_log.txt").read_text()
    assert "compression achieved_sparsity" in log
    assert "compression params_nonzero" in log
    if distill_only:
        _check_distillation_only(output, report)
    else:
        _check_transcribed(output, report, method)
    if method == "hardconcrete+distill":
        _check_shrunk(output, report)


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

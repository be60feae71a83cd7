"""The Whisper encoder-decoder recipe on the embedded samples (marked)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipe import load_recipe_script
from transformers import WhisperForConditionalGeneration

import sb_compress
from sb_compress.testing import save_tiny_whisper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "whisper")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe


def _command(hparams, output, epochs=1, *extra):
    return [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", hparams),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--whisper_hub={os.path.join(SAMPLES, 'tiny_whisper')}",
        f"--output_folder={output}",
        f"--number_of_epochs={epochs}",
        "--device=cpu",
        "--max_decode_ratio=0.02",
        "--test_beam_size=2",
        *extra,
    ]


def _run(command):
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _report(output):
    path = os.path.join(output, "compressed", "compression_report.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize(
    "hparams, method, format",
    [("prune.yaml", "pinch", "dense"), ("quant.yaml", "nm+quant", "packed")],
)
def test_whisper_recipe_compresses_encoder_and_decoder(
    tmp_path, hparams, method, format
):
    extra = ["--compression_ramp_steps=0"] if method == "pinch" else []
    _run(_command(hparams, tmp_path, 1, *extra))
    report = _report(tmp_path)
    assert report["method"] == method and report["format"] == format
    assert set(report["wer"]) == {"test-clean", "test-other"}
    assert report["achieved_sparsity"] > 0.3
    stacks = {layer["stack"] for layer in report["layers"]}
    roles = {layer["role"] for layer in report["layers"]}
    assert stacks == {"encoder", "decoder"}
    assert {"cross_q", "cross_k", "cross_v", "cross_out"} <= roles
    assert "%WER" in (tmp_path / "wer_test-clean.txt").read_text()
    log = (tmp_path / "train_log.txt").read_text()
    assert "compression achieved_sparsity" in log
    model = sb_compress.load_compressed(str(tmp_path / "compressed"))
    assert type(model).__name__ == "WhisperModel"
    weight = model.decoder.layers[0].encoder_attn.q_proj.weight
    assert float((weight == 0).float().mean()) > 0.3
    hub = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert hub["speechbrain_interface"] == "WhisperASR"
    assert hub["sb_compress_format"] == format
    if format == "packed":
        groups = (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1)
        assert int(groups.max()) <= 2
        assert report["targeted"]["fraction_of_fp32"] < 0.11


def test_interrupted_whisper_recipe_resumes_to_the_same_model(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(_command("prune.yaml", straight, 2))
    first = _command("prune.yaml", resumed, 2)
    # 24 utterances in batches of 8: the first epoch ends at step 3.
    _run(first + ["--optimizer_step_limit=3"])
    _run(first)
    left = load_file(str(straight / "compressed" / "model.safetensors"))
    right = load_file(str(resumed / "compressed" / "model.safetensors"))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key
    assert _report(straight)["step"] == _report(resumed)["step"] == 6


def test_whisper_recipe_distils_from_a_larger_teacher(tmp_path):
    teacher = save_tiny_whisper(str(tmp_path / "teacher"), d_model=96, seed=1)
    output = tmp_path / "run"
    _run(
        _command(
            "quant.yaml",
            output,
            1,
            f"--teacher_hub={teacher}",
            "--distill_weight=0.7",
            "--distill_temperature=2.0",
        )
    )
    log = (output / "train_log.txt").read_text()
    kl = float(log.split("distill_kl: ")[1].split(",")[0].split()[0])
    assert kl > 0
    report = _report(output)
    assert report["format"] == "packed"
    model = sb_compress.load_compressed(str(output / "compressed"))
    assert model.config.d_model == 64


def test_teacher_with_another_vocabulary_fails_before_training(tmp_path):
    teacher = save_tiny_whisper(str(tmp_path / "teacher"))
    model = WhisperForConditionalGeneration.from_pretrained(teacher)
    model.resize_token_embeddings(model.config.vocab_size + 8)
    model.save_pretrained(teacher)
    output = tmp_path / "run"
    command = _command("quant.yaml", output, 1, f"--teacher_hub={teacher}")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode != 0
    assert "must share the student's tokenizer" in result.stdout + result.stderr
    assert not (output / "train_log.txt").exists()


def test_distillation_weight_outside_zero_one_fails_before_training(
    tmp_path,
):
    output = tmp_path / "run"
    command = _command(
        "quant.yaml",
        output,
        1,
        f"--teacher_hub={os.path.join(SAMPLES, 'tiny_whisper')}",
        "--distill_weight=1.5",
    )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode != 0
    message = "distill_weight = 1.5: must be in [0, 1]"
    assert message in result.stdout + result.stderr
    assert not (output / "train_log.txt").exists()


def test_distillation_loss_is_the_kl_over_the_unpadded_tokens():
    recipe = load_recipe_script(os.path.join(RECIPE, "train.py"))
    distillation_loss = recipe.distillation_loss
    torch.manual_seed(0)
    teacher = torch.log_softmax(torch.randn(2, 5, 7), -1)
    student = torch.log_softmax(torch.randn(2, 5, 7), -1)
    lengths = torch.tensor([1.0, 0.4])
    assert float(distillation_loss(teacher, teacher, lengths)) == 0
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    expected = (kl[0].sum() + kl[1, :2].sum()) / 7
    loss = distillation_loss(student, teacher, lengths)
    assert torch.allclose(loss, expected)
    changed = student.clone()
    changed[1, 2:] = 0
    assert torch.equal(distillation_loss(changed, teacher, lengths), loss)

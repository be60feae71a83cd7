"""SpeechBrain hub folders of the CTC recipe's exports (minutes: marked).

The recipe runs on the embedded samples (self-pinching gates: dense with
zeros; HardConcrete: shrunk; int4 + 2:4: packed); its hub folder then loads
through ``EncoderASR.from_hparams`` from the local folder, and its output
equals the recipe's own model (SpeechBrain wrapper, head) on the same
audio.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from safetensors.torch import load_file

import sb_compress
from sb_compress.cli import main

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
SAMPLES = os.path.join(ROOT, "tests", "samples")

pytestmark = pytest.mark.recipe

RUNS = {
    "prune.yaml": (["--compression_ramp_steps=0"], "dense"),
    "prune_whisper.yaml": (["--compression_ramp_steps=0"], "dense"),
    "structured.yaml": (["--init_prob=0.2"], "shrunk"),
    "quant.yaml": ([], "packed"),
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def recipe_run(request, tmp_path_factory):
    hparams = request.param
    extra, format = RUNS[hparams]
    hub = "tiny_whisper" if "whisper" in hparams else "tiny_wav2vec2"
    output = tmp_path_factory.mktemp(hparams.split(".")[0])
    command = [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", hparams),
        f"--data_folder={os.path.join(SAMPLES, 'mini_librispeech')}",
        f"--wav2vec2_hub={os.path.join(SAMPLES, hub)}",
        f"--output_folder={output}",
        "--number_of_epochs=1",
        "--device=cpu",
        *extra,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return output, format


def _recipe_model(output):
    """The recipe's own wrapper and head, rebuilt from its hparams and the
    exported weights."""
    with open(output / "hyperparams.yaml") as f:
        hparams = load_hyperpyyaml(f)
    folder = str(output / "compressed")
    wrapper = hparams["wav2vec2"]
    wrapper.model = sb_compress.load_compressed(folder)
    state = load_file(os.path.join(folder, "recipe_modules.safetensors"))
    for name in ("enc", "ctc_lin"):
        module = hparams[name]
        prefix = name + "."
        module.load_state_dict(
            {
                k[len(prefix) :]: v
                for k, v in state.items()
                if k.startswith(prefix)
            }
        )
    modules = [wrapper, hparams["enc"], hparams["ctc_lin"]]
    for module in modules:
        module.eval()

    def forward(wavs, wav_lens):
        if hparams.get("encoder_pads_to_30s", False):
            feats = wrapper(wavs)
            frames = -(-wavs.shape[1] // hparams["samples_per_frame"])
            feats = feats[:, :frames]
        else:
            feats = wrapper(wavs, wav_lens)
        return hparams["ctc_lin"](hparams["enc"](feats)).log_softmax(-1)

    return forward


def test_recipe_writes_a_hub_folder_that_encoderasr_loads(recipe_run, tmp_path):
    from speechbrain.inference.ASR import EncoderASR

    output, format = recipe_run
    hub = output / "hub"
    assert sorted(os.listdir(hub)) == [
        "README.md",
        "config.json",
        "encoder.ckpt",
        "hyperparams.yaml",
        "tokenizer.ckpt",
    ]
    config = json.loads((hub / "config.json").read_text())
    assert config["speechbrain_interface"] == "EncoderASR"
    assert config["sb_compress_format"] == format
    asr = EncoderASR.from_hparams(source=str(hub), savedir=str(tmp_path / "s"))
    torch.manual_seed(0)
    wavs = torch.randn(2, 16000)
    wav_lens = torch.tensor([1.0, 0.75])
    with torch.no_grad():
        got = asr.encode_batch(wavs, wav_lens)
        expected = _recipe_model(output)(wavs, wav_lens)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)
    audio = sorted(
        glob.glob(
            os.path.join(
                SAMPLES, "mini_librispeech", "test-clean", "*", "*", "*.flac"
            )
        )
    )
    text = asr.transcribe_file(audio[0])
    assert isinstance(text, str)
    card = (hub / "README.md").read_text()
    assert "EncoderASR.from_hparams" in card


def test_export_cli_writes_the_same_layout_and_refuses_bad_input(
    recipe_run, tmp_path, capsys
):
    output, _ = recipe_run
    hub = tmp_path / "hub"
    assert main(["export", str(output), "--output", str(hub)]) == 0
    assert (hub / "encoder.ckpt").is_file()
    assert main(["export", str(output), "--output", str(hub)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--output", "x"]) == 2
    assert "nope: no such folder" in capsys.readouterr().err

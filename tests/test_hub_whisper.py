"""WhisperASR hub folders from plain and compressed Whisper folders."""

import glob
import json
import os

import pytest
import torch

import sb_compress
from sb_compress.cli import main

SAMPLES = os.path.join(os.path.dirname(__file__), "samples", "mini_librispeech")


ONESHOT = {
    "pruned": ["--method", "magnitude", "--sparsity", "0.3"],
    "packed": ["--method", "quant", "--bits", "4", "--group-size", "32"]
    + ["--packed"],
}


def _tree(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.mark.parametrize("kind", ["plain", "pruned", "packed"])
def test_whisper_hub_folder_loads_with_whisperasr_and_transcribes(
    tiny_sources, tmp_path, kind
):
    from speechbrain.inference.ASR import WhisperASR

    source = tiny_sources["whisper"]
    if kind in ONESHOT:
        folder = tmp_path / kind
        command = ["oneshot", "--source", source, "--output", str(folder)]
        assert main(command + ONESHOT[kind]) == 0
        source = str(folder)
    hub = tmp_path / "hub"
    assert main(["export", source, "--output", str(hub)]) == 0
    config = json.loads((hub / "config.json").read_text())
    assert config["speechbrain_interface"] == "WhisperASR"
    assert sorted(os.listdir(hub)) == [
        "README.md",
        "config.json",
        "hyperparams.yaml",
        "whisper.ckpt",
    ]
    before = _tree(hub)
    asr = WhisperASR.from_hparams(source=str(hub), savedir=str(tmp_path / "s"))
    loaded = asr.mods.whisper.wrapper.model.state_dict()
    if kind in ONESHOT:
        expected = sb_compress.load_compressed(source).state_dict()
    else:
        from transformers import WhisperModel

        expected = WhisperModel.from_pretrained(source).state_dict()
    for key, value in expected.items():
        if key == "proj_out.weight":  # tied to decoder.embed_tokens
            continue
        key = key.removeprefix("model.")
        assert torch.equal(loaded[key], value), key
    audio = sorted(
        glob.glob(os.path.join(SAMPLES, "test-clean", "*", "*", "*.flac"))
    )[0]
    segments = asr.transcribe_file(audio)
    assert len(segments) == 1 and isinstance(segments[0].words, str)
    assert _tree(hub) == before  # unpacked in the savedir, not the source
    card = (hub / "README.md").read_text()
    assert "WhisperASR.from_hparams" in card
    assert "library_name: speechbrain" in card
    if kind in ONESHOT:  # the one-shot command, then the export
        made = card.split("## How it was made")[1].split("```")[1]
        assert "sb-compress oneshot" in made and "sb-compress export" in made

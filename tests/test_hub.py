"""``sb-compress export`` of CTC recipe exports: SpeechBrain hub folders
that ``EncoderASR.from_hparams`` loads from a local folder, in every
format, with a model card whose numbers are the report's.

The exports are written by the recipe's own export code
(:mod:`tiny_recipe`) around a tiny wav2vec2, without training; the recipe
runs themselves are in ``test_hub_export.py`` (marked ``recipe``).
"""

import glob
import json
import os
import re

import pytest
import torch
from tiny_recipe import save_recipe_export

from sb_compress.cli import main
from sb_compress.report import folder_bytes

SAMPLES = os.path.join(os.path.dirname(__file__), "samples", "mini_librispeech")
FORMATS = ["dense", "shrunk", "packed", "folded"]
HUB_FILES = [
    "README.md",
    "config.json",
    "encoder.ckpt",
    "hyperparams.yaml",
    "tokenizer.ckpt",
]


def _audio():
    pattern = os.path.join(SAMPLES, "test-clean", "*", "*", "*.flac")
    return sorted(glob.glob(pattern))[0]


def _tree(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.fixture(scope="module")
def exports(tiny_sources, tmp_path_factory):
    """``get(format)``: a recipe run folder (``hyperparams.yaml``,
    ``compressed/``) of that format, its in-memory model and its hub
    folder, made once."""
    made = {}

    def get(format):
        if format not in made:
            run = tmp_path_factory.mktemp(f"run_{format}")
            (run / "hyperparams.yaml").write_text(
                f"seed: 1986\nwav2vec2_hub: {tiny_sources['wav2vec2']}\n"
            )
            forward, report = save_recipe_export(
                tiny_sources["wav2vec2"], str(run / "compressed"), format
            )
            hub = run / "hub"
            arguments = ["--output", str(hub), "--license", "apache-2.0"]
            assert main(["export", str(run), *arguments]) == 0
            made[format] = (format, run, hub, forward, report)
        return made[format]

    return get


@pytest.fixture(params=FORMATS)
def exported(request, exports):
    """Each format's export in turn."""
    return exports(request.param)


def test_export_writes_the_hub_layout_naming_the_interface(exported):
    format, _, hub, _, _ = exported
    assert sorted(os.listdir(hub)) == HUB_FILES
    config = json.loads((hub / "config.json").read_text())
    assert config == {
        "speechbrain_interface": "EncoderASR",
        "sb_compress_format": format,
        "model_type": "wav2vec2",
    }
    assert "pretrainer:" in (hub / "hyperparams.yaml").read_text()


def test_encoderasr_loads_the_hub_folder_and_gives_the_models_outputs(
    exported, tmp_path
):
    from speechbrain.inference.ASR import EncoderASR

    _, _, hub, forward, _ = exported
    before = _tree(hub)
    asr = EncoderASR.from_hparams(source=str(hub), savedir=str(tmp_path / "s"))
    torch.manual_seed(0)
    wavs = torch.randn(2, 16000)
    wav_lens = torch.tensor([1.0, 0.75])
    with torch.no_grad():
        got = asr.encode_batch(wavs, wav_lens)
        expected = forward(wavs, wav_lens)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)
    text = asr.transcribe_file(_audio())
    assert isinstance(text, str) and text
    assert _tree(hub) == before  # unpacked in the savedir, not the source


def test_the_hub_card_states_the_reports_numbers(exported):
    format, run, hub, _, report = exported
    card = (hub / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: speechbrain" in front
    assert "license: apache-2.0" in front
    assert "pipeline_tag: automatic-speech-recognition" in front
    assert "- wer" in front
    params = re.search(r"\| parameters \| ([\d,]+) \|", card)
    assert int(params.group(1).replace(",", "")) == report["params_total"]
    size = re.search(r"\| bytes on disk \| ([\d,]+) \|", card)
    expected = report.get("bytes_on_disk")
    if expected is None:  # shrunk reports lack it: the folder's files
        expected = folder_bytes(str(run / "compressed"))
    assert int(size.group(1).replace(",", "")) == expected
    wer = re.search(r"\| test-clean \| ([\d.]+) \|", card)
    assert float(wer.group(1)) == round(report["wer"]["test-clean"], 2)
    if format != "folded":
        sparsity = re.search(r"\| achieved sparsity \| ([\d.]+)% \|", card)
        assert float(sparsity.group(1)) == round(
            100 * report["achieved_sparsity"], 2
        )
    assert f"| format | {format} |" in card
    made = card.split("## How it was made")[1].split("```")[1]
    assert "sb-compress export" in made  # after the command that made it
    assert 'EncoderASR.from_hparams(source="hub"' in card


def test_a_folded_hub_folder_loads_at_any_depth(exports, tmp_path):
    from speechbrain.inference.ASR import EncoderASR

    _, _, hub, _, _ = exports("folded")
    for depth in (1, 2):
        asr = EncoderASR.from_hparams(
            source=str(hub),
            savedir=str(tmp_path / f"depth{depth}"),
            overrides={"depth": depth},
        )
        layers = asr.mods.encoder.backbone.encoder.layers
        assert len(layers) == depth
    with pytest.raises(ValueError, match="depth 3"):
        EncoderASR.from_hparams(
            source=str(hub),
            savedir=str(tmp_path / "depth3"),
            overrides={"depth": 3},
        )


def test_base_model_and_repo_id_go_to_the_card(tiny_sources, tmp_path):
    run = tmp_path / "run"
    save_recipe_export(
        tiny_sources["wav2vec2"], str(run / "compressed"), "dense"
    )
    hub = tmp_path / "hub"
    arguments = ["--base-model", "me/tiny-w2v2", "--repo-id", "me/tiny-hub"]
    assert main(["export", str(run), "--output", str(hub), *arguments]) == 0
    card = (hub / "README.md").read_text()
    assert "base_model: me/tiny-w2v2" in card.split("---\n")[1]
    assert "license: other" in card.split("---\n")[1]
    assert 'from_hparams(source="me/tiny-hub"' in card


def _checkpoint(tmp_path):
    folder = tmp_path / "save" / "CKPT+2026-11-22+12-00-00+00"
    folder.mkdir(parents=True)
    (folder / "CKPT.yaml").write_text("end-of-epoch: true\n")
    return folder


@pytest.mark.parametrize(
    "which, message",
    [
        ("missing", "no such folder"),
        ("checkpoint", "is a SpeechBrain checkpoint"),
        ("hub", "is already a SpeechBrain hub folder"),
        ("plain", "no compression_report.json"),
        ("oneshot", "no recipe_modules.json"),
        ("exists", "--overwrite"),
    ],
)
def test_export_of_bad_input_exits_2_with_one_line_and_writes_nothing(
    exports, tiny_sources, tmp_path, capsys, which, message
):
    _, run, hub, _, _ = exports("dense")
    output = tmp_path / "out"
    source = {
        "missing": str(tmp_path / "nope"),
        "checkpoint": None,
        "hub": str(hub),
        "plain": tiny_sources["wav2vec2"],
        "oneshot": str(tmp_path / "oneshot"),
        "exists": str(run),
    }[which]
    if which == "checkpoint":
        source = str(_checkpoint(tmp_path))
    if which == "oneshot":
        arguments = ["--method", "magnitude", "--sparsity", "0.5"]
        command = ["oneshot", "--source", tiny_sources["wav2vec2"]]
        assert main([*command, *arguments, "--output", source]) == 0
        capsys.readouterr()
    if which == "exists":
        output.mkdir()
        (output / "keep.txt").write_text("x")
    assert main(["export", source, "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    if which == "exists":
        assert os.listdir(output) == ["keep.txt"]
    else:
        assert not output.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sb_")]

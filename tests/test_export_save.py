"""Tests of sb_compress.export.save: sources, atomic folders, loading."""

import json
import os

import pytest
import torch
from torch.nn.utils import parametrize

from sb_compress.export import (
    CompressedFormatError,
    SourceError,
    load_compressed,
    load_source,
    register_format,
    save_pretrained_atomic,
)
from sb_compress.models import UnsupportedModelError, adapter_for
from sb_compress.report import REPORT_JSON, build_report, write_report


class Interrupted(Exception):
    pass


def _interrupt(folder):
    with open(os.path.join(folder, "partial.txt"), "w") as f:
        f.write("half")
    raise Interrupted("stop")


def _entries(folder):
    return sorted(os.listdir(folder))


def _hidden_entries(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def _write_compressed(model, folder, **report_keys):
    def write(staging):
        report = build_report(model, [], "magnitude", 0.0, **report_keys)
        write_report(staging, report)

    return save_pretrained_atomic(model, folder, extra_files=write)


@pytest.mark.parametrize(
    "key, class_name",
    [
        ("wav2vec2", "Wav2Vec2Model"),
        ("wav2vec2_ctc", "Wav2Vec2ForCTC"),
        ("hubert", "HubertModel"),
        ("wavlm", "WavLMModel"),
        ("whisper", "WhisperForConditionalGeneration"),
    ],
)
def test_load_source_uses_the_class_named_in_architectures(
    tiny_sources, key, class_name
):
    model = load_source(tiny_sources[key])
    assert type(model).__name__ == class_name
    assert not model.training


def test_load_source_names_a_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        load_source(str(tmp_path / "missing"))


def test_load_source_names_a_folder_without_config(tmp_path):
    with pytest.raises(SourceError, match="config.json is missing"):
        load_source(str(tmp_path))


def test_load_source_refuses_an_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match="'bert' is not supported"):
        load_source(str(tmp_path))


def test_load_source_offline_hub_id_gives_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as error:
        load_source("sb-compress-tests/no-such-model")
    assert "hub" in str(error.value)
    assert "\n" not in str(error.value)


def test_save_pretrained_atomic_writes_model_and_processor_files(
    tiny_sources, tmp_path
):
    source = tiny_sources["whisper"]
    model = load_source(source)
    output = save_pretrained_atomic(
        model,
        str(tmp_path / "out"),
        source_dir=source,
        extra_files={"notes.txt": "pruned", "raw.bin": b"\x00\x01"},
    )
    files = _entries(output)
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "notes.txt",
        "raw.bin",
    ):
        assert name in files
    assert open(os.path.join(output, "notes.txt")).read() == "pruned"
    assert _hidden_entries(str(tmp_path)) == []


def test_save_pretrained_atomic_unwraps_a_speechbrain_style_wrapper(
    tiny_sources, tmp_path
):
    wrapper = torch.nn.Module()
    wrapper.model = load_source(tiny_sources["hubert"])
    output = save_pretrained_atomic(wrapper, str(tmp_path / "out"))
    assert "model.safetensors" in _entries(output)


def test_save_refuses_a_non_empty_folder_without_overwrite(
    tiny_sources, tmp_path
):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    model = load_source(tiny_sources["hubert"])
    with pytest.raises(FileExistsError, match="not empty"):
        save_pretrained_atomic(model, str(output))
    assert _entries(str(output)) == ["keep.txt"]
    assert _hidden_entries(str(tmp_path)) == []


def test_save_fills_an_existing_empty_folder(tiny_sources, tmp_path):
    (tmp_path / "out").mkdir()
    model = load_source(tiny_sources["hubert"])
    output = save_pretrained_atomic(model, str(tmp_path / "out"))
    assert "config.json" in _entries(output)


def test_save_with_overwrite_replaces_the_folder_and_cleans_up(
    tiny_sources, tmp_path
):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    model = load_source(tiny_sources["hubert"])
    save_pretrained_atomic(model, str(output), overwrite=True)
    assert "stale.txt" not in _entries(str(output))
    assert "model.safetensors" in _entries(str(output))
    assert _entries(str(tmp_path)) == ["out"]


def test_interrupted_save_leaves_nothing_behind(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    with pytest.raises(Interrupted):
        save_pretrained_atomic(
            model, str(tmp_path / "out"), extra_files=_interrupt
        )
    assert _entries(str(tmp_path)) == []


def test_interrupted_overwrite_keeps_the_old_folder_intact(
    tiny_sources, tmp_path
):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.txt").write_text("old")
    model = load_source(tiny_sources["hubert"])
    with pytest.raises(Interrupted):
        save_pretrained_atomic(
            model, str(output), overwrite=True, extra_files=_interrupt
        )
    assert _entries(str(tmp_path)) == ["out"]
    assert _entries(str(output)) == ["old.txt"]


def test_save_refuses_linears_with_parametrizations(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    spec = adapter_for(model).linears()[0]
    parametrize.register_parametrization(
        spec.module, "weight", torch.nn.Identity()
    )
    with pytest.raises(ValueError, match="finalize"):
        save_pretrained_atomic(model, str(tmp_path / "out"))
    assert _entries(str(tmp_path)) == []


@pytest.mark.parametrize("key", ["wav2vec2_ctc", "wavlm", "whisper"])
def test_load_compressed_round_trips_the_outputs(tiny_sources, tmp_path, key):
    model = load_source(tiny_sources[key])
    folder = _write_compressed(model, str(tmp_path / "out"))
    loaded = load_compressed(folder)
    assert type(loaded) is type(model)
    torch.manual_seed(0)
    if key == "whisper":
        inputs = {
            "input_features": torch.randn(1, 80, 3000),
            "decoder_input_ids": torch.tensor([[257, 1, 2]]),
        }
    else:
        inputs = {"input_values": torch.randn(1, 4000)}
    with torch.no_grad():
        expected = model(**inputs)[0]
        got = loaded(**inputs)[0]
    torch.testing.assert_close(got, expected)


def test_load_compressed_names_a_missing_report(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    folder = save_pretrained_atomic(model, str(tmp_path / "out"))
    with pytest.raises(CompressedFormatError, match=REPORT_JSON):
        load_compressed(folder)


def test_load_compressed_names_a_corrupt_report(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    folder = _write_compressed(model, str(tmp_path / "out"))
    with open(os.path.join(folder, REPORT_JSON), "w") as f:
        f.write("[1, 2")
    with pytest.raises(CompressedFormatError, match="corrupt"):
        load_compressed(folder)


def test_load_compressed_names_missing_weights(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    folder = _write_compressed(model, str(tmp_path / "out"))
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(CompressedFormatError, match="model.safetensors"):
        load_compressed(folder)


def test_load_compressed_names_corrupt_weights(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    folder = _write_compressed(model, str(tmp_path / "out"))
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(b"\x00" * 20)
    with pytest.raises(CompressedFormatError, match="safetensors is corrupt"):
        load_compressed(folder)


def test_load_compressed_refuses_an_unknown_format(tiny_sources, tmp_path):
    model = load_source(tiny_sources["hubert"])
    folder = _write_compressed(model, str(tmp_path / "out"), format="zip")
    with pytest.raises(CompressedFormatError, match="'zip' has no loader"):
        load_compressed(folder)


def test_load_compressed_dispatches_on_the_report_format(
    tiny_sources, tmp_path
):
    calls = []

    @register_format("test-format")
    def load_test_format(folder, report, **options):
        calls.append((folder, report["format"], options))
        return "loaded"

    model = load_source(tiny_sources["hubert"])
    folder = _write_compressed(
        model, str(tmp_path / "out"), format="test-format"
    )
    assert load_compressed(folder, depth=3) == "loaded"
    assert calls == [(folder, "test-format", {"depth": 3})]


def test_load_compressed_is_the_package_level_loader():
    import sb_compress

    assert sb_compress.load_compressed is load_compressed

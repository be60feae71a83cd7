"""Tests of the ``sb-compress`` command line (in-process, and once as the
installed console script)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sb_compress import cli
from sb_compress.report import REPORT_JSON, REPORT_MD, SUMMARY_KEYS


def _oneshot(source, output, *options):
    return cli.main(
        ["oneshot", "--source", source, "--output", str(output), *options]
    )


def _weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def _report(folder):
    with open(os.path.join(folder, REPORT_JSON)) as f:
        return json.load(f)


def _weight_key(weights, layer_name):
    """The safetensors key of a layer's weight (prefixes may differ)."""
    matches = [k for k in weights if k.endswith(f"{layer_name}.weight")]
    assert len(matches) == 1, (layer_name, matches)
    return matches[0]


@pytest.fixture(scope="module")
def compressed(tiny_sources, tmp_path_factory):
    """Folders written by ``oneshot``: {name: (source, output)}."""
    root = tmp_path_factory.mktemp("oneshot")
    runs = {
        "whisper_kmeans": (
            "whisper",
            [
                "--method",
                "kmeans",
                "--sparsity",
                "0.3",
                "--allocation",
                "mixed",
            ],
        ),
        "wav2vec2_ctc_magnitude": (
            "wav2vec2_ctc",
            ["--method", "magnitude", "--sparsity", "0.5"],
        ),
        "hubert_magnitude_global": (
            "hubert",
            [
                "--method",
                "magnitude",
                "--sparsity",
                "0.4",
                "--allocation",
                "mixed",
            ],
        ),
        "wavlm_kmeans": (
            "wavlm",
            ["--method", "kmeans", "--sparsity", "0.2"],
        ),
    }
    folders = {}
    for name, (key, options) in runs.items():
        output = root / name
        assert _oneshot(tiny_sources[key], output, *options) == 0
        folders[name] = (tiny_sources[key], str(output))
    return folders


@pytest.mark.parametrize(
    "run, class_name",
    [
        ("whisper_kmeans", "WhisperForConditionalGeneration"),
        ("wav2vec2_ctc_magnitude", "Wav2Vec2ForCTC"),
        ("hubert_magnitude_global", "HubertModel"),
        ("wavlm_kmeans", "WavLMModel"),
    ],
)
def test_output_loads_with_from_pretrained_as_the_same_class_and_runs(
    compressed, run, class_name
):
    import transformers

    _, folder = compressed[run]
    model = getattr(transformers, class_name).from_pretrained(folder)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        if run.startswith("whisper"):
            out = model(
                input_features=torch.randn(1, 80, 3000),
                decoder_input_ids=torch.tensor([[257, 1]]),
            )
        else:
            out = model(input_values=torch.randn(1, 4000))
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize(
    "run", ["wav2vec2_ctc_magnitude", "hubert_magnitude_global", "wavlm_kmeans"]
)
def test_output_loads_with_speechbrain_wav2vec2_wrapper_and_runs(
    compressed, run, tmp_path
):
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    _, folder = compressed[run]
    wrapper = Wav2Vec2(source=folder, save_path=str(tmp_path), freeze=True)
    with torch.no_grad():
        hidden = wrapper(torch.randn(2, 4000))
    assert hidden.shape[0] == 2 and torch.isfinite(hidden).all()


def test_output_loads_with_speechbrain_whisper_wrapper_and_runs(
    compressed, tmp_path
):
    from speechbrain.integrations.huggingface.whisper import Whisper

    _, folder = compressed["whisper_kmeans"]
    wrapper = Whisper(source=folder, save_path=str(tmp_path), freeze=True)
    tokens = torch.tensor([[257, 1, 2]])
    with torch.no_grad():
        encoded, logits, _ = wrapper(torch.randn(1, 8000), tokens)
    assert logits.shape[:2] == (1, 3)
    assert torch.isfinite(encoded).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "run", ["whisper_kmeans", "wav2vec2_ctc_magnitude", "wavlm_kmeans"]
)
def test_report_has_all_keys_and_sparsity_matches_saved_weights(
    compressed, run
):
    _, folder = compressed[run]
    report = _report(folder)
    for key in SUMMARY_KEYS + ("layers",):
        assert key in report
    weights = _weights(folder)
    targeted = nonzero = 0
    for layer in report["layers"]:
        for key in ("name", "shape", "sparsity", "clusters"):
            assert key in layer
        weight = weights[_weight_key(weights, layer["name"])]
        assert list(weight.shape) == layer["shape"]
        zeros = 1.0 - int(torch.count_nonzero(weight)) / weight.numel()
        assert zeros == pytest.approx(layer["sparsity"])
        targeted += weight.numel()
        nonzero += int(torch.count_nonzero(weight))
    assert report["params_targeted"] == targeted
    assert report["params_nonzero"] == nonzero
    assert report["achieved_sparsity"] == pytest.approx(1 - nonzero / targeted)
    assert report["achieved_sparsity"] == pytest.approx(
        report["target_sparsity"], abs=0.01
    )
    assert report["bytes_on_disk"] > os.path.getsize(
        os.path.join(folder, "model.safetensors")
    )
    assert report["elapsed_s"] >= 0
    assert os.path.isfile(os.path.join(folder, REPORT_MD))


def test_whisper_default_scope_covers_encoder_and_decoder(compressed):
    report = _report(compressed["whisper_kmeans"][1])
    assert {layer["stack"] for layer in report["layers"]} == {
        "encoder",
        "decoder",
    }
    assert any(layer["clusters"] for layer in report["layers"])


@pytest.mark.parametrize("run", ["whisper_kmeans", "wav2vec2_ctc_magnitude"])
def test_non_targeted_parameters_are_unchanged(compressed, run):
    source, folder = compressed[run]
    before = _weights(source)
    after = _weights(folder)
    targeted = {
        _weight_key(after, layer["name"]) for layer in _report(folder)["layers"]
    }
    assert set(before) == set(after)
    for key in before:
        if key not in targeted:
            torch.testing.assert_close(after[key], before[key], msg=key)


def test_output_has_the_source_processor_and_tokenizer_files(compressed):
    source, folder = compressed["whisper_kmeans"]
    for name in (
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert os.path.isfile(os.path.join(folder, name)), name
    with open(os.path.join(source, "tokenizer.json")) as a:
        with open(os.path.join(folder, "tokenizer.json")) as b:
            assert a.read() == b.read()


def test_targets_accept_roles_plain_regexes_and_ignore(tiny_sources, tmp_path):
    output = tmp_path / "out"
    code = _oneshot(
        tiny_sources["whisper"],
        output,
        "--method", "magnitude", "--sparsity", "0.5",
        "--targets", "ffn", r"decoder\.layers\.1\.", "re:encoder_attn",
        "--ignore", "cross_k",
    )  # fmt: skip
    assert code == 0
    names = {layer["name"] for layer in _report(output)["layers"]}
    assert "model.encoder.layers.0.fc1" in names
    assert "model.decoder.layers.1.self_attn.q_proj" in names
    assert "model.decoder.layers.0.encoder_attn.q_proj" in names
    assert "model.encoder.layers.0.self_attn.q_proj" not in names
    assert not any("encoder_attn.k_proj" in name for name in names)


def test_scope_encoder_leaves_the_whisper_decoder_dense(tiny_sources, tmp_path):
    output = tmp_path / "out"
    code = _oneshot(
        tiny_sources["whisper"],
        output,
        "--method", "magnitude", "--sparsity", "0.5", "--scope", "encoder",
    )  # fmt: skip
    assert code == 0
    report = _report(output)
    assert {layer["stack"] for layer in report["layers"]} == {"encoder"}
    before, after = _weights(tiny_sources["whisper"]), _weights(str(output))
    for key in before:
        if key.startswith("model.decoder."):
            torch.testing.assert_close(after[key], before[key])


def test_summary_is_printed_at_the_end(tiny_sources, tmp_path, capsys):
    output = tmp_path / "out"
    _oneshot(
        tiny_sources["hubert"], output, "--method", "magnitude",
        "--sparsity", "0.25",
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "sparsity 25.00% (target 25.00%)" in printed
    assert str(output) in printed
    assert "on disk" in printed


BAD_INPUTS = {
    "unknown_method": (
        "hubert", ["--method", "prune-it", "--sparsity", "0.5"], "--method"
    ),
    "sparsity_one": (
        "hubert", ["--method", "magnitude", "--sparsity", "1.0"], "[0, 1)"
    ),
    "sparsity_negative": (
        "hubert", ["--method", "kmeans", "--sparsity=-0.1"], "[0, 1)"
    ),
    "sparsity_not_a_number": (
        "hubert", ["--method", "kmeans", "--sparsity", "half"], "number"
    ),
    "target_matching_nothing": (
        "hubert",
        ["--method", "magnitude", "--sparsity", "0.5", "--targets", "nope"],
        "matches no layer",
    ),
    "bad_regex": (
        "hubert",
        ["--method", "magnitude", "--sparsity", "0.5", "--targets", "("],
        "bad regex",
    ),
    "decoder_scope_on_wav2vec2": (
        "wav2vec2",
        ["--method", "magnitude", "--sparsity", "0.5", "--scope", "decoder"],
        "--scope decoder",
    ),
    "share_centroids_with_magnitude": (
        "hubert",
        ["--method", "magnitude", "--sparsity", "0.5", "--share-centroids"],
        "--method kmeans",
    ),
    "missing_source": (
        "missing", ["--method", "magnitude", "--sparsity", "0.5"], "no such"
    ),
    "unsupported_source": (
        "bert", ["--method", "magnitude", "--sparsity", "0.5"], "'bert'"
    ),
    "source_without_config": (
        "empty", ["--method", "magnitude", "--sparsity", "0.5"], "config.json"
    ),
    "unreachable_hub_id": (
        "hub", ["--method", "magnitude", "--sparsity", "0.5"], "hub"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tiny_sources, tmp_path, capsys, monkeypatch, case
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    key, options, expected = BAD_INPUTS[case]
    sources = dict(tiny_sources)
    sources["missing"] = str(tmp_path / "sources" / "missing")
    sources["hub"] = "sb-compress-tests/no-such-model"
    (tmp_path / "sources" / "bert").mkdir(parents=True)
    (tmp_path / "sources" / "bert" / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    sources["bert"] = str(tmp_path / "sources" / "bert")
    (tmp_path / "sources" / "empty").mkdir()
    sources["empty"] = str(tmp_path / "sources" / "empty")
    work = tmp_path / "work"
    work.mkdir()
    capsys.readouterr()
    code = _oneshot(sources[key], work / "out", *options)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sb-compress: error: ")
    assert expected in lines[0]
    assert os.listdir(work) == []


def test_existing_non_empty_output_exits_2_and_is_left_alone(
    tiny_sources, tmp_path, capsys
):
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep")
    code = _oneshot(
        tiny_sources["hubert"], output, "--method", "magnitude",
        "--sparsity", "0.5",
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--overwrite" in err[0]
    assert os.listdir(output) == ["mine.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_output_equal_to_source_is_refused_even_with_overwrite(
    tiny_sources, tmp_path, capsys
):
    source = tmp_path / "source"
    shutil.copytree(tiny_sources["hubert"], source)
    code = _oneshot(
        str(source), source, "--method", "magnitude", "--sparsity", "0.5",
        "--overwrite",
    )  # fmt: skip
    assert code == 2
    assert "--source folder" in capsys.readouterr().err
    assert REPORT_JSON not in os.listdir(source)


def test_overwrite_replaces_an_existing_output(tiny_sources, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    code = _oneshot(
        tiny_sources["hubert"], output, "--method", "magnitude",
        "--sparsity", "0.5", "--overwrite",
    )  # fmt: skip
    assert code == 0
    assert "stale.txt" not in os.listdir(output)
    assert _report(output)["target_sparsity"] == 0.5
    assert os.listdir(tmp_path) == ["out"]


def test_an_existing_empty_output_folder_is_filled(tiny_sources, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    code = _oneshot(
        tiny_sources["hubert"], output, "--method", "magnitude",
        "--sparsity", "0.5",
    )  # fmt: skip
    assert code == 0
    assert REPORT_JSON in os.listdir(output)


def test_interrupted_run_leaves_no_output_and_no_temp_folder(
    tiny_sources, tmp_path, monkeypatch
):
    import sb_compress.report

    def fail(folder, report):
        raise KeyboardInterrupt

    monkeypatch.setattr(sb_compress.report, "write_report", fail)
    with pytest.raises(KeyboardInterrupt):
        _oneshot(
            tiny_sources["hubert"], tmp_path / "out", "--method",
            "magnitude", "--sparsity", "0.5",
        )  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_report_command_prints_table_and_summary(compressed, capsys):
    _, folder = compressed["whisper_kmeans"]
    assert cli.main(["report", folder]) == 0
    printed = capsys.readouterr().out
    report = _report(folder)
    assert printed.splitlines()[0].split()[:2] == ["layer", "role"]
    for layer in report["layers"]:
        assert layer["name"] in printed
    assert "achieved_sparsity" in printed
    assert "bytes_on_disk" in printed


def test_report_plot_writes_a_png_that_opens(compressed, tmp_path):
    from PIL import Image

    _, folder = compressed["whisper_kmeans"]
    png = tmp_path / "heatmap.png"
    assert cli.main(["report", folder, "--plot", str(png)]) == 0
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 50


def test_report_on_a_folder_without_report_exits_2(tiny_sources, capsys):
    assert cli.main(["report", tiny_sources["hubert"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and REPORT_JSON in err[0]


def test_console_script_runs_oneshot_and_report(tiny_sources, tmp_path):
    script = shutil.which("sb-compress") or os.path.join(
        os.path.dirname(sys.executable), "sb-compress"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    output = tmp_path / "out"
    done = subprocess.run(
        [script, "oneshot", "--source", tiny_sources["wav2vec2"],
         "--method", "kmeans", "--sparsity", "0.3", "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sparsity 30.00%" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "sb_compress.cli", "report", str(output)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "achieved_sparsity" in done.stdout
    done = subprocess.run(
        [script, "oneshot", "--source", tiny_sources["wav2vec2"],
         "--method", "magnitude", "--sparsity", "2", "--output",
         str(tmp_path / "bad")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert not os.path.exists(tmp_path / "bad")

"""Tests of sb_compress.report: counts, bytes, tables, heatmap, and the
structure (kept heads, dims, FFN widths) of shrunk models."""

import json
import os

import pytest
import torch
from torch.nn.utils import parametrize

from sb_compress.models import adapter_for
from sb_compress.report import (
    REPORT_JSON,
    REPORT_MD,
    SUMMARY_KEYS,
    ReportError,
    build_report,
    count_parameters,
    folder_bytes,
    format_layer_table,
    format_markdown,
    format_structure_table,
    format_summary,
    layer_records,
    plot_sparsity_heatmap,
    plot_structure,
    read_report,
    structure_panels,
    write_report,
)


def _two_layer_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[:, :2] = 0.0
    return model


class _Halve(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, weight):
        return weight * self.scale


@pytest.fixture
def whisper_model(tiny_sources):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(
        tiny_sources["whisper"]
    )
    specs = adapter_for(model).linears()
    with torch.no_grad():
        for spec in specs:
            spec.module.weight[: spec.module.weight.shape[0] // 4] = 0.0
    return model, specs


def test_count_parameters_counts_zeros_of_targeted_weights_only():
    model = _two_layer_model()
    counts = count_parameters(model, ["0"])
    assert counts["params_total"] == 4 * 3 + 3 + 3 * 2 + 2
    assert counts["params_targeted"] == 12
    assert counts["params_nonzero"] == 6
    assert counts["achieved_sparsity"] == pytest.approx(0.5)
    assert counts["bytes_dense"] == 4 * counts["params_total"]


def test_count_parameters_with_keep_masks_counts_weights_a_mask_keeps():
    model = _two_layer_model()
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0] = False
    counts = count_parameters(model, {"0": keep})
    assert counts["params_nonzero"] == 4
    assert counts["achieved_sparsity"] == pytest.approx(8 / 12)


def test_count_parameters_ignores_parametrization_parameters():
    model = _two_layer_model()
    plain = count_parameters(model, ["0", "1"])
    parametrize.register_parametrization(model[1], "weight", _Halve())
    counted = count_parameters(model, ["0", "1"])
    assert counted["params_total"] == plain["params_total"]
    assert counted["params_nonzero"] == plain["params_nonzero"]


def test_folder_bytes_sums_files_but_not_the_report(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vocab.json").write_bytes(b"y" * 10)
    (tmp_path / REPORT_JSON).write_text("{}")
    (tmp_path / REPORT_MD).write_text("# report")
    assert folder_bytes(str(tmp_path)) == 110


def test_layer_records_measure_shape_and_sparsity_and_keep_extra_keys():
    model = _two_layer_model()
    records = layer_records(model, [{"name": "0", "clusters": 5, "x": 1}])
    assert records[0]["shape"] == [3, 4]
    assert records[0]["sparsity"] == pytest.approx(0.5)
    assert records[0]["clusters"] == 5
    assert records[0]["x"] == 1


def test_build_report_has_summary_keys_layers_and_extra_keys(
    whisper_model, tmp_path
):
    model, specs = whisper_model
    (tmp_path / "model.safetensors").write_bytes(b"x" * 64)
    report = build_report(
        model,
        specs,
        "magnitude",
        target_sparsity=0.25,
        allocation="uniform",
        scope="all",
        elapsed_s=1.5,
        folder=str(tmp_path),
        wer={"dev": 12.5},
    )
    for key in SUMMARY_KEYS:
        assert key in report
    assert report["format"] == "dense"
    assert report["bytes_on_disk"] == 64
    assert report["wer"] == {"dev": 12.5}
    assert report["model_type"] == "whisper"
    assert report["achieved_sparsity"] == pytest.approx(0.25)
    assert len(report["layers"]) == len(specs)
    stacks = {layer["stack"] for layer in report["layers"]}
    assert stacks == {"encoder", "decoder"}
    first = report["layers"][0]
    assert first["name"] == specs[0].name
    assert first["shape"] == list(specs[0].module.weight.shape)
    assert first["clusters"] is None


def test_build_report_is_json_serialisable(whisper_model):
    model, specs = whisper_model
    report = build_report(model, specs, "kmeans", 0.25)
    assert json.loads(json.dumps(report)) == report


def test_write_report_writes_json_and_markdown_tables(whisper_model, tmp_path):
    model, specs = whisper_model
    report = build_report(model, specs, "kmeans", 0.25, wer={"dev": 9.0})
    json_path, md_path = write_report(str(tmp_path), report)
    assert read_report(str(tmp_path)) == report
    with open(json_path) as f:
        assert json.load(f)["method"] == "kmeans"
    markdown = open(md_path).read()
    assert "| achieved_sparsity | 0.25 |" in markdown
    assert "| wer.dev | 9 |" in markdown
    assert "## Layers" in markdown
    assert markdown.count(specs[0].name) == 1


def test_read_report_names_the_missing_file(tmp_path):
    with pytest.raises(ReportError, match=REPORT_JSON):
        read_report(str(tmp_path))


def test_read_report_names_the_corrupt_file(tmp_path):
    (tmp_path / REPORT_JSON).write_text("{not json")
    with pytest.raises(ReportError, match=f"{REPORT_JSON} is corrupt"):
        read_report(str(tmp_path))


def test_format_layer_table_lists_every_layer_with_shape_and_sparsity(
    whisper_model,
):
    model, specs = whisper_model
    table = format_layer_table(build_report(model, specs, "magnitude", 0.25))
    lines = table.splitlines()
    assert len(lines) == 2 + len(specs)
    assert lines[0].split() == [
        "layer",
        "role",
        "shape",
        "sparsity",
        "clusters",
        "error",
    ]
    assert specs[-1].name in lines[-1]
    assert "64x128" in lines[-1]


def test_format_summary_flattens_dict_extras():
    summary = format_summary({"method": "kmeans", "wer": {"dev": 9.5}})
    assert summary.splitlines() == ["method   kmeans", "wer.dev  9.5"]


def test_plot_sparsity_heatmap_writes_a_png_that_opens(whisper_model, tmp_path):
    import matplotlib.image

    model, specs = whisper_model
    report = build_report(model, specs, "magnitude", 0.25)
    path = plot_sparsity_heatmap(report, str(tmp_path / "map.png"))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_plot_sparsity_heatmap_refuses_a_report_without_layers(tmp_path):
    with pytest.raises(ReportError, match="no layers"):
        plot_sparsity_heatmap({"layers": []}, str(tmp_path / "map.png"))
    assert not os.path.exists(tmp_path / "map.png")


def test_summaries_render_lists_and_nested_settings_readably():
    report = {
        "targets": ["ffn", "re:q"],
        "modifiers": [{"method": "gates", "note": "a|b"}],
    }
    summary = format_summary(report)
    assert "targets    ffn, re:q" in summary
    assert '[{"method": "gates", "note": "a|b"}]' in summary
    assert "a\\|b" in format_markdown(report)


#: A shrunk model's report: layer 1's attention removed, layer 2's FFN.
STRUCTURED = {
    "format": "shrunk",
    "method": "hardconcrete+distill",
    "params_total": 61_000,
    "params_dense": 102_544,
    "params_ratio": 61_000 / 102_544,
    "original": {
        "layers": 3,
        "heads": 4,
        "head_dim": 16,
        "ffn_width": 128,
        "conv_channels": [32, 32, 32],
    },
    "layers_structure": [
        {
            "layer": 0,
            "heads": 3,
            "qk_dims": [16, 9, 4],
            "v_dims": [12, 16, 1],
            "ffn_width": 100,
        },
        {"layer": 1, "ffn_width": 57},
        {"layer": 2, "heads": 1, "qk_dims": [2], "v_dims": [3]},
        {"conv_channels": [20, 31, 32]},
    ],
}


def test_structure_table_gives_kept_over_original_per_layer():
    lines = format_structure_table(STRUCTURED).splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert rows == [
        ["0", "3/4", "29/64", "29/64", "100/128"],
        ["1", "-", "-", "-", "57/128"],
        ["2", "1/4", "2/64", "3/64", "-"],
    ]
    assert lines[5] == "CNN channels (kept/original): 20/32, 31/32, 32/32"
    assert lines[6] == "parameters (kept/original): 61,000/102,544 (59.5%)"


def test_structure_table_is_empty_for_a_report_without_structure():
    assert format_structure_table({"method": "magnitude", "layers": []}) == ""


def test_markdown_of_a_shrunk_report_has_structure_and_parameters():
    markdown = format_markdown(STRUCTURED)
    assert "## Layers" not in markdown
    assert "| 1 | - | - | - | 57/128 |" in markdown
    assert "Parameters (kept/original): 61,000/102,544 (59.5%)" in markdown


def test_structure_panels_count_removed_blocks_as_zero_against_originals():
    layers, panels = structure_panels(STRUCTURED)
    assert layers == [0, 1, 2]
    assert panels == [
        ("kept heads", {"heads": [3, 0, 1]}, 4),
        ("attention dims", {"q/k": [29, 0, 2], "v": [29, 0, 3]}, 64),
        ("FFN width", {"FFN": [100, 57, 0]}, 128),
    ]


def test_plot_structure_draws_a_different_png_for_a_different_structure(
    tmp_path,
):
    import matplotlib.image

    first = plot_structure(STRUCTURED, str(tmp_path / "a.png"))
    other = json.loads(json.dumps(STRUCTURED))
    other["layers_structure"][0]["ffn_width"] = 20
    second = plot_structure(other, str(tmp_path / "b.png"))
    a, b = matplotlib.image.imread(first), matplotlib.image.imread(second)
    assert a.ndim == 3 and a.shape[1] > 2 * a.shape[0] > 200
    assert a.shape == b.shape and not (a == b).all()


def test_plot_structure_refuses_a_report_without_structure(tmp_path):
    with pytest.raises(ReportError, match="no per-layer structure"):
        plot_structure({"layers_structure": []}, str(tmp_path / "s.png"))
    assert not os.path.exists(tmp_path / "s.png")


def test_report_cli_prints_structure_and_plots_it(tmp_path, capsys):
    from sb_compress.cli import main

    write_report(str(tmp_path), STRUCTURED)
    png = tmp_path / "structure.png"
    assert main(["report", str(tmp_path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "layer",
        "heads",
        "q/k",
        "dims",
        "v",
        "dims",
        "FFN",
        "width",
    ]
    assert "0      3/4    29/64     29/64   100/128" in out
    assert "parameters (kept/original): 61,000/102,544 (59.5%)" in out
    assert f"structure plot  {png}" in out
    assert png.stat().st_size > 1000


def test_shrunk_export_report_matches_the_loaded_model(tiny_sources, tmp_path):
    import sb_compress
    from sb_compress import Plan
    from sb_compress.export.save import load_source
    from sb_compress.export.shrink import save_shrunk

    model = load_source(tiny_sources["wav2vec2"])
    dense = sum(p.numel() for p in model.parameters())
    plan = Plan(model, [{"method": "hardconcrete", "sparsity": 0.5}])
    plan.prepare()
    torch.manual_seed(0)
    with torch.no_grad():
        for gate in plan.modifiers[0].all_gates():
            gate.log_alpha.normal_(0.0, 3.0)
    folder = str(tmp_path / "shrunk")
    save_shrunk(plan, folder)
    report = read_report(folder)
    shrunk = sb_compress.load_compressed(folder)
    assert report["params_dense"] == dense
    assert report["params_total"] == sum(p.numel() for p in shrunk.parameters())
    assert report["params_total"] < dense
    for record in report["layers_structure"]:
        if "layer" not in record:
            continue
        layer = shrunk.encoder.layers[record["layer"]]
        if record.get("heads"):
            attention = layer.attention
            assert attention.num_heads == record["heads"]
            assert attention.q_proj.out_features == sum(record["qk_dims"])
            assert attention.v_proj.out_features == sum(record["v_dims"])
        if record.get("ffn_width"):
            ffn = layer.feed_forward.intermediate_dense
            assert ffn.out_features == record["ffn_width"]

"""The optional int4 / 2:4 fast path on packed folders (CPU here; the CUDA
checks run only where a GPU is present)."""

import pytest
import torch

import sb_compress
from sb_compress.cli import main
from sb_compress.fastpath import (
    FastPathUnavailable,
    Int4Linear,
    Sparse24Linear,
    accelerate,
    int4_ineligibility,
)

CUDA = torch.cuda.is_available()


def _packed(source, folder, *options):
    code = main(
        ["oneshot", "--source", source, "--method", "quant", "--bits", "4"]
        + list(options)
        + ["--output", str(folder), "--packed"]
    )
    assert code == 0
    return str(folder)


def _run(model, length=4000, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    audio = torch.randn(2, length).to(device=device, dtype=dtype)
    with torch.no_grad():
        return model(audio).last_hidden_state.float().cpu()


def test_int4_linear_computes_codes_times_scales():
    torch.manual_seed(0)
    codes = torch.randint(-8, 8, (32, 128))
    scales = torch.rand(32, 4) / 10
    bias = torch.randn(32)
    layer = Int4Linear(codes, scales, 32, bias)
    weight = (codes.view(32, 4, 32) * scales[..., None]).view(32, 128)
    x = torch.randn(2, 5, 128)
    expected = torch.nn.functional.linear(
        x.to(torch.bfloat16).float(), weight.to(torch.bfloat16).float(), bias
    )
    out = layer(x)
    assert out.shape == (2, 5, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=0.05, rtol=0.02)


def test_int4_linear_rejects_codes_off_the_grid_and_bad_groups():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        Int4Linear(torch.full((16, 64), 9), torch.ones(16, 2), 32)
    with pytest.raises(ValueError, match="groups of 32, 64, 128 or 256"):
        Int4Linear(torch.zeros(8, 96, dtype=torch.long), torch.ones(8, 2), 48)
    assert "out_features divisible by 16" in int4_ineligibility((24, 64), 32)


def test_int4_folder_runs_on_cpu_kernel_like_unpacked_model(
    tiny_sources, tmp_path
):
    folder = _packed(
        tiny_sources["wav2vec2"], tmp_path / "int4", "--group-size", "32"
    )
    fast, report = accelerate(folder, device="cpu")
    assert report["device"] == "cpu" and report["dtype"] == "bfloat16"
    assert set(report["layers"].values()) == {"int4"}
    assert report["counts"] == {"int4": 12}
    name = next(iter(report["layers"]))
    assert isinstance(fast.get_submodule(name), Int4Linear)
    reference = sb_compress.load_compressed(folder).to(torch.bfloat16)
    expected = _run(reference, dtype=torch.bfloat16)
    out = _run(fast, dtype=torch.bfloat16)
    assert torch.isfinite(out).all()
    scale = expected.abs().max()
    assert (out - expected).abs().max() < 0.05 * scale


def test_layers_without_a_kernel_stay_dense_and_say_why(tiny_sources, tmp_path):
    folder = _packed(
        tiny_sources["wav2vec2"],
        tmp_path / "nm_rowwise",
        "--nm",
        "2:4",
    )
    model, report = accelerate(folder, device="cpu")
    reasons = set(report["layers"].values())
    assert reasons == {"dense: 2:4 sparse kernels need a CUDA device"}
    assert report["counts"] == {"dense": 12}
    name = next(iter(report["layers"]))
    assert type(model.get_submodule(name)) is torch.nn.Linear
    _, report = accelerate(folder, device="cpu", kinds=["int4"])
    assert set(report["layers"].values()) == {"dense: sparse24 not requested"}


def test_unknown_kind_fails_with_the_choices(tiny_sources, tmp_path):
    folder = _packed(
        tiny_sources["wav2vec2"], tmp_path / "int4", "--group-size", "32"
    )
    with pytest.raises(ValueError, match="unknown fast-path kind 'int3'"):
        accelerate(folder, device="cpu", kinds=["int3"])


def test_sparse24_linear_refuses_cpu():
    with pytest.raises(FastPathUnavailable, match="CUDA"):
        Sparse24Linear(torch.zeros(64, 64), device="cpu")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_fast_path_matches_unpacked_model(tiny_sources, tmp_path):
    for options, kernel in (
        (["--group-size", "32"], "int4"),
        (["--group-size", "32", "--nm", "2:4"], "sparse24"),
    ):
        folder = _packed(tiny_sources["wav2vec2"], tmp_path / kernel, *options)
        fast, report = accelerate(folder, device="cuda")
        assert kernel in report["counts"], report
        reference = sb_compress.load_compressed(folder)
        reference.to(device="cuda", dtype=torch.bfloat16)
        expected = _run(reference, 16000, torch.bfloat16, "cuda")
        out = _run(fast, 16000, torch.bfloat16, "cuda")
        assert (out - expected).abs().max() < 0.05 * expected.abs().max()

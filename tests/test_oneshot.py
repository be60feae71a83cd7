"""compress_oneshot on tiny models: targets, untouched parameters, errors."""

import pytest
import torch
from transformers import WhisperForConditionalGeneration

from sb_compress.models import TargetError, adapter_for
from sb_compress.oneshot import compress_oneshot

SETTINGS = [
    ("magnitude", "uniform"),
    ("magnitude", "mixed"),
    ("kmeans", "uniform"),
    ("kmeans", "mixed"),
]


@pytest.fixture
def whisper(tiny_sources):
    return WhisperForConditionalGeneration.from_pretrained(
        tiny_sources["whisper"]
    ).eval()


def _zeros(model, **selection):
    specs = adapter_for(model).linears(selection.get("scope", "all"))
    zeros = sum(int((s.module.weight == 0).sum()) for s in specs)
    return zeros / sum(s.numel for s in specs)


@pytest.mark.parametrize("method,allocation", SETTINGS)
@pytest.mark.parametrize("sparsity", [0.2, 0.4])
def test_achieved_sparsity_is_within_half_a_percent_of_target(
    whisper, method, allocation, sparsity
):
    records = compress_oneshot(
        whisper, method, sparsity, allocation, progress=False
    )
    assert abs(_zeros(whisper) - sparsity) <= 0.005
    assert len(records) == len(adapter_for(whisper).linears())


@pytest.mark.parametrize("method,allocation", SETTINGS)
def test_non_targeted_parameters_are_unchanged_bit_for_bit(
    whisper, method, allocation
):
    before = {k: v.clone() for k, v in whisper.state_dict().items()}
    records = compress_oneshot(
        whisper,
        method,
        0.3,
        allocation,
        scope="decoder",
        targets=["ffn", "attention"],
        ignore=["re:layers\\.0\\."],
        progress=False,
    )
    touched = {r["name"] + ".weight" for r in records}
    assert touched and all(".decoder.layers.1." in n for n in touched)
    after = whisper.state_dict()
    for name, value in before.items():
        if name in touched:
            assert not torch.equal(after[name], value)
        else:
            assert torch.equal(after[name], value), name


def test_records_describe_each_targeted_layer(whisper):
    records = compress_oneshot(
        whisper, "kmeans", 0.3, "mixed", targets=["q"], progress=False
    )
    assert {r["role"] for r in records} == {"q"}
    record = records[0]
    assert set(record) == {
        "name",
        "role",
        "stack",
        "layer",
        "shape",
        "sparsity",
        "clusters",
        "error",
    }
    weight = whisper.get_submodule(record["name"]).weight
    assert record["shape"] == list(weight.shape)
    assert record["sparsity"] == pytest.approx(
        float((weight == 0).float().mean())
    )
    assert 0 < record["error"] < 1


def test_same_model_compressed_twice_gives_identical_weights(tiny_sources):
    results = []
    for _ in range(2):
        model = WhisperForConditionalGeneration.from_pretrained(
            tiny_sources["whisper"]
        )
        records = compress_oneshot(
            model, "kmeans", 0.35, "mixed", progress=False
        )
        results.append((records, model.state_dict()))
    assert results[0][0] == results[1][0]
    for name, value in results[0][1].items():
        assert torch.equal(value, results[1][1][name])


def test_works_on_every_family(family_source):
    family, source = family_source
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source)
    records = compress_oneshot(model, "kmeans", 0.3, "uniform", progress=False)
    assert abs(_zeros(model) - 0.3) <= 0.005
    assert all(r["clusters"] for r in records)


def _plant_duplicate_ffn_units(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for spec in adapter_for(model).linears("encoder"):
            if spec.role == "ffn_in":
                weight, bias = spec.module.weight, spec.module.bias
                half = weight.shape[0] // 2
                weight[half:] = weight[:half] + 1e-5 * torch.randn(
                    weight[half:].shape, generator=generator
                )
                bias[half:] = bias[:half]


def _encoder_change(model, **options):
    features = torch.randn(
        1, 80, 3000, generator=torch.Generator().manual_seed(1)
    )
    encoder = model.model.encoder
    with torch.no_grad():
        dense = encoder(features).last_hidden_state
        records = compress_oneshot(
            model,
            "kmeans",
            0.5,
            "mixed",
            scope="encoder",
            targets=["ffn"],
            progress=False,
            **options,
        )
        change = (encoder(features).last_hidden_state - dense).abs().max()
    return records, float(change)


def test_channel_merging_keeps_outputs_close_on_planted_duplicates(
    tiny_sources,
):
    models = []
    for _ in range(2):
        model = WhisperForConditionalGeneration.from_pretrained(
            tiny_sources["whisper"]
        ).eval()
        _plant_duplicate_ffn_units(model)
        models.append(model)
    records, merged = _encoder_change(models[0], merge_channels=True)
    _, pruned = _encoder_change(models[1])
    weights = [models[0].get_submodule(r["name"]).weight for r in records]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert abs(zeros / sum(w.numel() for w in weights) - 0.5) <= 0.005
    assert merged < 0.05 and merged < pruned / 2


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"method": "prune"}, "method = 'prune'.*magnitude, kmeans"),
        ({"allocation": "greedy"}, "allocation = 'greedy'.*uniform, mixed"),
        ({"sparsity": 1.0}, r"sparsity = 1.0: must be a fraction in \[0, 1\)"),
        ({"sparsity": -0.2}, r"sparsity = -0.2"),
        ({"scope": "middle"}, "scope='middle'"),
        (
            {"method": "magnitude", "share_centroids": True},
            "share_centroids = True needs method = 'kmeans'",
        ),
    ],
)
def test_bad_settings_raise_before_touching_the_model(
    whisper, settings, message
):
    before = {k: v.clone() for k, v in whisper.state_dict().items()}
    arguments = {"method": "kmeans", "sparsity": 0.3, "progress": False}
    arguments.update(settings)
    with pytest.raises(ValueError, match=message):
        compress_oneshot(whisper, **arguments)
    for name, value in whisper.state_dict().items():
        assert torch.equal(value, before[name])


def test_targets_matching_nothing_raise_target_error(whisper):
    with pytest.raises(TargetError, match="matches no layer"):
        compress_oneshot(
            whisper,
            "magnitude",
            0.3,
            targets=["re:no_such_layer"],
            progress=False,
        )

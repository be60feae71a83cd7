"""CompressionBrain's lifecycle inside SpeechBrain's fit loop."""

import json
import os

import pytest
import speechbrain as sb
import torch
from safetensors.torch import load_file
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from tiny_brain import (
    PINCH,
    Interrupted,
    TinyBrain,
    build,
    learnt_state,
    run_two_ranks,
    waveforms,
)

from sb_compress import CompressionBrain, load_compressed

HERE = os.path.dirname(os.path.abspath(__file__))
LOADER = {"batch_size": 2}


def _fit(source, folder, modifiers=PINCH, epochs=2, stop_after_epoch=None):
    brain, counter = build(
        source,
        str(folder),
        modifiers,
        epochs=epochs,
        stop_after_epoch=stop_after_epoch,
    )
    brain.fit(counter, waveforms(), train_loader_kwargs=LOADER)
    return brain


def _assert_same_state(left, right):
    assert left.keys() == right.keys()
    for key in left:
        if torch.is_tensor(left[key]):
            assert torch.equal(left[key], right[key]), key
        else:
            assert left[key] == right[key], key


def test_gate_parameters_never_enter_the_recipe_optimizer(
    tiny_sources, tmp_path
):
    brain, _ = build(tiny_sources["wav2vec2"], str(tmp_path), PINCH)
    brain.on_fit_start()
    own = {id(p) for p in brain.compression.own_parameters()}
    recipe = brain.optimizers_dict["model"]
    assert not any(
        id(p) in own for g in recipe.param_groups for p in g["params"]
    )
    thresholds = [g.theta for g in brain.compression.modifiers[0].gates]
    gates = brain.optimizers_dict["compression_gates"]
    assert [id(p) for p in gates.param_groups[0]["params"]] == [
        id(t) for t in thresholds
    ]
    assert gates.param_groups[0]["weight_decay"] == 0.0
    multipliers = brain.optimizers_dict["compression_multipliers"]
    assert multipliers.param_groups[0]["maximize"] is True


def test_regulariser_is_added_to_the_training_loss_only(tiny_sources, tmp_path):
    brain, _ = build(tiny_sources["wav2vec2"], str(tmp_path), PINCH)
    brain.compression.resolve_schedule(10)
    with torch.no_grad():
        brain.compression.modifiers[0].multipliers.fill_(3.0)
    batch = torch.stack(waveforms(2))
    torch.manual_seed(1)
    brain.modules.eval()
    outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
    train = brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    valid = brain.compute_objectives(outputs, batch, sb.Stage.VALID)
    task = TinyBrain.compute_objectives(brain, outputs, batch, sb.Stage.TRAIN)
    assert torch.equal(valid, task)
    assert train.item() != pytest.approx(task.item())


def test_resumed_run_matches_an_uninterrupted_one_exactly(
    tiny_sources, tmp_path
):
    source = tiny_sources["wav2vec2"]
    straight = _fit(source, tmp_path / "straight", epochs=2)
    with pytest.raises(Interrupted):
        _fit(source, tmp_path / "resumed", epochs=2, stop_after_epoch=1)
    resumed = _fit(source, tmp_path / "resumed", epochs=2)
    assert int(resumed.compression.step) == 8
    _assert_same_state(learnt_state(straight), learnt_state(resumed))
    for name in ("compression_gates", "compression_multipliers", "model"):
        left = straight.optimizers_dict[name].state_dict()["state"]
        right = resumed.optimizers_dict[name].state_dict()["state"]
        for index in left:
            for key in left[index]:
                assert torch.equal(left[index][key], right[index][key])


def test_resume_keeps_the_frozen_kmeans_mask(tiny_sources, tmp_path):
    modifiers = [{"method": "kmeans", "sparsity": 0.4, "targets": ["ffn"]}]
    source = tiny_sources["wav2vec2"]
    straight = _fit(source, tmp_path / "straight", modifiers, epochs=2)
    masks = straight.compression.modifiers[0].keep_masks()
    with pytest.raises(Interrupted):
        _fit(source, tmp_path / "resumed", modifiers, stop_after_epoch=1)
    resumed = _fit(source, tmp_path / "resumed", modifiers, epochs=2)
    for name, mask in resumed.compression.modifiers[0].keep_masks().items():
        assert torch.equal(mask, masks[name])


def test_fit_exports_a_loadable_compressed_model_with_its_report(
    tiny_sources, tmp_path
):
    brain = _fit(tiny_sources["wav2vec2"], tmp_path, epochs=1)
    folder = tmp_path / "compressed"
    report = json.loads((folder / "compression_report.json").read_text())
    for key in ("achieved_sparsity", "params_total", "params_nonzero"):
        assert report[key] is not None
    weights = load_file(str(folder / "model.safetensors"))
    names = [layer["name"] for layer in report["layers"]]
    zeros = sum(int((weights[f"{n}.weight"] == 0).sum()) for n in names)
    total = sum(weights[f"{n}.weight"].numel() for n in names)
    assert report["achieved_sparsity"] == pytest.approx(zeros / total)
    assert report["params_nonzero"] == total - zeros
    head = load_file(str(folder / "recipe_modules.safetensors"))
    assert torch.equal(head["head.weight"], brain.modules.head.weight)

    loaded = load_compressed(str(folder))
    wrapper = Wav2Vec2(str(folder), save_path=str(tmp_path / "hub2"))
    brain.modules.wav2vec2.eval()
    wrapper.eval()
    audio = torch.randn(1, 4000)
    with torch.no_grad():
        expected = brain.modules.wav2vec2(audio)
        torch.testing.assert_close(wrapper(audio), expected)
        hidden = loaded(audio).last_hidden_state
    assert hidden.shape[-1] == expected.shape[-1]


def test_brain_without_a_compression_block_says_what_to_add():
    with pytest.raises(ValueError, match="compression: !new:sb_compress.Plan"):
        CompressionBrain(
            modules={"x": torch.nn.Linear(1, 1)},
            hparams={},
            run_opts={"device": "cpu"},
        )


def test_two_process_gloo_run_keeps_gates_identical_across_ranks(
    tiny_sources, tmp_path
):
    ranks = run_two_ranks("tiny_brain.py", tiny_sources["wav2vec2"], tmp_path)
    assert ranks[0]["step"] == 4
    _assert_same_state(*ranks)
    assert (tmp_path / "compressed" / "compression_report.json").exists()

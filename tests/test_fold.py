"""Foldable encoders: unfold maps, shared blocks, joint training over
depths, folded exports."""

import json
import os
import re

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from safetensors import safe_open
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.lobes.models.transformer.TransformerASR import (
    TransformerASR,
)
from speechbrain.nnet.losses import ctc_loss
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from tiny_brain import run_two_ranks
from transformers import Wav2Vec2Model

import sb_compress
from sb_compress import CompressionBrain, Plan
from sb_compress.export import CompressedFormatError, save_folded
from sb_compress.export.save import load_source
from sb_compress.methods import fold as fold_module
from sb_compress.methods.fold import (
    FoldEncoder,
    FoldError,
    depth_kl,
    fold_encoder,
    fold_info,
    parameter_counts,
    set_depth,
    unfold_order,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
FOLD_BLOCK = os.path.join(ROOT, "hparams", "fold.yaml")


def _documented_orders():
    """The orders the module docstring documents for N_p = 3, d = 7."""
    pattern = re.compile(r"``([a-z-]+)``[^:`]*: ``([0-9 ]+)``")
    found = dict(pattern.findall(fold_module.__doc__))
    return {
        mode: [int(i) for i in order.split()] for mode, order in found.items()
    }


@pytest.mark.parametrize("mode", ["cyclic", "repeat-each", "repeat-top"])
def test_every_unfold_map_gives_its_documented_order(mode):
    assert unfold_order(3, 7, mode) == _documented_orders()[mode]
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    written = " ".join(str(i) for i in unfold_order(3, 7, mode))
    assert f"`{mode}` {written}" in readme
    for depth in range(3, 10):
        order = unfold_order(3, depth, mode)
        assert len(order) == depth and order[0] == 0
        assert set(order) == {0, 1, 2}


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("cyclic", [0, 1, 2, 0, 1, 2, 0, 1]),
        ("repeat-each", [0, 0, 0, 1, 1, 1, 2, 2]),
        ("repeat-top", [0, 1, 2, 2, 2, 2, 2, 2]),
    ],
)
def test_unfold_maps_at_another_depth(mode, expected):
    assert unfold_order(3, 8, mode) == expected
    assert unfold_order(3, 3, mode) == [0, 1, 2]


def test_bad_unfold_settings_fail_with_a_message():
    with pytest.raises(FoldError, match="unfold map 'spiral'"):
        unfold_order(2, 4, "spiral")
    with pytest.raises(FoldError, match="below the 3 physical blocks"):
        unfold_order(3, 2)


def _encoder(family, tiny_sources):
    model = load_source(tiny_sources[family])
    if family == "whisper":
        model = model.model
        model.decoder = None
    return model.eval()


def _run(model, family):
    torch.manual_seed(1)
    with torch.no_grad():
        if family == "whisper":
            return model.encoder(torch.randn(1, 80, 3000)).last_hidden_state
        return model(torch.randn(1, 6000)).last_hidden_state


def _conformer(layers=4, dropout=0.0):
    torch.manual_seed(0)
    return TransformerASR(
        tgt_vocab=10,
        input_size=20,
        d_model=16,
        nhead=2,
        num_encoder_layers=layers,
        num_decoder_layers=0,
        d_ffn=32,
        dropout=dropout,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    ).eval()


def _run_conformer(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.encode(torch.randn(2, 30, 20), torch.tensor([1.0, 0.7]))


def _params(model):
    return sum({id(p): p.numel() for p in model.parameters()}.values())


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_folded_model_has_its_physical_count_and_shares_blocks(
    tiny_sources, family
):
    model = _encoder(family, tiny_sources)
    dense = _params(model)
    # the block left out (layer 1; WavLM's layer 0 holds extra parameters)
    block = sum(p.numel() for p in model.encoder.layers[1].parameters())
    fold_encoder(model, 1, max_depth=3)
    assert len(model.encoder.layers) == 3
    assert model.encoder.layers[0] is model.encoder.layers[2]
    # the tiny models have 2 layers: one block fewer
    assert _params(model) == dense - block
    counts = parameter_counts(model)
    assert counts["physical"] == dense - block
    assert counts["logical"][3] > counts["logical"][2] > counts["physical"]
    if family != "wavlm":  # there, block 0 holds the position bias too
        assert counts["logical"][2] == dense
    assert fold_info(model)["seeds"] == [0]


def test_folded_conformer_has_its_physical_count(tiny_sources):
    model = _conformer(layers=4)
    dense = _params(model)
    block = sum(p.numel() for p in model.encoder.layers[0].parameters())
    fold_encoder(model, 2, max_depth=6, mode="repeat-each")
    assert _params(model) == dense - 2 * block
    layers = list(model.encoder.layers)
    assert [layers.index(m) for m in layers] == [0, 0, 0, 3, 3, 3]
    assert parameter_counts(model)["logical"][4] == dense
    assert _run_conformer(model).shape == (2, 30, 16)


def _forward_hook_outputs(block):
    outputs = []

    def keep(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden.retain_grad()
        outputs.append(hidden)

    return outputs, block.register_forward_hook(keep)


def test_gradients_from_every_logical_position_reach_the_shared_block(
    tiny_sources,
):
    model = _encoder("wav2vec2", tiny_sources)
    fold_encoder(model, 1, max_depth=3)
    model.train()
    model.config.layerdrop = 0.0
    block = model.encoder.layers[0]
    outputs, hook = _forward_hook_outputs(block)
    out = model(torch.randn(1, 6000)).last_hidden_state
    out.pow(2).sum().backward()
    hook.remove()
    # one call per logical position, each on the path of the loss
    assert len(outputs) == 3
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in outputs)
    weight = block.feed_forward.output_dense.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_gradients_reach_the_shared_conformer_block_from_each_position():
    model = _conformer(layers=2)
    fold_encoder(model, 1, max_depth=3)
    model.train()
    block = model.encoder.layers[0]
    outputs, hook = _forward_hook_outputs(block)
    out = model.encode(torch.randn(2, 30, 20), torch.tensor([1.0, 0.7]))
    out.pow(2).sum().backward()
    hook.remove()
    assert len(outputs) == 3
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in outputs)
    weight = block.ffn_module1[1].ffn[0].weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def _stored_numel(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_slice(k).get_shape() for k in f.keys()}


def _unique_state_numel(model):
    seen = {}
    for value in model.state_dict().values():
        seen[value.data_ptr()] = value.numel()
    return sum(seen.values())


def _assert_no_tensor_duplicated(folder, model):
    shapes = _stored_numel(folder / "model.safetensors")
    stored = sum(torch.Size(s).numel() for s in shapes.values())
    # each shared tensor once: the file holds exactly the model's
    # distinct tensors
    assert stored == _unique_state_numel(model)
    assert not any("sb_compress_blocks" in k for k in shapes)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "whisper"])
def test_export_then_load_at_each_depth_gives_the_same_outputs(
    tiny_sources, tmp_path, family
):
    model = _encoder(family, tiny_sources)
    fold_encoder(model, 1, max_depth=3, mode="cyclic")
    folder = tmp_path / "folded"
    report = save_folded(model, str(folder))
    assert report["format"] == "folded"
    assert report["params_physical"] == _params(model)
    assert report["params_logical"]["3"] == report["params_dense"]
    assert report["params_physical"] < report["params_dense"]
    _assert_no_tensor_duplicated(folder, model)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    layer_keys = {
        k.split("encoder.layers.")[1].split(".")[0]
        for k in keys
        if "encoder.layers." in k
    }
    assert layer_keys == {"0"}  # the one physical block, once
    for depth in (1, 2, 3):
        set_depth(model, depth)
        loaded = sb_compress.load_compressed(str(folder), depth=depth)
        assert len(loaded.encoder.layers) == depth
        assert torch.allclose(
            _run(loaded, family), _run(model, family), atol=1e-5
        )


def test_ctc_model_folds_under_its_base_and_keeps_its_head(
    tiny_sources, tmp_path
):
    model = load_source(tiny_sources["wav2vec2_ctc"])
    fold_encoder(model, 1, max_depth=3)
    assert len(model.wav2vec2.encoder.layers) == 3
    save_folded(model, str(tmp_path / "folded"))
    _assert_no_tensor_duplicated(tmp_path / "folded", model)
    loaded = sb_compress.load_compressed(str(tmp_path / "folded"), depth=2)
    assert type(loaded).__name__ == "Wav2Vec2ForCTC"
    set_depth(model, 2)
    audio = torch.randn(1, 6000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio).logits, model(audio).logits)


def test_conformer_export_then_load_at_each_depth(tmp_path):
    model = _conformer(layers=4)
    with torch.no_grad():  # not the initial weights
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fold_encoder(model, 2, max_depth=5, mode="repeat-top")
    folder = tmp_path / "folded"
    report = save_folded(model, str(folder))
    assert report["model_type"] == "conformer"
    assert report["params_physical"] == _params(model)
    _assert_no_tensor_duplicated(folder, model)
    for depth in range(2, 6):
        set_depth(model, depth)
        loaded = sb_compress.load_compressed(str(folder), depth=depth)
        assert type(loaded) is TransformerASR
        assert len(loaded.encoder.layers) == depth
        assert torch.equal(_run_conformer(loaded), _run_conformer(model))


def test_conformer_with_a_decoder_is_refused_before_anything_is_written(
    tmp_path,
):
    model = TransformerASR(
        10,
        20,
        16,
        2,
        2,
        1,
        32,
        encoder_module="conformer",
        normalize_before=True,
        causal=False,
    )
    fold_encoder(model, 1)
    with pytest.raises(ValueError, match="num_decoder_layers: 0"):
        save_folded(model, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_depth_outside_the_range_fails_clearly(tiny_sources, tmp_path):
    model = _encoder("wav2vec2", tiny_sources)
    fold_encoder(model, 1, max_depth=3)
    with pytest.raises(FoldError, match="unfolds to 1..3 layers"):
        set_depth(model, 4)
    with pytest.raises(FoldError, match="unfolds to 1..3 layers"):
        set_depth(model, 0)
    folder = tmp_path / "folded"
    save_folded(model, str(folder))
    for depth in (0, 5):
        with pytest.raises(
            CompressedFormatError, match=f"depth {depth}: .* 1..3 layers"
        ):
            sb_compress.load_compressed(str(folder), depth=depth)
    config = json.loads((folder / "config.json").read_text())
    assert config["sb_compress_fold"]["max_depth"] == 3


def test_wavlm_first_seed_must_be_layer_zero(tiny_sources):
    model = _encoder("wavlm", tiny_sources)
    with pytest.raises(FoldError, match="first seed must be layer 0"):
        fold_encoder(model, 1, seeds=[1])


def test_kl_term_compares_valid_frames_and_spares_the_teacher():
    teacher = torch.randn(2, 6, 5, requires_grad=True)
    student = torch.randn(2, 6, 5, requires_grad=True)
    lengths = torch.tensor([1.0, 0.5])
    kl = depth_kl(teacher, student, lengths)
    kl.backward()
    assert teacher.grad is None  # stop-gradient on the largest depth
    assert student.grad.abs().sum() > 0
    # padding frames of the second utterance change nothing
    assert student.grad[1, 3:].abs().sum() == 0
    p = teacher.detach().softmax(-1)
    per_frame = (p * (p.log() - student.detach().log_softmax(-1))).sum(-1)
    expected = torch.cat([per_frame[0], per_frame[1, :3]]).mean()
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)
    hot = depth_kl(teacher, student, temperature=2.0)
    assert hot.item() != pytest.approx(depth_kl(teacher, student).item())


def test_drawn_depth_lies_between_and_depends_only_on_the_step(
    tiny_sources,
):
    model = _encoder("hubert", tiny_sources)
    fold = FoldEncoder(physical=1, max_depth=5)
    fold.validate("c")
    fold.bind(model, "c")
    drawn = [fold.sampled_depth(step) for step in range(60)]
    assert set(drawn) == {2, 3, 4}
    assert drawn == [fold.sampled_depth(step) for step in range(60)]
    fold.depths = [4]
    assert {fold.sampled_depth(step) for step in range(10)} == {4}


class TinyCTC(CompressionBrain):
    """CTC on a tiny wav2vec2, with a random perturbation of the input
    standing for data augmentation."""

    def compute_forward(self, batch, stage):
        wavs = batch.to(self.device)
        noise = 0.01 * torch.randn_like(wavs)
        self.seen.append((len(self.layers()), noise))
        feats = self.modules.wav2vec2(wavs + noise)
        log_probs = self.modules.head(feats).log_softmax(-1)
        return log_probs, torch.ones(wavs.shape[0])

    def compute_objectives(self, predictions, batch, stage):
        log_probs, lengths = predictions
        targets = torch.tensor([[1, 2, 3, 2]] * log_probs.shape[0])
        return ctc_loss(log_probs, targets, lengths, lengths, blank_index=0)

    def layers(self):
        return self.modules.wav2vec2.model.encoder.layers

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.checkpointer.save_and_keep_only(num_to_keep=1)


def _brain(source, folder, fold_settings, epochs=1):
    torch.manual_seed(0)
    wav2vec2 = Wav2Vec2(source, save_path=os.path.join(folder, "hub"))
    wav2vec2.model.config.layerdrop = 0.0
    head = torch.nn.Linear(wav2vec2.model.config.hidden_size, 6)
    plan = Plan(wav2vec2, [{"method": "fold", **fold_settings}])
    modules = {"wav2vec2": wav2vec2, "head": head}
    counter = EpochCounter(epochs)
    checkpointer = Checkpointer(
        os.path.join(folder, "save"),
        recoverables={**modules, "counter": counter},
    )
    brain = TinyCTC(
        modules=modules,
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-3),
        hparams={"compression": plan, "output_folder": folder},
        run_opts={"device": "cpu"},
        checkpointer=checkpointer,
    )
    brain.seen = []
    return brain, counter


def _waveforms(n=4):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(4000, generator=generator) for _ in range(n)]


def test_each_step_trains_the_largest_the_seed_and_a_drawn_depth(
    tiny_sources, tmp_path
):
    brain, _ = _brain(
        tiny_sources["wav2vec2"], str(tmp_path), {"physical": 1, "max_depth": 3}
    )
    brain.on_fit_start()
    brain.fit_batch(torch.stack(_waveforms(2)))
    depths = [depth for depth, _ in brain.seen]
    assert depths == [3, 1, 2]
    noises = [noise for _, noise in brain.seen]
    # every depth sees the same augmented batch
    assert all(torch.equal(noises[0], n) for n in noises[1:])
    assert len(brain.layers()) == 3  # back to the largest depth
    stats = brain.compression_stats()
    assert {"fold loss_depth1", "fold kl", "fold loss_sampled_depth"} <= set(
        stats
    )
    assert "achieved_sparsity" not in stats
    assert stats["params_stored"] < stats["params_unfolded"]


def test_zero_weights_skip_their_forward(tiny_sources, tmp_path):
    settings = {"physical": 1, "max_depth": 3}
    brain, _ = _brain(
        tiny_sources["wav2vec2"],
        str(tmp_path),
        dict(settings, seed_weight=0.0, kl_weight=0.0),
    )
    brain.on_fit_start()
    brain.fit_batch(torch.stack(_waveforms(2)))
    assert [depth for depth, _ in brain.seen] == [3, 2]


def test_training_loss_is_the_weighted_sum_of_depths_and_kl(
    tiny_sources, tmp_path
):
    weights = {"seed_weight": 0.5, "sampled_weight": 0.25, "kl_weight": 2.0}
    brain, _ = _brain(
        tiny_sources["wav2vec2"],
        str(tmp_path),
        dict(weights, physical=1, max_depth=3, depths=[2]),
    )
    brain.compression.resolve_schedule(10)
    brain.modules.eval()
    batch = torch.stack(_waveforms(2))
    brain.on_fit_batch_start(batch, True)
    start = torch.get_rng_state()
    outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
    total = brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    fold = brain.compression.modifiers[0]
    terms = {}
    for depth in (3, 1, 2):
        torch.set_rng_state(start)
        with fold.depth(depth):
            terms[depth] = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = {
        d: TinyCTC.compute_objectives(brain, o, None, None)
        for d, o in terms.items()
    }
    kl = depth_kl(terms[3][0], terms[1][0], terms[3][1])
    expected = loss[3] + 0.5 * loss[1] + 0.25 * loss[2] + 2.0 * kl
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    valid = brain.compute_objectives(outputs, batch, sb.Stage.VALID)
    assert valid.item() == pytest.approx(loss[3].item(), rel=1e-5)


def test_trained_folded_model_exports_and_loads_at_every_depth(
    tiny_sources, tmp_path
):
    brain, counter = _brain(
        tiny_sources["wav2vec2"], str(tmp_path), {"physical": 1, "max_depth": 3}
    )
    initial = brain.layers()[0].attention.q_proj.weight.detach().clone()
    brain.fit(counter, _waveforms(), train_loader_kwargs={"batch_size": 2})
    trained = brain.layers()[0].attention.q_proj.weight
    assert not torch.equal(initial, trained)
    folder = tmp_path / "compressed"
    report = json.loads((folder / "compression_report.json").read_text())
    assert report["format"] == "folded" and report["step"] == 2
    assert report["params_physical"] == _params(brain.modules.wav2vec2.model)
    assert set(report["params_logical"]) == {"1", "2", "3"}
    _assert_no_tensor_duplicated(folder, brain.modules.wav2vec2.model)
    assert (folder / "recipe_modules.safetensors").is_file()
    fold = brain.compression.modifiers[0]
    brain.modules.eval()
    audio = torch.randn(1, 4000)
    for depth in (1, 2, 3):
        loaded = sb_compress.load_compressed(str(folder), depth=depth)
        with torch.no_grad(), fold.depth(depth):
            expected = brain.modules.wav2vec2.model(audio).last_hidden_state
            got = loaded(audio).last_hidden_state
        torch.testing.assert_close(got, expected)


def test_resumed_folded_run_matches_an_uninterrupted_one(
    tiny_sources, tmp_path
):
    settings = {"physical": 1, "max_depth": 3}
    source = tiny_sources["wav2vec2"]
    straight, counter = _brain(source, str(tmp_path / "a"), settings, 2)
    straight.fit(counter, _waveforms(), train_loader_kwargs={"batch_size": 2})
    first, counter = _brain(source, str(tmp_path / "b"), settings, 1)
    first.fit(counter, _waveforms(), train_loader_kwargs={"batch_size": 2})
    resumed, counter = _brain(source, str(tmp_path / "b"), settings, 2)
    resumed.fit(counter, _waveforms(), train_loader_kwargs={"batch_size": 2})
    assert int(resumed.compression.step) == 4
    assert len(resumed.seen) == 2 * 3  # one epoch: 2 batches, 3 depths
    left = straight.modules.wav2vec2.model.state_dict()
    right = resumed.modules.wav2vec2.model.state_dict()
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


YAML = """
wav2vec2: !new:speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
    source: {source}
    save_path: {save}
compression: !new:sb_compress.Plan
    model: !ref <wav2vec2>
    modifiers: !include:{block}
"""


def _load_yaml(tiny_sources, tmp_path, overrides):
    text = YAML.format(
        source=tiny_sources["wav2vec2"],
        save=str(tmp_path / "hub"),
        block=FOLD_BLOCK,
    )
    text += "".join(f"        {k}: {v}\n" for k, v in overrides.items())
    return load_hyperpyyaml(text)


def test_the_include_able_block_folds_when_the_yaml_loads(
    tiny_sources, tmp_path
):
    hparams = _load_yaml(
        tiny_sources, tmp_path, {"physical": 1, "max_depth": 4}
    )
    fold = hparams["compression"].modifiers[0]
    assert (fold.physical, fold.max_depth, fold.seeds) == (1, 4, [0])
    assert fold.unfold_map == "cyclic"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"physical": 3}, r"modifiers\[0\]\.physical = 3: must be in \[1, 2\]"),
        ({"physical": 0}, r"modifiers\[0\]\.physical = 0: must be >= 1"),
        ({"physical": 2, "max_depth": 1}, r"\.max_depth = 1: must be >= 2"),
        ({"physical": 1, "unfold_map": "spiral"}, r"\.unfold_map = 'spiral'"),
        ({"physical": 2, "seeds": "[1, 1]"}, r"\.seeds = \[1, 1\]: need 2"),
        ({"physical": 1, "seeds": "[5]"}, r"\.seeds = \[5\]: layers are 0"),
        (
            {"physical": 1, "max_depth": 3, "depths": "[4]"},
            r"\.depths\[0\] = 4: must be in \[1, 3\]",
        ),
        ({"physical": 1, "kl_weight": -1}, r"\.kl_weight = -1: must be"),
        ({"physical": 1, "temperature": 0}, r"\.temperature = 0: must be"),
    ],
)
def test_bad_fold_settings_fail_when_the_yaml_loads(
    tiny_sources, tmp_path, overrides, message
):
    with pytest.raises(ValueError, match=message):
        _load_yaml(tiny_sources, tmp_path, overrides)


def test_fold_must_be_the_plans_only_modifier(tiny_sources):
    model = _encoder("wav2vec2", tiny_sources)
    modifiers = [
        {"method": "fold", "physical": 1},
        {"method": "magnitude", "sparsity": 0.5},
    ]
    with pytest.raises(ValueError, match=r"modifiers\[0\] \(fold\) must be"):
        Plan(model, modifiers)


def test_unsupported_model_fails_naming_the_modifier():
    with pytest.raises(ValueError, match=r"^c: Linear: folding supports"):
        FoldEncoder(physical=1).bind(torch.nn.Linear(2, 2), "c")


def test_two_process_gloo_run_keeps_the_shared_block_identical_across_ranks(
    tiny_sources, tmp_path
):
    ranks = run_two_ranks("fold_ddp.py", tiny_sources["wav2vec2"], tmp_path)
    assert ranks[0]["step"] == 4  # 8 waveforms, 2 ranks, batch 2, 2 epochs
    assert ranks[0]["layers"] == 3  # back at the largest depth
    assert {
        "fold kl",
        "fold loss_depth1",
        "fold loss_sampled_depth",
        "params_stored",
    } <= set(ranks[0]["stats"])
    blocks = [k for k in ranks[0] if ".layers." in k]
    assert blocks and all(".layers.0." in k for k in blocks)  # one block
    for key, value in ranks[0].items():
        if torch.is_tensor(value):
            assert torch.equal(value, ranks[1][key]), key
    initial = Wav2Vec2Model.from_pretrained(tiny_sources["wav2vec2"])
    start = initial.state_dict()
    moved = [(ranks[0][k] - start[k]).abs().max() for k in blocks]
    assert max(moved) > 0  # the shared block was trained

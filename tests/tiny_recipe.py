"""A tiny CTC recipe's export in each format, without training.

:func:`save_recipe_export` builds what the LibriSpeech CTC recipe trains (a
SpeechBrain wav2vec2 wrapper compressed by a plan, the ``enc`` and
``ctc_lin`` modules, a character label encoder) around a tiny wav2vec2,
prepares and hardens the plan, and writes the recipe's export with
:func:`sb_compress.export.recipe.export_plan`: pruned (``dense``, zeros
stored), ``shrunk``, ``packed`` or ``folded``.
:func:`load_recipe_script` imports a recipe's script (``train.py``,
``librispeech_prepare.py``) by path, as recipes are not packages.
"""

import importlib.util
import os

import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from sb_compress import Plan
from sb_compress.export.recipe import export_plan

ALPHABET = " ABCDEFGHIJKLMNOPQRSTUVWXYZ'"

#: Modifiers of each export format.
MODIFIERS = {
    "dense": [{"method": "magnitude", "sparsity": 0.5}],
    "shrunk": [{"method": "hardconcrete", "sparsity": 0.5}],
    "packed": [{"method": "quant", "bits": 4, "group_size": 32}],
    "folded": [{"method": "fold", "physical": 1}],
}


def load_recipe_script(path):
    """The module a recipe script defines, imported from its path."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def label_encoder():
    """The recipe's character labels: blank 0, unk 1, then the alphabet."""
    encoder = CTCTextEncoder()
    encoder.update_from_iterable(ALPHABET)
    encoder.insert_blank(index=0)
    encoder.add_unk()
    return encoder


def recipe_model(source, save_path, format, seed=0, constant=None):
    """The recipe's modules with a prepared, hardened plan; with
    ``constant`` (a label), a head that emits it at every frame.

    Returns
    -------
    plan : sb_compress.Plan
    modules : dict
        ``wav2vec2``, ``enc``, ``ctc_lin``.
    forward : callable
        ``(wavs, wav_lens) -> log-probabilities``, as the recipe computes
        them.
    """
    torch.manual_seed(seed)
    wrapper = Wav2Vec2(source, save_path=save_path, output_norm=True)
    wrapper.model.config.layerdrop = 0.0
    size = wrapper.model.config.hidden_size
    enc = sb.nnet.containers.Sequential(
        input_shape=[None, None, size],
        linear1=sb.nnet.linear.Linear(n_neurons=32, input_size=size),
        norm1=sb.nnet.normalization.LayerNorm(input_size=32),
        activation=torch.nn.LeakyReLU(),
        drop=torch.nn.Dropout(0.1),
    )
    labels = len(ALPHABET) + 2
    ctc_lin = sb.nnet.linear.Linear(n_neurons=labels, input_size=32)
    with torch.no_grad():  # a head that does not always pick the blank
        ctc_lin.w.bias.copy_(torch.linspace(-1.0, 1.0, labels))
        if constant is not None:
            ctc_lin.w.weight.zero_()
            ctc_lin.w.bias.zero_()
            ctc_lin.w.bias[label_encoder().lab2ind[constant]] = 10.0
    plan = Plan(wrapper, MODIFIERS[format])
    plan.prepare()
    if format == "shrunk":
        with torch.no_grad():
            for gate in plan.modifiers[0].all_gates():
                gate.log_alpha.normal_(0.0, 3.0)
    plan.harden()
    modules = {"wav2vec2": wrapper, "enc": enc, "ctc_lin": ctc_lin}
    for module in modules.values():
        module.eval()

    def forward(wavs, wav_lens):
        return ctc_lin(enc(wrapper(wavs, wav_lens))).log_softmax(-1)

    return plan, modules, forward


def save_recipe_export(source, folder, format, wer=None, constant=None):
    """Writes the recipe export of ``format`` to ``folder`` (``constant``:
    see :func:`recipe_model`).

    Returns
    -------
    forward : callable
        The in-memory model's ``(wavs, wav_lens) -> log-probabilities``.
    report : dict
        The report written.
    """
    save_path = os.path.join(os.path.dirname(folder), "sb_hub")
    plan, modules, forward = recipe_model(
        source, save_path, format, constant=constant
    )
    report = export_plan(
        plan,
        folder,
        other_modules={"enc": modules["enc"], "ctc_lin": modules["ctc_lin"]},
        results={"wer": wer or {"test-clean": 87.5}},
        elapsed_s=1.0,
        label_encoder=label_encoder(),
    )
    return forward, report

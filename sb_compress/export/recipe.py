"""Export of a model compressed in training (``CompressionBrain``).

The folder holds the compressed encoder as a transformers folder (loadable
with ``from_pretrained`` and as the ``source`` of SpeechBrain's wrappers),
its feature extractor / tokenizer, the recipe's other trained modules
(``recipe_modules.safetensors``, e.g. the CTC head), the label encoder, and
``compression_report.json`` / ``.md``. It is written all or nothing.
A plan with quantization or N:M modifiers is written in the ``packed``
format (:mod:`sb_compress.export.pack`), with the packed sizes in the
report; a plan with HardConcrete gates as the physically smaller
``shrunk`` model (:mod:`sb_compress.export.shrink`), its report giving the
kept heads, dimensions and FFN widths of every layer; a plan with a fold
modifier as format ``folded`` (:mod:`sb_compress.export.folded`), each
physical block stored once.

Authors
 * sb_compress team 2026
"""

import json
import os

from safetensors.torch import save_file

from sb_compress.card import current_command, write_model_card
from sb_compress.export.pack import (
    add_packed_sizes,
    is_packable,
    plan_codes,
    save_packed_atomic,
)
from sb_compress.export.save import save_pretrained_atomic
from sb_compress.report import build_report, write_report

RECIPE_MODULES = "recipe_modules.safetensors"
#: How the recipe's modules are built and chained (read by the hub export).
RECIPE_LAYOUT = "recipe_modules.json"
LABEL_ENCODER = "label_encoder.txt"


def _save_processors(wrapper, folder):
    for attribute in ("feature_extractor", "tokenizer"):
        processor = getattr(wrapper, attribute, None)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(folder)


def _save_modules(modules, path):
    tensors = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, path)


def _plan_summary(plan):
    settings = plan.settings()
    methods = [s["method"] for s in settings]
    sparsities = [s.get("sparsity") for s in settings]
    allocations = [s.get("allocation") for s in settings]
    return {
        "method": "+".join(methods),
        "target_sparsity": sparsities[0] if len(settings) == 1 else None,
        "allocation": allocations[0] if len(settings) == 1 else None,
        "scope": settings[0]["scope"] if len(settings) == 1 else None,
    }


def is_structured(plan):
    """Whether a plan holds a HardConcrete (structured) modifier, whose
    export is the shrunk model."""
    return any(hasattr(m, "structure") for m in plan.modifiers)


def _write_recipe_files(staging, plan, other_modules, label_encoder):
    from sb_compress.hub import describe_recipe

    _save_processors(plan.model, staging)
    if other_modules:
        _save_modules(other_modules, os.path.join(staging, RECIPE_MODULES))
        with open(os.path.join(staging, RECIPE_LAYOUT), "w") as f:
            json.dump(describe_recipe(plan.model, other_modules), f, indent=2)
    if label_encoder is not None and hasattr(label_encoder, "save"):
        label_encoder.save(os.path.join(staging, LABEL_ENCODER))


def _export_shrunk(plan, folder, other_modules, results, elapsed_s, encoder):
    """The shrunk model (format ``shrunk``) with the recipe's files."""
    from sb_compress.export.shrink import save_shrunk
    from sb_compress.report import count_parameters

    results = results or {}
    wer = results.get("wer") or {}
    masks = {}
    for modifier in plan.modifiers:
        masks.update(modifier.keep_masks())
    counts = count_parameters(plan.hf_model, masks)
    extra = {
        "method": _plan_summary(plan)["method"],
        "achieved_sparsity": counts["achieved_sparsity"],
        "params_targeted": counts["params_targeted"],
        "params_nonzero": counts["params_nonzero"],
        "step": int(plan.step),
        "modifiers": plan.settings(),
        "elapsed_s": elapsed_s,
        "test_wer": next(iter(wer.values()), None),
        "wer": wer or None,
        "cer": results.get("cer") or None,
    }
    written = {}

    def write_extras(staging):
        _write_recipe_files(staging, plan, other_modules, encoder)
        from sb_compress.report import read_report

        write_model_card(
            staging, read_report(staging), current_command(), folder
        )

    shrunk = save_shrunk(
        plan,
        folder,
        overwrite=True,
        report_extra=extra,
        extra_files=write_extras,
    )
    from sb_compress.report import read_report

    written.update(read_report(folder))
    del shrunk
    return written


def export_plan(
    plan,
    folder,
    other_modules=None,
    results=None,
    elapsed_s=None,
    label_encoder=None,
):
    """Writes the compressed model of a plan and its report to ``folder``.

    Arguments
    ---------
    plan : sb_compress.Plan
        A prepared plan (its masks are baked into the exported weights).
    folder : str
        Output folder, replaced if it exists.
    other_modules : dict, optional
        ``{name: torch.nn.Module}`` also trained by the recipe.
    results : dict, optional
        Error rates, ``{"wer": {test set: value}, "cer": {...}}``.
    elapsed_s : float, optional
        Seconds since the compression started.
    label_encoder : object, optional
        A SpeechBrain text encoder with ``save(path)``.

    Returns
    -------
    dict
        The report written.
    """
    from sb_compress.export.folded import export_folded_plan, is_folded

    if is_folded(plan):
        return export_folded_plan(
            plan, folder, other_modules, results, elapsed_s, label_encoder
        )
    if is_structured(plan):
        return _export_shrunk(
            plan, folder, other_modules, results, elapsed_s, label_encoder
        )
    packed = is_packable(plan)
    codes = plan_codes(plan) if packed else None
    model = plan.finalized_model()
    records = plan.layer_records()
    results = results or {}
    wer = results.get("wer") or {}
    summary = _plan_summary(plan)
    written = {}

    def write_extras(staging):
        _write_recipe_files(staging, plan, other_modules, label_encoder)
        report = build_report(
            model,
            records,
            summary["method"],
            target_sparsity=summary["target_sparsity"],
            allocation=summary["allocation"],
            scope=summary["scope"],
            elapsed_s=elapsed_s,
            folder=staging,
            format="packed" if packed else "dense",
            step=int(plan.step),
            modifiers=plan.settings(),
            test_wer=next(iter(wer.values()), None),
            wer=wer or None,
            cer=results.get("cer") or None,
        )
        if packed:
            add_packed_sizes(report, staging)
        write_report(staging, report)
        write_model_card(staging, report, current_command(), folder)
        written.update(report)

    if packed:
        save_packed_atomic(
            model, codes, folder, overwrite=True, extra_files=write_extras
        )
    else:
        save_pretrained_atomic(
            model, folder, overwrite=True, extra_files=write_extras
        )
    return written

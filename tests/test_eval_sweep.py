"""``sb-compress eval`` and ``sb-compress sweep`` on tiny models."""

import csv
import json
import os
import shutil
import tempfile

import pytest
import torch
from PIL import Image
from tiny_recipe import save_recipe_export

from sb_compress.cli import main
from sb_compress.evaluate import word_errors

SAMPLES = os.path.join(os.path.dirname(__file__), "samples", "mini_librispeech")


def _three_utterances(tmp_path):
    folder = os.path.join(SAMPLES, "test-clean", "908", "157963")
    with open(os.path.join(folder, "908-157963.trans.txt")) as f:
        lines = [line.split(" ", 1) for line in f.read().splitlines()][:3]
    path = tmp_path / "three.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for name, words in lines:
            wav = os.path.join(folder, f"{name}.flac")
            writer.writerow([name, "1.0", wav, "908", words])
    return str(path)


def test_word_errors_is_the_edit_distance():
    assert word_errors("A B C D", "A C D E") == 2
    assert word_errors("A B", "") == 2
    assert word_errors("", "X Y") == 2


#: The three references, and what a model answering "A" to everything
#: gets wrong, by hand: the first has no "A" (1 substitution, 4
#: deletions); the others keep one "A" and lose the other 7 words.
HAND = {"errors": [5, 7, 7], "words": [5, 8, 8], "substitutions": 1}
HAND["deletions"] = sum(HAND["errors"]) - HAND["substitutions"]


def _says_a(kind, tiny_sources, tmp_path):
    """A CTC model that answers "A" whatever it hears."""
    if kind == "transformers":
        from transformers import Wav2Vec2ForCTC

        source = tiny_sources["wav2vec2_ctc"]
        model = Wav2Vec2ForCTC.from_pretrained(source)
        vocab = json.loads(open(os.path.join(source, "vocab.json")).read())
        with torch.no_grad():
            model.lm_head.weight.zero_()
            model.lm_head.bias.zero_()
            model.lm_head.bias[vocab["A"]] = 10.0
        folder = tmp_path / "says_a"
        model.save_pretrained(folder)
        for name in os.listdir(source):
            if name.endswith(".json") and name != "config.json":
                shutil.copy(os.path.join(source, name), folder)
        return str(folder)
    run = tmp_path / "run"
    source = tiny_sources["wav2vec2"]
    save_recipe_export(source, str(run / "compressed"), "packed", constant="A")
    if kind == "recipe":
        return str(run)
    assert main(["export", str(run), "--output", str(tmp_path / "hub")]) == 0
    return str(tmp_path / "hub")


def _eval_savedirs():
    folder = tempfile.gettempdir()
    return sorted(p for p in os.listdir(folder) if "sb_compress_eval_" in p)


@pytest.mark.parametrize("kind", ["transformers", "recipe", "hub"])
def test_eval_gives_the_hand_computed_wer(tiny_sources, tmp_path, capsys, kind):
    source = _says_a(kind, tiny_sources, tmp_path)
    savedirs = _eval_savedirs()
    csv_path = _three_utterances(tmp_path)
    output = tmp_path / "eval"
    arguments = ["--csv", csv_path, "--batch-size", "2"]
    code = main(
        ["eval", "--source", source, *arguments, "--output", str(output)]
    )
    assert code == 0
    summary = json.loads((output / "summary.json").read_text())
    with open(output / "utterances.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["hypothesis"] for r in rows] == ["A", "A", "A"]
    assert [int(r["errors"]) for r in rows] == HAND["errors"]
    assert [int(r["words"]) for r in rows] == HAND["words"]
    assert summary["wer"] == pytest.approx(100 * 19 / 21)
    assert summary["substitutions"] == HAND["substitutions"]
    assert summary["deletions"] == HAND["deletions"]
    assert summary["insertions"] == 0
    assert summary["rtf"] > 0 and summary["audio_s"] > 0
    out = capsys.readouterr().out
    assert "WER      90.48%" in out
    assert _eval_savedirs() == savedirs  # the hub's savedir is removed


def test_eval_of_a_whisper_model_packed_and_as_a_hub_folder(
    tiny_sources, tmp_path
):
    csv_path = _three_utterances(tmp_path)
    packed = tmp_path / "packed"
    assert (
        main(
            [
                "oneshot",
                "--source",
                tiny_sources["whisper"],
                "--method",
                "quant",
                "--bits",
                "8",
                "--output",
                str(packed),
                "--packed",
            ]
        )
        == 0
    )
    hub = tmp_path / "hub"
    assert main(["export", str(packed), "--output", str(hub)]) == 0
    for source in (tiny_sources["whisper"], str(packed), str(hub)):
        output = tmp_path / ("eval_" + os.path.basename(source))
        code = main(
            [
                "eval",
                "--source",
                source,
                "--csv",
                csv_path,
                "--output",
                str(output),
            ]
        )
        assert code == 0
        summary = json.loads((output / "summary.json").read_text())
        assert summary["utterances"] == 3 and summary["words"] > 0


@pytest.mark.parametrize(
    "which, message",
    [
        ("no_head", "has no CTC head"),
        ("bad_csv", "no column 'wrd'"),
        ("no_csv", "no such file"),
        ("no_audio", "no audio file"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line(
    tiny_sources, tmp_path, capsys, which, message
):
    csv_path = _three_utterances(tmp_path)
    source = tiny_sources["wav2vec2_ctc"]
    if which == "no_head":
        source = tiny_sources["wav2vec2"]
    if which == "bad_csv":
        csv_path = str(tmp_path / "bad.csv")
        with open(csv_path, "w") as f:
            f.write("ID,wav\nx,y.flac\n")
    if which == "no_csv":
        csv_path = str(tmp_path / "missing.csv")
    if which == "no_audio":
        csv_path = str(tmp_path / "no_audio.csv")
        with open(csv_path, "w") as f:
            f.write("ID,duration,wav,spk_id,wrd\nu1,1.0,gone.flac,s,HI\n")
    output = tmp_path / "out"
    code = main(
        ["eval", "--source", source, "--csv", csv_path, "--output", str(output)]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not output.exists()


def test_sweep_writes_json_markdown_and_a_pareto_png(tiny_sources, tmp_path):
    csv_path = _three_utterances(tmp_path)
    output = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            "--source",
            tiny_sources["wav2vec2_ctc"],
            "--csv",
            csv_path,
            "--methods",
            "magnitude,kmeans,quant",
            "--sparsity",
            "0.2,0.5",
            "--bits",
            "8,4",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    records = json.loads((output / "sweep.json").read_text())["models"]
    names = [r["name"] for r in records]
    assert names == [
        "dense",
        "magnitude-0.2",
        "magnitude-0.5",
        "kmeans-0.2",
        "kmeans-0.5",
        "quant-int8",
        "quant-int4",
    ]
    by_name = {r["name"]: r for r in records}
    assert by_name["magnitude-0.5"]["achieved_sparsity"] == pytest.approx(
        0.5, abs=0.005
    )
    assert (
        by_name["quant-int4"]["bytes_on_disk"]
        < by_name["quant-int8"]["bytes_on_disk"]
        < by_name["dense"]["bytes_on_disk"]
    )
    markdown = (output / "sweep.md").read_text()
    assert markdown.count("\n") == len(records) + 2
    with Image.open(output / "pareto.png") as image:
        assert image.size[0] > 300
    for name in names[1:]:
        assert (output / name / "eval" / "summary.json").is_file()
    assert all("insertions" in r for r in records)


def test_a_second_sweep_reuses_the_models_and_evaluations(
    tiny_sources, tmp_path
):
    csv_path = _three_utterances(tmp_path)
    output = tmp_path / "sweep"
    command = ["sweep", "--source", tiny_sources["wav2vec2_ctc"]]
    command += ["--csv", csv_path, "--methods", "magnitude,quant"]
    command += ["--sparsity", "0.5", "--bits", "8", "--output", str(output)]
    assert main(command) == 0
    first = (output / "sweep.json").read_text()
    files = [
        output / "magnitude-0.5" / "model.safetensors",
        output / "quant-int8" / "eval" / "summary.json",
    ]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(command) == 0
    assert (output / "sweep.json").read_text() == first
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert main(command + ["--limit", "2"]) == 0  # other utterances
    summary = json.loads(files[1].read_text())
    assert summary["utterances"] == 2
    assert files[0].stat().st_mtime_ns == stamps[0]


def test_sweep_with_a_bad_method_fails_before_any_work(
    tiny_sources, tmp_path, capsys
):
    output = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            "--source",
            tiny_sources["wav2vec2_ctc"],
            "--csv",
            "x.csv",
            "--methods",
            "magnitude,prune",
            "--output",
            str(output),
        ]
    )
    assert code == 2
    assert "--methods prune: unknown" in capsys.readouterr().err
    assert not output.exists()

"""Model cards: front matter, and numbers equal to the report's."""

import json
import re

from sb_compress.card import model_card
from sb_compress.cli import main


def _front_matter(text):
    assert text.startswith("---\n")
    block = text.split("---\n")[1]
    return block


def test_oneshot_folder_has_a_card_whose_numbers_are_the_report_s(
    tiny_sources, tmp_path
):
    output = tmp_path / "w2v2-kmeans"
    code = main(
        [
            "oneshot",
            "--source",
            tiny_sources["wav2vec2"],
            "--method",
            "kmeans",
            "--sparsity",
            "0.3",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    report = json.loads((output / "compression_report.json").read_text())
    card = (output / "README.md").read_text()
    front = _front_matter(card)
    assert "library_name: transformers" in front
    assert "- sb_compress" in front and "- pruning" in front
    assert "# w2v2-kmeans" in card
    sparsity = re.search(r"\| achieved sparsity \| ([\d.]+)% \|", card)
    assert float(sparsity.group(1)) == round(
        100 * report["achieved_sparsity"], 2
    )
    params = re.search(r"\| parameters \| ([\d,]+) \|", card)
    assert int(params.group(1).replace(",", "")) == report["params_total"]
    size = re.search(r"\| bytes on disk \| ([\d,]+) \|", card)
    assert int(size.group(1).replace(",", "")) == report["bytes_on_disk"]
    assert "sb-compress oneshot" in card or "--method kmeans" in card
    assert 'load_compressed("w2v2-kmeans")' in card


def test_card_of_a_packed_report_has_bits_and_wer_table():
    report = {
        "format": "packed",
        "method": "nm+quant",
        "achieved_sparsity": 0.5,
        "params_total": 100,
        "bytes_on_disk": 2048,
        "model_type": "whisper",
        "source": "openai/whisper-tiny.en",
        "targeted": {"bits_per_weight": 3.016},
        "wer": {"test-clean": 9.5, "test-other": 20.25},
    }
    card = model_card(report, "python train.py hparams/quant.yaml", "m")
    front = _front_matter(card)
    assert "base_model: openai/whisper-tiny.en" in front
    assert "pipeline_tag: automatic-speech-recognition" in front
    assert "- quantization" in front and "- wer" in front
    assert "| bits per targeted weight | 3.016 |" in card
    assert "| test-clean | 9.50 |" in card and "| test-other | 20.25 |" in card
    assert "python train.py hparams/quant.yaml" in card
    assert "needs sb_compress to load" in card

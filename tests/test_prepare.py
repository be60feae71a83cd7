"""LibriSpeech data preparation on the embedded mini LibriSpeech."""

import csv
import os
from pathlib import Path

import pytest
import soundfile as sf
from tiny_recipe import load_recipe_script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "samples" / "mini_librispeech"
PREPARE = ROOT / "recipes" / "LibriSpeech" / "ASR" / "CTC"
SPLITS = {
    "train-clean-100": 24,
    "dev-clean": 8,
    "test-clean": 8,
    "test-other": 8,
}


prep = load_recipe_script(PREPARE / "librispeech_prepare.py")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _transcripts():
    text = {}
    for trans in DATA.glob("*/*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            uid, words = line.split(" ", 1)
            text[uid] = words
    return text


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    save = tmp_path_factory.mktemp("prepared")
    prep.prepare_librispeech(
        str(DATA),
        str(save),
        tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"],
        te_splits=["test-clean", "test-other"],
    )
    return save


def test_mini_librispeech_has_librispeech_layout():
    for split, n in SPLITS.items():
        flacs = sorted((DATA / split).glob("*/*/*.flac"))
        assert len(flacs) == n
        for flac in flacs:
            speaker, chapter, _ = flac.stem.split("-")
            assert flac.parent == DATA / split / speaker / chapter
            trans = flac.parent / f"{speaker}-{chapter}.trans.txt"
            assert trans.is_file()
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert 1.5 <= info.duration <= 4.0
    size = sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file())
    assert size < 3 * 2**20


def test_prepare_writes_one_csv_per_split_with_every_utterance(prepared):
    for split, n in SPLITS.items():
        rows = _read_csv(prepared / f"{split}.csv")
        assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
        assert len(rows) == n
        assert len({r["ID"] for r in rows}) == n


def test_prepare_rows_hold_durations_paths_speakers_and_transcripts(
    prepared,
):
    text = _transcripts()
    for split in SPLITS:
        for row in _read_csv(prepared / f"{split}.csv"):
            wav = Path(row["wav"])
            assert wav.is_absolute() and wav.is_file()
            assert wav.stem == row["ID"]
            assert wav.relative_to(DATA).parts[0] == split
            info = sf.info(str(wav))
            assert float(row["duration"]) == pytest.approx(info.duration)
            assert row["spk_id"] == "-".join(row["ID"].split("-")[:2])
            assert row["wrd"] == text[row["ID"]]
            assert row["wrd"] == row["wrd"].upper()


def test_prepare_fails_naming_a_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="'dev-other'"):
        prep.prepare_librispeech(
            str(DATA),
            str(tmp_path),
            dev_splits=["dev-clean", "dev-other"],
        )


def test_second_call_skips_and_keeps_the_csvs(tmp_path):
    kwargs = dict(tr_splits=["train-clean-100"], dev_splits=["dev-clean"])
    prep.prepare_librispeech(str(DATA), str(tmp_path), **kwargs)
    train_csv = tmp_path / "train-clean-100.csv"
    train_csv.write_text("left alone\n")
    prep.prepare_librispeech(str(DATA), str(tmp_path), **kwargs)
    assert train_csv.read_text() == "left alone\n"


def test_changed_options_prepare_again(tmp_path):
    prep.prepare_librispeech(str(DATA), str(tmp_path), ["train-clean-100"])
    prep.prepare_librispeech(
        str(DATA), str(tmp_path), ["train-clean-100"], select_n_sentences=[5]
    )
    assert len(_read_csv(tmp_path / "train-clean-100.csv")) == 5


def test_skip_prep_writes_nothing(tmp_path):
    prep.prepare_librispeech(
        str(DATA), str(tmp_path), ["dev-clean"], skip_prep=True
    )
    assert os.listdir(tmp_path) == []


def test_merge_lst_concatenates_splits(tmp_path):
    prep.prepare_librispeech(
        str(DATA),
        str(tmp_path),
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
        merge_lst=["dev-clean", "test-clean"],
        merge_name="dev_test",
    )
    merged = _read_csv(tmp_path / "dev_test.csv")
    assert len(merged) == 16
    assert merged[:8] == _read_csv(tmp_path / "dev-clean.csv")


def test_select_n_sentences_needs_one_count_per_split(tmp_path):
    with pytest.raises(ValueError, match="select_n_sentences"):
        prep.prepare_librispeech(
            str(DATA), str(tmp_path), ["dev-clean"], select_n_sentences=[1, 2]
        )

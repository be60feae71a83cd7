"""Data preparation for LibriSpeech, in SpeechBrain's recipe style.

Reads a LibriSpeech folder (``<split>/<speaker>/<chapter>/`` with
``<speaker>-<chapter>-<utt>.flac`` and ``<speaker>-<chapter>.trans.txt``)
and writes one manifest per split, ``<save_folder>/<split>.csv``, with the
columns ``ID,duration,wav,spk_id,wrd`` that SpeechBrain's LibriSpeech
recipes read. Download LibriSpeech from https://www.openslr.org/12, or use
the embedded ``tests/samples/mini_librispeech`` for a quick run.

Authors
 * sb_compress team 2026
"""

import csv
import json
import logging
import os

import soundfile as sf

logger = logging.getLogger(__name__)

CSV_HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]
OPT_FILE = "opt_librispeech_prepare.json"


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=[],
    dev_splits=[],
    te_splits=[],
    select_n_sentences=None,
    merge_lst=[],
    merge_name=None,
    skip_prep=False,
):
    """Writes ``<save_folder>/<split>.csv`` for each LibriSpeech split.

    Each row is one utterance: ``ID`` (``<speaker>-<chapter>-<utt>``),
    ``duration`` in seconds, ``wav`` (absolute path of the FLAC file),
    ``spk_id`` (``<speaker>-<chapter>``, as in SpeechBrain's recipes) and
    ``wrd`` (the upper-case transcript). Nothing is written when the CSVs
    of a previous call with the same options are already there.

    Arguments
    ---------
    data_folder : str
        Folder holding the LibriSpeech splits (``train-clean-100``, ...).
    save_folder : str
        Folder for the CSV files (created if needed).
    tr_splits : list of str
        Training splits, e.g. ``["train-clean-100"]``.
    dev_splits : list of str
        Validation splits, e.g. ``["dev-clean"]``.
    te_splits : list of str
        Test splits, e.g. ``["test-clean", "test-other"]``.
    select_n_sentences : list of int, optional
        The number of utterances to keep from each split, in the order
        ``tr_splits + dev_splits + te_splits`` (``None`` keeps all).
    merge_lst : list of str
        Splits whose CSVs are concatenated into ``merge_name``.
    merge_name : str, optional
        File name of the merged manifest (``.csv`` is added when missing).
    skip_prep : bool
        Do nothing at all.

    Returns
    -------
    None

    Example
    -------
    >>> data = "tests/samples/mini_librispeech"
    >>> save = getfixture("tmp_path")
    >>> prepare_librispeech(data, save, ["train-clean-100"], ["dev-clean"])
    >>> sorted(p.name for p in save.glob("*.csv"))
    ['dev-clean.csv', 'train-clean-100.csv']
    """
    if skip_prep:
        return
    splits = list(tr_splits) + list(dev_splits) + list(te_splits)
    if select_n_sentences is not None and len(select_n_sentences) != len(
        splits
    ):
        raise ValueError(
            f"select_n_sentences={select_n_sentences}: needs one count per "
            f"split of tr_splits + dev_splits + te_splits ({splits})"
        )
    if merge_lst and not merge_name:
        raise ValueError(f"merge_lst={merge_lst}: also set merge_name")
    conf = {
        "data_folder": os.path.abspath(data_folder),
        "splits": splits,
        "select_n_sentences": select_n_sentences,
        "merge_lst": list(merge_lst),
        "merge_name": merge_name,
    }
    os.makedirs(save_folder, exist_ok=True)
    if skip(splits, save_folder, conf):
        logger.info("Skipping preparation, completed in previous run.")
        return
    check_librispeech_folders(data_folder, splits)
    for index, split in enumerate(splits):
        n_sentences = None
        if select_n_sentences is not None:
            n_sentences = select_n_sentences[index]
        create_csv(
            os.path.join(data_folder, split),
            os.path.join(save_folder, f"{split}.csv"),
            n_sentences,
        )
    if merge_lst:
        merge_csvs(
            [os.path.join(save_folder, f"{s}.csv") for s in merge_lst],
            os.path.join(save_folder, _csv_name(merge_name)),
        )
    with open(os.path.join(save_folder, OPT_FILE), "w") as f:
        json.dump(conf, f, indent=2)


def skip(splits, save_folder, conf):
    """Whether a previous call with the same options already wrote every
    CSV.

    Arguments
    ---------
    splits : list of str
        The splits to prepare.
    save_folder : str
        Folder of the CSV files.
    conf : dict
        The options of this call, compared with those saved last time.

    Returns
    -------
    bool
        ``True`` when preparation can be skipped.

    Example
    -------
    >>> skip(["dev-clean"], getfixture("tmp_path"), {})
    False
    """
    names = [f"{split}.csv" for split in splits]
    if conf.get("merge_name") and conf.get("merge_lst"):
        names.append(_csv_name(conf["merge_name"]))
    paths = [os.path.join(save_folder, n) for n in names + [OPT_FILE]]
    if not all(os.path.isfile(p) for p in paths):
        return False
    with open(os.path.join(save_folder, OPT_FILE)) as f:
        return json.load(f) == conf


def check_librispeech_folders(data_folder, splits):
    """Raises if a split's folder is missing from ``data_folder``.

    Arguments
    ---------
    data_folder : str
        Folder holding the LibriSpeech splits.
    splits : list of str
        The splits that must be there.

    Example
    -------
    >>> check_librispeech_folders("tests/samples/mini_librispeech",
    ...                           ["dev-clean"])
    """
    for split in splits:
        folder = os.path.join(data_folder, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"LibriSpeech split {split!r} not found: {folder} does not "
                f"exist. Download {split} from https://www.openslr.org/12 "
                "and extract it there, or remove it from the splits."
            )


def read_transcripts(split_folder):
    """Reads every ``*.trans.txt`` of a split.

    Arguments
    ---------
    split_folder : str
        Folder of one LibriSpeech split.

    Returns
    -------
    dict
        Utterance ID -> transcript.

    Example
    -------
    >>> text = read_transcripts("tests/samples/mini_librispeech/dev-clean")
    >>> len(text)
    8
    """
    text = {}
    for root, _, files in os.walk(split_folder):
        for name in sorted(files):
            if not name.endswith(".trans.txt"):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        uid, _, words = line.strip().partition(" ")
                        text[uid] = " ".join(words.replace("_", " ").split())
    return text


def list_flacs(split_folder):
    """Lists a split's FLAC files, sorted by utterance ID.

    Arguments
    ---------
    split_folder : str
        Folder of one LibriSpeech split.

    Returns
    -------
    list of str
        Paths of the ``.flac`` files.

    Example
    -------
    >>> len(list_flacs("tests/samples/mini_librispeech/test-clean"))
    8
    """
    flacs = []
    for root, _, files in os.walk(split_folder):
        flacs += [os.path.join(root, n) for n in files if n.endswith(".flac")]
    return sorted(flacs, key=os.path.basename)


def create_csv(split_folder, csv_file, n_sentences=None):
    """Writes the manifest of one split.

    Arguments
    ---------
    split_folder : str
        Folder of one LibriSpeech split.
    csv_file : str
        Path of the CSV to write.
    n_sentences : int, optional
        Keep only the first ``n_sentences`` utterances (by ID).

    Returns
    -------
    int
        The number of rows written.

    Example
    -------
    >>> create_csv("tests/samples/mini_librispeech/dev-clean",
    ...            getfixture("tmp_path") / "dev.csv", n_sentences=3)
    3
    """
    text = read_transcripts(split_folder)
    flacs = list_flacs(split_folder)[:n_sentences]
    rows = []
    for flac in flacs:
        uid = os.path.basename(flac)[: -len(".flac")]
        if uid not in text:
            raise KeyError(
                f"{flac}: no transcript for {uid} in the .trans.txt files "
                f"of {split_folder}"
            )
        info = sf.info(flac)
        duration = info.frames / info.samplerate
        spk_id = "-".join(uid.split("-")[:2])
        rows.append([uid, duration, os.path.abspath(flac), spk_id, text[uid]])
    with open(csv_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    logger.info(f"{csv_file}: {len(rows)} utterances")
    return len(rows)


def merge_csvs(csv_files, merged_csv):
    """Concatenates manifests with the same header into one.

    Arguments
    ---------
    csv_files : list of str
        Paths of the CSVs to merge, in order.
    merged_csv : str
        Path of the merged CSV.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> n = create_csv("tests/samples/mini_librispeech/dev-clean",
    ...                tmp / "dev.csv")
    >>> merge_csvs([tmp / "dev.csv", tmp / "dev.csv"], tmp / "all.csv")
    >>> len((tmp / "all.csv").read_text().splitlines())
    17
    """
    header, lines = None, []
    for path in csv_files:
        with open(path, newline="", encoding="utf-8") as f:
            first, *rest = f.readlines()
        if header is None:
            header = first
        elif first != header:
            raise ValueError(
                f"{path}: header {first.strip()!r} differs from "
                f"{header.strip()!r} of {csv_files[0]}"
            )
        lines += rest
    with open(merged_csv, "w", newline="", encoding="utf-8") as f:
        f.write(header)
        f.writelines(lines)
    logger.info(f"{merged_csv}: merged {len(csv_files)} files")


def _csv_name(name):
    """``train`` or ``train.csv`` -> ``train.csv`` (SpeechBrain's recipes
    pass the file name)."""
    return name if name.endswith(".csv") else f"{name}.csv"

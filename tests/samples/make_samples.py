"""Regenerates the embedded test samples under ``tests/samples/``.

``mini_librispeech/``
    A LibriSpeech-shaped corpus of 48 short synthetic utterances (24 in
    ``train-clean-100``, 8 in ``dev-clean``, 8 in ``test-clean``, 8 in
    ``test-other`` whose two voices also speak in other splits, under new
    speaker numbers), speakers disjoint across splits as in LibriSpeech:
    ``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz
    mono 16-bit FLAC, 1.5-4 s) and ``<speaker>-<chapter>.trans.txt``
    (``ID TRANSCRIPT``, upper case), plus ``SPEAKERS.TXT`` naming each
    speaker's voice.
``tiny_wav2vec2/``, ``tiny_whisper/``
    ``sb_compress.testing.save_tiny_ssl(path, "wav2vec2")`` and
    ``save_tiny_whisper(path)`` with their default shapes and seed.

Text: sentences of 3 to 8 words from a few of the Debian ``fortunes``
files. Voices: flite (slt, rms, awb, kal16) and espeak-ng accents.

Needs the Debian packages espeak-ng, flite, sox and fortunes::

    apt-get install espeak-ng flite sox fortunes
    python tests/samples/make_samples.py            # everything
    python tests/samples/make_samples.py --only speech

The output is deterministic for given versions of these packages (made
with espeak-ng 1.51, flite 2.2, sox 14.4.2, fortune-mod 1.99.1).

Authors
 * sb_compress team 2026
"""

import argparse
import glob
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
FORTUNES = "/usr/share/games/fortunes"
FORTUNE_FILES = [
    "computers",
    "education",
    "food",
    "fortunes",
    "humorists",
    "literature",
    "miscellaneous",
    "people",
    "pets",
    "platitudes",
    "science",
    "wisdom",
    "work",
]
MIN_WORDS, MAX_WORDS = 3, 8
MIN_SECONDS, MAX_SECONDS = 1.5, 4.0
RATES = (90, 100, 110)
ORDINARY_WORD = re.compile(r"(?!.*(.)\1\1)[A-Za-z]([a-z']*[a-z])?")
ABBREVIATION = re.compile(r"\b(Mrs?|Ms|Dr|St|Jr|Sr|vs|etc|Inc|Ltd|Co|[A-Z])\.")

# split -> [(speaker, chapters, (engine, voice), utterances per chapter)]
SPEAKERS = {
    "train-clean-100": [
        (103, (1240, 1241), ("flite", "slt"), 2),
        (118, (47824,), ("flite", "rms"), 4),
        (125, (121124,), ("flite", "awb"), 4),
        (150, (126107,), ("espeak", "en-us"), 4),
        (163, (122947,), ("espeak", "en-gb"), 4),
        (196, (122150,), ("espeak", "en-us+f3"), 4),
    ],
    "dev-clean": [
        (251, (136532,), ("flite", "kal16"), 4),
        (422, (122949,), ("espeak", "en-gb-x-rp"), 4),
    ],
    "test-clean": [
        (672, (122797,), ("espeak", "en-029"), 4),
        (908, (157963,), ("espeak", "en-gb-scotland"), 4),
    ],
    "test-other": [
        (1688, (142285,), ("flite", "awb"), 4),
        (2033, (164914,), ("espeak", "en-gb-x-rp"), 4),
    ],
}


def sentences():
    """Short English sentences from the fortunes files, shuffled with a
    fixed seed.

    Returns
    -------
    list of str
        Sentences of 3 to 8 words, letters and apostrophes only.
    """
    found = set()
    for name in FORTUNE_FILES:
        text = Path(FORTUNES, name).read_text(errors="ignore")
        for block in text.split("\n%\n"):
            block = " ".join(block.split())
            if "--" in block or '"' in block or ABBREVIATION.search(block):
                continue
            for s in re.split(r"(?<=[.!?])\s+", block):
                if not re.fullmatch(r"[A-Z][A-Za-z ,']+[.!?]", s):
                    continue
                words = s.rstrip(".!?").replace(",", " ").split()
                if not MIN_WORDS <= len(words) <= MAX_WORDS:
                    continue
                if any(not ORDINARY_WORD.fullmatch(w) for w in words):
                    continue
                found.add(s)
    found = sorted(found)
    random.Random(1234).shuffle(found)
    return found


def transcript(sentence):
    """LibriSpeech-style words: upper case, letters and apostrophes."""
    return " ".join(re.sub(r"[^A-Za-z' ]", " ", sentence).upper().split())


def synthesize(sentence, engine, voice, rate, flac):
    """Speaks ``sentence`` into a 16 kHz mono FLAC, silences trimmed.

    Returns
    -------
    float
        Duration in seconds.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.wav")
        if engine == "flite":
            stretch = f"duration_stretch={100 / rate:.2f}"
            cmd = ["flite", "-voice", voice, "--setf", stretch]
            cmd += ["-t", sentence, "-o", raw]
        else:
            speed = str(int(160 * rate / 100))
            cmd = ["espeak-ng", "-v", voice, "-s", speed, "-w", raw, sentence]
        subprocess.run(cmd, check=True, capture_output=True)
        trim = ["silence", "1", "0.02", "0.5%", "reverse"]
        subprocess.run(
            [
                "sox",
                "-R",
                "-D",
                raw,
                "-r",
                "16000",
                "-c",
                "1",
                "-b",
                "16",
                str(flac),
            ]
            + ["norm", "-3"]
            + trim
            + trim
            + ["pad", "0.1", "0.1"],
            check=True,
            capture_output=True,
        )
    return sf.info(str(flac)).duration


def make_speech(out):
    """Writes the LibriSpeech-shaped corpus into ``out`` (replaced)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pool = iter(sentences())
    rng = random.Random(0)
    speakers_txt = [
        "; Synthetic speakers of the embedded mini LibriSpeech",
        "; ID |SEX| SUBSET           |MINUTES| NAME (TTS voice)",
    ]
    total = 0.0
    for split, speakers in SPEAKERS.items():
        for speaker, chapters, (engine, voice), per_chapter in speakers:
            seconds = 0.0
            for chapter in chapters:
                folder = out / split / str(speaker) / str(chapter)
                folder.mkdir(parents=True)
                lines = []
                while len(lines) < per_chapter:
                    sentence = next(pool)
                    uid = f"{speaker}-{chapter}-{len(lines):04d}"
                    flac = folder / f"{uid}.flac"
                    rate = rng.choice(RATES)
                    duration = synthesize(sentence, engine, voice, rate, flac)
                    if not MIN_SECONDS <= duration <= MAX_SECONDS:
                        flac.unlink()
                        continue
                    lines.append(f"{uid} {transcript(sentence)}\n")
                    seconds += duration
                trans = folder / f"{speaker}-{chapter}.trans.txt"
                trans.write_text("".join(lines))
            sex = "F" if voice in ("slt", "en-us+f3") else "M"
            speakers_txt.append(
                f"{speaker:<4}| {sex} | {split:<16} | {seconds / 60:5.2f} "
                f"| {engine} {voice}"
            )
            total += seconds
    (out / "SPEAKERS.TXT").write_text("\n".join(speakers_txt) + "\n")
    print(f"{out}: {total / 60:.2f} minutes of speech")


def make_models(out):
    """Writes ``tiny_wav2vec2/`` and ``tiny_whisper/`` into ``out``."""
    from sb_compress.testing import save_tiny_ssl, save_tiny_whisper

    for name, save in (
        ("tiny_wav2vec2", lambda p: save_tiny_ssl(p, "wav2vec2")),
        ("tiny_whisper", save_tiny_whisper),
    ):
        path = out / name
        if path.exists():
            shutil.rmtree(path)
        save(str(path))
        print(f"{path}: saved")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--only", choices=("speech", "models"))
    args = parser.parse_args()
    missing = [t for t in ("espeak-ng", "flite", "sox") if not shutil.which(t)]
    if not glob.glob(f"{FORTUNES}/fortunes"):
        missing.append("fortunes")
    if args.only != "models" and missing:
        raise SystemExit(
            f"missing Debian packages {missing}: "
            "apt-get install espeak-ng flite sox fortunes"
        )
    if args.only != "models":
        make_speech(args.out / "mini_librispeech")
    if args.only != "speech":
        make_models(args.out)


if __name__ == "__main__":
    main()

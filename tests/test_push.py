"""``sb-compress push``: dry runs, and no upload without a token."""

import pytest

from sb_compress.cli import main


@pytest.fixture
def hub_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text("sample_rate: 16000\n")
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 2048)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "skip").write_text("x")
    return folder


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))


def test_dry_run_lists_the_files_and_sizes(hub_folder, capsys, no_token):
    code = main(["push", str(hub_folder), "--repo-id", "me/tiny", "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    assert "hyperparams.yaml" in out and "sub/weights.bin" in out
    assert ".cache" not in out
    assert "dry run  2 files" in out and "me/tiny" in out


def test_push_without_a_token_fails_and_uploads_nothing(
    hub_folder, capsys, no_token
):
    code = main(["push", str(hub_folder), "--repo-id", "me/tiny"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "no Hugging Face token" in error and "nothing was uploaded" in error
    assert len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing", "--repo-id", "me/x"], "no such folder"),
        (["FOLDER", "--repo-id", "me/x/y"], "expected NAME or OWNER/NAME"),
    ],
)
def test_bad_push_input_exits_2(hub_folder, capsys, arguments, message):
    arguments = [str(hub_folder) if a == "FOLDER" else a for a in arguments]
    if arguments[0] == "missing":
        arguments[0] = str(hub_folder.parent / "missing")
    assert main(["push", *arguments, "--dry-run"]) == 2
    assert message in capsys.readouterr().err

"""``sb-compress push``: dry runs, and no upload without a token or a
network."""

import os
import socket
import subprocess
import sys

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


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "network, message",
    [
        ("unreachable", "the Hub is unreachable, check the network"),
        ("offline", "offline mode is on (unset HF_HUB_OFFLINE)"),
    ],
)
def test_push_without_a_network_fails_with_one_line(
    hub_folder, tmp_path, network, message
):
    env = dict(
        os.environ,
        HF_TOKEN="hf_not_a_real_token",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        HF_HUB_OFFLINE="1" if network == "offline" else "0",
    )
    command = [sys.executable, "-m", "sb_compress.cli", "push"]
    result = subprocess.run(
        [*command, str(hub_folder), "--repo-id", "me/tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0] and "nothing was uploaded" in lines[0]

"""Shared fixtures: tiny models saved to temporary folders (no hub)."""

import os

import pytest
import torch

from sb_compress.testing import save_tiny_ssl, save_tiny_whisper

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory):
    """Folders of tiny wav2vec2, HuBERT, WavLM (and CTC) and Whisper."""
    root = tmp_path_factory.mktemp("tiny_models")
    sources = {
        family: save_tiny_ssl(str(root / family), family)
        for family in ("wav2vec2", "hubert", "wavlm")
    }
    sources["wav2vec2_ctc"] = save_tiny_ssl(
        str(root / "wav2vec2_ctc"), "wav2vec2", with_ctc_head=True
    )
    sources["whisper"] = save_tiny_whisper(str(root / "whisper"))
    return sources


@pytest.fixture(params=["wav2vec2", "hubert", "wavlm", "whisper"])
def family_source(request, tiny_sources):
    """Each family's tiny model folder in turn: (family, path)."""
    return request.param, tiny_sources[request.param]

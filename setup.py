"""Installs sb_compress, the SpeechBrain compression plugin."""

from setuptools import find_packages, setup

setup(
    name="sb_compress",
    version="0.1.0",
    description=(
        "Compress speech foundation models (wav2vec2, HuBERT, WavLM, Whisper)"
        " inside SpeechBrain: pruning, k-means clustering, gates, exports."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sb_compress", "sb_compress.*"]),
    install_requires=[
        "torch>=2.1",
        "torchaudio",
        "speechbrain>=1.0",
        "transformers>=4.40",
        "safetensors>=0.4",
        "soundfile",
        "numpy",
        "tqdm",
        "matplotlib",
        "hyperpyyaml",
        "jiwer",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff"],
        "hub": ["huggingface_hub"],
    },
    entry_points={"console_scripts": ["sb-compress=sb_compress.cli:main"]},
)

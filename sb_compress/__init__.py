"""sb_compress: compress speech foundation models inside SpeechBrain.

The public entry points:

* :class:`Plan` — the ``compression:`` block of a hparams file;
* :class:`CompressionBrain` — a ``speechbrain.Brain`` that applies it;
* ``sb-compress`` — the command line (one-shot, data-free compression);
* :func:`load_compressed` — loads any exported result back.

Authors
 * sb_compress team 2026
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Plan":
        from sb_compress.plan import Plan

        return Plan
    if name == "CompressionBrain":
        from sb_compress.brain import CompressionBrain

        return CompressionBrain
    if name == "load_compressed":
        from sb_compress.export import load_compressed

        return load_compressed
    raise AttributeError(f"module 'sb_compress' has no attribute {name!r}")


__all__ = ["CompressionBrain", "Plan", "load_compressed", "__version__"]

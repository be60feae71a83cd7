"""Exports: save compressed models as folders and load them back
(dense, and packed low-bit / N:M in :mod:`sb_compress.export.pack`,
shrunk in :mod:`~sb_compress.export.shrink`, folded in
:mod:`~sb_compress.export.folded`).

Authors
 * sb_compress team 2026
"""

from .folded import load_folded, save_folded  # registers "folded"
from .pack import load_packed, save_packed_atomic  # registers "packed"
from .save import (
    PROCESSOR_FILES,
    SUPPORTED_MODEL_TYPES,
    CompressedFormatError,
    SourceError,
    check_output_dir,
    check_source,
    copy_processor_files,
    load_compressed,
    load_source,
    model_class_for,
    register_format,
    registered_formats,
    resolve_source,
    save_pretrained_atomic,
)
from .shrink import load_shrunk, save_shrunk  # registers "shrunk"

__all__ = [
    "PROCESSOR_FILES",
    "SUPPORTED_MODEL_TYPES",
    "CompressedFormatError",
    "SourceError",
    "check_output_dir",
    "check_source",
    "copy_processor_files",
    "load_compressed",
    "load_folded",
    "load_packed",
    "load_shrunk",
    "load_source",
    "model_class_for",
    "register_format",
    "registered_formats",
    "resolve_source",
    "save_folded",
    "save_packed_atomic",
    "save_pretrained_atomic",
    "save_shrunk",
]

"""Exports: save compressed models as folders and load them back.

Authors
 * sb_compress team 2026
"""

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
    "load_shrunk",
    "load_source",
    "model_class_for",
    "register_format",
    "registered_formats",
    "resolve_source",
    "save_pretrained_atomic",
    "save_shrunk",
]

"""The standard-library marks client, for sending marks to a ``flinch record`` running in
another process (through its FIFO). It is the single file ``flinch_marks.py`` (installed
with this package, and usable on its own where flinch is not installed: copy it)."""

from flinch_marks import MAX_MARK_BYTES, Marks, default_path, format_mark, mark

__all__ = ["Marks", "mark", "default_path", "format_mark", "MAX_MARK_BYTES"]

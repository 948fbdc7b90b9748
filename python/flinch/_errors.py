"""The exceptions flinch raises.

Every error from flinch's Rust core arrives as one of these (or as a built-in ``OSError``
subclass such as ``FileNotFoundError`` for a file that cannot be opened), with the Rust
error's message; the errors it was caused by follow as the ``__cause__`` chain, which a
traceback prints.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "FlinchError",
    "InvalidInput",
    "TraceFormatError",
    "SourceError",
    "NotIdleError",
]


class FlinchError(Exception):
    """Base class of flinch's own exceptions."""


class InvalidInput(FlinchError, ValueError):
    """An argument is wrong: an unknown source or label, a malformed window, a bad option.

    The message names the value and what would be accepted.
    """


class TraceFormatError(FlinchError, ValueError):
    """A file is not a flinch trace, or is damaged beyond what the reader forgives.

    Attributes:
        path: the file.
        line: the 1-based line number where reading stopped.
    """

    path: Optional[str] = None
    line: Optional[int] = None


class SourceError(FlinchError):
    """A source (NVML, RAPL, DCGM, ...) cannot be opened or read.

    Attributes:
        backend: the backend that failed (``"nvml"``, ``"rapl"``, ...).
        kind: ``"not-available"``, ``"permission-denied"``, ``"not-supported"``, ``"lost"``,
            ``"transient"``, ``"invalid-input"`` or ``"other"``.
        retryable: whether trying again may succeed.
    """

    backend: Optional[str] = None
    kind: Optional[str] = None
    retryable: bool = False


class NotIdleError(FlinchError):
    """``calibrate()`` saw the machine busy, so it wrote no idle profile.

    Attributes:
        problems: what was seen (one sentence each).
        profile: the profile that was measured (``idle_ok`` is false), for inspection.
    """

    def __init__(self, message: str, problems: "list[str]", profile: dict) -> None:
        super().__init__(message)
        self.problems = problems
        self.profile = profile

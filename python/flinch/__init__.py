"""flinch: energy of code windows, from flinch's Rust recorder and analysis."""
from ._errors import FlinchError, InvalidInput, TraceFormatError, SourceError, NotIdleError
from . import _flinch
__version__ = _flinch.__version__

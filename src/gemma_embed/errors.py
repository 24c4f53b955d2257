"""Typed errors. Every message says what is wrong and how to fix it, in one line.

The CLI prints `error: <message>` for any `GemmaEmbedError` and exits non-zero without a traceback.
"""


class GemmaEmbedError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(GemmaEmbedError):
    """A checkpoint is missing, corrupt, unsafe (pickle) or does not match the model it should hold."""


class ConfigError(GemmaEmbedError):
    """A model config, recipe or option has an unknown key or an invalid value."""


class InputError(GemmaEmbedError, ValueError):
    """Bad input to an API call: empty list, non-string items, unknown task, dimension not allowed."""


class DataError(GemmaEmbedError):
    """A data file cannot be used; the message names the file, the line (when known) and the problem."""


class UnsupportedDtypeError(GemmaEmbedError, ValueError):
    """A compute dtype that cannot give correct results (float16 overflows in EmbeddingGemma)."""


class ExportError(GemmaEmbedError):
    """An exported model (e.g. ONNX) does not reproduce the PyTorch model within its tolerance."""

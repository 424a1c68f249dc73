"""Error classes: one per kind of problem. Messages name the file, tensor or type involved."""

from __future__ import annotations


class MlxquantError(Exception):
    """Base class of every error mlxquant raises on purpose."""


class QuantTypeError(MlxquantError, ValueError):
    """An unknown quantization type name, or a type with no codec for the requested backend."""


class QuantInputError(MlxquantError, ValueError):
    """Input that a codec cannot encode or decode: wrong shape, non-finite values, bad imatrix,
    a byte buffer of the wrong size."""


class FormatError(MlxquantError, ValueError):
    """A model file or folder that is malformed, truncated or inconsistent (GGUF, safetensors,
    config.json, imatrix): the message names the file and the problem."""


class OutputExistsError(MlxquantError, FileExistsError):
    """The output path already exists and overwriting was not allowed (``force=False``)."""


class TokenizerError(MlxquantError, ValueError):
    """A tokenizer that is missing or cannot be represented in the target format."""


class UnsupportedArchitectureError(MlxquantError, ValueError):
    """A model architecture mlxquant has no tensor-name map or hyper-parameter rules for; the
    message lists the supported ones."""


class ImatrixRequiredError(MlxquantError, ValueError):
    """A preset or type that llama.cpp refuses to produce without an importance matrix."""


class OptionError(MlxquantError, ValueError):
    """A conversion option that does not apply to the chosen target (``q_bits`` for a GGUF
    output, ``outtype="Q8_0"`` for an MLX folder), or conflicting options; the message names the
    option and the target."""


class UnsafeOutputError(OutputExistsError):
    """``force`` cannot replace the output path: it is a source of the conversion, a folder
    containing one, a link, or holds files mlxquant did not write. The message names the path
    and the reason."""


class OutputWriteError(MlxquantError, OSError):
    """The OS refused to write an output (full disk, read-only folder, ...). ``filename`` and the
    message name the output path the caller gave, never the temporary file; ``errno`` is kept."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename is not None else super().__str__()

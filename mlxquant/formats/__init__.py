"""Model containers, reading and writing, nothing else.

- :mod:`.gguf_check`: validate a GGUF header without trusting it (before anything else reads it).
- :mod:`.gguf_read`: :class:`~.gguf_read.GGUFModel`, metadata and tensors one at a time.
- :mod:`.gguf_write`: streaming GGUF writer (gguf-py's ``GGUFWriter``), atomic.
- :mod:`.hf`: Hugging Face folders (config.json, safetensors shards, tokenizer files).
- :mod:`.tokenizer` / :mod:`.tokenizer_export`: HF tokenizer files <-> GGUF ``tokenizer.*``.
- :mod:`.imatrix`: llama.cpp importance matrices.
- :mod:`.inspect`: the summary behind ``mlxquant inspect``.
- :mod:`.atomic`: temporary file/folder beside the output, renamed when complete.
"""

from .gguf_check import GGUFHeader, check_gguf
from .gguf_read import GGUFModel, GGUFTensor
from .gguf_write import Metadata, TensorSpec, write_gguf
from .hf import HFModel, HFTensorSpec, write_hf_folder

__all__ = [
    "GGUFHeader", "check_gguf", "GGUFModel", "GGUFTensor", "Metadata", "TensorSpec", "write_gguf",
    "HFModel", "HFTensorSpec", "write_hf_folder",
]

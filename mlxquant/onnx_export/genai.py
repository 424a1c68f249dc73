"""The files beside ``model.onnx`` that onnxruntime-genai reads: ``genai_config.json`` and the
Hugging Face tokenizer files (``tokenizer.json``, ``tokenizer_config.json``; its tokenizer is
onnxruntime-extensions', which loads those).

``genai_config.json`` follows what genai's own model builder writes (``builders/base.py``,
``make_genai_config``, onnxruntime-genai 0.18): the decoder's input/output names with ``%d``
for the layer, sizes, special token ids, and search defaults. ``past_present_share_buffer`` is
False: the graph returns ``present`` = past + new keys (a growing cache), not a fixed buffer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from ..runtime.spec import ModelSpec

# mlxquant family -> genai's model "type" (decoder-only types genai knows)
GENAI_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
               "gemma3": "gemma3_text"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "generation_config.json",
                   "chat_template.jinja")


def genai_config(spec: ModelSpec, filename: str, eos: list[int], bos: int | None,
                 pad: int | None) -> dict[str, Any]:
    """The ``genai_config.json`` content for a graph from :func:`.graph.build_decoder`."""
    eos_value: Any = eos[0] if len(eos) == 1 else list(eos)
    return {
        "model": {
            "bos_token_id": bos if bos is not None else (eos[0] if eos else 0),
            "context_length": spec.max_context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": spec.n_heads,
                "num_hidden_layers": spec.n_layers,
                "num_key_value_heads": spec.n_kv_heads,
            },
            "eos_token_id": eos_value,
            "pad_token_id": pad if pad is not None else (eos[0] if eos else 0),
            "type": GENAI_TYPES[spec.family],
            "vocab_size": spec.vocab,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True,
            "length_penalty": 1.0, "max_length": spec.max_context, "min_length": 0,
            "no_repeat_ngram_size": 0, "num_beams": 1, "num_return_sequences": 1,
            "past_present_share_buffer": False, "repetition_penalty": 1.0, "temperature": 1.0,
            "top_k": 50, "top_p": 1.0,
        },
    }


def tokenizer_files(src: Path, fmt: str, metadata: dict[str, Any]) -> dict[str, bytes]:
    """Tokenizer files for the output, name -> bytes: copied from a folder source, rebuilt from
    a GGUF's ``tokenizer.*`` metadata (:func:`mlxquant.formats.tokenizer_export.tokenizer_from_gguf`).

    Raises:
        TokenizerError: no tokenizer.json in the result (genai's tokenizer needs one, or a
            SentencePiece ``tokenizer.model``).
    """
    out: dict[str, bytes] = {}
    if fmt == "gguf":
        from ..formats.tokenizer_export import tokenizer_from_gguf

        for name, content in tokenizer_from_gguf(metadata).items():
            out[name] = content if isinstance(content, bytes) else \
                json.dumps(content, indent=2, ensure_ascii=False).encode("utf-8")
    else:
        out = {n: (src / n).read_bytes() for n in TOKENIZER_FILES if (src / n).is_file()}
    if "tokenizer.json" not in out and "tokenizer.model" not in out:
        raise TokenizerError(f"{src}: no tokenizer.json or tokenizer.model to give onnxruntime-genai")
    return out

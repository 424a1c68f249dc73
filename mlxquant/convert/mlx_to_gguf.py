"""MLX folder -> GGUF.

- MLX -> GGUF: affine 4/5-bit -> Q4_1/Q5_1 (exact when scales fit float16), symmetric 8-bit ->
  Q8_0, mxfp4 -> MXFP4, nvfp4 -> NVFP4; anything else is requantized to the nearest GGUF type.

Rows of Q/K projections are permuted between the Hugging Face and llama.cpp layouts by moving
whole quantized rows (rows are independent in both formats).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import FormatError, OptionError
from ..formats.gguf_write import Metadata, TensorSpec, write_gguf
from ..formats.hf import f32_to_bf16
from ..formats.inspect import FILE_TYPES
from ..formats.mlx_folder import MLXModel
from ..formats.tokenizer import tokenizer_to_gguf
from ..quant import dequantize, get_type, quantize
from ..quant.transcode import dequantize_mlx, exact_gguf_type, nearest_gguf_type, to_gguf
from . import provenance
from .options import GGUFOptions
from .plan import QUANTIZATION_VERSION, block_order
from .report import Progress, RouteResult, TensorRecord, max_abs_error, n_elements, qtype_name
from .sources import row_permutation


def mlx_to_gguf(src_path: Path, out: Path, opts: GGUFOptions, force: bool,
                progress: Progress | None) -> RouteResult:
    """Transcode the MLX folder ``src_path`` to the GGUF file ``out`` (see the module docstring).
    Every tensor is encoded before anything is written; nothing is left at ``out`` on failure.

    Raises:
        OptionError: an outtype other than ``"AUTO"``/``"F16"``, an imatrix, a budget.
    """
    from ..models import get_architecture

    if opts.outtype.upper() not in ("F16", "AUTO"):
        raise OptionError(f"{src_path}: an MLX folder is transcoded tensor by tensor (exact where "
                          f"possible); outtype {opts.outtype!r} is not supported for MLX sources "
                          f"(AUTO)")
    if opts.imatrix is not None:
        raise OptionError(f"{src_path}: an imatrix applies to quantizing float models, not to "
                          f"transcoding an MLX folder")
    if opts.tensor_types or opts.tensor_type_file is not None:
        raise OptionError(f"{src_path}: --tensor-type applies to quantizing float models, not to "
                          f"transcoding an MLX folder")
    if opts.target_bpw is not None or opts.target_size is not None:
        raise OptionError(f"{src_path}: an MLX folder is already quantized; allocate a budget "
                          f"(target_bpw / target_size) from the float model")

    m = MLXModel(src_path)
    cfg = {k: v for k, v in m.config.items() if k not in ("quantization", "quantization_config")}
    arch = get_architecture(cfg)
    tok_meta = tokenizer_to_gguf(src_path, cfg, arch.name)
    mods = m.quantized_modules
    jobs: dict[str, tuple[str, str]] = {}   # gguf name -> (hf name, kind)
    for n in m.tensor_names:
        if n.endswith((".scales", ".biases")) and n.rsplit(".", 1)[0] in mods:
            continue
        g = arch.tensor_name_to_gguf(n, cfg)
        if g is None:
            continue
        jobs[g] = (n, "quant" if n.endswith(".weight") and n[:-7] in mods else "float")
    extra = {k: np.asarray(v, dtype=np.float32) for k, v in arch.extra_tensors(cfg).items()}

    records: dict[str, TensorRecord] = {}
    encoded: dict[str, np.ndarray] = {}
    specs: list[TensorSpec] = []
    order = sorted([*jobs, *extra], key=block_order)
    if not order:
        raise FormatError(f"{src_path}: no tensors to convert")
    for i, g in enumerate(order):
        if g in extra:
            arr, qtype, rec = extra[g], "F32", TensorRecord(g, "F32", "generated", "float")
        else:
            hf, kind = jobs[g]
            if kind == "quant":
                q = m.quantized(hf[:-7])
                src_kind = qtype_name(q)
                qtype, why = exact_gguf_type(q)
                if qtype is not None:
                    arr = to_gguf(q, qtype)
                    rec = TensorRecord(g, qtype, src_kind, "exact")
                else:
                    x = dequantize_mlx(q)
                    qtype = nearest_gguf_type(q)
                    arr = quantize(x, qtype)
                    rec = TensorRecord(g, qtype, src_kind, "requantized",
                                       max_abs_error(dequantize(arr, qtype, x.shape), x), why)
                perm = row_permutation(lambda a: arch.tensor_to_gguf(hf, a, cfg), arr.shape[0],
                                        f"{src_path}: tensor {hf!r}")
                if perm is not None:
                    arr = arr[perm]
            else:
                info = m.info(hf)
                x = arch.tensor_to_gguf(hf, m.tensor(hf), cfg)
                if x.ndim == 1 or info.dtype not in ("F16", "BF16"):
                    qtype, arr = "F32", x.astype(np.float32)
                elif info.dtype == "F16":
                    qtype, arr = "F16", x.astype(np.float16)
                else:
                    qtype, arr = "BF16", f32_to_bf16(x)  # exact: the values are bfloat16
                rec = TensorRecord(g, qtype, info.dtype, "float")
        encoded[g] = np.ascontiguousarray(arr)
        if g in extra:
            shape = tuple(extra[g].shape)
        else:
            hf, kind = jobs[g]
            shape = (m.info(hf).shape[0], mods[hf[:-7]]["cols"]) if kind == "quant" else tuple(m.info(hf).shape)
        specs.append(TensorSpec(g, qtype, tuple(int(d) for d in shape)))
        records[g] = rec
        if progress is not None:
            progress(i + 1, len(order), g)

    counts = Counter(s.type for s in specs if get_type(s.type).is_quantized)
    main = counts.most_common(1)[0][0] if counts else "F16"
    ftypes = {v: k for k, v in FILE_TYPES.items()}
    meta = Metadata()
    meta.set("general.architecture", arch.name)
    meta.set("general.type", "model")
    meta.set("general.name", str(cfg.get("_name_or_path") or src_path.name).rstrip("/").split("/")[-1])
    for k, v in arch.hparams_to_gguf(cfg).items():
        meta.set(k, v)
    meta.set("general.file_type", int(ftypes.get(main, 1)))
    for k, v in tok_meta.items():
        meta.set(k, v)
    meta.set("general.quantization_version", QUANTIZATION_VERSION)
    rec_list = [records[g].as_dict() for g in order]
    record = provenance.build(src_path, {"to": "gguf", "from": "mlx", "outtype": "AUTO"}, rec_list)
    for k, v in provenance.gguf_keys(record).items():
        meta.set(k, v)
    write_gguf(out, meta, specs, lambda s: encoded.pop(s.name), force=force)
    return RouteResult(arch.name, [records[g] for g in order],
                       sum(n_elements(s.shape) for s in specs), sum(s.nbytes for s in specs))

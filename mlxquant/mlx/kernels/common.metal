// Shared helpers of the GGUF kernels (prepended to every kernel's header).
// Each <TYPE>.metal follows ggml's dequantize_row_<type> (ggml-quants.c) for one 16-weight
// sub-block, with the same float operations in the same order, so a decoded weight is
// bit-identical to ggml's (MLX compiles custom kernels in "safe" math mode: no reassociation;
// whether Metal contracts Q2_K's `dl * q - ml` into an FMA is not checked off a Mac).
// GGUF blocks are byte-packed (a Q6_K block is 210 bytes), so every multi-byte field is read
// byte by byte, little-endian, never through an aligned wider load.

inline ushort u16_at(const device uint8_t* p) { return ushort(uint(p[0]) | (uint(p[1]) << 8)); }

inline uint u32_at(const device uint8_t* p) {
    return uint(p[0]) | (uint(p[1]) << 8) | (uint(p[2]) << 16) | (uint(p[3]) << 24);
}

inline float f16_at(const device uint8_t* p) { return float(metal::as_type<half>(u16_at(p))); }

inline float f32_at(const device uint8_t* p) { return metal::as_type<float>(u32_at(p)); }

// ggml's ksigns_iq2xs[k]: the 7 stored sign bits plus their parity as bit 7
inline uint ksigns(uint k) { return k | ((metal::popcount(k) & 1u) << 7); }

// -1 where bit j of the sign byte is set (ggml's `signs & kmask_iq2xs[j] ? -1.f : 1.f`)
inline float sign_bit(uint signs, uint j) { return ((signs >> j) & 1u) ? -1.0f : 1.0f; }

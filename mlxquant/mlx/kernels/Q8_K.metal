// Q8_K (292 bytes / 256 weights): d:f32 | qs[256] int8 | bsums[16] int16 (unused here).
// y = d * q.
constant uint QK = 256;
constant uint BLOCK_BYTES = 292;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const float d = f32_at(b);
    const device uint8_t* q = b + 4 + 16 * j;
    for (uint t = 0; t < 16; ++t) {
        out[t] = d * float(metal::as_type<char>(q[t]));
    }
}

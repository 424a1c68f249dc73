// Q6_K (210 bytes / 256 weights): ql[128] | qh[64] | scales[16] int8 | d:f16.
// Weight p = 128n + 32g + l (n half, g quarter, l < 32): low nibble (g < 2) or high nibble of
// ql[64n + 32(g&1) + l], 2 high bits at 2g of qh[32n + l]; scale scales[8n + 2g + l/16].
// Sub-block j = p/16: n = j/8, g = (j%8)/2, l = 16(j%2) + t.  y = (d*sc) * (q - 32).
constant uint QK = 256;
constant uint BLOCK_BYTES = 210;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint n = j / 8, g = (j % 8) / 2, l0 = 16 * (j % 2);
    const float d = f16_at(b + 208);
    const float ds = d * float(metal::as_type<char>(b[192 + 8 * n + 2 * g + j % 2]));
    const device uint8_t* ql = b + 64 * n + 32 * (g & 1) + l0;
    const device uint8_t* qh = b + 128 + 32 * n + l0;
    const uint nib = g < 2 ? 0 : 4;
    for (uint t = 0; t < 16; ++t) {
        const int q = int(((ql[t] >> nib) & 0xF) | (((qh[t] >> (2 * g)) & 3) << 4)) - 32;
        out[t] = ds * float(q);
    }
}

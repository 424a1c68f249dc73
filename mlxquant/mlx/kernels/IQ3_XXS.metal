// IQ3_XXS (98 bytes / 256 weights): d:f16 | qs[64] grid bytes | 8 x u32 (4x7 sign bits, 4-bit scale).
// Group l of sub-block ib32: two 4-weight grid entries iq3xxs_grid[qs[8ib32+2l]], [qs[8ib32+2l+1]]
// (tab: 256 x 4 bytes), signs ksigns((aux >> 7l) & 127); y = d*(0.5 + (aux >> 28))*0.5 * grid * sign.
constant uint QK = 256;
constant uint BLOCK_BYTES = 98;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib32 = j / 2;
    const uint aux = u32_at(b + 66 + 4 * ib32);
    const float db = f16_at(b) * (0.5f + float(aux >> 28)) * 0.5f;
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint signs = ksigns((aux >> (7 * l)) & 127);
        const device uint8_t* g1 = tab + 4 * uint(b[2 + 8 * ib32 + 2 * l]);
        const device uint8_t* g2 = tab + 4 * uint(b[2 + 8 * ib32 + 2 * l + 1]);
        for (uint t = 0; t < 4; ++t) {
            out[8 * h + t] = db * float(g1[t]) * sign_bit(signs, t);
            out[8 * h + t + 4] = db * float(g2[t]) * sign_bit(signs, t + 4);
        }
    }
}

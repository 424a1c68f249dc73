// IQ2_XXS (66 bytes / 256 weights): d:f16 | 8 x (4 grid bytes, u32 of 4x7 sign bits + 4-bit scale).
// Group of 8 weights l of sub-block ib32: grid iq2xxs_grid[byte l] (tab: 256 x 8 bytes), signs
// ksigns((aux >> 7l) & 127); y = d*(0.5 + (aux >> 28))*0.25 * grid * sign.
constant uint QK = 256;
constant uint BLOCK_BYTES = 66;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib32 = j / 2;
    const device uint8_t* g = b + 2 + 8 * ib32;
    const uint aux = u32_at(g + 4);
    const float db = f16_at(b) * (0.5f + float(aux >> 28)) * 0.25f;
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const device uint8_t* grid = tab + 8 * uint(g[l]);
        const uint signs = ksigns((aux >> (7 * l)) & 127);
        for (uint t = 0; t < 8; ++t) {
            out[8 * h + t] = db * float(grid[t]) * sign_bit(signs, t);
        }
    }
}

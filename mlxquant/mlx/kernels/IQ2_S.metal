// IQ2_S (82 bytes / 256 weights): d:f16 | qs[32] grid low bytes | signs[32] | qh[8] | scales[8].
// Group l of sub-block ib32: grid iq2s_grid[qs[4ib32+l] | (qh[ib32] << (8-2l)) & 0x300]
// (tab: 1024 x 8 bytes), sign byte signs[4ib32+l]; y = d*(0.5 + s)*0.25 * grid * sign.
constant uint QK = 256;
constant uint BLOCK_BYTES = 82;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib32 = j / 2;
    const uint s = (b[74 + ib32] >> (4 * (j % 2))) & 0xF;
    const float db = f16_at(b) * (0.5f + float(s)) * 0.25f;
    const uint qh = b[66 + ib32];
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint idx = uint(b[2 + 4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300);
        const device uint8_t* grid = tab + 8 * idx;
        const uint signs = b[34 + 4 * ib32 + l];
        for (uint t = 0; t < 8; ++t) {
            out[8 * h + t] = db * float(grid[t]) * sign_bit(signs, t);
        }
    }
}

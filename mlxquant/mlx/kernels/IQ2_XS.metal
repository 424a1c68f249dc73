// IQ2_XS (74 bytes / 256 weights): d:f16 | qs[32] u16 (9-bit grid index, 7 sign bits) | scales[8].
// Group l of sub-block ib32: grid iq2xs_grid[q & 511] (tab: 512 x 8 bytes), signs ksigns(q >> 9);
// scale nibble l/2 of scales[ib32]: y = d*(0.5 + s)*0.25 * grid * sign.
constant uint QK = 256;
constant uint BLOCK_BYTES = 74;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib32 = j / 2;
    const uint s = (b[66 + ib32] >> (4 * (j % 2))) & 0xF;
    const float db = f16_at(b) * (0.5f + float(s)) * 0.25f;
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint q = u16_at(b + 2 + 2 * (4 * ib32 + l));
        const device uint8_t* grid = tab + 8 * (q & 511);
        const uint signs = ksigns(q >> 9);
        for (uint t = 0; t < 8; ++t) {
            out[8 * h + t] = db * float(grid[t]) * sign_bit(signs, t);
        }
    }
}

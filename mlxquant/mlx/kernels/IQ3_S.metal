// IQ3_S (110 bytes / 256 weights): d:f16 | qs[64] | qh[8] | signs[32] | scales[4].
// Group l of sub-block ib32: grid entries iq3s_grid[qs[8ib32+2l] | (qh[ib32] << (8-2l)) & 256] and
// [qs[8ib32+2l+1] | (qh[ib32] << (7-2l)) & 256] (tab: 512 x 4 bytes), sign byte signs[4ib32+l];
// scale nibble ib32%2 of scales[ib32/2]: y = d*(1 + 2s) * grid * sign.
constant uint QK = 256;
constant uint BLOCK_BYTES = 110;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib32 = j / 2;
    const uint s = (b[106 + ib32 / 2] >> (4 * (ib32 % 2))) & 0xF;
    const float db = f16_at(b) * float(1 + 2 * int(s));
    const uint qh = b[66 + ib32];
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint i1 = uint(b[2 + 8 * ib32 + 2 * l]) | ((qh << (8 - 2 * l)) & 256);
        const uint i2 = uint(b[2 + 8 * ib32 + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256);
        const uint signs = b[74 + 4 * ib32 + l];
        for (uint t = 0; t < 4; ++t) {
            out[8 * h + t] = db * float(tab[4 * i1 + t]) * sign_bit(signs, t);
            out[8 * h + t + 4] = db * float(tab[4 * i2 + t]) * sign_bit(signs, t + 4);
        }
    }
}

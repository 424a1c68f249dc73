// IQ1_M (56 bytes / 256 weights): qs[32] | qh[16] | scales[8] (4 x u16: 3-bit scales and, in their
// top nibbles, the f16 super-scale). Sub-block ib: groups l = 0,1 use scale bits 6(ib%2)+0..2 of
// sc[ib/2], groups 2,3 bits 6(ib%2)+3..5; grid index qs[4ib+l] | 3 bits of qh[2ib + l/2] (low
// nibble for even l, high for odd), shift -/+0.125 by bit 3 of that nibble; y = dl * (grid + delta).
constant uint QK = 256;
constant uint BLOCK_BYTES = 56;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint s0 = u16_at(b + 48), s1 = u16_at(b + 50), s2 = u16_at(b + 52), s3 = u16_at(b + 54);
    const ushort su = ushort((s0 >> 12) | ((s1 >> 8) & 0x00f0) | ((s2 >> 4) & 0x0f00) | (s3 & 0xf000));
    const float d = float(metal::as_type<half>(su));
    const uint ib = j / 2;
    const uint sc = u16_at(b + 48 + 2 * (ib / 2));
    const float dl = d * float(2 * int((sc >> (6 * (ib % 2) + 3 * (j % 2))) & 7) + 1);
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint qh = b[32 + 2 * ib + l / 2];
        const uint nib = (l % 2) ? (qh >> 4) : qh;
        const uint idx = uint(b[4 * ib + l]) | ((nib & 7) << 8);
        const float delta = (nib & 8) ? -0.125f : 0.125f;
        for (uint t = 0; t < 8; ++t) {
            out[8 * h + t] = dl * (float(metal::as_type<char>(tab[8 * idx + t])) + delta);
        }
    }
}

// IQ4_XS (136 bytes / 256 weights): d:f16 | scales_h:u16 | scales_l[4] | qs[128].
// 32-weight sub-block ib: 6-bit scale ls = (scales_l[ib/2] >> 4(ib%2)) & 15 | ((scales_h >> 2ib) & 3) << 4;
// weights 0..15 low nibbles of qs[16ib + t], 16..31 high nibbles; y = d*(ls-32) * kvalues[code].
constant uint QK = 256;
constant uint BLOCK_BYTES = 136;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib = j / 2;
    const uint ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((u16_at(b + 2) >> (2 * ib)) & 3) << 4);
    const float dl = f16_at(b) * float(int(ls) - 32);
    const uint shift = 4 * (j % 2);
    for (uint t = 0; t < 16; ++t) {
        out[t] = dl * float(metal::as_type<char>(tab[(b[8 + 16 * ib + t] >> shift) & 0xF]));
    }
}

// Q3_K (110 bytes / 256 weights): hmask[32] | qs[64] | scales[12] (16 x 6 bits) | d:f16.
// Sub-block j: 6-bit scale = low 4 bits (scales[j] for j < 8, scales[j-8] >> 4 after) | 2 high bits
// from scales[8 + j%4] >> 2*(j/4); codes: 2 bits at 2*((j%8)/2) of qs[32*(j/8) + 16*(j%2) + l],
// minus 4 where bit 4*(j/8) + (j%8)/2 of hmask[16*(j%2) + l] is clear.  y = d*(sc-32) * q.
constant uint QK = 256;
constant uint BLOCK_BYTES = 110;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const device uint8_t* sc = b + 96;
    const uint low = j < 8 ? (sc[j] & 0xF) : (sc[j - 8] >> 4);
    const uint high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    const float dl = f16_at(b + 108) * float(int(low | (high << 4)) - 32);
    const device uint8_t* q = b + 32 + 32 * (j / 8) + 16 * (j % 2);
    const device uint8_t* hm = b + 16 * (j % 2);
    const uint shift = 2 * ((j % 8) / 2);
    const uint m = 1u << (4 * (j / 8) + (j % 8) / 2);
    for (uint l = 0; l < 16; ++l) {
        const int qi = int((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
        out[l] = dl * float(qi);
    }
}

// Q2_K (84 bytes / 256 weights): scales[16] | qs[64] | d:f16 | dmin:f16.
// Sub-block j (16 weights, ggml's `is`): scale byte scales[j] (low nibble x d, high nibble x dmin);
// 2-bit codes at bit 2*((j%8)/2) of qs[32*(j/8) + 16*(j%2) + l].  y = d*sc * q - dmin*m.
constant uint QK = 256;
constant uint BLOCK_BYTES = 84;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const float d = f16_at(b + 80);
    const float dmin = f16_at(b + 82);
    const uint sc = b[j];
    const float dl = d * float(sc & 0xF);
    const float ml = dmin * float(sc >> 4);
    const device uint8_t* q = b + 16 + 32 * (j / 8) + 16 * (j % 2);
    const uint shift = 2 * ((j % 8) / 2);
    for (uint l = 0; l < 16; ++l) {
        out[l] = dl * float((q[l] >> shift) & 3) - ml;
    }
}

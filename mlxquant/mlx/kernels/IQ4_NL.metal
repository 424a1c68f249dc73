// IQ4_NL (18 bytes / 32 weights): d:f16 | qs[16]; weight t < 16 is the low nibble of qs[t],
// weight 16 + t the high nibble; value d * kvalues_iq4nl[code] (tab: the 16 int8 kvalues).
constant uint QK = 32;
constant uint BLOCK_BYTES = 18;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const float d = f16_at(b);
    const uint shift = 4 * j;
    for (uint t = 0; t < 16; ++t) {
        out[t] = d * float(metal::as_type<char>(tab[(b[2 + t] >> shift) & 0xF]));
    }
}

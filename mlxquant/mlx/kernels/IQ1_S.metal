// IQ1_S (50 bytes / 256 weights): d:f16 | qs[32] | qh[8] u16.
// Sub-block ib (32 weights): q = qh[ib]; scale d*(2*((q >> 12) & 7) + 1), shift -/+0.125 by bit 15;
// group l: grid iq1s_grid[qs[4ib+l] | ((q >> 3l) & 7) << 8] (tab: 2048 x 8 int8 in -1..1);
// y = dl * (grid + delta).
constant uint QK = 256;
constant uint BLOCK_BYTES = 50;

inline void dq16(const device uint8_t* b, uint j, const device uint8_t* tab, thread float* out) {
    const uint ib = j / 2;
    const uint q = u16_at(b + 34 + 2 * ib);
    const float dl = f16_at(b) * float(2 * int((q >> 12) & 7) + 1);
    const float delta = (q & 0x8000) ? -0.125f : 0.125f;
    for (uint h = 0; h < 2; ++h) {
        const uint l = 2 * (j % 2) + h;
        const uint idx = uint(b[2 + 4 * ib + l]) | (((q >> (3 * l)) & 7) << 8);
        for (uint t = 0; t < 8; ++t) {
            out[8 * h + t] = dl * (float(metal::as_type<char>(tab[8 * idx + t])) + delta);
        }
    }
}

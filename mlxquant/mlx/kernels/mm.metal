// Tiled matrix product for prompts: y[tok, row] = sum_k W[row, k] * x[tok, k], W in GGUF blocks.
// Parameters as mv.metal. Grid (64 * ceil(ROWS/32), ceil(NTOK/16), 1), threadgroup (64, 1, 1):
// a threadgroup owns a tile of 32 rows x 16 tokens. Per 16-weight step c, threads 0..31 decode
// sub-block c of rows r0+t into ws (zeros past ROWS), all 64 stage x[t0..t0+16, 16c..16c+16] in
// xs (zeros past NTOK); after the barrier thread t accumulates rows r0 + t%32, tokens
// t0 + 8(t/32) .. +8. Each decoded sub-block serves 16 tokens.
threadgroup float ws[32][17];
threadgroup float xs[16][17];
const uint t = thread_position_in_threadgroup.x;
const uint r0 = threadgroup_position_in_grid.x * 32;
const uint t0 = threadgroup_position_in_grid.y * 16;
const uint nb = uint(COLS) / QK;
const uint nsub = QK / 16;
const uint rr = t % 32;
const uint tt = 8 * (t / 32);
float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
for (uint c = 0; c < nb * nsub; ++c) {
    if (t < 32) {
        float v[16];
        if (r0 + t < uint(ROWS)) {
            dq16(w + ((r0 + t) * nb + c / nsub) * BLOCK_BYTES, c % nsub, tab, v);
        } else {
            for (uint k = 0; k < 16; ++k) {
                v[k] = 0.0f;
            }
        }
        for (uint k = 0; k < 16; ++k) {
            ws[t][k] = v[k];
        }
    }
    for (uint i = t; i < 256; i += 64) {
        const uint tk = i / 16, k = i % 16;
        xs[tk][k] = (t0 + tk < uint(NTOK)) ? x[(t0 + tk) * uint(COLS) + 16 * c + k] : 0.0f;
    }
    metal::threadgroup_barrier(metal::mem_flags::mem_threadgroup);
    for (uint q = 0; q < 8; ++q) {
        float s = 0.0f;
        for (uint k = 0; k < 16; ++k) {
            s += ws[rr][k] * xs[tt + q][k];
        }
        acc[q] += s;
    }
    metal::threadgroup_barrier(metal::mem_flags::mem_threadgroup);
}
for (uint q = 0; q < 8; ++q) {
    if (r0 + rr < uint(ROWS) && t0 + tt + q < uint(NTOK)) {
        y[(t0 + tt + q) * uint(ROWS) + r0 + rr] = acc[q];
    }
}

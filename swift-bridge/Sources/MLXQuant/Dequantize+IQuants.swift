// The i-quants of ggml (ggml-common.h): grid types IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S,
// IQ1_M and the non-linear IQ4_NL, IQ4_XS, decoded in the order and with the float32 operations of
// ggml's dequantize_row_iq* (ggml-quants.c).
//
// A grid type stores a group of 8 (or 4) weights as an index into a fixed grid of small vectors;
// the grids are built once, at first use, from the code tables in Dequantize+IQuantGrids.swift.
// Signs: ggml writes `db * grid[j] * (negative ? -1.f : 1.f)`, which the compiled C turns into a
// sign-bit flip of `db * grid[j]`; `-v` below is the same flip (a NaN scale decodes to NaNs of
// both signs, as in ggml).

extension Dequantize {
    /// Expands codes of `weights` levels of `bits` bits each (LSB first) through `value`.
    private static func expandGrid<T>(_ codes: [UInt16], weights: Int, bits: Int, _ value: (Int) -> T) -> [T] {
        var out: [T] = []
        out.reserveCapacity(codes.count * weights)
        let mask = (1 << bits) - 1
        for code in codes {
            for k in 0 ..< weights { out.append(value((Int(code) >> (bits * k)) & mask)) }
        }
        return out
    }

    private static let iq2Bytes: [UInt8] = [8, 25, 43, 0]
    private static let iq3xxsBytes: [UInt8] = [4, 12, 20, 28, 36, 44, 52, 62]

    /// ggml's `iq2xxs_grid`, `iq2xs_grid`, `iq2s_grid`: 8 bytes per point, level l -> (8, 25, 43)[l].
    static let iq2xxsGrid = expandGrid(kgrid2bit256, weights: 8, bits: 2) { iq2Bytes[$0] }
    static let iq2xsGrid = expandGrid(kgrid2bit512, weights: 8, bits: 2) { iq2Bytes[$0] }
    static let iq2sGrid = expandGrid(kgrid2bit1024, weights: 8, bits: 2) { iq2Bytes[$0] }
    /// ggml's `iq3xxs_grid` (level l -> 8l + 4, the last 62) and `iq3s_grid` (l -> 2l + 1): 4 bytes per point.
    static let iq3xxsGrid = expandGrid(kgrid3bit256, weights: 4, bits: 3) { iq3xxsBytes[$0] }
    static let iq3sGrid = expandGrid(kgrid3bit512, weights: 4, bits: 3) { UInt8(2 * $0 + 1) }
    /// ggml's `iq1s_grid`: 8 int8 per point, level l -> l - 1.
    static let iq1sGrid = expandGrid(kgrid1bit2048, weights: 8, bits: 2) { Int8($0 - 1) }

    /// ggml's `kvalues_iq4nl`.
    static let iq4nlValues: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

    /// ggml's `IQ1S_DELTA`: the shift of IQ1_S/IQ1_M's ternary grid values.
    static let iq1Delta: Float = 0.125

    /// `ksigns_iq2xs[k]`: 7 sign bits completed with their parity in bit 7 (an even count of minus signs).
    @inline(__always) static func ksigns(_ k: UInt32) -> UInt32 { k | (UInt32(k.nonzeroBitCount & 1) << 7) }

    /// `v`, negated (sign bit flipped) when bit `j` of `signs` is set.
    @inline(__always) static func signed(_ v: Float, _ signs: UInt32, _ j: Int) -> Float {
        (signs >> UInt32(j)) & 1 != 0 ? -v : v
    }

    /// IQ2_XXS, 66 bytes: `d: f16 | qs: 8 x (u32 grid bytes, u32 4 x 7 sign bits | 4-bit scale << 28)`.
    /// 8 sub-blocks of 32 = 4 groups of 8 from `iq2xxs_grid`; db = d * (0.5 + s) * 0.25.
    static func decodeIQ2_XXS(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq2xxsGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 66 * i
                let d = src.f16(b)
                for ib32 in 0 ..< 8 {
                    let aux0 = src.u32(b + 2 + 8 * ib32), aux1 = src.u32(b + 6 + 8 * ib32)
                    let db = d * (0.5 + Float(aux1 >> 28)) * 0.25
                    for l in 0 ..< 4 {
                        let g = 8 * Int((aux0 >> UInt32(8 * l)) & 0xFF)
                        let signs = ksigns((aux1 >> UInt32(7 * l)) & 127)
                        for j in 0 ..< 8 { y[o + j] = signed(db * Float(grid[g + j]), signs, j) }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ2_XS, 74 bytes: `d: f16 | qs[32] u16 (9-bit grid index | 7 sign bits << 9) | scales[8] (two 4-bit)`.
    /// 8 sub-blocks of 32, each two halves of 16 with scale d * (0.5 + s) * 0.25.
    static func decodeIQ2_XS(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq2xsGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 74 * i
                let d = src.f16(b)
                for ib32 in 0 ..< 8 {
                    let sc = src.u8(b + 66 + ib32)
                    let db = (d * (0.5 + Float(sc & 0x0F)) * 0.25, d * (0.5 + Float(sc >> 4)) * 0.25)
                    for l in 0 ..< 4 {
                        let q = UInt32(src.u16(b + 2 + 2 * (4 * ib32 + l)))
                        let g = 8 * Int(q & 511)
                        let signs = ksigns(q >> 9)
                        let dl = l < 2 ? db.0 : db.1
                        for j in 0 ..< 8 { y[o + j] = signed(dl * Float(grid[g + j]), signs, j) }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ2_S, 82 bytes: `d: f16 | qs[32] grid index low bits | signs[32] | qh[8] (4 x 2 high bits) | scales[8]`.
    /// As IQ2_XS with a 10-bit index into `iq2s_grid` and 8 explicit sign bits per group.
    static func decodeIQ2_S(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq2sGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 82 * i
                let d = src.f16(b)
                for ib32 in 0 ..< 8 {
                    let sc = src.u8(b + 74 + ib32)
                    let db = (d * (0.5 + Float(sc & 0x0F)) * 0.25, d * (0.5 + Float(sc >> 4)) * 0.25)
                    let qh = Int(src.u8(b + 66 + ib32))
                    for l in 0 ..< 4 {
                        let g = 8 * (Int(src.u8(b + 2 + 4 * ib32 + l)) | (((qh >> (2 * l)) & 3) << 8))
                        let signs = UInt32(src.u8(b + 34 + 4 * ib32 + l))
                        let dl = l < 2 ? db.0 : db.1
                        for j in 0 ..< 8 { y[o + j] = signed(dl * Float(grid[g + j]), signs, j) }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ3_XXS, 98 bytes: `d: f16 | qs[64] grid indices | 8 x u32 (4 x 7 sign bits | 4-bit scale << 28)`.
    /// 8 sub-blocks of 32 = 4 groups of 8 = two 4-weight points of `iq3xxs_grid`; db = d * (0.5 + s) * 0.5.
    static func decodeIQ3_XXS(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq3xxsGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 98 * i
                let d = src.f16(b)
                for ib32 in 0 ..< 8 {
                    let aux = src.u32(b + 66 + 4 * ib32)
                    let db = d * (0.5 + Float(aux >> 28)) * 0.5
                    let qs = b + 2 + 8 * ib32
                    for l in 0 ..< 4 {
                        let signs = ksigns((aux >> UInt32(7 * l)) & 127)
                        let g1 = 4 * Int(src.u8(qs + 2 * l)), g2 = 4 * Int(src.u8(qs + 2 * l + 1))
                        for j in 0 ..< 4 {
                            y[o + j] = signed(db * Float(grid[g1 + j]), signs, j)
                            y[o + j + 4] = signed(db * Float(grid[g2 + j]), signs, j + 4)
                        }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ3_S, 110 bytes: `d: f16 | qs[64] index low bits | qh[8] (ninth bits) | signs[32] | scales[4] (two 4-bit)`.
    /// 8 sub-blocks of 32, scale d * (1 + 2s), two 4-weight points of `iq3s_grid` per group of 8.
    static func decodeIQ3_S(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq3sGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 110 * i
                let d = src.f16(b)
                for ib32 in 0 ..< 8 {
                    let s = Int((src.u8(b + 106 + ib32 / 2) >> UInt8(4 * (ib32 % 2))) & 0x0F)
                    let db = d * Float(1 + 2 * s)
                    let qh = Int(src.u8(b + 66 + ib32))
                    let qs = b + 2 + 8 * ib32
                    for l in 0 ..< 4 {
                        let signs = UInt32(src.u8(b + 74 + 4 * ib32 + l))
                        let g1 = 4 * (Int(src.u8(qs + 2 * l)) | (((qh >> (2 * l)) & 1) << 8))
                        let g2 = 4 * (Int(src.u8(qs + 2 * l + 1)) | (((qh >> (2 * l + 1)) & 1) << 8))
                        for j in 0 ..< 4 {
                            y[o + j] = signed(db * Float(grid[g1 + j]), signs, j)
                            y[o + j + 4] = signed(db * Float(grid[g2 + j]), signs, j + 4)
                        }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ1_S, 50 bytes: `d: f16 | qs[32] index low bits | qh[8] u16 (4 x 3 high bits | 3-bit scale << 12 | delta sign << 15)`.
    /// 8 sub-blocks of 32; w = d * (2s + 1) * (iq1s_grid + delta), delta = -0.125 if bit 15 else 0.125.
    static func decodeIQ1_S(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq1sGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 50 * i
                let d = src.f16(b)
                for ib in 0 ..< 8 {
                    let qh = Int(src.u16(b + 34 + 2 * ib))
                    let dl = d * Float(2 * ((qh >> 12) & 7) + 1)
                    let delta = qh & 0x8000 != 0 ? -iq1Delta : iq1Delta
                    for l in 0 ..< 4 {
                        let g = 8 * (Int(src.u8(b + 2 + 4 * ib + l)) | (((qh >> (3 * l)) & 7) << 8))
                        for j in 0 ..< 8 { y[o + j] = dl * (Float(grid[g + j]) + delta) }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ1_M, 56 bytes: `qs[32] index low bits | qh[16] (2 x (3 high bits | delta sign << 3)) | scales: 4 x u16`.
    /// The scales hold 16 3-bit sub-block scales (12 bits per u16) and, in their top nibbles, the f16 `d`.
    /// 16 sub-blocks of 16; w = d * (2s + 1) * (iq1s_grid + delta).
    static func decodeIQ1_M(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq1sGrid.withUnsafeBufferPointer { grid in
            var o = 0
            for i in 0 ..< blocks {
                let b = 56 * i
                let sc = (Int(src.u16(b + 48)), Int(src.u16(b + 50)), Int(src.u16(b + 52)), Int(src.u16(b + 54)))
                let bits = (sc.0 >> 12) | ((sc.1 >> 8) & 0x00F0) | ((sc.2 >> 4) & 0x0F00) | (sc.3 & 0xF000)
                let d = HalfFloat.halfToFloat(UInt16(bits))
                for ib in 0 ..< 8 {
                    let s = ib < 2 ? sc.0 : ib < 4 ? sc.1 : ib < 6 ? sc.2 : sc.3
                    let shift = 6 * (ib % 2)
                    let dl = (d * Float(2 * ((s >> shift) & 7) + 1), d * Float(2 * ((s >> (shift + 3)) & 7) + 1))
                    for l in 0 ..< 4 {
                        let qh = Int(src.u8(b + 32 + 2 * ib + l / 2)) >> (4 * (l % 2))
                        let g = 8 * (Int(src.u8(b + 4 * ib + l)) | ((qh & 7) << 8))
                        let delta = qh & 0x08 != 0 ? -iq1Delta : iq1Delta
                        let scale = l < 2 ? dl.0 : dl.1
                        for j in 0 ..< 8 { y[o + j] = scale * (Float(grid[g + j]) + delta) }
                        o += 8
                    }
                }
            }
        }
    }

    /// IQ4_NL, 18 bytes: `d: f16 | qs[16]`; w = d * kvalues_iq4nl[q] (low nibbles, then high nibbles).
    static func decodeIQ4_NL(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq4nlValues.withUnsafeBufferPointer { kv in
            for i in 0 ..< blocks {
                let b = 18 * i, o = 32 * i
                let d = src.f16(b)
                for j in 0 ..< 16 {
                    let q = src.u8(b + 2 + j)
                    y[o + j] = d * Float(kv[Int(q & 0x0F)])
                    y[o + j + 16] = d * Float(kv[Int(q >> 4)])
                }
            }
        }
    }

    /// IQ4_XS, 136 bytes: `d: f16 | scales_h: u16 (8 x 2 high bits) | scales_l[4] (8 x 4 low bits) | qs[128]`.
    /// 8 sub-blocks of 32; w = d * (s - 32) * kvalues_iq4nl[q], s 6 bits.
    static func decodeIQ4_XS(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        iq4nlValues.withUnsafeBufferPointer { kv in
            var o = 0
            for i in 0 ..< blocks {
                let b = 136 * i
                let d = src.f16(b)
                let high = Int(src.u16(b + 2))
                for ib in 0 ..< 8 {
                    let low = Int(src.u8(b + 4 + ib / 2) >> UInt8(4 * (ib % 2))) & 0x0F
                    let dl = d * Float((low | (((high >> (2 * ib)) & 3) << 4)) - 32)
                    let qs = b + 8 + 16 * ib
                    for j in 0 ..< 16 {
                        let q = src.u8(qs + j)
                        y[o + j] = dl * Float(kv[Int(q & 0x0F)])
                        y[o + j + 16] = dl * Float(kv[Int(q >> 4)])
                    }
                    o += 32
                }
            }
        }
    }
}

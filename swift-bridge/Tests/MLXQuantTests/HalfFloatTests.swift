import XCTest
@testable import MLXQuant

final class HalfFloatTests: XCTestCase {
    func testHalfToFloatKnownValues() {
        XCTAssertEqual(HalfFloat.halfToFloat(0x3C00), 1.0)
        XCTAssertEqual(HalfFloat.halfToFloat(0xC000), -2.0)
        XCTAssertEqual(HalfFloat.halfToFloat(0x7BFF), 65504.0)
        XCTAssertEqual(HalfFloat.halfToFloat(0x0001), Float(bitPattern: 0x3380_0000))  // 2^-24
        XCTAssertEqual(HalfFloat.halfToFloat(0x8000).bitPattern, (-Float(0)).bitPattern)
        XCTAssertEqual(HalfFloat.halfToFloat(0x7C00), .infinity)
        XCTAssertTrue(HalfFloat.halfToFloat(0x7E00).isNaN)
    }

    func testRoundTripEveryHalf() {
        for h in 0 ... UInt16.max {
            let f = HalfFloat.halfToFloat(h)
            if f.isNaN { continue }
            XCTAssertEqual(HalfFloat.floatToHalf(f), h)
        }
    }

    func testFloatToHalfRoundsToNearestEven() {
        XCTAssertEqual(HalfFloat.floatToHalf(1.0 + 1.0 / 2048), 0x3C00)           // tie -> even (down)
        XCTAssertEqual(HalfFloat.floatToHalf(1.0 + 3.0 / 2048), 0x3C02)           // tie -> even (up)
        XCTAssertEqual(HalfFloat.floatToHalf(65520), 0x7C00)                       // rounds to infinity
        XCTAssertEqual(HalfFloat.floatToHalf(Float(bitPattern: 0x3300_0000)), 0)   // 2^-25: tie -> 0
        XCTAssertEqual(HalfFloat.floatToHalf(Float(bitPattern: 0x3300_0001)), 1)
        XCTAssertEqual(HalfFloat.floatToBFloat16(1.0 + 1.0 / 256), 0x3F80)        // tie -> even
        XCTAssertEqual(HalfFloat.floatToBFloat16(1.0 + 3.0 / 256), 0x3F82)
    }

    #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
    /// Against the platform's own `Float16` conversions on a spread of float32 bit patterns.
    func testAgainstFloat16() {
        var x: UInt32 = 0x1234_5678
        for _ in 0 ..< 200_000 {
            x = x &* 1_664_525 &+ 1_013_904_223                  // LCG over all bit patterns
            let f = Float(bitPattern: x)
            if f.isNaN { continue }
            XCTAssertEqual(HalfFloat.floatToHalf(f), Float16(f).bitPattern, "\(f)")
        }
        for h in 0 ... UInt16.max where !Float16(bitPattern: h).isNaN {
            XCTAssertEqual(HalfFloat.halfToFloat(h).bitPattern, Float(Float16(bitPattern: h)).bitPattern)
        }
    }
    #endif
}

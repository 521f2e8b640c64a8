//! The numbers of the CSV fast path: `[+-]digits[.digits]` to the same f64
//! `fast_float2` gives (correctly rounded), for less work in the common
//! case.
//!
//! [`finite_number`] reads eight digits at a time in a `u64` and leaves
//! anything else (exponents, long mantissas, `inf`, `nan`) to `fast_float2`;
//! [`finite_number_sse41`] first tries [`sse_decimal`], which reads the
//! sign, the digits and the point of a number of up to 15 digits in one
//! 16-byte vector (about 120 instead of 200 instructions per field of a
//! 32-D line, see BENCHMARKS.md). Both divide the exact mantissa by an
//! exact power of ten: one correctly rounded IEEE division (Clinger's fast
//! path), so every path gives the same bits.

/// A finite number at the start of `b` and the bytes it uses, or `None`
/// (no number there, or one that overflows to ±∞ or is `nan`).
#[inline]
pub(super) fn finite_number(b: &[u8]) -> Option<(f64, usize)> {
    simple_decimal(b)
        .or_else(|| fast_float2::parse_partial::<f64, _>(b).ok())
        .filter(|(v, _)| v.is_finite())
}

/// [`finite_number`], trying [`sse_decimal`] first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
#[inline]
pub(super) fn finite_number_sse41(b: &[u8]) -> Option<(f64, usize)> {
    sse_decimal(b).or_else(|| finite_number(b))
}

/// `v` (not negative) with the sign bit set if `negative`: `-v` without a
/// branch, also for 0 (`-0.0`).
#[inline]
fn with_sign(v: f64, negative: bool) -> f64 {
    f64::from_bits(v.to_bits() | (u64::from(negative) << 63))
}

/// Shuffle controls that close the gap a decimal point leaves at byte `i`
/// (row `i`): earlier bytes stay, later ones move down by one, the last is
/// zeroed. Row 16 (no point) keeps every byte.
#[cfg(target_arch = "x86_64")]
const CLOSE_POINT: [[u8; 16]; 17] = {
    let mut t = [[0u8; 16]; 17];
    let mut i = 0;
    while i < 17 {
        let mut o = 0;
        while o < 16 {
            t[i][o] = if o < i {
                o as u8
            } else if o + 1 < 16 {
                (o + 1) as u8
            } else {
                0x80
            };
            o += 1;
        }
        i += 1;
    }
    t
};

/// [`simple_decimal`] for a number whose sign, digits, point and the byte
/// after it lie in the 16 bytes after the sign (so at most 15 digits:
/// below 2^53, exact), read as one vector: a mask of the digits and one of
/// points give the lengths; two byte shuffles drop the point and right-align
/// the digits; three multiply-adds and a pack turn them into two 8-digit
/// halves. The sign is read as in [`simple_decimal`], written out here: a
/// shared helper returning the pair cost one more instruction per field.
/// `None` (the caller goes on to [`finite_number`]) when fewer than 16
/// bytes follow the sign, the number does not end within them, there is no
/// digit, or an exponent follows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
#[inline]
fn sse_decimal(b: &[u8]) -> Option<(f64, usize)> {
    use std::arch::x86_64::*;
    let first = *b.first()?;
    let negative = first == b'-';
    let p = usize::from(negative | (first == b'+'));
    let window: &[u8; 16] = b.get(p..p + 16)?.try_into().ok()?;
    // SAFETY: `window` is 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(window.as_ptr().cast()) };
    let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
    // A digit is a byte whose distance above '0' is at most 9 (unsigned).
    let digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
    let digits = _mm_movemask_epi8(digit) as u32;
    let points = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8))) as u32;
    let int = (!digits).trailing_zeros() as usize;
    let (row, frac, end) = if (points >> int) & 1 == 1 {
        let frac = (!(digits >> (int + 1))).trailing_zeros() as usize;
        (int, frac, int + 1 + frac)
    } else {
        (16, 0, int)
    };
    let n = int + frac;
    if end >= 16 || n == 0 || matches!(window[end], b'e' | b'E') {
        return None;
    }
    // SAFETY: each row of the table is 16 bytes.
    let close = unsafe { _mm_loadu_si128(CLOSE_POINT[row].as_ptr().cast()) };
    let packed = _mm_shuffle_epi8(d, close);
    // Byte o takes digit o - (16 - n); the indices below 0 have the top bit
    // set, which makes the shuffle write 0.
    let iota = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let right = _mm_shuffle_epi8(packed, _mm_add_epi8(iota, _mm_set1_epi8(n as i8 - 16)));
    let pairs = _mm_maddubs_epi16(right, _mm_set1_epi16(0x010a)); // 10 a + b
    let fours = _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064)); // 100 ab + cd
    let fours = _mm_packus_epi32(fours, fours);
    let eights = _mm_madd_epi16(fours, _mm_set1_epi32(0x0001_2710)); // 10^4 abcd + efgh

    // The two halves as doubles, and `10^8 high + low` in them: both exact
    // (10^8 high is high · 390,625, below 2^46, times 2^8; the sum is
    // below 10^15 < 2^53), so this is the mantissa as an f64 without
    // moving to integer registers and back (a shorter chain to the
    // division, which the next fields' parse waits behind).
    let halves = _mm_cvtepi32_pd(eights);
    let high = _mm_mul_sd(halves, _mm_set_sd(1e8));
    let mantissa = _mm_add_sd(high, _mm_unpackhi_pd(halves, halves));
    debug_assert!(_mm_cvtsd_f64(mantissa) < (1u64 << 53) as f64);
    let v = _mm_div_sd(mantissa, _mm_set_sd(EXACT_POW10[frac]));
    // The sign bit, or-ed in as `with_sign` does.
    let sign = _mm_castsi128_pd(_mm_cvtsi64_si128(i64::from(negative) << 63));
    Some((_mm_cvtsd_f64(_mm_or_pd(v, sign)), p + end))
}

/// Powers of ten that are exact in an f64.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The common case of a number at the start of `b`, `[+-]digits[.digits]`
/// with no exponent, at most 19 digits whose integer fits in 53 bits and at
/// most 22 after the point: then `mantissa / 10^k` is one correctly rounded
/// IEEE division of two exact values (Clinger's fast path), the same f64
/// `fast_float2` returns. Returns the value and the bytes used, or `None`
/// to leave the number to `fast_float2` (exponents, long mantissas,
/// `inf`/`nan`, no digits). Consumes exactly what `fast_float2`'s partial
/// parse would.
#[inline]
fn simple_decimal(b: &[u8]) -> Option<(f64, usize)> {
    // The sign without a branch: random signs would mispredict half the time.
    let first = b.first().copied().unwrap_or(0);
    let negative = first == b'-';
    let p = usize::from(negative | (first == b'+'));
    let (mut mantissa, int_end) = digits(b, p, 0);
    let mut count = int_end - p;
    let mut p = int_end;
    let mut frac = 0;
    if b.get(p) == Some(&b'.') {
        let (m, frac_end) = digits(b, p + 1, mantissa);
        mantissa = m;
        frac = frac_end - (p + 1);
        count += frac;
        p = frac_end;
    }
    let digits = count;
    if digits == 0
        || digits > 19
        || frac >= EXACT_POW10.len()
        || mantissa > (1 << 53)
        || matches!(b.get(p), Some(b'e' | b'E'))
    {
        return None;
    }
    let v = mantissa as f64 / EXACT_POW10[frac];
    Some((with_sign(v, negative), p))
}

/// `10^k` for `k <= 8`.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Reads the run of ASCII digits starting at `p`, folding them into
/// `mantissa` (wrapping; callers reject more than 19 digits), eight at a
/// time where eight bytes are available. Returns the new mantissa and the
/// end of the run (it may stop early, after more than 19 digits).
#[inline]
fn digits(b: &[u8], mut p: usize, mut mantissa: u64) -> (u64, usize) {
    let start = p;
    while let Some(bytes) = b.get(p..p + 8) {
        let word = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
        let k = first_non_digit(word);
        if k == 0 {
            return (mantissa, p);
        }
        // Left-pad a partial run with '0' bytes (the low bytes come first).
        let padded = if k == 8 {
            word
        } else {
            (word << (8 * (8 - k))) | (0x3030_3030_3030_3030 >> (8 * k))
        };
        mantissa = mantissa
            .wrapping_mul(POW10_U64[k])
            .wrapping_add(eight_digits(padded));
        p += k;
        if k < 8 || p - start > 19 {
            return (mantissa, p);
        }
    }
    while let Some(&c) = b.get(p) {
        let d = c.wrapping_sub(b'0');
        if d >= 10 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        p += 1;
    }
    (mantissa, p)
}

/// Index (0..=8) of the first byte of a little-endian word that is not an
/// ASCII digit. Borrows and carries only move towards later bytes, so the
/// bytes before the first non-digit are judged exactly.
#[inline]
fn first_non_digit(word: u64) -> usize {
    let below = word.wrapping_sub(0x3030_3030_3030_3030);
    let above = word.wrapping_add(0x4646_4646_4646_4646);
    let mask = (below | above) & 0x8080_8080_8080_8080;
    (mask.trailing_zeros() / 8) as usize
}

/// The value of eight ASCII digits in a little-endian word (first digit in
/// the lowest byte), by the usual SWAR multiply-and-shift.
#[inline]
fn eight_digits(word: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1000000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10000 << 32)
    let v = word.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    u64::from((v1.wrapping_add(v2) >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next number of a xorshift generator.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A decimal of 1 to 15 significant digits (below 2^53) drawn from `x`,
    /// with a point somewhere, no sign.
    fn random_decimal(x: u64) -> String {
        let digits = 1 + (x % 15) as usize;
        let point = (x >> 8) as usize % (digits + 1);
        let mut s: String = format!("{:019}", x >> 1)[..digits].to_owned();
        s.insert(point, '.');
        s
    }

    #[test]
    fn simple_decimal_matches_fast_float() {
        let cases = [
            "0",
            "-0",
            "1",
            "-1.2345678",
            "3.4567890",
            "+2.5",
            ".5",
            "5.",
            "007.250",
            "0.1",
            "0.3",
            "123456789012345678",
            "9007199254740993",
            "1234567.1234567",
            "0.0000000000000000000001",
            "-99999999.99999999",
            "1.5e3",
            "1e",
            "inf",
            "nan",
            ".",
            "-",
            "1.5.3",
            "12,3",
            "4 5",
            "0.12345678901234567890123",
            "18446744073709551616",
        ];
        for case in cases {
            let ours = simple_decimal(case.as_bytes());
            let theirs = fast_float2::parse_partial::<f64, _>(case).ok();
            let padded = format!("{case};00000000");
            let ours_padded = simple_decimal(padded.as_bytes());
            assert_eq!(ours_padded.map(|x| x.1), ours.map(|x| x.1), "{case}");
            assert_eq!(
                ours_padded.map(|x| x.0.to_bits()),
                ours.map(|x| x.0.to_bits()),
                "{case}"
            );
            if let Some((v, used)) = ours {
                let (w, used2) = theirs.unwrap_or_else(|| panic!("{case}: fast_float failed"));
                assert_eq!(used, used2, "{case}");
                assert_eq!(v.to_bits(), w.to_bits(), "{case}");
            }
        }
        assert!(simple_decimal(b"1.5e3").is_none());
        assert!(simple_decimal(b"-1.25,").is_some());
        // Random decimals with 1 to 15 significant digits (always < 2^53).
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            let x = next(&mut state);
            let mut s = random_decimal(x);
            if x & 1 == 1 {
                s.insert(0, '-');
            }
            let w: f64 = s.parse().unwrap_or_else(|_| panic!("{s}"));
            // Alone (byte loop) and followed by more text (eight at a time).
            for text in [s.clone(), format!("{s},12345678"), format!("{s}\n")] {
                let (v, used) = simple_decimal(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
                assert_eq!(used, s.len(), "{text}");
                assert_eq!(v.to_bits(), w.to_bits(), "{text}");
            }
        }
    }

    /// Random text around numbers: whatever `sse_decimal` accepts is what
    /// `fast_float2` reads, to the bit and the byte, and it accepts the
    /// common numbers (so the comparison is not empty).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse_decimal_matches_fast_float() {
        if !std::is_x86_feature_detected!("sse4.1") {
            eprintln!("skipped: this CPU has no SSE4.1");
            return;
        }
        let check = |text: &[u8]| {
            // SAFETY: the CPU has SSE4.1.
            let ours = unsafe { sse_decimal(text) };
            let all = unsafe { finite_number_sse41(text) };
            assert_eq!(
                all.map(|(v, n)| (v.to_bits(), n)),
                finite_number(text).map(|(v, n)| (v.to_bits(), n)),
                "{:?}",
                String::from_utf8_lossy(text)
            );
            if let Some((v, used)) = ours {
                let (w, used2) = fast_float2::parse_partial::<f64, _>(text)
                    .unwrap_or_else(|_| panic!("{:?}", String::from_utf8_lossy(text)));
                assert_eq!(
                    (v.to_bits(), used),
                    (w.to_bits(), used2),
                    "{:?}",
                    String::from_utf8_lossy(text)
                );
            }
            ours.is_some()
        };
        // Every short string over an alphabet of number bytes and
        // terminators, padded to 16 bytes or more.
        let alphabet = b"09.-+eE,\n x";
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut accepted = 0;
        for _ in 0..200_000 {
            let x = next(&mut state);
            let len = (x % 20) as usize;
            let mut text: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (3 * i % 60)) % alphabet.len() as u64) as usize])
                .collect();
            // Digits other than 0 and 9 too.
            for (i, c) in text.iter_mut().enumerate() {
                if *c == b'9' {
                    *c = b'0' + ((x >> (i % 60)) % 10) as u8;
                }
            }
            text.extend_from_slice(b",12345678901234567");
            accepted += usize::from(check(&text));
        }
        assert!(accepted > 10_000, "{accepted}");
        // Random decimals of 1 to 15 significant digits are all read here.
        for _ in 0..100_000 {
            let x = next(&mut state);
            let mut s = random_decimal(x);
            match x >> 62 {
                0 => s.insert(0, '-'),
                1 => s.insert(0, '+'),
                _ => {}
            }
            for text in [
                format!("{s},1234567890123456"),
                format!("{s}\n-1,2,3,4,5,6,7,8"),
            ] {
                let fits = s.len() - usize::from(x >> 62 < 2) < 16;
                assert_eq!(check(text.as_bytes()), fits, "{text}");
            }
        }
        // The largest halves (the mantissa is put together in doubles) and
        // signed zeros, all read here.
        for s in [
            "999999999999999",
            "9999999.9999999",
            "-999999.99999999",
            "100000000000000",
            "0.0000000000001",
            "-0",
            "-0.000",
            "0",
        ] {
            assert!(check(format!("{s},1234567890123456").as_bytes()), "{s}");
        }
        // Too few bytes, an exponent, no digit, 16 digits: left to the rest.
        for text in [
            "1.5",
            "1.5e3,1234567890123",
            ".,1234567890123456",
            "-,1234567890123456",
            "1234567890123456,0",
        ] {
            assert!(!check(text.as_bytes()), "{text}");
        }
    }
}

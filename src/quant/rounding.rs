//! Scalar helpers that ggml's quantizers share, written to give ggml's exact results.

/// ggml's `nearest_int`: the float magic-number trick, which rounds to nearest with ties to even
/// for |x| < 2^22 (the range quantizers normally feed it).
///
/// Outside that range it returns the same garbage as ggml, deliberately without a check: ggml's
/// `assert(fabsf(fval) <= 4194303.f)` is compiled out (`-DNDEBUG`) in the reference build, and
/// the k-quant searches do feed it infinities and NaNs when a group of subnormal values makes an
/// inverse scale overflow (±inf give -2^22 and NaN gives 0, which the callers then clamp).
#[inline]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// A C float-to-int conversion as the reference build executes it on x86-64 (`cvttss2si`):
/// truncation toward zero, and the "integer indefinite" value `i32::MIN` for NaN and anything
/// out of range. ggml relies on this when a subnormal block scale makes `1/d` infinite: the
/// stored int8 is then the low byte of `i32::MIN`, i.e. 0.
#[inline]
pub fn c_float_to_int(v: f32) -> i32 {
    if v.is_nan() || !(-2147483648.0..2147483648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// IEEE half from f32 exactly as ggml's portable `ggml_compute_fp32_to_fp16` (ggml-impl.h), which
/// the reference quantizers use: round to nearest even, overflow to infinity, NaN to 0x7E00.
#[inline]
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xff00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        }) as u16
}

/// f32 from IEEE half bits, as ggml's `GGML_FP16_TO_FP32`.
#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// bf16 from f32 as ggml's `ggml_compute_fp32_to_bf16`: NaNs become quiet NaNs, everything else
/// rounds to nearest even.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// f32 from bf16 bits (exact).
#[inline]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_matches_round_half_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(126.6), 127);
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is exactly half way between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(bf16_bits_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn f16_matches_ieee_round_to_nearest_even() {
        // Away from NaN, ggml's conversion is IEEE rounding, which `half` also implements.
        let mut x = 1.0e-8f32;
        while x < 7.0e4 {
            for v in [x, -x, x * 1.000_37, x * 0.999_71] {
                assert_eq!(f32_to_f16_bits(v), half::f16::from_f32(v).to_bits(), "{v}");
            }
            x *= 1.013;
        }
        assert_eq!(f32_to_f16_bits(f32::NAN), 0x7e00);
        assert_eq!(f32_to_f16_bits(1.0e6), 0x7c00);
    }
}

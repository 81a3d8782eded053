//! Four-lane f32/i32 vectors for the quantizers that are not dispatched per CPU (the low-bit
//! IQ/TQ/FP4 types and the legacy `_ref` paths; the hot quantizers use the eight-lane,
//! runtime-dispatched [`super::simd8`]).
//!
//! Every operation is the IEEE single-precision operation of the scalar code, applied to each
//! lane independently (SSE2 `addps` is four `addss`), so a lane computes bit for bit what the
//! scalar port computes: vectors are only ever laid across independent quantities (the
//! candidate scales of a search, the sub-blocks of a super-block, the values of a block), never
//! across the terms of one sum. No fused multiply-add exists in this module.
//!
//! On x86-64 the lanes are SSE2 registers (part of the baseline, no runtime detection needed);
//! elsewhere they are plain arrays with the same per-lane semantics.

#![allow(clippy::missing_safety_doc)]

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Sub};

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct F32x4(pub __m128);

    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct I32x4(pub __m128i);

    // SSE/SSE2 are part of the x86-64 baseline: these intrinsics are always available.
    impl F32x4 {
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            unsafe { F32x4(_mm_set1_ps(v)) }
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> Self {
            unsafe { F32x4(_mm_loadu_ps(a.as_ptr())) }
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            let mut a = [0.0f32; 4];
            unsafe { _mm_storeu_ps(a.as_mut_ptr(), self.0) };
            a
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            unsafe { F32x4(_mm_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            unsafe { F32x4(_mm_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            unsafe { F32x4(_mm_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn div(self, o: Self) -> Self {
            unsafe { F32x4(_mm_div_ps(self.0, o.0)) }
        }
        /// Lane mask (all ones / all zeros) of `self >= o`; false for NaN.
        #[inline(always)]
        pub fn ge(self, o: Self) -> Self {
            unsafe { F32x4(_mm_cmpge_ps(self.0, o.0)) }
        }
        /// Lane mask of `self > o`; false for NaN.
        #[inline(always)]
        pub fn gt(self, o: Self) -> Self {
            unsafe { F32x4(_mm_cmpgt_ps(self.0, o.0)) }
        }
        /// Lane mask of `self < o`; false for NaN.
        #[inline(always)]
        pub fn lt(self, o: Self) -> Self {
            unsafe { F32x4(_mm_cmplt_ps(self.0, o.0)) }
        }
        /// Lane mask of `self` being NaN.
        #[inline(always)]
        pub fn is_nan(self) -> Self {
            unsafe { F32x4(_mm_cmpunord_ps(self.0, self.0)) }
        }
        #[inline(always)]
        pub fn and(self, o: Self) -> Self {
            unsafe { F32x4(_mm_and_ps(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn or(self, o: Self) -> Self {
            unsafe { F32x4(_mm_or_ps(self.0, o.0)) }
        }
        /// `!self & o`.
        #[inline(always)]
        pub fn andnot(self, o: Self) -> Self {
            unsafe { F32x4(_mm_andnot_ps(self.0, o.0)) }
        }
        /// `self > o ? self : o` per lane (`maxps`; only used on lanes known not to be NaN).
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            unsafe { F32x4(_mm_max_ps(self.0, o.0)) }
        }
        /// Lanes (2, 3, 0, 1).
        #[inline(always)]
        pub fn swap_halves(self) -> Self {
            unsafe { F32x4(_mm_shuffle_ps::<0b01_00_11_10>(self.0, self.0)) }
        }
        /// Lanes (1, 0, 3, 2).
        #[inline(always)]
        pub fn swap_pairs(self) -> Self {
            unsafe { F32x4(_mm_shuffle_ps::<0b10_11_00_01>(self.0, self.0)) }
        }
        /// Lane 0.
        #[inline(always)]
        pub fn first(self) -> f32 {
            unsafe { _mm_cvtss_f32(self.0) }
        }
        /// Bit of each lane's sign (as a 4-bit integer); with a mask, which lanes are set.
        #[inline(always)]
        pub fn bitmask(self) -> u32 {
            unsafe { _mm_movemask_ps(self.0) as u32 }
        }
        #[inline(always)]
        pub fn to_bits(self) -> I32x4 {
            unsafe { I32x4(_mm_castps_si128(self.0)) }
        }
        /// C's float-to-int conversion as x86-64 executes it (`cvttps2dq`, the packed
        /// `cvttss2si`): truncation toward zero, `i32::MIN` for NaN and out-of-range lanes.
        #[inline(always)]
        pub fn to_i32_trunc(self) -> I32x4 {
            unsafe { I32x4(_mm_cvttps_epi32(self.0)) }
        }
    }

    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub struct U8x16(pub __m128i);

    impl U8x16 {
        /// The low bytes of the lanes of `v[0..4]`, in order.
        #[inline(always)]
        pub fn from_low_bytes(v: [I32x4; 4]) -> Self {
            unsafe {
                let m = _mm_set1_epi32(0xff);
                let a = _mm_packs_epi32(_mm_and_si128(v[0].0, m), _mm_and_si128(v[1].0, m));
                let b = _mm_packs_epi32(_mm_and_si128(v[2].0, m), _mm_and_si128(v[3].0, m));
                U8x16(_mm_packus_epi16(a, b))
            }
        }
        #[inline(always)]
        pub fn to_array(self) -> [u8; 16] {
            let mut out = [0u8; 16];
            unsafe { _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, self.0) };
            out
        }
    }

    impl I32x4 {
        /// `self << N` per lane.
        #[inline(always)]
        pub fn shl<const N: i32>(self) -> Self {
            unsafe { I32x4(_mm_slli_epi32::<N>(self.0)) }
        }

        #[inline(always)]
        pub fn splat(v: i32) -> Self {
            unsafe { I32x4(_mm_set1_epi32(v)) }
        }
        #[inline(always)]
        pub fn to_array(self) -> [i32; 4] {
            let mut a = [0i32; 4];
            unsafe { _mm_storeu_si128(a.as_mut_ptr() as *mut __m128i, self.0) };
            a
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            unsafe { I32x4(_mm_add_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            unsafe { I32x4(_mm_sub_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn and(self, o: Self) -> Self {
            unsafe { I32x4(_mm_and_si128(self.0, o.0)) }
        }
        #[inline(always)]
        pub fn or(self, o: Self) -> Self {
            unsafe { I32x4(_mm_or_si128(self.0, o.0)) }
        }
        /// Lane mask of `self > o`.
        #[inline(always)]
        pub fn gt(self, o: Self) -> Self {
            unsafe { I32x4(_mm_cmpgt_epi32(self.0, o.0)) }
        }
        /// `mask ? a : b` per lane, `mask` lanes all ones or all zeros.
        #[inline(always)]
        pub fn select(mask: Self, a: Self, b: Self) -> Self {
            unsafe {
                I32x4(_mm_or_si128(
                    _mm_and_si128(mask.0, a.0),
                    _mm_andnot_si128(mask.0, b.0),
                ))
            }
        }
        /// Exact for the small integers it is used on (`cvtdq2ps`, round to nearest).
        #[inline(always)]
        pub fn to_f32(self) -> super::F32x4 {
            unsafe { F32x4(_mm_cvtepi32_ps(self.0)) }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F32x4(pub [f32; 4]);

    #[derive(Clone, Copy)]
    pub struct I32x4(pub [i32; 4]);

    #[inline(always)]
    fn m(b: bool) -> f32 {
        f32::from_bits(if b { u32::MAX } else { 0 })
    }

    macro_rules! lanes {
        ($a:expr, |$i:ident| $e:expr) => {{
            let _ = &$a;
            let mut out = $a;
            for $i in 0..4 {
                out[$i] = $e;
            }
            out
        }};
    }

    impl F32x4 {
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4([v; 4])
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> Self {
            F32x4(a)
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| self.0[i] + o.0[i]))
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| self.0[i] - o.0[i]))
        }
        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| self.0[i] * o.0[i]))
        }
        #[inline(always)]
        pub fn div(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| self.0[i] / o.0[i]))
        }
        #[inline(always)]
        pub fn ge(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| m(self.0[i] >= o.0[i])))
        }
        #[inline(always)]
        pub fn gt(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| m(self.0[i] > o.0[i])))
        }
        #[inline(always)]
        pub fn lt(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| m(self.0[i] < o.0[i])))
        }
        #[inline(always)]
        pub fn is_nan(self) -> Self {
            F32x4(lanes!(self.0, |i| m(self.0[i].is_nan())))
        }
        #[inline(always)]
        pub fn and(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| f32::from_bits(
                self.0[i].to_bits() & o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        pub fn or(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| f32::from_bits(
                self.0[i].to_bits() | o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        pub fn andnot(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| f32::from_bits(
                !self.0[i].to_bits() & o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(lanes!(self.0, |i| if self.0[i] > o.0[i] {
                self.0[i]
            } else {
                o.0[i]
            }))
        }
        #[inline(always)]
        pub fn swap_halves(self) -> Self {
            let a = self.0;
            F32x4([a[2], a[3], a[0], a[1]])
        }
        #[inline(always)]
        pub fn swap_pairs(self) -> Self {
            let a = self.0;
            F32x4([a[1], a[0], a[3], a[2]])
        }
        #[inline(always)]
        pub fn first(self) -> f32 {
            self.0[0]
        }
        #[inline(always)]
        pub fn bitmask(self) -> u32 {
            (0..4).fold(0, |b, i| b | ((self.0[i].to_bits() >> 31) << i))
        }
        #[inline(always)]
        pub fn to_bits(self) -> I32x4 {
            I32x4(self.0.map(|v| v.to_bits() as i32))
        }
        #[inline(always)]
        pub fn to_i32_trunc(self) -> I32x4 {
            I32x4(self.0.map(crate::quant::rounding::c_float_to_int))
        }
    }

    #[derive(Clone, Copy)]
    pub struct U8x16(pub [u8; 16]);

    impl U8x16 {
        #[inline(always)]
        pub fn from_low_bytes(v: [I32x4; 4]) -> Self {
            U8x16(std::array::from_fn(|i| v[i / 4].0[i % 4] as u8))
        }
        #[inline(always)]
        pub fn to_array(self) -> [u8; 16] {
            self.0
        }
    }

    impl I32x4 {
        #[inline(always)]
        pub fn shl<const N: i32>(self) -> Self {
            I32x4(self.0.map(|v| v << N))
        }

        #[inline(always)]
        pub fn splat(v: i32) -> Self {
            I32x4([v; 4])
        }
        #[inline(always)]
        pub fn to_array(self) -> [i32; 4] {
            self.0
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            I32x4(lanes!(self.0, |i| self.0[i].wrapping_add(o.0[i])))
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            I32x4(lanes!(self.0, |i| self.0[i].wrapping_sub(o.0[i])))
        }
        #[inline(always)]
        pub fn and(self, o: Self) -> Self {
            I32x4(lanes!(self.0, |i| self.0[i] & o.0[i]))
        }
        #[inline(always)]
        pub fn or(self, o: Self) -> Self {
            I32x4(lanes!(self.0, |i| self.0[i] | o.0[i]))
        }
        #[inline(always)]
        pub fn gt(self, o: Self) -> Self {
            I32x4(lanes!(self.0, |i| -((self.0[i] > o.0[i]) as i32)))
        }
        #[inline(always)]
        pub fn select(mask: Self, a: Self, b: Self) -> Self {
            I32x4(lanes!(mask.0, |i| (mask.0[i] & a.0[i]) | (!mask.0[i] & b.0[i])))
        }
        #[inline(always)]
        pub fn to_f32(self) -> super::F32x4 {
            F32x4(self.0.map(|v| v as f32))
        }
    }
}

pub use imp::{F32x4, I32x4, U8x16};

impl F32x4 {
    /// The first four values of `s`.
    #[inline(always)]
    pub fn load(s: &[f32]) -> Self {
        F32x4::from_array([s[0], s[1], s[2], s[3]])
    }

    /// `mask ? a : b` per lane (`mask` lanes all ones or all zeros).
    #[inline(always)]
    pub fn select(mask: Self, a: Self, b: Self) -> Self {
        mask.and(a).or(mask.andnot(b))
    }

    /// The largest lane in every lane (lanes not NaN; which of two equal zeros is unspecified).
    #[inline(always)]
    pub fn hmax(self) -> Self {
        let t = self.max(self.swap_halves());
        t.max(t.swap_pairs())
    }

    /// `|self|` (clears the sign bit, as `fabsf`).
    #[inline(always)]
    pub fn abs(self) -> Self {
        F32x4::splat(-0.0).andnot(self)
    }
}

impl I32x4 {
    /// The low byte of each lane of `v[0..4]`, in order (16 bytes).
    #[inline(always)]
    pub fn low_bytes(v: [Self; 4]) -> [u8; 16] {
        U8x16::from_low_bytes(v).to_array()
    }

    /// `self.clamp(lo, hi)` per lane (`lo <= hi`).
    #[inline(always)]
    pub fn clamp(self, lo: Self, hi: Self) -> Self {
        let v = I32x4::select(lo.gt(self), lo, self);
        I32x4::select(v.gt(hi), hi, v)
    }
}

/// `(int)roundf(r)` of C per lane as the reference build executes it: `roundf` rounds half
/// away from zero, and the conversion is `cvttss2si` (`i32::MIN` for NaN and out of range).
///
/// Below 2^23 in magnitude `r - trunc(r)` is exact, so rounding is `trunc(r) ± 1` when that
/// fraction reaches one half; from 2^23 on every float is an integer and `roundf` returns it
/// unchanged, so the conversion alone gives C's result (as it does for NaN and infinities).
#[inline(always)]
pub fn round_to_i32(r: F32x4) -> I32x4 {
    let t = r.to_i32_trunc();
    let frac = r - t.to_f32();
    let small = r.abs().lt(F32x4::splat(8388608.0));
    let up = frac.ge(F32x4::splat(0.5)) & small;
    let down = F32x4::splat(-0.5).ge(frac) & small;
    // masks are -1 per set lane
    t - up.to_bits() + down.to_bits()
}

/// `[f(0), f(1), ..., f(N-1)]`, calling `f` in index order. A plain loop that always inlines:
/// `std::array::from_fn` and `<[T; N]>::map` go through generic machinery that LLVM sometimes
/// leaves as one call per element in these hot loops.
#[inline(always)]
pub fn build<T: Copy, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [f(0); N];
    for (i, o) in out.iter_mut().enumerate().skip(1) {
        *o = f(i);
    }
    out
}

macro_rules! binop {
    ($t:ty, $tr:ident, $f:ident, $m:ident) => {
        impl $tr for $t {
            type Output = $t;
            #[inline(always)]
            fn $f(self, o: $t) -> $t {
                <$t>::$m(self, o)
            }
        }
    };
}
binop!(F32x4, Add, add, add);
binop!(F32x4, Sub, sub, sub);
binop!(F32x4, Mul, mul, mul);
binop!(F32x4, Div, div, div);
binop!(F32x4, BitAnd, bitand, and);
binop!(F32x4, BitOr, bitor, or);
binop!(I32x4, Add, add, add);
binop!(I32x4, Sub, sub, sub);
binop!(I32x4, BitAnd, bitand, and);
binop!(I32x4, BitOr, bitor, or);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::rounding;

    #[test]
    fn lanes_match_scalar() {
        let av = [1.5f32, -2.25, 7.0, 1e-40];
        let bv = [0.1f32, 3.0, 1.0, -0.0];
        let (a, b) = (F32x4::from_array(av), F32x4::from_array(bv));
        let s = |v: F32x4| v.to_array().map(f32::to_bits);
        let each = |f: fn(f32, f32) -> f32| {
            std::array::from_fn::<u32, 4, _>(|i| f(av[i], bv[i]).to_bits())
        };
        assert_eq!(s(a + b), each(|x, y| x + y));
        assert_eq!(s(a - b), each(|x, y| x - y));
        assert_eq!(s(a * b), each(|x, y| x * y));
        assert_eq!(s(a / b), each(|x, y| x / y));
        assert_eq!(a.ge(b).bitmask(), 0b1101);
        assert_eq!(
            F32x4::from_array([1.0, 2.0, f32::NAN, 0.0])
                .is_nan()
                .bitmask(),
            0b0100
        );
        assert_eq!(s(a.abs()), av.map(|v: f32| v.abs().to_bits()));
        let c = I32x4::splat(7).clamp(I32x4::splat(0), I32x4::splat(3));
        assert_eq!(c.to_array(), [3; 4]);
        let big = [
            3.7f32,
            -3.7,
            f32::NAN,
            3e9,
            -3e9,
            f32::INFINITY,
            -2147483648.0,
            2147483520.0,
        ];
        for ch in big.chunks(4) {
            let t = F32x4::load(ch).to_i32_trunc().to_array();
            for (t, &v) in t.iter().zip(ch) {
                assert_eq!(*t, rounding::c_float_to_int(v), "{v}");
            }
        }
        let i = F32x4::from_array([511.0, -1.0, 128.0, 127.0]).to_i32_trunc();
        let b = I32x4::low_bytes([i, I32x4::splat(0x1234), I32x4::splat(-2), I32x4::splat(256)]);
        assert_eq!(b[..5], [0xff, 0xff, 0x80, 0x7f, 0x34]);
        assert_eq!(b[8..13], [0xfe, 0xfe, 0xfe, 0xfe, 0]);
        let r = [
            0.5f32,
            -0.5,
            f32::from_bits(0x3fbf_ffff), // 1.4999999
            -2.5,
            2.5,
            8388607.5,
            -8388609.0,
            3e9,
            -3e9,
            f32::NAN,
            f32::INFINITY,
            0.49999997,
            -0.0,
            126.5,
            -127.5,
            1e-30,
        ];
        for ch in r.chunks(4) {
            let t = round_to_i32(F32x4::load(ch)).to_array();
            for (t, &v) in t.iter().zip(ch) {
                assert_eq!(*t, rounding::c_float_to_int(v.round()), "{v}");
            }
        }
    }
}

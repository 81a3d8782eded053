//! Eight-lane f32/i32 vectors behind one trait, with one implementation per instruction set and
//! a runtime choice between them (see [`Path`]).
//!
//! The hot quantizers are written once, generic over [`F8`], and instantiated three times: with
//! [`Avx2`] (one 256-bit register, compiled inside a `#[target_feature(enable = "avx2")]`
//! function and only run when the CPU has AVX2), with [`Sse2`] (two 128-bit registers, the
//! x86-64 baseline) and with [`Portable`] (plain arrays: what aarch64 and other targets run, and
//! `GMAT_SIMD=scalar` on x86-64).
//!
//! Every operation is the IEEE single-precision operation of the scalar code applied to each
//! lane independently (`vaddps` is eight `addss`), so every implementation computes bit for bit
//! what the scalar port computes. As in [`super::simd`], lanes are only ever laid across
//! independent quantities (candidate scales, sub-blocks, blocks, values of a block), never across
//! the terms of one sum, and nothing is fused: the AVX2 functions enable `avx2` only, not `fma`,
//! and Rust never contracts a multiply and an add on its own.

#![allow(clippy::missing_safety_doc)]

use std::cell::Cell;
use std::ops::{Add, BitAnd, BitOr, Div, Mul, Sub};
use std::sync::OnceLock;

/// Eight f32 lanes. Comparisons return lane masks (all ones / all zeros) as `Self`.
pub trait F8:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
{
    /// The matching integer vector.
    type I: I8<F = Self>;

    fn splat(v: f32) -> Self;
    fn from_array(a: [f32; 8]) -> Self;
    fn to_array(self) -> [f32; 8];
    /// The first eight values of `s`.
    fn load(s: &[f32]) -> Self;
    fn sqrt(self) -> Self;
    /// Lane mask of `self >= o`; false for NaN.
    fn ge(self, o: Self) -> Self;
    /// Lane mask of `self > o`; false for NaN.
    fn gt(self, o: Self) -> Self;
    /// Lane mask of `self < o`; false for NaN.
    fn lt(self, o: Self) -> Self;
    /// Lane mask of `self == o`; false for NaN.
    fn eq(self, o: Self) -> Self;
    /// Lane mask of `self` being NaN.
    fn is_nan(self) -> Self;
    /// `!self & o`.
    fn andnot(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    /// `self < o ? self : o` per lane (`minps`: the second operand when either is NaN).
    fn min(self, o: Self) -> Self;
    /// `self > o ? self : o` per lane (`maxps`: the second operand when either is NaN).
    fn max(self, o: Self) -> Self;
    /// Bit `k` = sign bit of lane `k`; with a mask, which lanes are set.
    fn bitmask(self) -> u32;
    /// C's float-to-int conversion as x86-64 executes it (`cvttss2si`): truncation toward zero,
    /// `i32::MIN` for NaN and out-of-range lanes.
    fn to_i32_trunc(self) -> Self::I;
    fn to_bits(self) -> Self::I;
    /// `mask ? a : b` per lane (`mask` lanes all ones or all zeros).
    fn select(mask: Self, a: Self, b: Self) -> Self;

    /// Writes the lanes to the first eight values of `s`.
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        s[..8].copy_from_slice(&self.to_array());
    }
    /// `-self` (flips the sign bit, as C's unary minus).
    #[inline(always)]
    fn neg(self) -> Self {
        self.xor(Self::splat(-0.0))
    }
    /// `|self|` (clears the sign bit, as `fabsf`).
    #[inline(always)]
    fn abs(self) -> Self {
        Self::splat(-0.0).andnot(self)
    }
    /// `!mask`.
    #[inline(always)]
    fn not(self) -> Self {
        self.andnot(Self::splat(f32::from_bits(u32::MAX)))
    }
    /// The largest lane (lanes not NaN; which of two equal zeros is unspecified).
    #[inline(always)]
    fn hmax(self) -> f32 {
        let a = self.to_array();
        let mut m = a[0];
        for &v in &a[1..] {
            m = if v > m { v } else { m };
        }
        m
    }
    /// The smallest lane (lanes not NaN; which of two equal zeros is unspecified).
    #[inline(always)]
    fn hmin(self) -> f32 {
        let a = self.to_array();
        let mut m = a[0];
        for &v in &a[1..] {
            m = if v < m { v } else { m };
        }
        m
    }
}

/// Eight i32 lanes.
pub trait I8: Copy + Add<Output = Self> + Sub<Output = Self> + BitAnd<Output = Self> {
    type F: F8<I = Self>;

    fn splat(v: i32) -> Self;
    fn to_array(self) -> [i32; 8];
    /// Lane mask of `self > o`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // (SSE2's clamp and min)
    fn gt(self, o: Self) -> Self;
    /// `mask ? a : b` per lane.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn select(mask: Self, a: Self, b: Self) -> Self;
    /// `self.clamp(lo, hi)` per lane (`lo <= hi`).
    fn clamp(self, lo: Self, hi: Self) -> Self;
    /// Exact for the small integers it is used on (round to nearest).
    fn to_f32(self) -> Self::F;
    /// `self.min(o)` per lane.
    fn min(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    /// `self << 4` per lane.
    fn shl4(self) -> Self;
    /// The low byte of each lane as a signed value (C's `(int8_t)` of an int).
    fn sext8(self) -> Self;

    /// The low byte of each lane, in order.
    #[inline(always)]
    fn low_bytes(self) -> [u8; 8] {
        let a = self.to_array();
        build(|k| a[k] as u8)
    }
}

/// ggml's `nearest_int` per lane (see [`super::rounding::nearest_int`]).
#[inline(always)]
pub fn nearest_int<V: F8>(f: V) -> V::I {
    ((f + V::splat(12582912.0)).to_bits() & V::I::splat(0x007f_ffff)) - V::I::splat(0x0040_0000)
}

/// `nearest_int(f).clamp(lo, hi)` as a float, for lanes with `|f| < 2^22` (not NaN).
///
/// In that range ggml's magic-number `nearest_int` is round-to-nearest-even, which
/// `(f + 1.5*2^23) - 1.5*2^23` computes exactly in f32 (the sum lies in [2^23, 2^24), where
/// the spacing is 1, and the difference is an exact integer, never -0.0); the clamp of an
/// integer-valued float is then exact too. Cheaper than [`nearest_int`] plus an integer clamp
/// (SSE2 has no 32-bit integer min/max).
#[inline(always)]
pub fn round_clamp_small<V: F8>(f: V, lo: V, hi: V) -> V {
    let magic = V::splat(12582912.0);
    ((f + magic) - magic).max(lo).min(hi)
}

/// `(int)roundf(r)` of C per lane as the reference build executes it (see
/// [`super::simd::round_to_i32`]).
#[inline(always)]
pub fn round_to_i32<V: F8>(r: V) -> V::I {
    let t = r.to_i32_trunc();
    let frac = r - t.to_f32();
    let small = r.abs().lt(V::splat(8388608.0));
    let up = frac.ge(V::splat(0.5)) & small;
    let down = V::splat(-0.5).ge(frac) & small;
    // masks are -1 per set lane
    t - up.to_bits() + down.to_bits()
}

/// `[f(0), f(1), ..., f(N-1)]`, calling `f` in index order (see [`super::simd::build`]).
#[inline(always)]
pub fn build<T: Copy, const N: usize>(f: impl FnMut(usize) -> T) -> [T; N] {
    super::simd::build(f)
}

macro_rules! binops {
    ($t:ty, $($tr:ident $f:ident),*) => {
        $(
            impl $tr for $t {
                type Output = $t;
                #[inline(always)]
                fn $f(self, o: $t) -> $t {
                    Self::$f(self, o)
                }
            }
        )*
    };
}

/// Plain arrays: the portable path (aarch64, and `GMAT_SIMD=scalar`), also the specification
/// the vector implementations are tested against.
pub mod portable {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    pub struct Portable(pub [f32; 8]);
    #[derive(Clone, Copy, Debug)]
    pub struct PortableI(pub [i32; 8]);

    #[inline(always)]
    fn m(b: bool) -> f32 {
        f32::from_bits(if b { u32::MAX } else { 0 })
    }

    macro_rules! lanes {
        ($a:expr, |$i:ident| $e:expr) => {{
            let mut out = $a;
            for $i in 0..8 {
                out[$i] = $e;
            }
            out
        }};
    }

    impl Portable {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| self.0[i] + o.0[i]))
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| self.0[i] - o.0[i]))
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| self.0[i] * o.0[i]))
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| self.0[i] / o.0[i]))
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| f32::from_bits(
                self.0[i].to_bits() & o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        fn bitor(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| f32::from_bits(
                self.0[i].to_bits() | o.0[i].to_bits()
            )))
        }
    }
    binops!(Portable, Add add, Sub sub, Mul mul, Div div, BitAnd bitand, BitOr bitor);

    impl F8 for Portable {
        type I = PortableI;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Portable([v; 8])
        }
        #[inline(always)]
        fn from_array(a: [f32; 8]) -> Self {
            Portable(a)
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 8] {
            self.0
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            Portable(s[..8].try_into().expect("8 values"))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            Portable(lanes!(self.0, |i| self.0[i].sqrt()))
        }
        #[inline(always)]
        fn ge(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| m(self.0[i] >= o.0[i])))
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| m(self.0[i] > o.0[i])))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| m(self.0[i] < o.0[i])))
        }
        #[inline(always)]
        fn eq(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| m(self.0[i] == o.0[i])))
        }
        #[inline(always)]
        fn is_nan(self) -> Self {
            Portable(lanes!(self.0, |i| m(self.0[i].is_nan())))
        }
        #[inline(always)]
        fn andnot(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| f32::from_bits(
                !self.0[i].to_bits() & o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| f32::from_bits(
                self.0[i].to_bits() ^ o.0[i].to_bits()
            )))
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| if self.0[i] < o.0[i] {
                self.0[i]
            } else {
                o.0[i]
            }))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            Portable(lanes!(self.0, |i| if self.0[i] > o.0[i] {
                self.0[i]
            } else {
                o.0[i]
            }))
        }
        #[inline(always)]
        fn bitmask(self) -> u32 {
            (0..8).fold(0, |b, i| b | ((self.0[i].to_bits() >> 31) << i))
        }
        #[inline(always)]
        fn to_i32_trunc(self) -> PortableI {
            PortableI(self.0.map(crate::quant::rounding::c_float_to_int))
        }
        #[inline(always)]
        fn to_bits(self) -> PortableI {
            PortableI(self.0.map(|v| v.to_bits() as i32))
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            mask.bitand(a).bitor(mask.andnot(b))
        }
    }

    impl PortableI {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i].wrapping_add(o.0[i])))
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i].wrapping_sub(o.0[i])))
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i] & o.0[i]))
        }
    }
    binops!(PortableI, Add add, Sub sub, BitAnd bitand);

    impl I8 for PortableI {
        type F = Portable;
        #[inline(always)]
        fn splat(v: i32) -> Self {
            PortableI([v; 8])
        }
        #[inline(always)]
        fn to_array(self) -> [i32; 8] {
            self.0
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| -((self.0[i] > o.0[i]) as i32)))
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            PortableI(lanes!(mask.0, |i| (mask.0[i] & a.0[i]) | (!mask.0[i] & b.0[i])))
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i].clamp(lo.0[i], hi.0[i])))
        }
        #[inline(always)]
        fn to_f32(self) -> Portable {
            Portable(self.0.map(|v| v as f32))
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i].min(o.0[i])))
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            PortableI(lanes!(self.0, |i| self.0[i] | o.0[i]))
        }
        #[inline(always)]
        fn shl4(self) -> Self {
            PortableI(self.0.map(|v| v << 4))
        }
        #[inline(always)]
        fn sext8(self) -> Self {
            PortableI(self.0.map(|v| v as i8 as i32))
        }
    }
}

/// Two SSE2 registers (the x86-64 baseline: no detection needed).
#[cfg(target_arch = "x86_64")]
pub mod sse2 {
    use super::*;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Sse2(pub [__m128; 2]);
    #[derive(Clone, Copy)]
    pub struct Sse2I(pub [__m128i; 2]);

    macro_rules! pair {
        ($t:ident, $a:expr, $b:expr, $f:ident) => {
            // SSE/SSE2 are part of the x86-64 baseline
            unsafe { $t([$f($a.0[0], $b.0[0]), $f($a.0[1], $b.0[1])]) }
        };
        ($t:ident, $a:expr, $f:ident) => {
            unsafe { $t([$f($a.0[0]), $f($a.0[1])]) }
        };
    }

    impl Sse2 {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_add_ps)
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_sub_ps)
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_mul_ps)
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_div_ps)
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_and_ps)
        }
        #[inline(always)]
        fn bitor(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_or_ps)
        }
    }
    binops!(Sse2, Add add, Sub sub, Mul mul, Div div, BitAnd bitand, BitOr bitor);

    impl F8 for Sse2 {
        type I = Sse2I;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            unsafe { Sse2([_mm_set1_ps(v); 2]) }
        }
        #[inline(always)]
        fn from_array(a: [f32; 8]) -> Self {
            Self::load(&a)
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 8] {
            let mut a = [0.0f32; 8];
            unsafe {
                _mm_storeu_ps(a.as_mut_ptr(), self.0[0]);
                _mm_storeu_ps(a.as_mut_ptr().add(4), self.0[1]);
            }
            a
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..8];
            unsafe { Sse2([_mm_loadu_ps(s.as_ptr()), _mm_loadu_ps(s.as_ptr().add(4))]) }
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            pair!(Sse2, self, _mm_sqrt_ps)
        }
        #[inline(always)]
        fn ge(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_cmpge_ps)
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_cmpgt_ps)
        }
        #[inline(always)]
        fn lt(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_cmplt_ps)
        }
        #[inline(always)]
        fn eq(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_cmpeq_ps)
        }
        #[inline(always)]
        fn is_nan(self) -> Self {
            pair!(Sse2, self, self, _mm_cmpunord_ps)
        }
        #[inline(always)]
        fn andnot(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_andnot_ps)
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_xor_ps)
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_min_ps)
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            pair!(Sse2, self, o, _mm_max_ps)
        }
        #[inline(always)]
        fn bitmask(self) -> u32 {
            unsafe { (_mm_movemask_ps(self.0[0]) | (_mm_movemask_ps(self.0[1]) << 4)) as u32 }
        }
        #[inline(always)]
        fn to_i32_trunc(self) -> Sse2I {
            pair!(Sse2I, self, _mm_cvttps_epi32)
        }
        #[inline(always)]
        fn to_bits(self) -> Sse2I {
            pair!(Sse2I, self, _mm_castps_si128)
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            (mask & a) | mask.andnot(b)
        }
    }

    impl Sse2I {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            pair!(Sse2I, self, o, _mm_add_epi32)
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            pair!(Sse2I, self, o, _mm_sub_epi32)
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            pair!(Sse2I, self, o, _mm_and_si128)
        }
    }
    binops!(Sse2I, Add add, Sub sub, BitAnd bitand);

    impl I8 for Sse2I {
        type F = Sse2;
        #[inline(always)]
        fn splat(v: i32) -> Self {
            unsafe { Sse2I([_mm_set1_epi32(v); 2]) }
        }
        #[inline(always)]
        fn to_array(self) -> [i32; 8] {
            let mut a = [0i32; 8];
            unsafe {
                _mm_storeu_si128(a.as_mut_ptr() as *mut __m128i, self.0[0]);
                _mm_storeu_si128(a.as_mut_ptr().add(4) as *mut __m128i, self.0[1]);
            }
            a
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            pair!(Sse2I, self, o, _mm_cmpgt_epi32)
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            let and = pair!(Sse2I, mask, a, _mm_and_si128);
            let andn = pair!(Sse2I, mask, b, _mm_andnot_si128);
            pair!(Sse2I, and, andn, _mm_or_si128)
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            // SSE2 has no 32-bit integer min/max
            let v = Self::select(lo.gt(self), lo, self);
            Self::select(v.gt(hi), hi, v)
        }
        #[inline(always)]
        fn to_f32(self) -> Sse2 {
            pair!(Sse2, self, _mm_cvtepi32_ps)
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            Self::select(self.gt(o), o, self)
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            pair!(Sse2I, self, o, _mm_or_si128)
        }
        #[inline(always)]
        fn shl4(self) -> Self {
            unsafe {
                Sse2I([
                    _mm_slli_epi32::<4>(self.0[0]),
                    _mm_slli_epi32::<4>(self.0[1]),
                ])
            }
        }
        #[inline(always)]
        fn sext8(self) -> Self {
            let f = |v: __m128i| unsafe { _mm_srai_epi32::<24>(_mm_slli_epi32::<24>(v)) };
            Sse2I([f(self.0[0]), f(self.0[1])])
        }
    }
}

/// One AVX2 register. Only ever instantiated inside [`with_avx2`], so the intrinsics inline
/// into code compiled for AVX2, and only run after the CPU was found to have it.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Avx2(pub __m256);
    #[derive(Clone, Copy)]
    pub struct Avx2I(pub __m256i);

    /// Runs `f` (which the compiler inlines) in a function compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 ([`super::Path::Avx2`] is only chosen when it does).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    // Safety of every `unsafe` block below: these types are only used inside `with_avx2`.
    impl Avx2 {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_div_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_and_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn bitor(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_or_ps(self.0, o.0)) }
        }
    }
    binops!(Avx2, Add add, Sub sub, Mul mul, Div div, BitAnd bitand, BitOr bitor);

    impl F8 for Avx2 {
        type I = Avx2I;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn from_array(a: [f32; 8]) -> Self {
            unsafe { Avx2(_mm256_loadu_ps(a.as_ptr())) }
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 8] {
            let mut a = [0.0f32; 8];
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), self.0) };
            a
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..8];
            unsafe { Avx2(_mm256_loadu_ps(s.as_ptr())) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            let s = &mut s[..8];
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            unsafe { Avx2(_mm256_sqrt_ps(self.0)) }
        }
        // Ordered, quiet predicates: false for NaN, as SSE's cmpps.
        #[inline(always)]
        fn ge(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_cmp_ps::<_CMP_GE_OQ>(self.0, o.0)) }
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0)) }
        }
        #[inline(always)]
        fn lt(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0)) }
        }
        #[inline(always)]
        fn eq(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0)) }
        }
        #[inline(always)]
        fn is_nan(self) -> Self {
            unsafe { Avx2(_mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0)) }
        }
        #[inline(always)]
        fn andnot(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_andnot_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_xor_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_min_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_max_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn bitmask(self) -> u32 {
            unsafe { _mm256_movemask_ps(self.0) as u32 }
        }
        #[inline(always)]
        fn to_i32_trunc(self) -> Avx2I {
            unsafe { Avx2I(_mm256_cvttps_epi32(self.0)) }
        }
        #[inline(always)]
        fn to_bits(self) -> Avx2I {
            unsafe { Avx2I(_mm256_castps_si256(self.0)) }
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            // lanes of `mask` are all ones or all zeros, so the sign bit decides as and/or would
            unsafe { Avx2(_mm256_blendv_ps(b.0, a.0, mask.0)) }
        }
        // Tree reductions: for NaN-free lanes the extreme value does not depend on the order
        // (only which of two equal zeros wins, which callers do not rely on).
        #[inline(always)]
        fn hmax(self) -> f32 {
            unsafe {
                let m = _mm_max_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
            }
        }
        #[inline(always)]
        fn hmin(self) -> f32 {
            unsafe {
                let m = _mm_min_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
                _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m)))
            }
        }
    }

    impl Avx2I {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_add_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_sub_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        fn bitand(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_and_si256(self.0, o.0)) }
        }
    }
    binops!(Avx2I, Add add, Sub sub, BitAnd bitand);

    impl I8 for Avx2I {
        type F = Avx2;
        #[inline(always)]
        fn splat(v: i32) -> Self {
            unsafe { Avx2I(_mm256_set1_epi32(v)) }
        }
        #[inline(always)]
        fn to_array(self) -> [i32; 8] {
            let mut a = [0i32; 8];
            unsafe { _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, self.0) };
            a
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_cmpgt_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        fn select(mask: Self, a: Self, b: Self) -> Self {
            unsafe { Avx2I(_mm256_blendv_epi8(b.0, a.0, mask.0)) }
        }
        #[inline(always)]
        fn clamp(self, lo: Self, hi: Self) -> Self {
            unsafe { Avx2I(_mm256_min_epi32(_mm256_max_epi32(self.0, lo.0), hi.0)) }
        }
        #[inline(always)]
        fn to_f32(self) -> Avx2 {
            unsafe { Avx2(_mm256_cvtepi32_ps(self.0)) }
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_min_epi32(self.0, o.0)) }
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            unsafe { Avx2I(_mm256_or_si256(self.0, o.0)) }
        }
        #[inline(always)]
        fn shl4(self) -> Self {
            unsafe { Avx2I(_mm256_slli_epi32::<4>(self.0)) }
        }
        #[inline(always)]
        fn sext8(self) -> Self {
            unsafe { Avx2I(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(self.0))) }
        }
        #[inline(always)]
        fn low_bytes(self) -> [u8; 8] {
            unsafe {
                // byte 0 of each dword to the low 4 bytes of each 128-bit half
                let idx = _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                );
                let s = _mm256_shuffle_epi8(self.0, idx);
                let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(s)) as u32;
                let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(s)) as u32;
                (((hi as u64) << 32) | lo as u64).to_le_bytes()
            }
        }
    }
}

pub use portable::Portable;

/// Which implementation of [`F8`] the dispatched quantizers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Plain arrays (what non-x86 targets run).
    Scalar,
    /// Two 128-bit SSE2 registers (x86-64 baseline).
    Sse2,
    /// One 256-bit AVX2 register.
    Avx2,
}

impl Path {
    /// Every path, slowest first.
    pub const ALL: [Path; 3] = [Path::Scalar, Path::Sse2, Path::Avx2];

    /// The name `GMAT_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Sse2 => "sse2",
            Path::Avx2 => "avx2",
        }
    }

    /// Whether this build and this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Sse2 => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this build and CPU can run, slowest first.
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.supported()).collect()
    }

    /// The fastest available path.
    pub fn best() -> Path {
        *Path::available().last().unwrap_or(&Path::Scalar)
    }

    /// The path `GMAT_SIMD` asks for (`auto` or unset: the best one), or why it cannot run.
    pub fn from_env_value(v: Option<&str>) -> Result<Path, String> {
        let v = match v.map(str::trim) {
            None | Some("") | Some("auto") => return Ok(Path::best()),
            Some(v) => v.to_ascii_lowercase(),
        };
        let names = Path::ALL.map(Path::name).join(", ");
        let p = Path::ALL
            .into_iter()
            .find(|p| p.name() == v)
            .ok_or_else(|| {
                let avx512 = if v == "avx512" {
                    " (gmat has no AVX-512 path)"
                } else {
                    ""
                };
                format!("GMAT_SIMD={v} is not a SIMD path{avx512}: use auto, {names}")
            })?;
        if !p.supported() {
            let have = Path::available()
                .into_iter()
                .map(Path::name)
                .collect::<Vec<_>>();
            return Err(format!(
                "GMAT_SIMD={v}: this CPU or build cannot run it (available: {})",
                have.join(", ")
            ));
        }
        Ok(p)
    }
}

static GLOBAL: OnceLock<Path> = OnceLock::new();

thread_local! {
    static FORCED: Cell<Option<Path>> = const { Cell::new(None) };
}

/// Checks `GMAT_SIMD` once, for the CLI to report a bad value as an error before any work.
pub fn init_from_env() -> Result<Path, String> {
    let p = Path::from_env_value(std::env::var("GMAT_SIMD").ok().as_deref())?;
    Ok(*GLOBAL.get_or_init(|| p))
}

/// The path the quantizers run on this thread: one forced by [`with_path`], else `GMAT_SIMD`,
/// else the best the CPU supports. (An unusable `GMAT_SIMD` falls back to the best path here;
/// the CLI refuses it up front through [`init_from_env`].)
#[inline]
pub fn active() -> Path {
    FORCED.with(|f| f.get()).unwrap_or_else(|| {
        *GLOBAL.get_or_init(|| {
            Path::from_env_value(std::env::var("GMAT_SIMD").ok().as_deref())
                .unwrap_or_else(|_| Path::best())
        })
    })
}

/// Runs `f` with the quantizers on this thread forced to `p` (tests compare the paths this way).
///
/// Panics if `p` is not [supported](Path::supported): running AVX2 code on a CPU without it is
/// undefined behaviour.
#[cfg(test)]
pub fn with_path<R>(p: Path, f: impl FnOnce() -> R) -> R {
    assert!(p.supported(), "SIMD path {} not supported here", p.name());
    struct Restore(Option<Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|f| f.replace(Some(p))));
    f()
}

/// Evaluates `$e` with the type name `$v` bound to the [`F8`] implementation of the active
/// [`Path`]; the AVX2 instantiation is compiled for AVX2 (inside `avx2::with_avx2`).
macro_rules! dispatch {
    ($v:ident => $e:expr) => {{
        match $crate::quant::simd8::active() {
            #[cfg(target_arch = "x86_64")]
            $crate::quant::simd8::Path::Avx2 => {
                #[allow(dead_code)]
                type $v = $crate::quant::simd8::avx2::Avx2;
                // Safety: `active` returns Avx2 only when the CPU has AVX2.
                unsafe {
                    $crate::quant::simd8::avx2::with_avx2(
                        #[inline(always)]
                        || $e,
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::quant::simd8::Path::Sse2 => {
                #[allow(dead_code)]
                type $v = $crate::quant::simd8::sse2::Sse2;
                $e
            }
            _ => {
                #[allow(dead_code)]
                type $v = $crate::quant::simd8::Portable;
                $e
            }
        }
    }};
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    /// Awkward inputs: NaN, infinities, signed zeros, subnormals, ties, out of i32 range.
    fn inputs() -> Vec<[f32; 8]> {
        let mut v = vec![
            [1.5, -2.25, 7.0, 1e-40, f32::NAN, f32::INFINITY, -0.0, 0.0],
            [
                0.5,
                -0.5,
                2.5,
                -3.5,
                3e9,
                -3e9,
                f32::NEG_INFINITY,
                8388607.5,
            ],
            [0.1, 3.0, 1.0, -0.0, 126.5, -127.5, 1e-30, 4194303.0],
        ];
        let mut s = 0x1234_5678u32;
        for _ in 0..64 {
            v.push(build(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                f32::from_bits(s)
            }));
        }
        v
    }

    /// One binary operation, on the portable lanes and on `V`.
    type Op<V> = (fn(Portable, Portable) -> Portable, fn(V, V) -> V);

    fn same<V: F8>(a: &[f32; 8], b: &[f32; 8]) {
        let bits = |x: [f32; 8]| x.map(f32::to_bits);
        let (p, q) = (Portable::from_array(*a), Portable::from_array(*b));
        let (x, y) = (V::from_array(*a), V::from_array(*b));
        let ctx = format!("{a:?} {b:?}");
        let ops: [Op<V>; 13] = [
            (|a, b| a + b, |a, b| a + b),
            (|a, b| a - b, |a, b| a - b),
            (|a, b| a * b, |a, b| a * b),
            (|a, b| a / b, |a, b| a / b),
            (|a, b| a.ge(b), |a, b| a.ge(b)),
            (|a, b| a.gt(b), |a, b| a.gt(b)),
            (|a, b| a.lt(b), |a, b| a.lt(b)),
            (|a, b| a.eq(b), |a, b| a.eq(b)),
            (|a, b| a.min(b), |a, b| a.min(b)),
            (|a, b| a.max(b), |a, b| a.max(b)),
            (|a, b| a.andnot(b), |a, b| a.andnot(b)),
            (|a, _| a.sqrt().is_nan(), |a, _| a.sqrt().is_nan()),
            (
                |a, b| F8::select(a.lt(b), a.abs(), b.neg()),
                |a, b| F8::select(a.lt(b), a.abs(), b.neg()),
            ),
        ];
        for (k, (f, g)) in ops.iter().enumerate() {
            assert_eq!(
                bits(f(p, q).to_array()),
                bits(g(x, y).to_array()),
                "op {k} {ctx}"
            );
        }
        assert_eq!(p.bitmask(), x.bitmask(), "{ctx}");
        assert_eq!(
            p.to_i32_trunc().to_array(),
            x.to_i32_trunc().to_array(),
            "{ctx}"
        );
        assert_eq!(
            nearest_int(p).to_array(),
            nearest_int(x).to_array(),
            "{ctx}"
        );
        assert_eq!(
            round_to_i32(p).to_array(),
            round_to_i32(x).to_array(),
            "{ctx}"
        );
        let (lo, hi) = (PortableI::splat(-4), PortableI::splat(3));
        let (lov, hiv) = (V::I::splat(-4), V::I::splat(3));
        let c = nearest_int(p).clamp(lo, hi);
        let cv = nearest_int(x).clamp(lov, hiv);
        assert_eq!(c.to_array(), cv.to_array(), "{ctx}");
        assert_eq!(c.low_bytes(), cv.low_bytes(), "{ctx}");
        assert_eq!(bits(c.to_f32().to_array()), bits(cv.to_f32().to_array()));
        let m = I8::select(c.gt(lo), c, hi);
        assert_eq!(m.to_array(), I8::select(cv.gt(lov), cv, hiv).to_array());
        let (t, tv) = (p.to_i32_trunc(), x.to_i32_trunc());
        let u = t.sext8().min(hi).or(t.shl4());
        let uv = tv.sext8().min(hiv).or(tv.shl4());
        assert_eq!(u.to_array(), uv.to_array(), "{ctx}");
        let nan_free = |v: [f32; 8]| v.iter().all(|f| !f.is_nan());
        if nan_free(*a) {
            assert_eq!(
                p.hmax().to_bits() & 0x7fff_ffff,
                x.hmax().to_bits() & 0x7fff_ffff
            );
            assert_eq!(
                p.hmin().to_bits() & 0x7fff_ffff,
                x.hmin().to_bits() & 0x7fff_ffff
            );
        }
    }
    use portable::PortableI;

    fn all_ops<V: F8>() {
        let v = inputs();
        for a in &v {
            for b in &v {
                same::<V>(a, b);
            }
        }
    }

    #[test]
    fn every_path_computes_the_portable_lanes() {
        for p in Path::available() {
            with_path(p, || dispatch!(V => all_ops::<V>()));
        }
        #[cfg(target_arch = "x86_64")]
        {
            all_ops::<sse2::Sse2>();
            if Path::Avx2.supported() {
                unsafe { avx2::with_avx2(all_ops::<avx2::Avx2>) };
            }
        }
    }

    #[test]
    fn env_values() {
        assert_eq!(Path::from_env_value(None), Ok(Path::best()));
        assert_eq!(Path::from_env_value(Some("auto")), Ok(Path::best()));
        assert_eq!(Path::from_env_value(Some("scalar")), Ok(Path::Scalar));
        let e = Path::from_env_value(Some("avx512")).unwrap_err();
        assert!(e.contains("no AVX-512"), "{e}");
        assert!(Path::from_env_value(Some("neon")).is_err());
    }

    #[test]
    fn with_path_is_per_thread_and_restored() {
        let before = active();
        with_path(Path::Scalar, || {
            assert_eq!(active(), Path::Scalar);
            std::thread::spawn(move || assert_eq!(active(), before))
                .join()
                .unwrap();
        });
        assert_eq!(active(), before);
    }
}

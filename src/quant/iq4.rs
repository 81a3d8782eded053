//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table `kvalues_iq4nl`
//! (`block_iq4_nl`, `block_iq4_xs` in ggml-common.h).
//!
//! Ports of ggml's `quantize_iq4_nl`, `quantize_iq4_xs`, their shared `quantize_row_iq4_nl_impl`,
//! `best_index_int8`, `dequantize_row_iq4_nl` and `dequantize_row_iq4_xs`
//! (ggml/src/ggml-quants.c).

use super::rounding::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};
use super::{GgmlType, TypeCodec};

const QK4_NL: usize = 32;
const QK_K: usize = 256;
const IQ4NL_BLOCK_BYTES: usize = 2 + QK4_NL / 2;
const IQ4XS_BLOCK_BYTES: usize = 2 + 2 + QK_K / 64 + QK_K / 2;
/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;
/// The scale tries each side of the first guess; `quantize_iq4_nl` and `quantize_iq4_xs` (what
/// llama-quantize calls) both pass 7, with or without importance weights.
const NTRY: i32 = 7;

/// `kvalues_iq4nl` (ggml-common.h).
const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Port of `best_index_int8`: the index of the table value nearest `x` (ties go up).
#[inline]
fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    let n = val.len();
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[n - 1] as f32 {
        return (n - 1) as u8;
    }
    let (mut ml, mut mu) = (0usize, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// What `quantize_row_iq4_nl_impl` writes besides the packed nibbles.
struct SuperBlockHeader {
    /// f16 bits of the super-block scale.
    d: u16,
    /// High two bits of each block's 6-bit scale (IQ4_XS only).
    scales_h: u16,
    /// Low four bits of each block's 6-bit scale, two per byte (IQ4_XS only).
    scales_l: [u8; QK_K / 64],
}

/// Port of `quantize_row_iq4_nl_impl` with `block_size` 32 and `ntry` 7, for a super-block of
/// `x.len()` values (32 for IQ4_NL, 256 for IQ4_XS). `quant_weights` covers the super-block;
/// `q4` gets `x.len() / 2` packed nibbles.
fn quantize_iq4_nl_impl(
    x: &[f32],
    quant_weights: Option<&[f32]>,
    q4: &mut [u8],
) -> SuperBlockHeader {
    let values = &KVALUES_IQ4NL;
    let super_block_size = x.len();
    let nb = super_block_size / 32;

    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0f32 / super_block_size as f32;

    q4.fill(0);
    let mut header = SuperBlockHeader {
        d: f32_to_f16_bits(0.0),
        scales_h: 0,
        scales_l: [0; QK_K / 64],
    };

    let mut scales = [0.0f32; QK_K / 32];
    let mut weight = [0.0f32; 32];
    let mut l = [0u8; QK_K];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..nb {
        let xb = &x[32 * ib..32 * ib + 32];
        let lb = &mut l[32 * ib..32 * ib + 32];
        match quant_weights {
            Some(qw) => {
                let qw = &qw[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..32 {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let v0 = values[0] as f32;
        let mut d = -max / v0;
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..32 {
            let al = id * xb[j];
            let li = best_index_int8(values, al);
            lb[j] = li;
            let q = values[li as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..32 {
                let al = id * xb[j];
                let li = best_index_int8(values, al);
                let q = values[li as usize] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if nb > 1 {
        let d = -max_scale / 32.0;
        header.d = f32_to_f16_bits(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let mut li = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[32 * ib..32 * ib + 32];
            for (q, &v) in l[32 * ib..32 * ib + 32].iter_mut().zip(xb) {
                *q = best_index_int8(values, idl * v);
            }
            li += 32;
            let l_l = (li & 0xf) as u8;
            let l_h = (li >> 4) as u16;
            if ib % 2 == 0 {
                header.scales_l[ib / 2] = l_l;
            } else {
                header.scales_l[ib / 2] |= l_l << 4;
            }
            header.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        header.d = f32_to_f16_bits(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for (q, &v) in l.iter_mut().zip(x) {
            *q = best_index_int8(values, id * v);
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    header
}

/// IQ4_NL: blocks of 32 4-bit table indices with one f16 scale. Port of `quantize_iq4_nl`.
pub struct Iq4Nl;

impl TypeCodec for Iq4Nl {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ4_NL
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (ibl, (x, y)) in src
            .chunks_exact(QK4_NL)
            .zip(dst.chunks_exact_mut(IQ4NL_BLOCK_BYTES))
            .enumerate()
        {
            let qw = imatrix.map(|w| &w[QK4_NL * ibl..QK4_NL * (ibl + 1)]);
            let (dh, qs) = y.split_at_mut(2);
            let header = quantize_iq4_nl_impl(x, qw, qs);
            dh.copy_from_slice(&header.d.to_le_bytes());
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ4NL_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK4_NL))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            for (j, &q) in x[2..].iter().enumerate() {
                y[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// IQ4_XS: super-blocks of 256 with an f16 scale, 6-bit scales per block of 32 and 4-bit table
/// indices. Port of `quantize_iq4_xs`.
pub struct Iq4Xs;

impl TypeCodec for Iq4Xs {
    fn ggml_type(&self) -> GgmlType {
        GgmlType::IQ4_XS
    }

    fn quantize_row(&self, src: &[f32], imatrix: Option<&[f32]>, dst: &mut [u8]) {
        for (ibl, (x, y)) in src
            .chunks_exact(QK_K)
            .zip(dst.chunks_exact_mut(IQ4XS_BLOCK_BYTES))
            .enumerate()
        {
            let qw = imatrix.map(|w| &w[QK_K * ibl..QK_K * (ibl + 1)]);
            let header = quantize_iq4_nl_impl(x, qw, &mut y[8..]);
            y[0..2].copy_from_slice(&header.d.to_le_bytes());
            y[2..4].copy_from_slice(&header.scales_h.to_le_bytes());
            y[4..8].copy_from_slice(&header.scales_l);
        }
    }

    fn dequantize_row(&self, src: &[u8], dst: &mut [f32]) {
        for (x, y) in src
            .chunks_exact(IQ4XS_BLOCK_BYTES)
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let d = f16_bits_to_f32(u16::from_le_bytes([x[0], x[1]]));
            let scales_h = u16::from_le_bytes([x[2], x[3]]) as i32;
            let scales_l = &x[4..8];
            for (ib, (qs, yb)) in x[8..]
                .chunks_exact(16)
                .zip(y.chunks_exact_mut(32))
                .enumerate()
            {
                let ls = ((scales_l[ib / 2] as i32 >> (4 * (ib % 2))) & 0xf)
                    | (((scales_h >> (2 * ib)) & 3) << 4);
                let dl = d * (ls - 32) as f32;
                for (j, &q) in qs.iter().enumerate() {
                    yb[j] = dl * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                    yb[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::golden::check;
    use super::*;

    #[test]
    fn best_index_picks_nearest_and_clamps() {
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -200.0), 0);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 200.0), 15);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 0.0), 8);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 7.0), 9);
    }

    #[test]
    fn iq4_nl_matches_ggml() {
        check(GgmlType::IQ4_NL);
    }

    #[test]
    fn iq4_xs_matches_ggml() {
        check(GgmlType::IQ4_XS);
    }
}

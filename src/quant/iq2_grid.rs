//! The E8-style lattices behind IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M.
//!
//! Ports ggml's `iq2xs_init_impl` (ggml-quants.c): each type's grid of allowed 8-value points, the
//! map from a packed point (eight 2-bit levels) to its grid index, and, for every packed point that
//! is not on the grid, the list of its nearest grid points that the quantizers search. Also derives
//! ggml-common.h's dequantization tables `iq2xxs_grid`, `iq2xs_grid`, `iq2s_grid`, `iq1s_grid`,
//! `ksigns_iq2xs` and `kmask_iq2xs` from the packed lattices (`iq2_grid_tables.rs`; the generator
//! checked the derivation against ggml-common.h entry for entry).

use super::iq2_grid_tables::{KGRID_1BIT_2048, KGRID_2BIT_1024, KGRID_2BIT_256, KGRID_2BIT_512};
use std::sync::OnceLock;

/// Number of packed points ggml's map covers (`kmap_size`): every packing of eight levels 0..=2
/// fits, 0xAAAA being the largest.
const KMAP_SIZE: usize = 43692;

/// Largest squared distance between a packed point (coordinates 1, 3, 5, 7) and a grid point
/// (coordinates 1, 3, 5): 8 * 6².
const MAX_D2: usize = 288;

/// Expands packed levels into eight bytes, level `l` of coordinate `i` becoming `values[l]`.
const fn expand<const N: usize>(packed: &[u16; N], values: [i8; 3]) -> [[i8; 8]; N] {
    let mut out = [[0i8; 8]; N];
    let mut k = 0;
    while k < N {
        let mut i = 0;
        while i < 8 {
            out[k][i] = values[((packed[k] >> (2 * i)) & 3) as usize];
            i += 1;
        }
        k += 1;
    }
    out
}

/// ggml-common.h `iq2xxs_grid`, as bytes.
pub(super) static IQ2XXS_GRID: [[i8; 8]; 256] = expand(&KGRID_2BIT_256, [8, 25, 43]);
/// ggml-common.h `iq2xs_grid`, as bytes.
pub(super) static IQ2XS_GRID: [[i8; 8]; 512] = expand(&KGRID_2BIT_512, [8, 25, 43]);
/// ggml-common.h `iq2s_grid`, as bytes.
pub(super) static IQ2S_GRID: [[i8; 8]; 1024] = expand(&KGRID_2BIT_1024, [8, 25, 43]);
/// ggml-common.h `iq1s_grid`, as bytes.
pub(super) static IQ1S_GRID: [[i8; 8]; 2048] = expand(&KGRID_1BIT_2048, [-1, 0, 1]);

/// The quantizers' view of the same grids (ggml's `kgrid_q2xs`): coordinate = 2·level + 1.
static Q_IQ2XXS: [[i8; 8]; 256] = expand(&KGRID_2BIT_256, [1, 3, 5]);
static Q_IQ2XS: [[i8; 8]; 512] = expand(&KGRID_2BIT_512, [1, 3, 5]);
static Q_IQ2S: [[i8; 8]; 1024] = expand(&KGRID_2BIT_1024, [1, 3, 5]);
static Q_IQ1S: [[i8; 8]; 2048] = expand(&KGRID_1BIT_2048, [1, 3, 5]);

/// ggml-common.h `ksigns_iq2xs`: seven sign bits plus their parity in bit 7.
pub(super) static KSIGNS_IQ2XS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = i as u8 | (((i as u32).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

/// ggml-common.h `kmask_iq2xs`.
pub(super) const KMASK_IQ2XS: [u8; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Which of ggml's four `iq2_data` entries (IQ1_S and IQ1_M share one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lattice {
    Iq2Xxs,
    Iq2Xs,
    Iq2S,
    Iq1,
}

/// One type's grid with its map and neighbour lists (ggml's `iq2_entry_t`).
pub(super) struct Grid {
    /// Grid points, coordinates 2·level + 1.
    points: &'static [[i8; 8]],
    /// ggml's `kmap_q2xs`: the grid index of an on-grid packed point, `-(offset + 1)` of its
    /// neighbour list otherwise.
    map: Vec<i32>,
    /// ggml's `kneighbors_q2xs`: per off-grid point a count followed by that many grid indices.
    neighbours: Vec<u16>,
}

/// Where a packed point lands.
pub(super) enum Lookup<'a> {
    /// On the grid, at this index.
    OnGrid(u16),
    /// Off the grid; the grid indices to try, in ggml's order.
    Off(&'a [u16]),
}

impl Grid {
    /// Grid point `index`, coordinates 2·level + 1.
    #[inline]
    pub(super) fn point(&self, index: u16) -> &[i8; 8] {
        &self.points[index as usize]
    }

    /// Looks up a packed point (level `i` in bits `2i..2i+2`).
    #[inline]
    pub(super) fn lookup(&self, packed: u16) -> Lookup<'_> {
        let m = self.map[packed as usize];
        if m >= 0 {
            Lookup::OnGrid(m as u16)
        } else {
            let start = (-(m + 1)) as usize;
            let n = self.neighbours[start] as usize;
            Lookup::Off(&self.neighbours[start + 1..start + 1 + n])
        }
    }
}

/// The grid for `lattice`, built on first use.
pub(super) fn grid(lattice: Lattice) -> &'static Grid {
    static GRIDS: [OnceLock<Grid>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    // nwant: how many distinct distances a neighbour list spans (ggml's `nwant`).
    let (slot, points, nwant): (usize, &'static [[i8; 8]], usize) = match lattice {
        Lattice::Iq2Xxs => (0, &Q_IQ2XXS, 2),
        Lattice::Iq2Xs => (1, &Q_IQ2XS, 2),
        Lattice::Iq2S => (2, &Q_IQ2S, 1),
        Lattice::Iq1 => (3, &Q_IQ1S, 3),
    };
    GRIDS[slot].get_or_init(|| build(points, nwant))
}

/// ggml's `iq2xs_init_impl`. ggml sorts all grid points by (squared distance, index) for every
/// off-grid packed point and keeps those within the `nwant` smallest distinct distances; listing
/// them distance by distance, each in index order, gives the same lists without sorting.
fn build(points: &'static [[i8; 8]], nwant: usize) -> Grid {
    let n = points.len();
    let mut map = vec![-1i32; KMAP_SIZE];
    for (i, p) in points.iter().enumerate() {
        let packed = p.iter().enumerate().fold(0usize, |acc, (k, &v)| {
            acc | ((((v - 1) / 2) as usize) << (2 * k))
        });
        map[packed] = i as i32;
    }

    // Squared distances over coordinates 0..4 (half 0) and 4..8 (half 1) from every packing of
    // four levels to every grid point, laid out [half][packing][grid index].
    let mut partial = vec![0u8; 2 * 256 * n];
    for (h, half) in partial.chunks_exact_mut(256 * n).enumerate() {
        for (v, row) in half.chunks_exact_mut(n).enumerate() {
            for (d, p) in row.iter_mut().zip(points) {
                let mut s = 0i32;
                for k in 0..4 {
                    let pos = 2 * ((v >> (2 * k)) & 3) as i32 + 1;
                    let diff = p[4 * h + k] as i32 - pos;
                    s += diff * diff;
                }
                *d = s as u8;
            }
        }
    }

    let mut dist = vec![0u16; n];
    let mut close: Vec<u16> = Vec::with_capacity(n);
    let mut neighbours = Vec::new();
    for (i, slot) in map.iter_mut().enumerate() {
        if *slot >= 0 {
            continue;
        }
        let lo = &partial[(i & 255) * n..][..n];
        let hi = &partial[256 * n + (i >> 8) * n..][..n];
        let mut present = [false; MAX_D2 + 1];
        for ((d, &a), &b) in dist.iter_mut().zip(lo).zip(hi) {
            *d = a as u16 + b as u16;
            present[*d as usize] = true;
        }
        let mut levels = [0u16; 3];
        let mut nlevels = 0;
        for (d2, _) in present.iter().enumerate().filter(|(_, &p)| p) {
            levels[nlevels] = d2 as u16;
            nlevels += 1;
            if nlevels == nwant {
                break;
            }
        }
        let levels = &levels[..nlevels];
        let cutoff = levels[nlevels - 1];
        close.clear();
        close.extend((0..n as u16).filter(|&j| dist[j as usize] <= cutoff));

        let start = neighbours.len();
        *slot = -(start as i32 + 1);
        neighbours.push(0);
        for &level in levels {
            neighbours.extend(close.iter().filter(|&&j| dist[j as usize] == level));
        }
        neighbours[start] = (neighbours.len() - start - 1) as u16;
    }
    Grid {
        points,
        map,
        neighbours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_u64(p: &[i8; 8]) -> u64 {
        u64::from_le_bytes(p.map(|v| v as u8))
    }

    #[test]
    fn derived_tables_match_ggml_common() {
        // Spot values transcribed from ggml-common.h: (table, [(entry, value)]).
        type Spots = (&'static [[i8; 8]], [(usize, u64); 5]);
        let cases: [Spots; 4] = [
            (
                &IQ2XXS_GRID,
                [
                    (0, 0x0808080808080808),
                    (1, 0x080808080808082b),
                    (85, 0x0819081919192b2b),
                    (135, 0x1908080808192b08),
                    (255, 0x2b2b2b1908081908),
                ],
            ),
            (
                &IQ2XS_GRID,
                [
                    (0, 0x0808080808080808),
                    (1, 0x080808080808082b),
                    (170, 0x0819082b08190808),
                    (263, 0x19080808082b1908),
                    (511, 0x2b2b2b2b2b2b2b2b),
                ],
            ),
            (
                &IQ2S_GRID,
                [
                    (0, 0x0808080808080808),
                    (1, 0x080808080808082b),
                    (341, 0x08192b080808192b),
                    (519, 0x1908081919191919),
                    (1023, 0x2b2b2b2b2b2b2b2b),
                ],
            ),
            (
                &IQ1S_GRID,
                [
                    (0, 0xffffffffffffffff),
                    (1, 0xffffffffffffff01),
                    (682, 0x00ffff01ff000001),
                    (1031, 0x00000000000001ff),
                    (2047, 0x0101010101010101),
                ],
            ),
        ];
        for (table, spots) in cases {
            for (i, v) in spots {
                assert_eq!(as_u64(&table[i]), v, "entry {i}");
            }
        }
        assert_eq!(KSIGNS_IQ2XS[..8], [0, 129, 130, 3, 132, 5, 6, 135]);
        assert_eq!(KSIGNS_IQ2XS[127], 255);
    }

    #[test]
    fn every_packed_point_resolves() {
        let g = grid(Lattice::Iq2Xxs);
        for u in 0..=0xAAAAu16 {
            match g.lookup(u) {
                Lookup::OnGrid(i) => assert!((i as usize) < g.points.len()),
                Lookup::Off(nb) => assert!(!nb.is_empty()),
            }
        }
    }
}

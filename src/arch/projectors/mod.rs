//! One module per vision projector family, each the Rust twin of a converter `MmprojModel`
//! class (`convert_hf_to_gguf.py --mmproj`), registered in [`PROJECTORS`]. Their defaults are
//! `MmprojModel`'s ([`super::mmproj_model`]).

pub mod kimivl;

use super::ArchSpec;

/// Every supported projector class.
pub static PROJECTORS: &[&dyn ArchSpec] = &[&kimivl::KimiVl];

//! Bounded, parallel execution of imports and export plans, with progress bars.

pub mod export;
pub mod import;
pub mod import_s3;
mod import_tensor;
pub mod measure;
pub mod progress;
pub mod writer;

//! The user-editable JSON configs: `import_config.json` and `export_config.json`.

pub mod export_config;
pub mod import_config;
pub mod json_strict;
pub mod legacy;

pub use export_config::ExportConfig;
pub use import_config::ImportConfig;
pub use json_strict::read_config;

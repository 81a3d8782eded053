//! One module per subcommand: each turns parsed arguments into calls on the library.

pub mod export;
pub mod export_lora;
pub mod export_target;
pub mod import;
pub mod import_lora;
pub mod inspect;
pub mod meta;
pub mod remove;
pub mod verify;

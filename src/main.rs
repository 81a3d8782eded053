use clap::Parser;

use gmat::cli::{Cli, Command, StoreEncoding};
use gmat::commands;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Import(a) => commands::import::run(commands::import::ImportArgs {
            model: a.model,
            output: a.output,
            config: a.config,
            generate_config: a.generate_config,
            encoding: match a.encoding {
                StoreEncoding::Zstd => gmat::store::Encoding::Zstd,
                StoreEncoding::Raw => gmat::store::Encoding::Raw,
            },
            base: a.base,
            quiet: a.quiet,
        }),
        Command::Export(a) => commands::export::run(commands::export::ExportArgs {
            model: a.model,
            output: a.output,
            config: a.config,
            file_type: a.file_type,
            pure: a.pure,
            generate_config: a.generate_config,
            dry_run: a.dry_run,
            quiet: a.quiet,
            shard_size: a.shard_size,
            shard_max_tensors: a.shard_max_tensors,
        }),
        Command::Inspect(a) => commands::inspect::run(&a.store),
        Command::Verify(a) => commands::verify::run(&a.store, a.quiet),
    };
    if let Err(e) = result {
        eprintln!("gmat: error: {e:#}");
        std::process::exit(1);
    }
}

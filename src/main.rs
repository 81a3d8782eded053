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
            output_tensor_type: a.output_tensor_type,
            token_embedding_type: a.token_embedding_type,
            tensor_types: a.tensor_types,
            leave_output_tensor: a.leave_output_tensor,
            imatrix: a.imatrix,
            include_weights: a.include_weights,
            exclude_weights: a.exclude_weights,
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

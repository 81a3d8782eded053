use clap::Parser;

use gmat::cli::{Cli, Command};
use gmat::commands;

fn main() {
    gmat::malloc_arenas::limit();
    let cli = Cli::parse();
    // A GMAT_SIMD the CPU cannot run (or a typo) is refused before any work.
    if let Err(e) = gmat::quant::simd_path() {
        eprintln!("gmat: error: {}", gmat::escape::controls(&e));
        std::process::exit(1);
    }
    if let Some(e) = cli.s3_endpoint {
        gmat::store::s3::config::set_endpoint(e);
    }
    let result = match cli.command {
        Command::Import(a) => commands::import::run(a),
        Command::Export(a) => commands::export::run(*a),
        Command::Inspect(a) => commands::inspect::run(&a.store),
        Command::Verify(a) => commands::verify::run(&a.store, a.quiet),
        Command::Remove(a) => commands::remove::run(&a.store, a.quiet),
        Command::Schema(a) => commands::meta::schema(a.kind, a.output.as_deref()),
        Command::Completions(a) => commands::meta::completions(a.shell),
        Command::Man(a) => commands::meta::man(a.dir.as_deref()),
    };
    if let Err(e) = result {
        // Names and paths come from files: never let them drive the terminal.
        eprintln!("gmat: error: {}", gmat::escape::controls(&format!("{e:#}")));
        std::process::exit(1);
    }
}

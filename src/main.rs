use clap::Parser;

use gmat::cli::{Cli, Command};
use gmat::commands;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Import(a) => commands::import::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Inspect(a) => commands::inspect::run(&a.store),
        Command::Verify(a) => commands::verify::run(&a.store, a.quiet),
    };
    if let Err(e) = result {
        // Names and paths come from files: never let them drive the terminal.
        eprintln!("gmat: error: {}", gmat::escape::controls(&format!("{e:#}")));
        std::process::exit(1);
    }
}

//! The `cairn` binary: parses arguments, calls the library, prints.

fn main() {
    std::process::exit(cairn_cli::main());
}

#[path = "cli/mod.rs"]
mod cairn_cli;

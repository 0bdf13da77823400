//! The `hardmine` binary: parse arguments, run the subcommand, print errors once.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// Decoding a row group allocates and frees large buffers; glibc's malloc returns those to the
// kernel each time (page faults on every row group), mimalloc keeps them: 1.7x faster reads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Panics of the Parquet decoder on corrupt files become errors naming the file; do not
    // also print them. Any other panic is a bug and prints as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !hardmine::input::in_reader_call() {
            default_hook(info);
        }
    }));
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // `hardmine ... | head`: the reader went away; that is not an error.
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    }
}

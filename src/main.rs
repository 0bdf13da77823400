//! The `hardmine` binary: parse arguments, run the subcommand, print errors once.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Opts the process out of transparent huge pages. The pass allocates and frees large buffers
/// (decoded batches, an image's candidates: 200+ MB per image of a binary dump); with THP each
/// fresh 2 MB page is zeroed by the kernel on first touch, which took a third of the time of
/// `analyze` on a binary dump (sys 2.8-3.6 s against 0.55 s without, wall 6.7-7.0 s against
/// 4.5 s, 4 images x 2M rows; no change on dense dumps: docs/benchmarks.md). This is what
/// mimalloc does for `MIMALLOC_ALLOW_THP=0`, set before the first allocation.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// Decoding a row group allocates and frees large buffers; glibc's malloc returns those to the
// kernel each time (page faults on every row group), mimalloc keeps them: 1.7x faster reads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
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

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

// mimalloc's own C API (linked with the allocator above; libmimalloc-sys declares these only
// under its `extended` feature). `mi_option_t` is a C enum, passed as an int.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// `mi_option_purge_decommits` in mimalloc's include/mimalloc.h (v2 and v3 alike: the sixth
/// option).
const MI_OPTION_PURGE_DECOMMITS: std::ffi::c_int = 5;

/// Makes mimalloc purge the memory it no longer uses by resetting it (MADV_FREE: the kernel
/// takes the pages back only when it needs memory) instead of decommitting it (MADV_DONTNEED:
/// the next allocation faults and zeroes every page again). The pass frees and allocates an
/// image's candidates and the decoded batches over and over; on the binary bench dump (S4,
/// `analyze`, 2 threads) decommits cost 1.19M page faults and 2.8 s of system time against
/// 0.21M and 0.85 s, and 11% of the wall time; on dense dumps about 3%. Max RSS, which counts
/// the reset pages until the kernel reclaims them, grows by about 10% (762 -> 845 MB on S4).
/// Equivalent to `MIMALLOC_PURGE_DECOMMITS=0`; an explicit setting in the environment wins.
fn reset_freed_memory_instead_of_decommitting() {
    if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it at its next purge.
        unsafe { mi_option_set(MI_OPTION_PURGE_DECOMMITS, 0) }
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    reset_freed_memory_instead_of_decommitting();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_option_is_mimallocs_purge_decommits_and_is_turned_off() {
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MIMALLOC_")) {
            return; // the environment sets mimalloc's options: the defaults below do not hold
        }
        // SAFETY: reads and sets integer options.
        unsafe {
            // The index is the option whose documented default is 1 between
            // arena_eager_commit (2) and allow_large_os_pages (0).
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DECOMMITS - 1), 2);
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DECOMMITS + 1), 0);
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DECOMMITS), 1);
            reset_freed_memory_instead_of_decommitting();
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DECOMMITS), 0);
        }
    }
}

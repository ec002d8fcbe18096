//! The `concord` command line; everything but argument parsing lives in the library.

use clap::Parser;

// The server's request path and the store's batches allocate and free many small buffers;
// glibc's allocator took ~8 % of the server's CPU under 64 writers (bench/results/HISTORY.md, issue 22).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    concord::main_with(concord::Cli::parse()).await.into()
}

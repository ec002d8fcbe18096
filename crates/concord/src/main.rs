//! The `concord` command line; everything but argument parsing lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    concord::main_with(concord::Cli::parse()).await.into()
}

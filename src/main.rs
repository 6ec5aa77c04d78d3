//! The `gatehouse` binary: parses the command line, sets up logging to stderr and hands over
//! to [`gatehouse::cli`].

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = gatehouse::cli::Cli::parse();
    gatehouse::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(gatehouse::cli::run(cli))
}

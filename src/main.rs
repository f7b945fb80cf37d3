//! The `orc` binary: parses the command line, sets up logging, runs.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = orc::cli::Cli::parse();
    let serving = matches!(
        cli.command,
        orc::cli::Command::Up(_) | orc::cli::Command::Server(_)
    );
    let default_filter = if serving {
        "info,raft=warn,sled=warn,h2=warn,tower=warn,hyper=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orc::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

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
    // Colour only on a terminal: a log file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let agent = matches!(cli.command, orc::cli::Command::Agent(_));
    if !serving && !agent {
        quit_quietly_on_a_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // A CLI's sockets are written from the runtime's threads: there a
        // peer that closed (an HTTP/1.1 server at --endpoint, a server that
        // died) must be an EPIPE the client names, not a silent SIGPIPE.
        .on_thread_start(block_sigpipe_on_this_thread)
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

/// Blocks SIGPIPE on the calling thread, so a write to a closed socket
/// there fails with EPIPE (stdout is written from the main thread, where
/// `quit_quietly_on_a_closed_pipe` applies).
fn block_sigpipe_on_this_thread() {
    #[cfg(unix)]
    // SAFETY: changes only the calling thread's signal mask, through a
    // sigset_t this function owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Lets a CLI verb whose reader went away (`orc list-tasks | head -1`) end
/// the way `ls` and `cat` do, killed quietly by SIGPIPE, instead of
/// panicking in `println!`. Rust ignores SIGPIPE by default; servers and
/// agents keep that (a closed socket must be an error they handle, not
/// their end).
fn quit_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists;
    // restoring a signal's default action has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

//! The `mesh` command line (clap derive). Human output by default, `--json` for scripts.
//! Errors: one sentence on stderr, exit code 1 (2 for usage errors, from clap, when `mesh
//! up` lacks the privilege for its TUN device: something to set up first, and when `mesh
//! update` refuses: a packaged binary, a downgrade). Option values
//! are checked by clap value parsers, so a bad value is a usage error too; exit code 1 is left
//! for what fails at run time.

#[cfg(target_os = "linux")]
mod babel;
mod demo;
mod docs;
mod join;
mod node;
mod registry;
mod service;
#[cfg(target_os = "linux")]
mod setup_tun;
mod tray;
mod ui;
mod up;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// re6mesh: a resilient, scalable IPv6 mesh network.
#[derive(Debug, Parser)]
#[command(name = "mesh", version = docs::version_line(), about, propagate_version = true)]
pub struct Cli {
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The network's registry: certificate authority, prefixes, revocation, parameters.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
    /// Join a network with a token from its registry.
    Join(join::JoinArgs),
    /// Connect: ask the running node, or run the node (TUN, tunnels, Babel) in the foreground.
    Up(up::UpArgs),
    /// Write the node's configuration file (`<state-dir>/node.toml`), read by `mesh up`.
    Set(up::SetArgs),
    /// Show the running node's state (yours, or the system node run by root or the service).
    Status(node::ShowArgs),
    /// List the running node's tunnels.
    Peers(node::PeersArgs),
    /// List the running node's Babel routes.
    Routes(node::ShowArgs),
    /// Disconnect the running node (tunnels closed, address withdrawn); `--exit` ends it.
    Down(node::DownArgs),
    /// A standalone Babel router on real interfaces (interoperates with babeld and BIRD).
    #[command(subcommand)]
    #[cfg(target_os = "linux")]
    Babel(babel::BabelCmd),
    /// The node as a system service: `install`, `uninstall`, `status` (systemd on Linux, launchd
    /// on macOS, a Windows service).
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Root, once: a persistent TUN device for a user, so their `mesh up` needs no sudo.
    #[cfg(target_os = "linux")]
    SetupTun(setup_tun::SetupTunArgs),
    /// The node's state as a tray icon: connect, disconnect, copy the address, open the page.
    Tray(tray::TrayArgs),
    /// Serve the live network page of the local node (prints the URL; runs in the foreground).
    Ui(ui::UiArgs),
    /// Try it: a registry and N nodes in network namespaces, drawn live in the browser (root).
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(docs::CompletionsArgs),
    /// Print the man page of `mesh`, or write one page per command with `--out DIR`.
    Man(docs::ManArgs),
    /// Print the version, the mesh protocol version and the git commit of this binary.
    Version(docs::VersionArgs),
    /// Replace this binary with the newest signed release (`--check`: only say what would happen).
    Update(update::UpdateArgs),
}

/// `--state-dir DIR`, shared by every command that touches on-disk state.
#[derive(Debug, clap::Args, Clone)]
pub struct StateDir {
    /// State directory (default: /var/lib/re6mesh[/registry] as root, the user's data directory
    /// otherwise; without it, up, down, status, peers, routes and ui also find a node run by root).
    #[arg(long, value_name = "DIR", env = "MESH_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

fn init_tracing(verbose: u8, log_file: Option<std::fs::File>) {
    let default = match verbose {
        // quinn_udp warns on every datagram to an unreachable address (a peer we cannot
        // reach yet); the dial's own outcome is what matters.
        0 => "info,quinn_udp=error",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if let Some(file) = log_file {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colours only for a person at a terminal, never into log files or journald
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `mesh registry nodes | head` closes our stdout early: end quietly, as Unix tools do,
/// instead of panicking on the next `println!` (Rust ignores SIGPIPE, so the write fails).
/// The exit skips destructors: install it only for commands that merely print.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_stdout(payload) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether `println!`'s panic message says the reader of stdout is gone: EPIPE on Unix
/// ("Broken pipe (os error 32)"); on Windows ERROR_BROKEN_PIPE (109) or ERROR_NO_DATA (232),
/// whose text is localised, so the code is what is matched.
fn is_closed_stdout(panic_message: &str) -> bool {
    let Some(why) = panic_message.strip_prefix("failed printing to stdout") else {
        return false;
    };
    if cfg!(windows) {
        why.contains("(os error 109)") || why.contains("(os error 232)")
    } else {
        why.contains("Broken pipe")
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Only for commands that print and hold nothing to clean up: the exit skips destructors,
    // which long-running commands (up, serve, babel run, demo) rely on.
    let prints_only = matches!(
        &cli.command,
        Command::Status(_) | Command::Peers(_) | Command::Routes(_) | Command::Version(_)
    ) || matches!(&cli.command, Command::Registry(r) if !matches!(r, registry::RegistryCmd::Serve(_) | registry::RegistryCmd::Init(_)))
        || babel_prints_only(&cli.command);
    if prints_only {
        quiet_broken_pipe();
    }
    init_tracing(cli.verbose, service_log(&cli.command));
    let result = match cli.command {
        Command::Registry(cmd) => registry::run(cmd),
        Command::Join(args) => join::run(args),
        Command::Up(a) => up::up(a),
        Command::Set(a) => up::set(a),
        Command::Status(a) => node::status(a),
        Command::Peers(a) => node::peers(a),
        Command::Routes(a) => node::routes(a),
        Command::Down(a) => node::down(a),
        #[cfg(target_os = "linux")]
        Command::Babel(cmd) => babel::run_cmd(cmd),
        Command::Service(cmd) => service::run(cmd),
        #[cfg(target_os = "linux")]
        Command::SetupTun(a) => setup_tun::run(a),
        Command::Tray(a) => tray::run(a),
        Command::Ui(a) => ui::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
        Command::Version(a) => docs::version(a),
        Command::Update(a) => update::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", sentence(&e));
            if e.chain()
                .any(|c| c.is::<Unavailable>() || c.is::<update::Refused>())
            {
                return 2;
            }
            e.chain()
                .find_map(|c| c.downcast_ref::<crate::tun::TunError>())
                .map_or(1, crate::tun::TunError::exit_code)
        }
    }
}

/// A command this build or this OS does not have: one sentence, exit code 2 (like a usage
/// error: nothing ran).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The Windows service has no console: `mesh service run` logs to `<state-dir>\node.log`
/// (appended; stderr if it cannot be opened).
fn service_log(command: &Command) -> Option<std::fs::File> {
    #[cfg(windows)]
    if let Command::Service(service::ServiceCmd::Run(a)) = command {
        let dir = service::run_dir(a);
        let _ = std::fs::create_dir_all(&dir);
        return std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(crate::platform::service::windows::LOG_FILE))
            .ok();
    }
    let _ = command;
    None
}

/// `mesh babel routes|stats` only print (`mesh babel` is Linux-only).
fn babel_prints_only(command: &Command) -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(
            command,
            Command::Babel(babel::BabelCmd::Routes(_) | babel::BabelCmd::Stats(_))
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = command;
        false
    }
}

/// The error chain as one sentence ("what failed: why").
fn sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_closed_stdout_is_recognised_on_this_os() {
        let closed = if cfg!(windows) {
            "failed printing to stdout: The pipe is being closed. (os error 232)"
        } else {
            "failed printing to stdout: Broken pipe (os error 32)"
        };
        assert!(super::is_closed_stdout(closed));
        assert!(!super::is_closed_stdout(
            "failed printing to stdout: Permission denied (os error 5)"
        ));
        assert!(!super::is_closed_stdout("index out of bounds"));
    }
}

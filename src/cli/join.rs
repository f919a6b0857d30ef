//! `mesh join <TOKEN>`: new P-256 key, CSR, join, identity and parameters stored; each step
//! shown with a spinner on a terminal, as plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::StateDir;
use crate::registry_client::{NodeKey, RegistryClient};
use crate::token::JoinToken;

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The join token from `mesh registry token create`.
    token: String,
    #[command(flatten)]
    state: StateDir,
    /// Join again even if this state directory already holds a node (a new key and prefix).
    #[arg(long)]
    force: bool,
    /// The node's name, shown to people by `mesh status`, `peers`, `routes` and the live
    /// page: lowercase letters, digits and '-', up to 63 (a DNS label). Default: this
    /// machine's host name, made into one. The registry adds `-2`, `-3`, … when another node
    /// has it, and puts it in the certificate.
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// Join without a name.
    #[arg(long, conflicts_with = "name")]
    no_name: bool,
    /// JSON output: {"joined", "network", "prefix", "address", "name", "state_dir"} ("joined"
    /// false: this directory already held a node and nothing changed).
    #[arg(long)]
    json: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    crate::identity::validate_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// This machine's host name, if the OS tells it.
fn host_name() -> Option<String> {
    #[cfg(unix)]
    {
        let uts = rustix::system::uname();
        let n = uts.nodename().to_string_lossy().trim().to_owned();
        if !n.is_empty() {
            return Some(n);
        }
    }
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
}

pub fn run(a: JoinArgs) -> anyhow::Result<()> {
    let dir = a
        .state
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_node_dir);
    let token = JoinToken::decode(&a.token)?;
    if crate::state::is_joined(&dir) && !a.force {
        let st = crate::state::load(&dir)?;
        if a.json {
            let name = own_name(&st.cert_der);
            print_json(false, &st.params.network, &st.facts.prefix, name, &dir);
            return Ok(());
        }
        println!(
            "Already joined: prefix {} (address {}) in {}. Nothing changed; use --force to join again.",
            st.facts.prefix,
            crate::identity::node_address(&st.facts.prefix),
            dir.display()
        );
        return Ok(());
    }
    let name = if a.no_name {
        None
    } else {
        a.name
            .clone()
            .or_else(|| host_name().and_then(|h| crate::identity::name_from_hostname(&h)))
    };
    super::runtime()?.block_on(async {
        let mut steps = Steps::new(4);
        let key = pending_key(&dir, &mut steps)?;
        steps.step("building the certificate request (CSR)");
        let csr = key.csr_pem()?;
        steps.step(&format!("contacting the registry at {}", token.url));
        let client = RegistryClient::for_token(&token)?;
        let certified = client
            .join_with_csr(Some(&token.secret), &key, csr, name.as_deref())
            .await?;
        steps.step(&format!("storing the identity in {}", dir.display()));
        crate::state::save(&dir, &token.url, &key, &certified).context(
            "the registry issued a certificate but it could not be stored; run the same `mesh join` again to get it back",
        )?;
        let _ = std::fs::remove_file(dir.join(PENDING_KEY));
        steps.done();
        if certified.params.min_protocol > crate::params::PROTOCOL_VERSION {
            bail!(
                "this network requires protocol {} but this mesh speaks {}; upgrade mesh",
                certified.params.min_protocol,
                crate::params::PROTOCOL_VERSION
            );
        }
        let name = own_name(&certified.cert_der);
        if a.json {
            print_json(
                true,
                &certified.params.network,
                &certified.prefix,
                name,
                &dir,
            );
            return Ok(());
        }
        println!("Joined network {}", certified.params.network);
        println!("  prefix   {}", certified.prefix);
        println!(
            "  address  {}",
            crate::identity::node_address(&certified.prefix)
        );
        if let Some(n) = &name {
            println!("  name     {n}");
        }
        Ok(())
    })
}

/// The name in a node certificate, if any.
fn own_name(cert_der: &[u8]) -> Option<String> {
    crate::identity::cert_info(cert_der)
        .ok()
        .and_then(|i| i.name)
}

fn print_json(
    joined: bool,
    network: &dyn std::fmt::Display,
    prefix: &ipnet::Ipv6Net,
    name: Option<String>,
    dir: &std::path::Path,
) {
    let v = serde_json::json!({
        "joined": joined,
        "network": network.to_string(),
        "prefix": prefix.to_string(),
        "address": crate::identity::node_address(prefix).to_string(),
        "name": name,
        "state_dir": dir.display().to_string(),
    });
    println!("{v}");
}

/// The key of a join not finished yet, stored before the registry is contacted.
const PENDING_KEY: &str = "join.key";

/// The key to join with: the one of an unfinished join in `dir` (its answer was lost, or could
/// not be stored), else a new one, stored (0600) before any request is sent. A retried join so
/// sends the same key, and the registry hands back the same certificate instead of refusing a
/// used token.
fn pending_key(dir: &std::path::Path, steps: &mut Steps) -> anyhow::Result<NodeKey> {
    let path = dir.join(PENDING_KEY);
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            steps.step("reusing the key of an unfinished join");
            return NodeKey::from_pem(&pem).with_context(|| {
                format!(
                    "{} is damaged; delete it to join with a new key",
                    path.display()
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    steps.step("generating an ECDSA P-256 key");
    let key = NodeKey::generate()?;
    crate::fsutil::create_private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    crate::fsutil::write_atomic(&path, key.to_pem().as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// The steps of a join on stderr: a spinner per step when stderr is a terminal (each
/// finished step stays as a ✓ line, a failed one as a ✗ line), plain `[i/n] step` lines
/// otherwise (logs, tests, pipes).
struct Steps {
    bar: Option<ProgressBar>,
    total: usize,
    n: usize,
    current: Option<String>,
}

impl Steps {
    fn new(total: usize) -> Steps {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner:.cyan} {msg}") {
                bar.set_style(style.tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓"));
            }
            bar.enable_steady_tick(Duration::from_millis(80));
            bar
        });
        Steps {
            bar,
            total,
            n: 0,
            current: None,
        }
    }

    /// Starts the next step (the previous one succeeded).
    fn step(&mut self, what: &str) {
        self.n += 1;
        let line = format!("[{}/{}] {what}", self.n, self.total);
        match &self.bar {
            Some(bar) => {
                if let Some(prev) = self.current.take() {
                    bar.println(format!("✓ {prev}"));
                }
                bar.set_message(line.clone());
            }
            None => eprintln!("{line}"),
        }
        self.current = Some(line);
    }

    /// Every step succeeded.
    fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(last) = self.current.take() {
                eprintln!("✓ {last}");
            }
        }
        self.current = None;
    }
}

impl Drop for Steps {
    /// A step that did not finish failed: its line stays, marked ✗, above the error.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(cur) = self.current.take() {
                eprintln!("✗ {cur}");
            }
        }
    }
}

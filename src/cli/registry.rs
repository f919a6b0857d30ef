//! `mesh registry …`: init, serve and the admin commands. Admin commands open the database
//! directly (their own `BEGIN IMMEDIATE` transactions), so they work on a running or a
//! stopped registry alike and are never reachable from the network.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ipnet::Ipv6Net;

use super::StateDir;
use crate::registry::store::{InitOptions, SETTABLE};
use crate::registry::{self, Registry};

#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Create a registry: CA, database, TLS certificate, first MAC key and parameters.
    Init(InitArgs),
    /// Serve the registry's HTTPS API.
    Serve(ServeArgs),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List the nodes.
    Nodes(ListArgs),
    /// Revoke a certificate (by serial: the node may renew) or ban a node (by prefix).
    Revoke(RevokeArgs),
    /// Give a node a new key: revoke its certificates, refuse renewals, and print a one-use
    /// join token that gives its prefix to whoever joins with it (for a lost or stolen key).
    Rekey(RekeyArgs),
    /// Show the network parameters, or change one with `params set KEY=VALUE`.
    Params(ParamsArgs),
    /// Babel MAC keys.
    #[command(subcommand)]
    Mac(MacCmd),
    /// Let a node announce a prefix outside the network: `exit ::/0` (an exit node) or
    /// `route PREFIX` (a LAN behind it, `mesh up --advertise-route`). Published in the
    /// signed parameters; every node refuses such routes from any other node.
    Authorize(GrantArgs),
    /// Withdraw a grant made with `authorize`.
    Unauthorize(GrantArgs),
    /// List the grants.
    Grants(ListArgs),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    state: StateDir,
    /// The node: its prefix (CIDR) or its name.
    node: String,
    /// `exit` or `route`.
    #[arg(value_parser = ["exit", "route"])]
    kind: String,
    /// The prefix (`::/0` for an exit; a subnet route must lie outside the network).
    prefix: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    state: StateDir,
    /// Network prefix (default: a random ULA /48, RFC 4193).
    #[arg(long, value_name = "PREFIX")]
    network: Option<Ipv6Net>,
    /// The URL nodes use to reach this registry (default: https://<hostname>:8443).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Default prefix length of a node.
    #[arg(long, value_name = "N", default_value_t = 64)]
    node_prefix_len: u8,
    /// Let nodes join without a token.
    #[arg(long)]
    anonymous: bool,
    /// Create the network without a Babel MAC key (`mac rotate` introduces one later).
    #[arg(long)]
    no_mac: bool,
    /// JSON output: {"state_dir", "network", "url", "node_prefix_len", "anonymous", "mac"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    state: StateDir,
    /// Address and port to listen on: `[ADDR:]PORT` (default [::]:8443).
    #[arg(long, value_name = "[ADDR:]PORT", default_value = "[::]:8443", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Parameter watches (long polls) held at once; nodes beyond it poll, and the mesh
    /// passes changes on to them (0: no watches). Only nodes with a valid certificate watch.
    #[arg(long, value_name = "N", default_value_t = registry::limits::DEFAULT_MAX_WATCHERS)]
    max_watchers: usize,
    /// Parameter watches one node may hold at once (beyond: 429).
    #[arg(long, value_name = "N", default_value_t = registry::limits::DEFAULT_MAX_WATCHERS_PER_NODE)]
    max_watchers_per_node: usize,
    /// Joins without a token from one source (an IPv4 address or an IPv6 /64), as COUNT/PERIOD
    /// (a burst of COUNT, refilled over PERIOD), or `off`. Beyond: 429 with Retry-After.
    #[arg(long, value_name = "RATE", default_value = "5/1h", value_parser = registry::limits::parse_rate_or_off)]
    anon_join_rate_per_source: registry::limits::RateOrOff,
    /// Joins without a token from all sources together, as COUNT/PERIOD, or `off`. Beyond:
    /// 503 with Retry-After.
    #[arg(long, value_name = "RATE", default_value = "100/1h", value_parser = registry::limits::parse_rate_or_off)]
    anon_join_rate: registry::limits::RateOrOff,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Mint a join token (prints only the token).
    Create(TokenCreateArgs),
    /// List tokens.
    List(ListArgs),
    /// Delete a token by id.
    Delete(TokenDeleteArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    state: StateDir,
    /// Prefix length the joining node gets (default: the network's node prefix length).
    #[arg(long, value_name = "N")]
    prefix_len: Option<u8>,
    /// Lifetime, e.g. `1h`, `7d` (default: no expiry).
    #[arg(long, value_name = "DURATION")]
    expires: Option<humantime::Duration>,
    /// How many nodes may join with it.
    #[arg(long, value_name = "N", default_value_t = 1)]
    uses: u32,
}

#[derive(Debug, Args)]
pub struct TokenDeleteArgs {
    #[command(flatten)]
    state: StateDir,
    /// Token id (see `token list`).
    id: i64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    state: StateDir,
    /// JSON Lines output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    state: StateDir,
    /// A node prefix (CIDR: ban) or a certificate serial (hex: revoke that certificate).
    target: String,
    /// JSON output: {"action": "revoked"|"banned", "serial"|"prefix", "params_version"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    state: StateDir,
    /// The node's prefix (CIDR).
    prefix: Ipv6Net,
    /// Lifetime of the token, e.g. `1h`, `7d` (default: no expiry).
    #[arg(long, value_name = "DURATION")]
    expires: Option<humantime::Duration>,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    #[command(flatten)]
    state: StateDir,
    /// JSON output (the signed document as is).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    set: Option<ParamsCmd>,
}

#[derive(Debug, Subcommand)]
pub enum ParamsCmd {
    /// Change parameters and publish a new version, e.g. `params set hello_interval=1`.
    Set {
        /// KEY=VALUE pairs.
        #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_pair)]
        pairs: Vec<(String, String)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MacCmd {
    /// One step of the sign/accept key cycle.
    Rotate(MacRotateArgs),
}

#[derive(Debug, Args)]
pub struct MacRotateArgs {
    #[command(flatten)]
    state: StateDir,
    /// JSON output: {"params_version", "sign", "accept", "accept_unsigned"}.
    #[arg(long)]
    json: bool,
}

fn dir(s: &StateDir) -> PathBuf {
    s.state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_registry_dir)
}

/// Parses `[ADDR:]PORT` (no address: all addresses, IPv6 and IPv4); a clap value parser, so a
/// bad value is a usage error (exit 2).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    s.parse()
        .map_err(|_| "not `[ADDR:]PORT` (e.g. 8443, 127.0.0.1:8443, [::]:8443)".to_owned())
}

/// `KEY=VALUE` of `params set`, as a clap value parser (the value itself is checked by the
/// store, against the parameter's type).
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err("not KEY=VALUE (e.g. hello_interval=1)".to_owned()),
    }
}

fn default_url() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}:8443")
}

pub fn run(cmd: RegistryCmd) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Init(a) => {
            let d = dir(&a.state);
            let url_given = a.url.is_some();
            let opts = InitOptions {
                network: a
                    .network
                    .map(|n| n.trunc())
                    .unwrap_or_else(registry::random_ula48),
                url: a.url.unwrap_or_else(default_url),
                node_prefix_len: a.node_prefix_len,
                anonymous: a.anonymous,
                no_mac: a.no_mac,
            };
            registry::init(&d, &opts)?;
            if a.json {
                let v = serde_json::json!({
                    "state_dir": d.display().to_string(),
                    "network": opts.network.to_string(),
                    "url": opts.url,
                    "node_prefix_len": opts.node_prefix_len,
                    "anonymous": opts.anonymous,
                    "mac": !opts.no_mac,
                });
                println!("{v}");
                return Ok(());
            }
            println!("Registry created in {}", d.display());
            println!("  network  {}", opts.network);
            println!("  URL      {}", opts.url);
            if !url_given {
                println!(
                    "  (nodes must reach that URL; pass --url https://HOST:PORT to choose another)"
                );
            }
            println!("Next: mesh registry serve --state-dir {}", d.display());
            Ok(())
        }
        RegistryCmd::Serve(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let listen = a.listen;
            super::runtime()?.block_on(async move {
                let limits = registry::limits::Limits {
                    anon_joins_per_source: a.anon_join_rate_per_source.0,
                    anon_joins: a.anon_join_rate.0,
                    max_watchers: a.max_watchers,
                    max_watchers_per_node: a.max_watchers_per_node,
                };
                let server = registry::server::Server::bind_with(reg, listen, limits).await?;
                tracing::info!(addr = %server.local_addr()?, "registry serving");
                server.run(shutdown_signal()).await
            })
        }
        RegistryCmd::Token(t) => token(t),
        RegistryCmd::Nodes(a) => {
            let rows = Registry::open(&dir(&a.state))?.store()?.nodes()?;
            if a.json {
                for r in rows {
                    println!("{}", serde_json::to_string(&r)?);
                }
            } else {
                println!(
                    "{:<28} {:<34} {:<22} {:<8} {:<6} {:<22} {:<6} NAME",
                    "PREFIX", "SERIAL", "EXPIRES", "REVOKED", "BANNED", "LAST SEEN", "PROTO"
                );
                for r in rows {
                    println!(
                        "{:<28} {:<34} {:<22} {:<8} {:<6} {:<22} {:<6} {}",
                        r.prefix,
                        r.serial,
                        r.expires,
                        yes(r.revoked),
                        yes(r.banned),
                        r.last_seen.unwrap_or_else(|| "never".into()),
                        r.protocol
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.name.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        RegistryCmd::Revoke(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let what = reg.store()?.revoke(&reg.ca, &a.target, registry::now())?;
            if a.json {
                println!("{}", serde_json::to_string(&what)?);
            } else {
                println!("{what}");
            }
            Ok(())
        }
        RegistryCmd::Rekey(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let expires_at = a.expires.map(|d| {
                registry::now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            });
            println!("{}", reg.rekey(&a.prefix, expires_at)?);
            Ok(())
        }
        RegistryCmd::Params(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let mut store = reg.store()?;
            match a.set {
                Some(ParamsCmd::Set { pairs }) => {
                    for (k, v) in &pairs {
                        let version = store.set_param(&reg.ca, k, v, registry::now())?;
                        println!("{k} set; parameters version {version}");
                    }
                    Ok(())
                }
                None => {
                    let signed = store.params()?;
                    let p = signed.verify(reg.ca.cert_der())?;
                    if a.json {
                        println!("{}", String::from_utf8_lossy(&signed.document));
                    } else {
                        print_params(&p, &store)?;
                    }
                    Ok(())
                }
            }
        }
        RegistryCmd::Authorize(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let v =
                reg.store()?
                    .authorize(&reg.ca, &a.node, &a.kind, &a.prefix, registry::now())?;
            println!(
                "{} authorised for {} {} (parameters version {v})",
                a.node, a.kind, a.prefix
            );
            Ok(())
        }
        RegistryCmd::Unauthorize(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let v =
                reg.store()?
                    .unauthorize(&reg.ca, &a.node, &a.kind, &a.prefix, registry::now())?;
            println!(
                "{} no longer authorised for {} {} (parameters version {v})",
                a.node, a.kind, a.prefix
            );
            Ok(())
        }
        RegistryCmd::Grants(a) => {
            let rows = Registry::open(&dir(&a.state))?.store()?.grants()?;
            if a.json {
                for r in rows {
                    println!("{}", serde_json::to_string(&r)?);
                }
            } else {
                println!(
                    "{:<6} {:<28} {:<28} {:<22} NAME",
                    "KIND", "PREFIX", "NODE", "SINCE"
                );
                for r in rows {
                    println!(
                        "{:<6} {:<28} {:<28} {:<22} {}{}",
                        r.kind,
                        r.prefix,
                        r.node,
                        r.created,
                        r.name.as_deref().unwrap_or("-"),
                        if r.banned {
                            " (banned: not in force)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        RegistryCmd::Mac(MacCmd::Rotate(a)) => {
            let reg = Registry::open(&dir(&a.state))?;
            let mut store = reg.store()?;
            let v = store.rotate_mac(&reg.ca, registry::now())?;
            let p = store.params()?.verify(reg.ca.cert_der())?;
            if a.json {
                let v = serde_json::json!({
                    "params_version": v,
                    "sign": p.mac.sign,
                    "accept": p.mac.accept,
                    "accept_unsigned": p.mac.accept_unsigned,
                });
                println!("{v}");
                return Ok(());
            }
            println!(
                "MAC keys rotated (parameters version {v}): sign {}, accept {}",
                p.mac.sign.as_deref().unwrap_or("none"),
                if p.mac.accept_unsigned {
                    "unsigned packets".to_owned()
                } else {
                    p.mac.accept.clone().unwrap_or_else(|| "none".into())
                }
            );
            Ok(())
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn print_params(
    p: &crate::params::NetworkParams,
    store: &crate::registry::store::Store,
) -> anyhow::Result<()> {
    println!("version           {}", p.version);
    println!("network           {}", p.network);
    println!("node_prefix_len   {}", p.node_prefix_len);
    println!(
        "protocol          {} (minimum {})",
        p.protocol, p.min_protocol
    );
    println!("hello_interval    {} s", p.hello_interval);
    println!("client_count      {}", p.tunnel.client_count);
    println!("max_clients       {}", p.tunnel.max_clients);
    println!("tunnel_refresh    {} s", p.tunnel.refresh);
    println!(
        "closed_countries  {}",
        if p.countries.closed.is_empty() {
            "-".into()
        } else {
            p.countries.closed.join(",")
        }
    );
    match p.ipv4 {
        Some(r) => println!("ipv4              {r}"),
        None => println!("ipv4              off"),
    }
    println!(
        "crl               number {} sha256 {}",
        p.crl.number, p.crl.sha256
    );
    println!(
        "mac               sign {} accept {}{}",
        p.mac.sign.as_deref().unwrap_or("none"),
        p.mac.accept.as_deref().unwrap_or("none"),
        if p.mac.accept_unsigned {
            " + unsigned"
        } else {
            ""
        }
    );
    if p.routes.is_empty() && p.routes_v4.is_empty() {
        println!("routes            none authorised (`mesh registry authorize`)");
    }
    for g in &p.routes {
        println!(
            "routes            {} {} by {}",
            g.kind.as_str(),
            g.prefix,
            g.node
        );
    }
    for g in &p.routes_v4 {
        println!("routes            route {} by {}", g.prefix, g.node);
    }
    println!(
        "anonymous         {}",
        store.config("anonymous")?.unwrap_or_default()
    );
    println!(
        "cert_validity     {} s",
        store.config("cert_validity")?.unwrap_or_default()
    );
    println!(
        "anonymous_validity {} s",
        store.config("anonymous_validity")?.unwrap_or_else(|| {
            crate::registry::store::DEFAULT_ANONYMOUS_VALIDITY_SECS.to_string()
        })
    );
    println!();
    println!("settable with `mesh registry params set KEY=VALUE`:");
    for (k, d) in SETTABLE {
        println!("  {k:<18} {d}");
    }
    Ok(())
}

fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create(a) => {
            let reg = Registry::open(&dir(&a.state))?;
            let expires_at = a.expires.map(|d| {
                registry::now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            });
            println!("{}", reg.create_token(a.prefix_len, expires_at, a.uses)?);
            Ok(())
        }
        TokenCmd::List(a) => {
            let rows = Registry::open(&dir(&a.state))?.store()?.tokens()?;
            if a.json {
                for r in rows {
                    println!("{}", serde_json::to_string(&r)?);
                }
            } else {
                println!(
                    "{:<6} {:<6} {:<22} {:<10} CREATED",
                    "ID", "PLEN", "EXPIRES", "USES LEFT"
                );
                for r in rows {
                    println!(
                        "{:<6} /{:<5} {:<22} {:<10} {}",
                        r.id,
                        r.prefix_len,
                        r.expires.unwrap_or_else(|| "never".into()),
                        format!("{}/{}", r.uses_left, r.uses_total),
                        r.created
                    );
                }
            }
            Ok(())
        }
        TokenCmd::Delete(a) => {
            Registry::open(&dir(&a.state))?
                .store()?
                .delete_token(a.id)?;
            println!("token {} deleted", a.id);
            Ok(())
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

//! Exit nodes (issue 15): the OS side of `mesh up --exit` (forwarding, NAT66) and of
//! `mesh up --use-exit` (policy routing of this host's internet traffic into the TUN).
//!
//! The routing itself is Babel's: an exit announces `::/0 from` the network prefix (RFC
//! 9079, [`crate::mesh::node::core::exit_key`]); every node selects the best one and seals
//! the packets it routes by it for that exit ([`crate::mesh::seal::path::Subnets::exit`]).
//!
//! Linux, like wg-quick:
//! * exit: `net.ipv6.conf.all.forwarding = 1` (put back as it was on stop) and, unless
//!   `--exit-routed`, an nftables table of our own, `ip6 re6mesh_exit`, masquerading what
//!   comes from the network prefix and leaves by another interface than the TUN (NAT66).
//!   Created on start (a stale one replaced), deleted on stop.
//! * use-exit: the tunnel UDP socket carries the firewall mark [`FWMARK`] (SO_MARK); table
//!   [`TABLE`] holds `default dev TUN src NODE-ADDRESS`; rule [`RULE_PRIORITY`] looks up
//!   `main` with `suppress_prefixlength 0` (every route of main but its default: the LAN,
//!   the DNS server on it, the mesh itself), rule [`RULE_PRIORITY`]` + 1` sends every
//!   unmarked packet to [`TABLE`]. The marked underlay packets skip it and leave by the main
//!   default route: they never loop into the TUN. All removed on stop.
//!
//! Other systems (docs/PLATFORMS.md): macOS would need a `utun` default route split in two
//! (`::/1`, `8000::/1`) plus host routes of every peer's underlay address through the
//! physical gateway (no fwmark there), or a Network Extension; Windows would need the
//! same split default through the wintun interface and host routes of the peers (or WFP
//! filters). Not implemented: `--exit` and `--use-exit` are refused there.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// The firewall mark of the tunnel UDP socket under `--use-exit` ("me" in ASCII).
pub const FWMARK: u32 = 0x6d65;
/// The routing table of `--use-exit`.
pub const TABLE: u32 = 0x6d65;
/// The priority of the first of the two `ip -6 rule`s (the second is one more).
pub const RULE_PRIORITY: u32 = 27_900;
/// The nftables table of an exit (family ip6).
pub const NFT_TABLE: &str = "re6mesh_exit";

/// How an exit forwards what the mesh sends to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMode {
    /// NAT66: the packets leave with the uplink's address (the default).
    Nat66,
    /// Plain routed forwarding (`--exit-routed`): the operator routes the network prefix
    /// to this node, so the mesh addresses are reachable from the internet as they are.
    Routed,
}

/// `--use-exit auto|PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseExit {
    /// The exit Babel selects (the best one; the next one when it dies).
    Auto,
    /// This exit node (its node prefix) only: the routes of every other exit are
    /// refused by this node's origin check.
    Node(Ipv6Net),
}

impl std::str::FromStr for UseExit {
    type Err = String;
    fn from_str(s: &str) -> Result<UseExit, String> {
        if s == "auto" {
            return Ok(UseExit::Auto);
        }
        s.parse::<Ipv6Net>()
            .map(|p| UseExit::Node(p.trunc()))
            .map_err(|_| format!("{s:?} is neither `auto` nor the prefix of an exit node"))
    }
}

impl std::fmt::Display for UseExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UseExit::Auto => f.write_str("auto"),
            UseExit::Node(p) => write!(f, "{p}"),
        }
    }
}

/// What `--exit` changed in the OS, undone by [`ExitSetup::remove`] (and on drop).
#[derive(Debug, Default)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // nothing is set up elsewhere
pub struct ExitSetup {
    /// The forwarding sysctl's value before we set it (`None`: we did not change it).
    forwarding_was: Option<String>,
    nat: bool,
    /// The rules and table of `--use-exit`.
    policy: bool,
}

impl ExitSetup {
    /// Undoes everything (errors are logged: stopping goes on).
    pub fn remove(&mut self) {
        #[cfg(target_os = "linux")]
        linux::remove(self);
    }
}

impl Drop for ExitSetup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `--exit`: forwarding on, NAT66 (unless `mode` is [`ExitMode::Routed`]) of what comes from
/// `network` and leaves by another interface than `tun`.
pub fn start_exit(
    setup: &mut ExitSetup,
    mode: ExitMode,
    network: Ipv6Net,
    tun: &str,
) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        linux::start_exit(setup, mode, network, tun)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (setup, mode, network, tun);
        Err("--exit is implemented on Linux only (see docs/PLATFORMS.md)".into())
    }
}

/// `--use-exit`: this host's internet traffic into `tun` (source `address`), the tunnel
/// socket's (marked [`FWMARK`]) excepted.
pub fn start_use_exit(setup: &mut ExitSetup, tun: &str, address: Ipv6Addr) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        linux::start_use_exit(setup, tun, address)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (setup, tun, address);
        Err("--use-exit is implemented on Linux only (see docs/PLATFORMS.md)".into())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::process::{Command, Stdio};

    const FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

    fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{program}`: {e}"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write as _;
            pipe.write_all(text.as_bytes())
                .map_err(|e| format!("cannot feed `{program}`: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("`{program}` failed: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    pub(super) fn start_exit(
        setup: &mut ExitSetup,
        mode: ExitMode,
        network: Ipv6Net,
        tun: &str,
    ) -> Result<(), String> {
        let was = std::fs::read_to_string(FORWARDING)
            .map_err(|e| format!("cannot read {FORWARDING}: {e}"))?;
        if was.trim() != "1" {
            std::fs::write(FORWARDING, "1")
                .map_err(|e| format!("cannot enable IPv6 forwarding ({FORWARDING}): {e}"))?;
            setup.forwarding_was = Some(was.trim().to_owned());
        }
        if mode == ExitMode::Nat66 {
            // a table left by a node that crashed: replaced
            let _ = run("nft", &["delete", "table", "ip6", NFT_TABLE], None);
            let rules = format!(
                "table ip6 {NFT_TABLE} {{\n\
                 \tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\tip6 saddr {network} ip6 daddr != {network} oifname != \"{tun}\" masquerade\n\
                 \t}}\n\
                 }}\n"
            );
            run("nft", &["-f", "-"], Some(&rules))
                .map_err(|e| format!("cannot set up NAT66 with nftables: {e}"))?;
            setup.nat = true;
        }
        Ok(())
    }

    pub(super) fn start_use_exit(
        setup: &mut ExitSetup,
        tun: &str,
        address: Ipv6Addr,
    ) -> Result<(), String> {
        let (table, mark) = (TABLE.to_string(), FWMARK.to_string());
        let (p0, p1) = (RULE_PRIORITY.to_string(), (RULE_PRIORITY + 1).to_string());
        // stale ones from a node that crashed
        let _ = run("ip", &["-6", "rule", "del", "priority", &p0], None);
        let _ = run("ip", &["-6", "rule", "del", "priority", &p1], None);
        setup.policy = true;
        let addr = address.to_string();
        run(
            "ip",
            &[
                "-6", "route", "replace", "default", "dev", tun, "src", &addr, "table", &table,
            ],
            None,
        )?;
        run(
            "ip",
            &[
                "-6",
                "rule",
                "add",
                "priority",
                &p0,
                "table",
                "main",
                "suppress_prefixlength",
                "0",
            ],
            None,
        )?;
        run(
            "ip",
            &[
                "-6", "rule", "add", "priority", &p1, "not", "fwmark", &mark, "table", &table,
            ],
            None,
        )?;
        Ok(())
    }

    pub(super) fn remove(setup: &mut ExitSetup) {
        if std::mem::take(&mut setup.policy) {
            for p in [RULE_PRIORITY, RULE_PRIORITY + 1] {
                let _ = run(
                    "ip",
                    &["-6", "rule", "del", "priority", &p.to_string()],
                    None,
                );
            }
            if let Err(e) = run(
                "ip",
                &["-6", "route", "flush", "table", &TABLE.to_string()],
                None,
            ) {
                tracing::warn!(error = %e, "cannot remove the routes of --use-exit");
            }
        }
        if std::mem::take(&mut setup.nat)
            && let Err(e) = run("nft", &["delete", "table", "ip6", NFT_TABLE], None)
        {
            tracing::warn!(error = %e, "cannot remove the NAT66 table");
        }
        if let Some(was) = setup.forwarding_was.take()
            && let Err(e) = std::fs::write(FORWARDING, was)
        {
            tracing::warn!(error = %e, "cannot put IPv6 forwarding back as it was");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_exit_reads_auto_or_a_node_prefix() {
        assert_eq!("auto".parse::<UseExit>(), Ok(UseExit::Auto));
        assert_eq!(
            "fd00:1:0:3::1/64".parse::<UseExit>(),
            Ok(UseExit::Node("fd00:1:0:3::/64".parse().unwrap()))
        );
        assert!("nearest".parse::<UseExit>().is_err());
        assert_eq!(UseExit::Auto.to_string(), "auto");
    }
}

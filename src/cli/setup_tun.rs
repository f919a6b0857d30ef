//! `mesh setup-tun --user NAME` (root, once): a persistent TUN device owned by that user, with
//! the address of their node, so that `mesh up` run later as them needs no sudo and no
//! CAP_NET_ADMIN. `mesh setup-tun --remove` deletes it. Linux only.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::StateDir;
use crate::node_config::NodeOptions;
use crate::platform::privilege;

#[derive(Debug, Args)]
pub struct SetupTunArgs {
    /// The user whose node will use the device: a login name or a numeric uid. Their node's
    /// address is read from `--state-dir` (default: `~NAME/.local/share/re6mesh`).
    #[arg(long, value_name = "NAME", required_unless_present = "remove")]
    user: Option<String>,
    /// Delete the device instead (the user's `mesh up` then needs root again).
    #[arg(long, conflicts_with = "user")]
    remove: bool,
    /// The device's name (default: the `tun` of the user's node.toml, else mesh0).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The user's node state directory (`--state-dir`, global: its help is the general one).
    #[command(flatten)]
    state: StateDir,
}

pub fn run(a: SetupTunArgs) -> anyhow::Result<()> {
    if !privilege::is_root() {
        bail!("mesh setup-tun changes network devices: run it as root (sudo), once");
    }
    let Some(who) = a.user.as_deref() else {
        let name = a.name.as_deref().unwrap_or(crate::tun::DEFAULT_NAME);
        let removed = crate::platform::tun::remove_persistent(name)
            .with_context(|| format!("cannot remove the TUN device {name}"))?;
        if removed {
            println!("removed the TUN device {name}");
        } else {
            println!("there is no device {name}: nothing to remove");
        }
        return Ok(());
    };
    let user = privilege::find_user(who).with_context(|| {
        format!(
            "no user {who:?} in /etc/passwd (a user from a directory service: give the numeric uid)"
        )
    })?;
    let dir: PathBuf = a
        .state
        .state_dir
        .clone()
        .unwrap_or_else(|| user.home.join(".local/share/re6mesh"));
    let options = NodeOptions::load(&dir)?;
    let cfg = options.node_config(dir.clone());
    let name = a.name.clone().unwrap_or(cfg.tun_name.clone());
    let address = if crate::state::is_joined(&dir) {
        let st = crate::state::load(&dir)?;
        Some((
            crate::identity::node_address(&st.facts.prefix),
            st.params.network.prefix_len(),
        ))
    } else {
        None
    };
    crate::platform::tun::setup_persistent(&name, user.uid, cfg.tun_mtu, address)
        .with_context(|| format!("cannot set up the TUN device {name}"))?;
    let owner = crate::platform::tun::owner(&name);
    if owner != Some(user.uid) {
        bail!(
            "the TUN device {name} was set up but the kernel reports owner {owner:?}, not uid {}",
            user.uid
        );
    }
    match address {
        Some((addr, len)) => println!(
            "TUN device {name} is {}'s (uid {}), persistent, with address {addr}/{len} and MTU {}: \
             `mesh up` run by {} needs no sudo now",
            user.name, user.uid, cfg.tun_mtu, user.name
        ),
        None => println!(
            "TUN device {name} is {}'s (uid {}), persistent, MTU {}, without an address: {} has not \
             joined yet (no certificate in {}); run this again after `mesh join`",
            user.name,
            user.uid,
            cfg.tun_mtu,
            user.name,
            dir.display()
        ),
    }
    Ok(())
}

//! `mesh join <TOKEN>`: new P-256 key, CSR, join, identity and parameters stored.

use anyhow::{Context, bail};
use clap::Args;

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
        println!(
            "Already joined: prefix {} (address {}) in {}. Nothing changed; use --force to join again.",
            st.facts.prefix,
            crate::identity::node_address(&st.facts.prefix),
            dir.display()
        );
        return Ok(());
    }
    super::runtime()?.block_on(async {
        eprintln!("[1/3] generating an ECDSA P-256 key");
        let key = NodeKey::generate()?;
        eprintln!("[2/3] joining the registry at {}", token.url);
        let client = RegistryClient::for_token(&token)?;
        let certified = client.join(Some(&token.secret), &key).await?;
        eprintln!("[3/3] storing the identity in {}", dir.display());
        crate::state::save(&dir, &token.url, &key, &certified)
            .context("the registry issued a certificate but it could not be stored")?;
        if certified.params.min_protocol > crate::params::PROTOCOL_VERSION {
            bail!(
                "this network requires protocol {} but this mesh speaks {}; upgrade mesh",
                certified.params.min_protocol,
                crate::params::PROTOCOL_VERSION
            );
        }
        println!("Joined network {}", certified.params.network);
        println!("  prefix   {}", certified.prefix);
        println!(
            "  address  {}",
            crate::identity::node_address(&certified.prefix)
        );
        Ok(())
    })
}

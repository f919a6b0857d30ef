//! Shared test support: an in-process registry on 127.0.0.1 in a temporary directory.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use re6mesh::registry::limits::Limits;
use re6mesh::registry::server::Server;
use re6mesh::registry::store::InitOptions;
use re6mesh::registry::{self, Registry};
use re6mesh::registry_client::{Certified, NodeKey, RegistryClient};
use re6mesh::token::JoinToken;

#[cfg(target_os = "linux")]
pub mod nodes;

/// Polls `f` every 100 ms until it holds; panics naming `what` after `timeout`. Returns how
/// long it took.
pub fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A running in-process registry.
pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut InitOptions)) -> TestRegistry {
        Self::start_full(f, Limits::default()).await
    }

    /// A registry that holds at most `n` parameter watches.
    #[allow(dead_code)]
    pub async fn start_max_watchers(n: usize) -> TestRegistry {
        Self::start_full(
            |_| {},
            Limits {
                max_watchers: n,
                ..Limits::default()
            },
        )
        .await
    }

    /// A registry with these API limits.
    #[allow(dead_code)]
    pub async fn start_with_limits(
        f: impl FnOnce(&mut InitOptions),
        limits: Limits,
    ) -> TestRegistry {
        Self::start_full(f, limits).await
    }

    async fn start_full(f: impl FnOnce(&mut InitOptions), limits: Limits) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut opts = InitOptions {
            network: "fd5e:1234:5678::/48".parse().unwrap(),
            url: url.clone(),
            node_prefix_len: 64,
            anonymous: false,
            no_mac: false,
        };
        f(&mut opts);
        registry::init(dir.path(), &opts).expect("registry init");
        let reg = Registry::open(dir.path()).expect("open");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = Server::bind_with(reg, addr, limits).await.expect("bind");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        TestRegistry {
            dir,
            addr,
            url,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn registry(&self) -> Registry {
        Registry::open(self.dir.path()).expect("open registry")
    }

    pub fn token(&self) -> String {
        self.registry().create_token(None, None, 1).expect("token")
    }

    pub fn token_uses(&self, uses: u32) -> String {
        self.registry()
            .create_token(None, None, uses)
            .expect("token")
    }

    /// Joins a fresh node with a fresh token; returns its key, certificate and client.
    pub async fn join_node(&self) -> TestNode {
        let token = JoinToken::decode(&self.token()).unwrap();
        let key = NodeKey::generate().unwrap();
        let cert = RegistryClient::for_token(&token)
            .unwrap()
            .join(Some(&token.secret), &key)
            .await
            .expect("join");
        let client =
            RegistryClient::with_identity(&self.url, &cert.ca_der, &cert.cert_der, &key).unwrap();
        TestNode { key, cert, client }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

pub struct TestNode {
    pub key: NodeKey,
    pub cert: Certified,
    pub client: RegistryClient,
}

impl TestNode {
    /// A client presenting this node's certificate `c` (e.g. after a renewal).
    pub fn client_for(&self, url: &str, c: &Certified) -> RegistryClient {
        RegistryClient::with_identity(url, &c.ca_der, &c.cert_der, &self.key).unwrap()
    }
}

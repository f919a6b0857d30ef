//! The live network page: a small HTTP server (axum) that draws the mesh as a graph and keeps
//! it up to date with server-sent events.
//!
//! * A [`SnapshotSource`] observes nodes through their control sockets: [`NodeSource`] (one
//!   node, `mesh ui`) or the demo's whole network (`crate::demo`).
//! * [`build_graph`](crate::control::graph::build_graph) (in [`crate::control::graph`], which
//!   the node's own `GET /v1/graph` uses too) turns observations into a [`GraphBody`] (pure,
//!   unit-tested); the [`Hub`]
//!   numbers the distinct graphs with a strictly increasing `version`, keeps the last few and
//!   wakes the event streams.
//! * [`server`] serves `GET /` (the page, `src/ui/web/`, embedded: no CDN, works offline),
//!   `GET /api/v1/graph[?version=V]`, `GET /api/v1/events` (SSE) and — only when built with
//!   an [`ActionHandler`](server::ActionHandler) (the demo) — `POST /api/v1/actions/{revoke,cut,heal,rotate}`, which
//!   need the per-run secret the page gets inside its HTML.

pub mod server;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::control::client::ControlClient;
use crate::control::graph::{GraphBody, NodeObservation, Observation};

/// Where snapshots come from.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Observes the network now.
    fn observe(&self) -> impl std::future::Future<Output = Observation> + Send;
}

/// What `GET /api/v1/graph` returns and the event stream pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Strictly increasing with every change.
    pub version: u64,
    /// The graph.
    #[serde(flatten)]
    pub body: GraphBody,
}

/// How many past versions `GET /api/v1/graph?version=V` can still return.
pub const HISTORY: usize = 64;

struct HubState {
    version: u64,
    last: Option<GraphBody>,
    history: VecDeque<(u64, Arc<str>)>,
}

/// Numbers distinct graphs and hands the latest one (as JSON) to readers and event streams.
pub struct Hub {
    state: Mutex<HubState>,
    tx: tokio::sync::watch::Sender<Option<(u64, Arc<str>)>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// An empty hub (no graph yet).
    pub fn new() -> Hub {
        Hub {
            state: Mutex::new(HubState {
                version: 0,
                last: None,
                history: VecDeque::new(),
            }),
            tx: tokio::sync::watch::channel(None).0,
        }
    }

    /// Publishes `body` if it differs from the last one; returns the current version.
    pub fn publish(&self, body: GraphBody) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.last.as_ref() == Some(&body) {
            return st.version;
        }
        st.version += 1;
        let graph = Graph {
            version: st.version,
            body,
        };
        let json: Arc<str> = match serde_json::to_string(&graph) {
            Ok(s) => s.into(),
            Err(_) => return st.version,
        };
        st.last = Some(graph.body);
        st.history.push_back((graph.version, json.clone()));
        while st.history.len() > HISTORY {
            st.history.pop_front();
        }
        let v = st.version;
        drop(st);
        self.tx.send_replace(Some((v, json)));
        v
    }

    /// The latest graph as JSON, if any.
    pub fn latest(&self) -> Option<(u64, Arc<str>)> {
        self.tx.borrow().clone()
    }

    /// Version `v` as JSON, if still kept.
    pub fn get(&self, v: u64) -> Option<Arc<str>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.history
            .iter()
            .find(|(ver, _)| *ver == v)
            .map(|(_, j)| j.clone())
    }

    /// A receiver woken on every new version.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<(u64, Arc<str>)>> {
        self.tx.subscribe()
    }
}

/// One node, through its control socket (`mesh ui`).
pub struct NodeSource {
    dir: PathBuf,
}

impl NodeSource {
    /// The node of state directory `dir`.
    pub fn new(dir: PathBuf) -> NodeSource {
        NodeSource { dir }
    }
}

/// Asks one node for status, peers and routes.
pub async fn observe_node(
    dir: &std::path::Path,
    name: &str,
    prefix: Option<String>,
) -> NodeObservation {
    let c = ControlClient::new(dir);
    let mut o = NodeObservation {
        name: name.to_owned(),
        prefix,
        ..NodeObservation::default()
    };
    match c.status().await {
        Ok(s) => o.status = Some(s),
        Err(e) => {
            o.error = Some(e.to_string());
            return o;
        }
    }
    o.peers = c.peers().await.unwrap_or_default();
    o.routes = c.routes().await.unwrap_or_default();
    o
}

impl SnapshotSource for NodeSource {
    async fn observe(&self) -> Observation {
        let o = observe_node(&self.dir, "this node", None).await;
        let mut info = Vec::new();
        if let Some(e) = &o.error {
            info.push(format!("The node does not answer: {e}."));
        }
        Observation {
            nodes: vec![o],
            links: Vec::new(),
            info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_versions_increase_only_on_change_and_history_is_kept() {
        let hub = Hub::new();
        assert!(hub.latest().is_none());
        let mut body = GraphBody::default();
        assert_eq!(hub.publish(body.clone()), 1);
        assert_eq!(hub.publish(body.clone()), 1);
        body.info.push("x".into());
        assert_eq!(hub.publish(body.clone()), 2);
        let (v, json) = hub.latest().expect("latest");
        assert_eq!(v, 2);
        let g: Graph = serde_json::from_str(&json).expect("json");
        assert_eq!(g.version, 2);
        assert_eq!(g.body, body);
        assert!(hub.get(1).is_some());
        for i in 0..(HISTORY as u64 + 5) {
            body.info = vec![i.to_string()];
            hub.publish(body.clone());
        }
        assert!(hub.get(1).is_none(), "old versions are dropped");
        assert!(hub.get(hub.latest().expect("latest").0).is_some());
    }
}

//! The page server: routes, the host/origin/secret checks, the event stream and the poller
//! that feeds the [`Hub`].

#![allow(clippy::disallowed_methods)] // IO shell: the live page's HTTP server: tasks, polling, a per-run secret

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

use super::{Hub, SnapshotSource};
use crate::control::graph::build_graph;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// The header that carries the per-run secret on action requests.
pub const SECRET_HEADER: &str = "x-mesh-secret";

/// An action requested from the page (demo only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Revoke (ban) the node with this prefix.
    Revoke {
        /// Node prefix.
        node: String,
    },
    /// Take the underlay link between two nodes down.
    Cut {
        /// One end (prefix).
        a: String,
        /// Other end (prefix).
        b: String,
    },
    /// Bring that link back up.
    Heal {
        /// One end (prefix).
        a: String,
        /// Other end (prefix).
        b: String,
    },
    /// One step of the MAC key cycle.
    Rotate,
}

/// Carries out actions (the demo). Called on a blocking thread.
pub trait ActionHandler: Send + Sync + 'static {
    /// Does it; returns a sentence for the user, or why it failed.
    fn act(&self, action: &Action) -> Result<String, String>;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    node: Option<String>,
    a: Option<String>,
    b: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ApiError {
    code: String,
    error: String,
}

/// Reply of an action.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActionReply {
    /// It worked.
    pub ok: bool,
    /// A sentence for the user.
    pub message: String,
}

fn api_error(status: StatusCode, code: &str, error: &str) -> Response {
    (
        status,
        axum::Json(ApiError {
            code: code.into(),
            error: error.into(),
        }),
    )
        .into_response()
}

/// A refused request: code and sentence of a 403.
struct Denied(&'static str, &'static str);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        api_error(StatusCode::FORBIDDEN, self.0, self.1)
    }
}

/// Shared state of the routes.
pub struct App {
    hub: Arc<Hub>,
    title: String,
    secret: String,
    actions: Option<Arc<dyn ActionHandler>>,
    /// Accepted `Host` values (lower case); `None` = any (listening on all addresses).
    hosts: Option<Vec<String>>,
    refresh: Arc<Notify>,
    closing: watch::Receiver<bool>,
}

impl App {
    /// State for a server listening on `listen`.
    pub fn new(
        hub: Arc<Hub>,
        title: &str,
        listen: SocketAddr,
        actions: Option<Arc<dyn ActionHandler>>,
        closing: watch::Receiver<bool>,
    ) -> App {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        App {
            hub,
            title: title.to_owned(),
            secret: hex::encode(secret),
            actions,
            hosts: allowed_hosts(listen),
            refresh: Arc::new(Notify::new()),
            closing,
        }
    }

    /// The per-run secret (tests use it as the page would).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// `Host` values a browser sends for this listening address; `None` when listening on all
/// addresses (any name may point here, so no check is possible).
pub fn allowed_hosts(listen: SocketAddr) -> Option<Vec<String>> {
    let ip = listen.ip();
    if ip.is_unspecified() {
        return None;
    }
    let port = listen.port();
    let mut v = vec![listen.to_string().to_ascii_lowercase()];
    if ip.is_loopback() {
        v.push(format!("localhost:{port}"));
    }
    Some(v)
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `Host` must name this server (defeats DNS rebinding: the page holds the secret).
fn check_host(app: &App, h: &HeaderMap) -> Result<(), Denied> {
    let Some(hosts) = &app.hosts else {
        return Ok(());
    };
    match header_str(h, header::HOST) {
        Some(host) if hosts.iter().any(|a| a.eq_ignore_ascii_case(host)) => Ok(()),
        _ => Err(Denied(
            "bad_host",
            "this server only answers requests addressed to its own local address",
        )),
    }
}

/// Checks for an action: the host, an `Origin` (when sent) naming this server, and the secret.
fn check_action(app: &App, h: &HeaderMap) -> Result<(), Denied> {
    check_host(app, h)?;
    if let Some(origin) = header_str(h, header::ORIGIN) {
        let host = header_str(h, header::HOST).unwrap_or("");
        let ok = origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !ok {
            return Err(Denied(
                "bad_origin",
                "actions are only accepted from this server's own page",
            ));
        }
    }
    let given = h.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or(b"");
    let want = app.secret.as_bytes();
    let same = given.len() == want.len() && bool::from(subtle::ConstantTimeEq::ct_eq(given, want));
    if !same {
        return Err(Denied(
            "bad_secret",
            "actions need the per-run secret that the page receives from this server",
        ));
    }
    Ok(())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JSON made safe inside a `<script>` element (no `<`, `>` or `&` that could end it).
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn with_headers(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

async fn index(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(d) = check_host(&app, &h) {
        return d.into_response();
    }
    let secret = if app.actions.is_some() {
        format!(r#"<meta name="mesh-secret" content="{}">"#, app.secret)
    } else {
        String::new()
    };
    // The latest graph rides along, so the page is drawn as soon as it loads.
    let initial = app
        .hub
        .latest()
        .map(|(_, j)| script_json(&j))
        .unwrap_or_else(|| "null".into());
    let page = INDEX_HTML
        .replace("{{TITLE}}", &html_escape(&app.title))
        .replace("{{SECRET_META}}", &secret)
        .replace("{{INITIAL_GRAPH}}", &initial);
    with_headers(page.into_response(), "text/html; charset=utf-8")
}

async fn app_js(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(d) = check_host(&app, &h) {
        return d.into_response();
    }
    with_headers(APP_JS.into_response(), "text/javascript; charset=utf-8")
}

async fn style_css(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(d) = check_host(&app, &h) {
        return d.into_response();
    }
    with_headers(STYLE_CSS.into_response(), "text/css; charset=utf-8")
}

#[derive(Debug, Deserialize)]
struct GraphQuery {
    version: Option<u64>,
}

async fn graph(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<GraphQuery>) -> Response {
    if let Err(d) = check_host(&app, &h) {
        return d.into_response();
    }
    let json = match q.version {
        Some(v) => match app.hub.get(v) {
            Some(j) => j,
            None => {
                return api_error(
                    StatusCode::NOT_FOUND,
                    "no_such_version",
                    "that graph version is not kept any more (or not made yet)",
                );
            }
        },
        None => match app.hub.latest() {
            Some((_, j)) => j,
            None => {
                return api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "no graph yet; try again in a second",
                );
            }
        },
    };
    with_headers(
        Response::new(Body::from(json.to_string())),
        "application/json",
    )
}

/// A response body fed by a channel (the event stream).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

async fn events(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(d) = check_host(&app, &h) {
        return d.into_response();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut graphs = app.hub.subscribe();
    let mut closing = app.closing.clone();
    tokio::spawn(async move {
        // `retry` makes the browser reconnect quickly after a restart.
        if tx
            .send(Bytes::from_static(b"retry: 1000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut last = 0;
        loop {
            if *closing.borrow() {
                return;
            }
            let current = graphs.borrow_and_update().clone();
            if let Some((v, json)) = current
                && v != last
            {
                last = v;
                let ev = format!("id: {v}\ndata: {json}\n\n");
                if tx.send(Bytes::from(ev)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = graphs.changed() => if r.is_err() { return },
                r = closing.changed() => {
                    let closed = r.is_err() || *closing.borrow();
                    if closed {
                        return;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(15)) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(Body::new(ChannelBody { rx }));
    r = with_headers(r, "text/event-stream");
    r
}

async fn action(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(d) = check_action(&app, &h) {
        return d.into_response();
    }
    let Some(handler) = app.actions.clone() else {
        return api_error(
            StatusCode::NOT_FOUND,
            "no_actions",
            "this server does not take actions",
        );
    };
    let b: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("the request body is not a valid action: {e}"),
                );
            }
        }
    };
    let missing = || {
        api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "this action needs `node` (revoke) or `a` and `b` (cut, heal)",
        )
    };
    let act = match name.as_str() {
        "revoke" => match b.node {
            Some(node) => Action::Revoke { node },
            None => return missing(),
        },
        "cut" | "heal" => match (b.a, b.b) {
            (Some(a), Some(b)) if name == "cut" => Action::Cut { a, b },
            (Some(a), Some(b)) => Action::Heal { a, b },
            _ => return missing(),
        },
        "rotate" => Action::Rotate,
        _ => {
            return api_error(
                StatusCode::NOT_FOUND,
                "no_such_action",
                "actions are revoke, cut, heal and rotate",
            );
        }
    };
    let result = tokio::task::spawn_blocking(move || handler.act(&act)).await;
    app.refresh.notify_one();
    match result {
        Ok(Ok(message)) => (
            StatusCode::OK,
            axum::Json(ActionReply { ok: true, message }),
        )
            .into_response(),
        Ok(Err(message)) => (
            StatusCode::CONFLICT,
            axum::Json(ActionReply { ok: false, message }),
        )
            .into_response(),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the action failed unexpectedly",
        ),
    }
}

/// The page's routes. Action routes exist only when `app` has an action handler.
pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/events", get(events));
    if app.actions.is_some() {
        r = r.route("/api/v1/actions/{name}", post(action));
    }
    r.with_state(app)
}

/// A bound page server.
pub struct UiServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl UiServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<UiServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(UiServer { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        let ip = self.addr.ip();
        let host = if ip.is_unspecified() {
            if ip.is_ipv4() {
                "127.0.0.1".to_owned()
            } else {
                "[::1]".to_owned()
            }
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("http://{host}:{}/", self.addr.port())
    }

    /// Serves until `shutdown` completes, observing `source` every `poll` (and right after
    /// an action).
    pub async fn run<S: SnapshotSource>(
        self,
        source: Arc<S>,
        title: &str,
        actions: Option<Arc<dyn ActionHandler>>,
        poll: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let hub = Arc::new(Hub::new());
        let (close_tx, close_rx) = watch::channel(false);
        let app = Arc::new(App::new(hub.clone(), title, self.addr, actions, close_rx));
        let refresh = app.refresh.clone();
        let poller = tokio::spawn(async move {
            loop {
                let obs = source.observe().await;
                hub.publish(build_graph(&obs));
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = refresh.notified() => {}
                }
            }
        });
        let r = axum::serve(self.listener, router(app))
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = close_tx.send(true);
            })
            .await;
        poller.abort();
        // wait for it to go, so the source is released when this returns
        let _ = poller.await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    struct Recorder(std::sync::Mutex<Vec<Action>>);

    impl ActionHandler for Recorder {
        fn act(&self, action: &Action) -> Result<String, String> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(action.clone());
            Ok("done".into())
        }
    }

    fn app(actions: bool) -> (Arc<App>, Arc<Recorder>) {
        let rec = Arc::new(Recorder(std::sync::Mutex::new(Vec::new())));
        let hub = Arc::new(Hub::new());
        hub.publish(crate::control::graph::GraphBody::default());
        let handler: Option<Arc<dyn ActionHandler>> =
            if actions { Some(rec.clone()) } else { None };
        let app = App::new(
            hub,
            "test <net>",
            "127.0.0.1:8642".parse().expect("addr"),
            handler,
            watch::channel(false).1,
        );
        (Arc::new(app), rec)
    }

    async fn send(app: &Arc<App>, req: Request<Body>) -> (StatusCode, String) {
        let r = router(app.clone()).oneshot(req).await.expect("infallible");
        let status = r.status();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(path: &str, secret: Option<&str>, origin: Option<&str>, body: &str) -> Request<Body> {
        let mut b = Request::post(path)
            .header("host", "127.0.0.1:8642")
            .header("content-type", "application/json");
        if let Some(s) = secret {
            b = b.header(SECRET_HEADER, s);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Body::from(body.to_owned())).expect("request")
    }

    #[tokio::test]
    async fn an_action_without_the_secret_is_forbidden() {
        let (app, rec) = app(true);
        let body = r#"{"node":"fd00::/64"}"#;
        let (s, text) = send(&app, post("/api/v1/actions/revoke", None, None, body)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
        assert!(text.contains("bad_secret"));
        let (s, _) = send(&app, post("/api/v1/actions/revoke", Some("00"), None, body)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // right secret but a foreign origin
        let secret = app.secret().to_owned();
        let (s, text) = send(
            &app,
            post(
                "/api/v1/actions/revoke",
                Some(&secret),
                Some("http://evil.example"),
                body,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
        assert!(rec.0.lock().expect("lock").is_empty());
        // right secret, own origin
        let (s, text) = send(
            &app,
            post(
                "/api/v1/actions/revoke",
                Some(&secret),
                Some("http://127.0.0.1:8642"),
                body,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{text}");
        let (s, _) = send(
            &app,
            post("/api/v1/actions/rotate", Some(&secret), None, ""),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            *rec.0.lock().expect("lock"),
            vec![
                Action::Revoke {
                    node: "fd00::/64".into()
                },
                Action::Rotate
            ]
        );
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused_and_the_page_carries_the_secret_only_with_actions() {
        let (app, _) = app(true);
        let req = Request::get("/")
            .header("host", "attacker.example:8642")
            .body(Body::empty())
            .expect("request");
        let (s, _) = send(&app, req).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let req = Request::get("/")
            .header("host", "localhost:8642")
            .body(Body::empty())
            .expect("request");
        let (s, page) = send(&app, req).await;
        assert_eq!(s, StatusCode::OK);
        assert!(page.contains(app.secret()));
        assert!(page.contains("test &lt;net&gt;"));
        assert!(
            page.contains(r#"{"version":1,"#),
            "the latest graph is embedded"
        );
        assert_eq!(
            script_json(r#"{"a":"</script><b>&"}"#),
            r#"{"a":"\u003c/script\u003e\u003cb\u003e\u0026"}"#
        );

        let (ro, _) = app_ro();
        let req = Request::get("/")
            .header("host", "127.0.0.1:8642")
            .body(Body::empty())
            .expect("request");
        let (s, page) = send(&ro, req).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!page.contains(ro.secret()));
        assert!(!page.contains("mesh-secret"));
        // no action routes at all on a read-only server
        let secret = ro.secret().to_owned();
        let (s, _) = send(&ro, post("/api/v1/actions/rotate", Some(&secret), None, "")).await;
        assert!(s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED);
    }

    fn app_ro() -> (Arc<App>, Arc<Recorder>) {
        app(false)
    }

    #[tokio::test]
    async fn graph_is_served_by_version() {
        let (app, _) = app(false);
        let get = |uri: &str| {
            Request::get(uri)
                .header("host", "127.0.0.1:8642")
                .body(Body::empty())
                .expect("request")
        };
        let (s, body) = send(&app, get("/api/v1/graph")).await;
        assert_eq!(s, StatusCode::OK);
        let g: super::super::Graph = serde_json::from_str(&body).expect("graph json");
        assert_eq!(g.version, 1);
        let (s, _) = send(&app, get("/api/v1/graph?version=1")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = send(&app, get("/api/v1/graph?version=99")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    /// A source whose observation the test changes.
    struct Fake(std::sync::Mutex<crate::control::graph::Observation>);

    impl SnapshotSource for Fake {
        async fn observe(&self) -> crate::control::graph::Observation {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    /// Reads SSE frames until one whose data contains `want`; returns that data.
    async fn next_event(r: &mut tokio::io::BufReader<tokio::net::TcpStream>, want: &str) -> String {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
                .await
                .expect("an event within 10 s")
                .expect("read");
            assert!(n > 0, "the event stream ended");
            if let Some(data) = line.strip_prefix("data: ")
                && data.contains(want)
            {
                return data.trim().to_owned();
            }
        }
    }

    #[tokio::test]
    async fn the_event_stream_pushes_each_new_snapshot_and_ends_on_shutdown() {
        use tokio::io::AsyncWriteExt;
        let source = Arc::new(Fake(std::sync::Mutex::new(
            crate::control::graph::Observation {
                info: vec!["first".into()],
                ..Default::default()
            },
        )));
        let server = UiServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr();
        assert_eq!(server.url(), format!("http://127.0.0.1:{}/", addr.port()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(
            source.clone(),
            "t",
            None,
            Duration::from_millis(50),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut r = tokio::io::BufReader::new(s);
        let first = next_event(&mut r, "first").await;
        let g: super::super::Graph = serde_json::from_str(&first).expect("graph");
        source.0.lock().expect("lock").info = vec!["second".into()];
        let second = next_event(&mut r, "second").await;
        let g2: super::super::Graph = serde_json::from_str(&second).expect("graph");
        assert!(g2.version > g.version, "versions increase");
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops although a stream is open")
            .expect("join")
            .expect("serve");
    }

    #[test]
    fn hosts_for_loopback_include_localhost_and_all_addresses_disable_the_check() {
        let h = allowed_hosts("127.0.0.1:8642".parse().expect("addr")).expect("some");
        assert_eq!(h, vec!["127.0.0.1:8642", "localhost:8642"]);
        let h = allowed_hosts("[::1]:80".parse().expect("addr")).expect("some");
        assert_eq!(h, vec!["[::1]:80", "localhost:80"]);
        assert!(allowed_hosts("0.0.0.0:1".parse().expect("addr")).is_none());
    }
}

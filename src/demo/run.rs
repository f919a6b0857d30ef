//! Running the demo (Linux): build the [`Network`], serve the live page, converge, ping every
//! pair, rotate the MAC keys under traffic (`--mac-rotation`), and stop cleanly on a signal or
//! at the end of `--duration`.

#![allow(clippy::disallowed_methods)] // IO shell: runs the demo network: processes, tasks, waiting, wall-clock timings

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::net::*;
use crate::ui::server::{ActionHandler, UiServer};
/// Signals: the first SIGINT/SIGTERM/SIGHUP sets `stop`; later ones only say that cleanup
/// is under way (the process keeps its handlers, so it cannot be killed half-way by them).
fn watch_signals(stop: Arc<AtomicBool>, wake: Arc<tokio::sync::Notify>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            count += 1;
            stop.store(true, Ordering::SeqCst);
            wake.notify_waiters();
            if count == 1 {
                eprintln!("\nStopping: ending the nodes and removing the namespaces…");
            } else {
                eprintln!(
                    "Still cleaning up (processes, namespaces, files); this takes a few seconds."
                );
            }
        }
    });
    Ok(())
}

/// Sleeps `d` unless `stop` is set meanwhile; returns false when stopped.
async fn nap(d: Duration, stop: &AtomicBool, wake: &tokio::sync::Notify) -> bool {
    if stop.load(Ordering::SeqCst) {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !stop.load(Ordering::SeqCst),
        _ = wake.notified() => false,
    }
}

/// Runs the demo to the end; `Err` carries the one sentence to print (exit code 1).
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if !crate::paths::is_root() {
        bail!("mesh demo needs root to create network namespaces and veth links: run it with sudo");
    }
    for (cmd, pkg) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
        ("sysctl", "procps"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("mesh demo needs the `{cmd}` command: install the Debian package {pkg}");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    rt.block_on(async {
        watch_signals(stop.clone(), wake.clone())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], opts.port));
        let server = UiServer::bind(addr).await.with_context(|| {
            format!("cannot serve the page on {addr} (is another demo running? pick another --port)")
        })?;
        let gone = tokio::task::spawn_blocking(cleanup_killed_runs)
            .await
            .context("cleanup failed")??;
        if !gone.is_empty() {
            println!("Removed leftovers of a killed demo: {}", gone.join(", "));
        }
        println!(
            "Building the network: registry + {} nodes in network namespaces (seed {}; --seed {} builds it again)…",
            opts.nodes, opts.seed, opts.seed
        );
        let (o, s) = (opts.clone(), stop.clone());
        let net = tokio::task::spawn_blocking(move || Network::build(&o, &s))
            .await
            .context("building the network failed")?;
        let net = match net {
            Ok(n) => Arc::new(n),
            Err(e) if stop.load(Ordering::SeqCst) => {
                println!("Stopped before the network was complete; everything created was removed.");
                let _ = e;
                return Ok(());
            }
            Err(e) => return Err(e.context("cannot build the demo network")),
        };
        let result = drive(&net, server, &opts, &stop, &wake).await;
        // Clean up on a blocking thread while the signal task keeps answering Ctrl-C. The
        // page and the crash monitor have ended; an action still running may hold the
        // network for a moment.
        let mut net = net;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Arc::try_unwrap(net) {
                Ok(owned) => {
                    tokio::task::spawn_blocking(move || drop(owned)).await.ok();
                    println!("Demo network removed.");
                    break;
                }
                Err(shared) if Instant::now() < deadline => {
                    net = shared;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(shared) => {
                    // the last holder removes it when it lets go (or at exit, below)
                    drop(shared);
                    println!("Removing the demo network…");
                    break;
                }
            }
        }
        result
    })
}

async fn drive(
    net: &Arc<Network>,
    server: UiServer,
    opts: &DemoOptions,
    stop: &Arc<AtomicBool>,
    wake: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    println!("Topology: {} ({}).", net.describe(), net.links_text());
    let url = server.url();
    let (shut_tx, shut_rx) = tokio::sync::oneshot::channel::<()>();
    let source = Arc::new(DemoSource(net.clone()));
    let handler: Arc<dyn ActionHandler> = net.clone();
    let title = format!("re6mesh demo — {} nodes", net.len());
    let page = tokio::spawn(async move {
        server
            .run(
                source,
                &title,
                Some(handler),
                Duration::from_millis(500),
                async move {
                    let _ = shut_rx.await;
                },
            )
            .await
    });
    println!("Live page: {url}");

    // A crashed node (or registry) stops the demo.
    let crashed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let finished = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (net, stop, wake, crashed, finished) = (
            net.clone(),
            stop.clone(),
            wake.clone(),
            crashed.clone(),
            finished.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && !finished.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let n = net.clone();
                let Ok(Some(msg)) = tokio::task::spawn_blocking(move || n.exited()).await else {
                    continue;
                };
                // A Ctrl-C reaches the nodes too (same process group): give ours a moment.
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !stop.load(Ordering::SeqCst) {
                    *lock(&crashed) = Some(msg);
                    stop.store(true, Ordering::SeqCst);
                    wake.notify_waiters();
                }
                break;
            }
        })
    };

    let mut failure: Option<String> = None;
    match net
        .wait_converged(Duration::from_secs(60 + 4 * net.len() as u64), stop)
        .await
    {
        Ok(took) => println!(
            "Converged: all {} nodes route to every other, {:.1} s after the nodes started.",
            net.len(),
            took.as_secs_f64()
        ),
        Err(e) if e == "interrupted" => {}
        Err(e) => {
            eprintln!("warning: {e}");
            failure = Some(e);
        }
    }
    let deadline = opts.duration.map(|d| Instant::now() + d);
    if let Some(d) = opts.duration {
        println!("Running for {} s (Ctrl-C to stop earlier).", d.as_secs());
    } else {
        println!("Running until Ctrl-C.");
    }

    if opts.mac_rotation
        && !stop.load(Ordering::SeqCst)
        && let Err(e) = mac_rotation(net, stop, wake).await
    {
        eprintln!("warning: {e}");
        failure.get_or_insert(e);
    }

    let mut last_matrix: Option<(usize, usize)> = None;
    let mut last_text = String::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if opts.ping {
            let n = net.clone();
            if let Ok(m) = tokio::task::spawn_blocking(move || n.ping_matrix()).await {
                let text = net.matrix_text(&m);
                let counts = Network::count(&m);
                net.set_matrix(&text);
                if text != last_text {
                    println!("{text}");
                } else {
                    println!(
                        "ping matrix: {}/{} pairs answer (unchanged)",
                        counts.0, counts.1
                    );
                }
                last_text = text;
                last_matrix = Some(counts);
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            break;
        }
        let period = Duration::from_secs(5);
        let nap_for = left.map_or(period, |l| l.min(period));
        if !nap(nap_for, stop, wake).await {
            break;
        }
    }
    let interrupted = stop.load(Ordering::SeqCst);
    finished.store(true, Ordering::SeqCst);
    let _ = monitor.await;
    let _ = shut_tx.send(());
    let _ = page.await;
    if let Some(msg) = lock(&crashed).take() {
        bail!("{msg}");
    }
    if let Some(e) = failure {
        bail!("{e}");
    }
    if opts.ping && deadline.is_some() && !interrupted {
        match last_matrix {
            Some((ok, total)) if ok == total => {
                println!("Last ping matrix full: {ok}/{total} pairs answer.");
            }
            Some((ok, total)) => {
                bail!("the last ping matrix was not full: {ok} of {total} pairs answer")
            }
            None => bail!("no ping matrix was completed"),
        }
    }
    Ok(())
}

/// Rotates the MAC keys through the three steps of the cycle while every node pings every
/// other; reports losses (expected: none).
async fn mac_rotation(
    net: &Arc<Network>,
    stop: &Arc<AtomicBool>,
    wake: &Arc<tokio::sync::Notify>,
) -> Result<(), String> {
    let t0 = Instant::now();
    // The nodes' logs are stamped in UTC: say when 0 s was, to match a lost round to them.
    let utc = time::OffsetDateTime::now_utc();
    println!(
        "MAC rotation: three steps of the key cycle while all pairs ping (0 s = {:02}:{:02}:{:02}.{:03} UTC)…",
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    );
    let pinging = Arc::new(AtomicBool::new(true));
    // Each round: (start, answered, asked, lost pairs).
    let pinger = {
        let (net, pinging) = (net.clone(), pinging.clone());
        tokio::task::spawn_blocking(move || {
            let mut rounds: Vec<(Duration, usize, usize, String)> = Vec::new();
            while pinging.load(Ordering::SeqCst) {
                let at = t0.elapsed();
                let m = net.ping_matrix();
                let (ok, total) = Network::count(&m);
                let lost: Vec<String> = m
                    .iter()
                    .enumerate()
                    .flat_map(|(i, row)| {
                        row.iter()
                            .enumerate()
                            .filter(|(_, c)| **c == Some(false))
                            .map(move |(j, _)| format!("n{i}→n{j}"))
                    })
                    .collect();
                rounds.push((at, ok, total, lost.join(" ")));
            }
            rounds
        })
    };
    let mut err = None;
    // A baseline first: losses before the first step are not the rotation's.
    let mut first_step = None;
    if nap(Duration::from_secs(3), stop, wake).await {
        for step in 1..=3 {
            let at = t0.elapsed();
            first_step.get_or_insert(at);
            match net.rotate() {
                Ok(line) => println!("  step {step} at {:.1} s: {line}", at.as_secs_f64()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            let v = net.params_version();
            let wait = Duration::from_secs(10 * REGISTRY_POLL + 5);
            if !net.wait_version(v, wait).await {
                err = Some(format!(
                    "not every node took parameters version {v} within {} s",
                    wait.as_secs()
                ));
                break;
            }
            println!("  every node holds parameters version {v}");
            // let Babel run a few hello intervals under the new keys before the next step
            if !nap(Duration::from_secs(2), stop, wake).await {
                break;
            }
        }
    }
    pinging.store(false, Ordering::SeqCst);
    let rounds = pinger.await.unwrap_or_default();
    let Some(first) = first_step else {
        return Ok(()); // stopped during the baseline
    };
    let (before, during): (Vec<_>, Vec<_>) = rounds.iter().partition(|r| r.0 < first);
    let sum = |v: &[&(Duration, usize, usize, String)]| {
        v.iter().fold((0, 0), |(o, t), r| (o + r.1, t + r.2))
    };
    let (bok, btotal) = sum(&before);
    let (ok, total) = sum(&during);
    let lost = total - ok;
    for r in rounds.iter().filter(|r| r.1 < r.2).take(10) {
        println!("  round at {:.1} s lost {}", r.0.as_secs_f64(), r.3);
    }
    println!(
        "MAC rotation done: {} all-pairs ping rounds during the three steps, {total} pings, {lost} lost \
         (baseline before the first step: {btotal} pings, {} lost).",
        during.len(),
        btotal - bok
    );
    net.set_last_action(format!(
        "MAC rotation: {} all-pairs rounds during the three steps, {total} pings, {lost} lost.",
        during.len()
    ));
    if let Some(e) = err {
        return Err(e);
    }
    if lost > 0 {
        // What the nodes saw, to tell a key problem (every packet of a link refused) from a
        // route change (tunnels replaced, a flow moving to a relayed path) when CI fails.
        println!("What the nodes logged (last lines, DEBUG left out):");
        print!("{}", net.node_events(12));
        return Err(format!(
            "{lost} of {total} pings were lost during the MAC key rotation"
        ));
    }
    Ok(())
}

//! `mesh tray`: the node's state as a system-tray icon and menu (issue 16).
//!
//! Split the sans-IO way: [`View::of`] turns what the control socket answered (a
//! [`Status`], or why nothing answered) into what the icon shows and which menu entries
//! are live — pure, unit-tested, and the same for every OS. The shell ([`sni`] on Linux: a
//! StatusNotifierItem over D-Bus, no GTK) polls the node, renders the view and turns menu
//! clicks into [`Command`]s. The macOS and Windows issue plugs its own renderer onto the same
//! view.
//!
//! The tray never talks to the node except through the control API (`GET /v1/status`,
//! `POST /v1/up`, `POST /v1/down`), so it works unchanged against a node run by the service,
//! by root or by the user, and survives the node restarting: a socket that stops answering is
//! the state "not running", one that answers again is followed at the next poll.

#[cfg(all(target_os = "linux", feature = "tray"))]
pub mod sni;

use crate::control::{NodeStateName, Status};

/// What the tray knows about the node after one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The control socket answered.
    Status(Box<Status>),
    /// Nothing answers: no node runs (or it is restarting).
    NotRunning,
    /// A node runs but this user may not talk to it; the sentence says what to do.
    Denied(String),
    /// The node answered something unusable (a version mismatch, a bug).
    Broken(String),
}

/// The icon's state, from the user's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mood {
    /// Tunnels up, routes exchanged.
    Connected,
    /// Starting or looking for peers.
    Connecting,
    /// Disconnected on request (`mesh down`, or the menu).
    Down,
    /// No node runs.
    NotRunning,
    /// The certificate was revoked or has expired: the node cannot rejoin by itself.
    Revoked,
    /// Something is wrong (an error, no permission, an unusable answer).
    Problem,
}

impl Mood {
    /// A word for the state (tooltip title, tests).
    pub fn word(self) -> &'static str {
        match self {
            Mood::Connected => "connected",
            Mood::Connecting => "connecting",
            Mood::Down => "down",
            Mood::NotRunning => "not running",
            Mood::Revoked => "revoked",
            Mood::Problem => "problem",
        }
    }

    /// A freedesktop icon-theme name (hosts that have the theme draw it; others use
    /// [`Mood::rgb`] through the pixmap).
    pub fn icon_name(self) -> &'static str {
        match self {
            Mood::Connected => "network-vpn",
            Mood::Connecting => "network-vpn-acquiring",
            Mood::Down | Mood::NotRunning => "network-vpn-disconnected",
            Mood::Revoked | Mood::Problem => "network-error",
        }
    }

    /// The colour of the drawn icon: green, amber, grey, red.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Mood::Connected => [0x2e, 0xa0, 0x43],
            Mood::Connecting => [0xe0, 0xa0, 0x00],
            Mood::Down | Mood::NotRunning => [0x80, 0x80, 0x80],
            Mood::Revoked | Mood::Problem => [0xd0, 0x30, 0x30],
        }
    }
}

/// A menu click, for the shell to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `POST /v1/up`.
    Connect,
    /// `POST /v1/down`.
    Disconnect,
    /// Put the node's address on the clipboard.
    CopyAddress,
    /// Serve the live page (once) and open it in the browser.
    OpenPage,
    /// End the tray.
    Quit,
}

/// Everything the icon and its menu show.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The state.
    pub mood: Mood,
    /// One line: "re6mesh: connected, 3 tunnels".
    pub title: String,
    /// Further lines for the tooltip and the menu's header (address, error, warnings).
    pub details: Vec<String>,
    /// The node's address, when one is known.
    pub address: Option<String>,
    /// Connect is offered (the node runs and is down).
    pub can_connect: bool,
    /// Disconnect is offered (the node runs and is up or looking for peers).
    pub can_disconnect: bool,
}

impl View {
    /// The view of one poll's result.
    pub fn of(seen: &Seen) -> View {
        let s = match seen {
            Seen::Status(s) => s,
            Seen::NotRunning => {
                return View::bare(
                    Mood::NotRunning,
                    "no node is running: start it with `mesh up` or the service \
                     (`sudo systemctl start re6mesh`)"
                        .into(),
                );
            }
            Seen::Denied(why) | Seen::Broken(why) => return View::bare(Mood::Problem, why.clone()),
        };
        let mood = match s.state {
            NodeStateName::Up => Mood::Connected,
            NodeStateName::Starting | NodeStateName::Connecting => Mood::Connecting,
            NodeStateName::Down => Mood::Down,
            NodeStateName::Revoked | NodeStateName::Expired => Mood::Revoked,
            NodeStateName::Error => Mood::Problem,
        };
        let state = match s.state {
            NodeStateName::Expired => "certificate expired",
            _ => mood.word(),
        };
        let tunnels = match s.tunnels {
            1 => "1 tunnel".to_string(),
            n => format!("{n} tunnels"),
        };
        let title = match mood {
            Mood::Connected | Mood::Connecting => format!("re6mesh: {state}, {tunnels}"),
            _ => format!("re6mesh: {state}"),
        };
        let mut details = Vec::new();
        if !s.address.is_empty() {
            details.push(format!("address {}", s.address));
        }
        if mood == Mood::Connected {
            details.push(format!("{} routes, network {}", s.routes, s.network));
        }
        if let Some(e) = &s.error {
            details.push(e.clone());
        }
        details.extend(s.warnings.iter().cloned());
        View {
            mood,
            title,
            details,
            address: (!s.address.is_empty()).then(|| s.address.clone()),
            can_connect: mood == Mood::Down,
            can_disconnect: matches!(mood, Mood::Connected | Mood::Connecting),
        }
    }

    fn bare(mood: Mood, detail: String) -> View {
        View {
            mood,
            title: format!("re6mesh: {}", mood.word()),
            details: vec![detail],
            address: None,
            can_connect: false,
            can_disconnect: false,
        }
    }

    /// A square ARGB32 (network byte order, as StatusNotifierItem wants) icon of `size`
    /// pixels: a disc in the mood's colour with a light ring, drawn here so the tray shows
    /// the state even where the icon theme lacks the names.
    pub fn pixmap(&self, size: usize) -> Vec<u8> {
        let [r, g, b] = self.mood.rgb();
        let c = (size as f32 - 1.0) / 2.0;
        let outer = size as f32 / 2.0 - 0.5;
        let inner = outer * 0.55;
        let mut out = Vec::with_capacity(size * size * 4);
        for y in 0..size {
            for x in 0..size {
                let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
                // alpha: opaque inside, a one-pixel soft edge
                let a = ((outer - d + 0.5).clamp(0.0, 1.0) * 255.0) as u8;
                let px = if d < inner { [r, g, b] } else { light(r, g, b) };
                out.extend_from_slice(&[a, px[0], px[1], px[2]]);
            }
        }
        out
    }
}

fn light(r: u8, g: u8, b: u8) -> [u8; 3] {
    let up = |v: u8| v + (255 - v) / 2;
    [up(r), up(g), up(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: NodeStateName) -> Status {
        Status {
            state,
            prefix: "fd00:0:0:3::/64".into(),
            address: "fd00:0:0:3::1".into(),
            network: "fd00::/48".into(),
            params_version: 1,
            protocol: 1,
            tunnels: 3,
            routes: 7,
            uptime_secs: 10,
            error: None,
            warnings: vec![],
            counters: Default::default(),
            traffic: Default::default(),
            drops: Default::default(),
            paths: Default::default(),
            certificate: None,
            registry: None,
            seal: None,
            port_mapping: None,
            exit: None,
            ipv4: None,
        }
    }

    fn view(state: NodeStateName) -> View {
        View::of(&Seen::Status(Box::new(status(state))))
    }

    #[test]
    fn an_up_node_is_connected_with_its_address_and_offers_disconnect() {
        let v = view(NodeStateName::Up);
        assert_eq!(v.mood, Mood::Connected);
        assert_eq!(v.title, "re6mesh: connected, 3 tunnels");
        assert_eq!(v.address.as_deref(), Some("fd00:0:0:3::1"));
        assert!(v.details.contains(&"address fd00:0:0:3::1".to_string()));
        assert!(v.can_disconnect && !v.can_connect);
    }

    #[test]
    fn each_node_state_has_its_mood_and_the_right_action() {
        for (state, mood, connect, disconnect) in [
            (NodeStateName::Starting, Mood::Connecting, false, true),
            (NodeStateName::Connecting, Mood::Connecting, false, true),
            (NodeStateName::Down, Mood::Down, true, false),
            (NodeStateName::Revoked, Mood::Revoked, false, false),
            (NodeStateName::Expired, Mood::Revoked, false, false),
            (NodeStateName::Error, Mood::Problem, false, false),
        ] {
            let v = view(state);
            assert_eq!(v.mood, mood, "{state:?}");
            assert_eq!(
                (v.can_connect, v.can_disconnect),
                (connect, disconnect),
                "{state:?}"
            );
        }
        assert_eq!(
            view(NodeStateName::Expired).title,
            "re6mesh: certificate expired"
        );
    }

    #[test]
    fn errors_and_warnings_reach_the_details() {
        let mut s = status(NodeStateName::Error);
        s.error = Some("the TUN device failed".into());
        s.warnings = vec!["the CRL is missing".into()];
        let v = View::of(&Seen::Status(Box::new(s)));
        assert!(v.details.contains(&"the TUN device failed".to_string()));
        assert!(v.details.contains(&"the CRL is missing".to_string()));
    }

    #[test]
    fn no_node_and_no_permission_offer_nothing_but_say_why() {
        let v = View::of(&Seen::NotRunning);
        assert_eq!(v.mood, Mood::NotRunning);
        assert!(v.details[0].contains("mesh up"), "{:?}", v.details);
        assert!(!v.can_connect && !v.can_disconnect && v.address.is_none());
        let v = View::of(&Seen::Denied("add yourself to group re6mesh".into()));
        assert_eq!(v.mood, Mood::Problem);
        assert_eq!(v.details, vec!["add yourself to group re6mesh".to_string()]);
    }

    #[test]
    fn the_pixmap_is_a_disc_in_the_moods_colour() {
        let v = view(NodeStateName::Up);
        let px = v.pixmap(22);
        assert_eq!(px.len(), 22 * 22 * 4);
        let at = |x: usize, y: usize| &px[(y * 22 + x) * 4..(y * 22 + x) * 4 + 4];
        assert_eq!(at(11, 11), &[255, 0x2e, 0xa0, 0x43]);
        assert_eq!(at(0, 0)[0], 0, "corners are transparent");
        let grey = View::of(&Seen::NotRunning).pixmap(22);
        assert_eq!(
            &grey[(11 * 22 + 11) * 4 + 1..(11 * 22 + 11) * 4 + 4],
            &[0x80; 3]
        );
    }
}

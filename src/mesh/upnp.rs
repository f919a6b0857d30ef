//! UPnP IGD, sans-IO: the bytes of SSDP discovery, the device description and the SOAP calls
//! of `WANIPConnection` (`AddPortMapping`, `DeletePortMapping`, `GetExternalIPAddress`).
//!
//! The shell (`mesh::node::portmap_io`) sends an M-SEARCH ([`search_request`]) to
//! [`SSDP_ADDR`] from the LAN interface, reads the answer's `LOCATION`
//! ([`parse_search_response`]), fetches the description over HTTP/1.1 (hyper's client, already
//! in the tree) and finds the WAN connection service in it ([`parse_description`]), then POSTs
//! SOAP envelopes ([`soap_request`]) and reads the answers ([`parse_soap_response`]).
//!
//! Why not a crate: `igd-next` (the maintained UPnP client) needs hyper's HTTP/2 and
//! `futures` and `xmltree`/`xml-rs` for its tokio client, and keeps its parsers private, so
//! they cannot be fuzzed from here (docs/ARCHITECTURE.md §5.4.2 has the figures). What an IGD
//! sends is a few fixed element names; they are found by bounded string scanning, no XML
//! tree is built, and nothing here panics on any input (`fuzz/fuzz_targets/upnp.rs`).
//!
//! Every input is bounded: a datagram is at most [`MAX_SSDP`] bytes, a description
//! [`MAX_DESCRIPTION`], a SOAP answer [`MAX_SOAP`]; longer ones are refused. URLs are
//! `http://` with an IP address literal (a home router announces itself by address; no
//! name is resolved).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// Where SSDP searches go.
pub const SSDP_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// The longest SSDP answer read.
pub const MAX_SSDP: usize = 2048;
/// The longest device description read.
pub const MAX_DESCRIPTION: usize = 64 * 1024;
/// The longest SOAP answer read.
pub const MAX_SOAP: usize = 16 * 1024;
/// The longest URL (and path) accepted.
const MAX_URL: usize = 512;

/// What a search asks for: the gateway device (v1 and v2) and its IP connection service.
pub const SEARCH_TARGETS: [&str; 3] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
];

/// The services that map ports, best first.
pub const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// UPnP error 725: the router grants only leases "until removed" (ask again with 0).
pub const ONLY_PERMANENT_LEASES: u16 = 725;

/// Why bytes from the router were refused (or the router's own error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpnpError {
    /// Malformed, too long or not what was asked.
    Bad(String),
    /// A SOAP fault: the UPnP error code and description.
    Fault { code: u16, description: String },
}

impl fmt::Display for UpnpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpnpError::Bad(s) => f.write_str(s),
            UpnpError::Fault { code, description } => {
                write!(f, "the router refused: UPnP error {code} ({description})")
            }
        }
    }
}

impl std::error::Error for UpnpError {}

fn bad(s: impl Into<String>) -> UpnpError {
    UpnpError::Bad(s.into())
}

/// An `http://` URL with an address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// `host[:port]` for the Host header.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

/// Parses `http://ADDR[:PORT][/path]` (ADDR an IPv4 literal or `[IPv6]`).
pub fn parse_http_url(s: &str) -> Result<HttpUrl, UpnpError> {
    let s = s.trim();
    if s.len() > MAX_URL {
        return Err(bad("URL too long"));
    }
    let rest = s
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .and_then(|_| s.get(7..))
        .ok_or_else(|| bad(format!("not an http:// URL: {s:?}")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(bad("control characters in the URL"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated IPv6 address in the URL"))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| bad(format!("the URL's host is not an IP address: {host:?}")))?;
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("bad port in the URL: {p:?}")))?,
        None => 80,
    };
    Ok(HttpUrl {
        addr: SocketAddr::new(ip, port),
        path: path.to_string(),
    })
}

/// `url` (absolute, or a path) resolved against `base`.
fn resolve(url: &str, base: &HttpUrl) -> Result<HttpUrl, UpnpError> {
    let url = url.trim();
    if url.len() > MAX_URL {
        return Err(bad("URL too long"));
    }
    if url.len() >= 7
        && url
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    {
        return parse_http_url(url);
    }
    if url.chars().any(|c| c.is_ascii_control() || c == ' ') || url.contains("://") {
        return Err(bad(format!("unusable URL: {url:?}")));
    }
    let path = if url.starts_with('/') {
        url.to_string()
    } else {
        let dir = base.path.rfind('/').map_or("/", |i| &base.path[..=i]);
        format!("{dir}{url}")
    };
    Ok(HttpUrl {
        addr: base.addr,
        path,
    })
}

/// An SSDP M-SEARCH for `target` (one of [`SEARCH_TARGETS`]).
pub fn search_request(target: &str) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\n\
         HOST: {SSDP_ADDR}\r\n\
         MAN: \"ssdp:discover\"\r\n\
         MX: 1\r\n\
         ST: {target}\r\n\r\n"
    )
    .into_bytes()
}

/// The description URL (`LOCATION`) of an SSDP answer from a gateway.
pub fn parse_search_response(data: &[u8]) -> Result<HttpUrl, UpnpError> {
    if data.len() > MAX_SSDP {
        return Err(bad("SSDP answer too long"));
    }
    let text = std::str::from_utf8(data).map_err(|_| bad("SSDP answer is not UTF-8"))?;
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status = lines.next().unwrap_or_default();
    let mut words = status.split_whitespace();
    let ok = words
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case("HTTP/1.1") || v.eq_ignore_ascii_case("HTTP/1.0"))
        && words.next() == Some("200");
    if !ok {
        return Err(bad("not an SSDP search answer"));
    }
    let mut location = None;
    let mut target = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("location") {
            location = Some(value.trim());
        } else if name.eq_ignore_ascii_case("st") {
            target = Some(value.trim());
        }
    }
    if let Some(st) = target
        && ![
            "InternetGatewayDevice",
            "WANIPConnection",
            "WANPPPConnection",
        ]
        .iter()
        .any(|k| st.contains(k))
    {
        return Err(bad(format!("not a gateway: {st:?}")));
    }
    parse_http_url(location.ok_or_else(|| bad("SSDP answer without LOCATION"))?)
}

/// The port mapping service of a gateway: its type and control URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub service_type: String,
    pub control: HttpUrl,
}

/// The best of [`SERVICES`] in a device description fetched from `location`.
pub fn parse_description(xml: &[u8], location: &HttpUrl) -> Result<Service, UpnpError> {
    if xml.len() > MAX_DESCRIPTION {
        return Err(bad("device description too long"));
    }
    let text = std::str::from_utf8(xml).map_err(|_| bad("device description is not UTF-8"))?;
    let base = match element_text(text, "URLBase").map(unescape) {
        Some(b) if !b.trim().is_empty() => parse_http_url(&b)?,
        _ => location.clone(),
    };
    let mut best: Option<(usize, Service)> = None;
    let mut rest = text;
    while let Some((inner, after)) = element(rest, "service") {
        rest = after;
        let (Some(st), Some(ctl)) = (
            element_text(inner, "serviceType"),
            element_text(inner, "controlURL"),
        ) else {
            continue;
        };
        let st = unescape(st);
        let Some(rank) = SERVICES.iter().position(|s| *s == st.trim()) else {
            continue;
        };
        if best.as_ref().is_some_and(|(r, _)| *r <= rank) {
            continue;
        }
        let Ok(control) = resolve(&unescape(ctl), &base) else {
            continue;
        };
        best = Some((
            rank,
            Service {
                service_type: st.trim().to_string(),
                control,
            },
        ));
    }
    best.map(|(_, s)| s)
        .ok_or_else(|| bad("the device offers no WANIPConnection or WANPPPConnection service"))
}

/// A SOAP call: the `SOAPAction` header's value and the body.
pub fn soap_request(service_type: &str, action: &str, args: &[(&str, String)]) -> (String, String) {
    let mut body = format!(
        "<?xml version=\"1.0\"?>\r\n\
         <s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\">\
         <s:Body><u:{action} xmlns:u=\"{service_type}\">"
    );
    for (name, value) in args {
        body.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    body.push_str(&format!("</u:{action}></s:Body></s:Envelope>\r\n"));
    (format!("\"{service_type}#{action}\""), body)
}

/// `AddPortMapping` of UDP `external` → `client:internal`, for `lease` seconds (0: until removed).
pub fn add_port_mapping(
    service_type: &str,
    external: u16,
    client: Ipv4Addr,
    internal: u16,
    lease: u32,
) -> (String, String) {
    soap_request(
        service_type,
        "AddPortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", "UDP".into()),
            ("NewInternalPort", internal.to_string()),
            ("NewInternalClient", client.to_string()),
            ("NewEnabled", "1".into()),
            ("NewPortMappingDescription", "re6mesh".into()),
            ("NewLeaseDuration", lease.to_string()),
        ],
    )
}

/// `DeletePortMapping` of UDP `external`.
pub fn delete_port_mapping(service_type: &str, external: u16) -> (String, String) {
    soap_request(
        service_type,
        "DeletePortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", "UDP".into()),
        ],
    )
}

/// `GetExternalIPAddress`.
pub fn get_external_ip_address(service_type: &str) -> (String, String) {
    soap_request(service_type, "GetExternalIPAddress", &[])
}

/// The answer to a SOAP `action` (HTTP `status`): the text of every element of the
/// `<action>Response`, or the router's fault.
pub fn parse_soap_response(
    status: u16,
    body: &[u8],
    action: &str,
) -> Result<Vec<(String, String)>, UpnpError> {
    if body.len() > MAX_SOAP {
        return Err(bad("SOAP answer too long"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("SOAP answer is not UTF-8"))?;
    if let Some((fault, _)) = element(text, "Fault") {
        let code = element_text(fault, "errorCode")
            .and_then(|c| c.trim().parse::<u16>().ok())
            .unwrap_or(0);
        let description = element_text(fault, "errorDescription")
            .map(|d| unescape(d).chars().take(200).collect())
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(UpnpError::Fault { code, description });
    }
    if status != 200 {
        return Err(bad(format!("HTTP {status} to {action}")));
    }
    let (inner, _) = element(text, &format!("{action}Response"))
        .ok_or_else(|| bad(format!("no {action}Response in the answer")))?;
    let mut values = Vec::new();
    let mut rest = inner;
    while let Some((name, value, after)) = next_element(rest) {
        values.push((name.to_string(), unescape(value)));
        rest = after;
    }
    Ok(values)
}

/// The external address in a `GetExternalIPAddress` answer.
pub fn parse_external_ip(values: &[(String, String)]) -> Result<Ipv4Addr, UpnpError> {
    let v = values
        .iter()
        .find(|(n, _)| n == "NewExternalIPAddress")
        .map(|(_, v)| v.trim())
        .ok_or_else(|| bad("no NewExternalIPAddress in the answer"))?;
    let ip: Ipv4Addr = v.parse().map_err(|_| {
        bad(format!(
            "the external address is not an IPv4 address: {v:?}"
        ))
    })?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(bad(format!(
            "the router has no usable external address ({ip})"
        )));
    }
    Ok(ip)
}

/// The local part of a tag name (`s:Body` → `Body`).
fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The first element whose local name is `name` (case-sensitive, as XML is): its content and
/// what follows its end tag. A self-closed element has empty content.
fn element<'a>(text: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let mut from = 0;
    while let Some(i) = text.get(from..)?.find('<') {
        let start = from + i + 1;
        let tag_end = start + text.get(start..)?.find('>')?;
        let tag = &text[start..tag_end];
        from = tag_end + 1;
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        if tag_name.starts_with(['/', '?', '!']) || local_name(tag_name) != name {
            continue;
        }
        if tag.ends_with('/') {
            return Some(("", &text[from..]));
        }
        // the matching end tag (the same local name; elements of one name do not nest in IGD
        // documents but for `device`, which is not looked for)
        let content_start = from;
        let mut search = from;
        while let Some(j) = text.get(search..)?.find("</") {
            let close_start = search + j + 2;
            let close_end = close_start + text.get(close_start..)?.find('>')?;
            let close = text[close_start..close_end].trim();
            if local_name(close) == name {
                return Some((&text[content_start..search + j], &text[close_end + 1..]));
            }
            search = close_end + 1;
        }
        return None;
    }
    None
}

/// The text of the first element named `name` (markup inside is left in).
fn element_text<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    element(text, name).map(|(inner, _)| inner)
}

/// The first child element of `text`: its local name, its content and what follows.
fn next_element(text: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    loop {
        let i = from + text.get(from..)?.find('<')?;
        let end = i + text.get(i..)?.find('>')?;
        let tag = &text[i + 1..end];
        from = end + 1;
        if tag.starts_with(['/', '?', '!']) {
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        let name = local_name(name);
        if name.is_empty() {
            continue;
        }
        return match element(&text[i..], name) {
            Some((inner, after)) => Some((name, inner, after)),
            None => None,
        };
    }
}

/// XML's five predefined entities and numeric character references decoded.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The property the `upnp` fuzz target checks: none of the parsers panics on `data`, taken
/// as an SSDP answer, a description and a SOAP answer; what they accept is well formed (a
/// control URL path starting with `/`, an external address that is usable).
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) -> Result<(), String> {
    if let Ok(url) = parse_search_response(data)
        && !url.path.starts_with('/')
    {
        return Err(format!("a location without a path: {url:?}"));
    }
    let location = HttpUrl {
        addr: SocketAddr::from(([192, 168, 1, 1], 5000)),
        path: "/rootDesc.xml".into(),
    };
    if let Ok(s) = parse_description(data, &location) {
        if !s.control.path.starts_with('/') {
            return Err(format!("a control URL without a path: {s:?}"));
        }
        if !SERVICES.contains(&s.service_type.as_str()) {
            return Err(format!("a service that was not asked for: {s:?}"));
        }
    }
    for action in [
        "AddPortMapping",
        "DeletePortMapping",
        "GetExternalIPAddress",
    ] {
        if let Ok(values) = parse_soap_response(200, data, action)
            && let Ok(ip) = parse_external_ip(&values)
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return Err(format!("an unusable external address accepted: {ip}"));
        }
        let _ = parse_soap_response(500, data, action);
    }
    Ok(())
}

#[cfg(test)]
#[path = "upnp_tests.rs"]
mod tests;

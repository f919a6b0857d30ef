//! UPnP IGD parsers against miniupnpd 2.3.1's real answers (fuzz/corpus/upnp, captured
//! from the router of tests/node_portmap.rs) and hand-made bad ones.

use super::*;

fn seed(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/upnp")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn location() -> HttpUrl {
    HttpUrl {
        addr: "192.168.50.1:33433".parse().unwrap(),
        path: "/rootDesc.xml".into(),
    }
}

#[test]
fn miniupnpd_search_answer_gives_the_description_url() {
    assert_eq!(parse_search_response(&seed("ssdp-answer")), Ok(location()));
}

#[test]
fn search_answers_that_are_not_a_gateway_are_refused() {
    for bad in [
        &b"NOTIFY * HTTP/1.1\r\nLOCATION: http://192.168.1.1/d.xml\r\n\r\n"[..],
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.1/d.xml\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\nLOCATION: http://192.168.1.1/d.xml\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://router.lan/d.xml\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: https://192.168.1.1/d.xml\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:0/d.xml\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:99999/d.xml\r\n\r\n",
        b"\xff\xfe",
        b"",
    ] {
        assert!(
            parse_search_response(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut long = b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1/d.xml\r\n".to_vec();
    long.resize(MAX_SSDP + 1, b' ');
    assert!(parse_search_response(&long).is_err(), "too long");
    // lower-case headers, LF line ends, IPv6 and a default port are fine
    assert_eq!(
        parse_search_response(b"HTTP/1.1 200 OK\nlocation: http://[fe80::1]/igd.xml\n\n"),
        Ok(HttpUrl {
            addr: "[fe80::1]:80".parse().unwrap(),
            path: "/igd.xml".into()
        })
    );
}

#[test]
fn miniupnpd_description_gives_wanipconnection_2_and_its_control_url() {
    let s = parse_description(&seed("description"), &location()).unwrap();
    assert_eq!(
        s.service_type,
        "urn:schemas-upnp-org:service:WANIPConnection:2"
    );
    assert_eq!(
        s.control.to_string(),
        "http://192.168.50.1:33433/ctl/IPConn"
    );
}

#[test]
fn descriptions_pick_the_best_service_and_resolve_urls() {
    let doc = |base: &str, services: &[(&str, &str)]| {
        let mut d = format!("<?xml version=\"1.0\"?><root>{base}<device><serviceList>");
        for (t, c) in services {
            d.push_str(&format!(
                "<service>\n <serviceType>{t}</serviceType>\n <controlURL>{c}</controlURL>\n</service>"
            ));
        }
        d.push_str("</serviceList></device></root>");
        d.into_bytes()
    };
    let ppp = "urn:schemas-upnp-org:service:WANPPPConnection:1";
    let ip1 = "urn:schemas-upnp-org:service:WANIPConnection:1";
    let other = "urn:schemas-upnp-org:service:Layer3Forwarding:1";
    let s = parse_description(
        &doc(
            "",
            &[(other, "/l3f"), (ppp, "/ppp"), (ip1, "ctl?a=1&amp;b=2")],
        ),
        &HttpUrl {
            addr: "10.0.0.1:5000".parse().unwrap(),
            path: "/dev/desc.xml".into(),
        },
    )
    .unwrap();
    assert_eq!(s.service_type, ip1);
    assert_eq!(
        s.control.to_string(),
        "http://10.0.0.1:5000/dev/ctl?a=1&b=2"
    );
    // URLBase overrides the location; an absolute control URL is taken as it is
    let s = parse_description(
        &doc("<URLBase>http://10.0.0.2:49000</URLBase>", &[(ppp, "/ppp")]),
        &location(),
    )
    .unwrap();
    assert_eq!(s.control.to_string(), "http://10.0.0.2:49000/ppp");
    let s = parse_description(&doc("", &[(ip1, "http://10.0.0.3:1234/c")]), &location()).unwrap();
    assert_eq!(s.control.to_string(), "http://10.0.0.3:1234/c");
    for bad in [
        doc("", &[(other, "/l3f")]),
        doc("", &[(ip1, "ftp://10.0.0.1/x")]),
        doc("", &[(ip1, "http://router.lan/x")]),
        doc("<URLBase>http://name/</URLBase>", &[(ip1, "/x")]),
        b"<service><serviceType>".to_vec(),
        b"<<<<>>>></service>".to_vec(),
        vec![b'<'; MAX_DESCRIPTION + 1],
    ] {
        assert!(
            parse_description(&bad, &location()).is_err(),
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
    }
}

#[test]
fn miniupnpd_soap_answers() {
    assert_eq!(
        parse_soap_response(200, &seed("soap-add-ok"), "AddPortMapping"),
        Ok(vec![])
    );
    assert_eq!(
        parse_soap_response(200, &seed("soap-delete-ok"), "DeletePortMapping"),
        Ok(vec![])
    );
    let v = parse_soap_response(200, &seed("soap-external-ip"), "GetExternalIPAddress").unwrap();
    assert_eq!(parse_external_ip(&v), Ok(Ipv4Addr::new(10, 99, 0, 1)));
    match parse_soap_response(500, &seed("soap-add-fault"), "AddPortMapping") {
        Err(UpnpError::Fault { code, description }) => {
            assert_eq!(code, 718, "ConflictInMappingEntry");
            assert_eq!(description, "ConflictInMappingEntry");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn soap_answers_that_do_not_answer_are_refused() {
    let ok = seed("soap-external-ip");
    assert!(
        parse_soap_response(200, &ok, "AddPortMapping").is_err(),
        "another action"
    );
    assert!(parse_soap_response(404, b"<html/>", "AddPortMapping").is_err());
    assert!(parse_soap_response(200, b"", "AddPortMapping").is_err());
    for ip in ["0.0.0.0", "", "x", "224.0.0.1", "::1", "255.255.255.255"] {
        let v = vec![("NewExternalIPAddress".to_string(), ip.to_string())];
        assert!(parse_external_ip(&v).is_err(), "{ip}");
    }
    assert!(parse_external_ip(&[]).is_err());
    let mut long = ok.clone();
    long.resize(MAX_SOAP + 1, b' ');
    assert!(parse_soap_response(200, &long, "GetExternalIPAddress").is_err());
}

#[test]
fn soap_requests_carry_the_action_and_escaped_arguments() {
    let st = "urn:schemas-upnp-org:service:WANIPConnection:1";
    let (action, body) = add_port_mapping(st, 6464, Ipv4Addr::new(192, 168, 1, 2), 6464, 3600);
    assert_eq!(action, format!("\"{st}#AddPortMapping\""));
    for part in [
        "<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">",
        "<NewExternalPort>6464</NewExternalPort>",
        "<NewProtocol>UDP</NewProtocol>",
        "<NewInternalClient>192.168.1.2</NewInternalClient>",
        "<NewLeaseDuration>3600</NewLeaseDuration>",
        "</u:AddPortMapping>",
    ] {
        assert!(body.contains(part), "{part} in {body}");
    }
    let (_, body) = soap_request(st, "X", &[("A", "<&>".into())]);
    assert!(body.contains("<A>&lt;&amp;&gt;</A>"), "{body}");
    assert!(
        String::from_utf8_lossy(&search_request(SEARCH_TARGETS[0])).starts_with(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
        )
    );
}

#[test]
fn unescape_decodes_entities_and_leaves_the_rest() {
    assert_eq!(unescape("a&amp;b&lt;&#65;&#x42;&bogus;&"), "a&b<AB&bogus;&");
    assert_eq!(unescape("&#xFFFFFFFF;"), "&#xFFFFFFFF;");
}

#[test]
fn fuzz_property_holds_on_the_corpus_and_odd_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/upnp");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        fuzz_check(&bytes).unwrap_or_else(|v| panic!("{}: {v}", e.path().display()));
        // every prefix too: truncated answers must not panic either
        for cut in (0..bytes.len()).step_by(7) {
            fuzz_check(&bytes[..cut]).unwrap();
        }
        n += 1;
    }
    assert!(n >= 5, "the seed corpus is there");
    for odd in [
        &b"<a/><b></c><service/><Fault></Fault>"[..],
        b"</<</>/>",
        b"<\xc3\xa9:\xc3\xa9>",
        b"&&&&&&&&&&&&&&&&;",
    ] {
        fuzz_check(odd).unwrap();
    }
}

/// A cheap stand-in for the fuzzer in every `cargo test`: the seeds mutated (bytes flipped,
/// inserted and removed, seeds spliced) by a fixed xorshift sequence.
#[test]
fn fuzz_property_holds_on_mutated_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/upnp");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    const BYTES: &[u8] = b"<>/:&;# \r\n\"=?!0123456789abcdef\xff\xc3";
    for _ in 0..1000 {
        let mut d = seeds[next(seeds.len())].clone();
        for _ in 0..1 + next(8) {
            let at = next(d.len() + 1);
            match next(4) {
                0 if at < d.len() => d[at] = BYTES[next(BYTES.len())],
                1 => d.insert(at, BYTES[next(BYTES.len())]),
                2 if at < d.len() => {
                    d.remove(at);
                }
                _ => {
                    let other = &seeds[next(seeds.len())];
                    let from = next(other.len());
                    let len = next(other.len() - from + 1);
                    d.splice(at..at, other[from..from + len].iter().copied());
                }
            }
        }
        fuzz_check(&d).unwrap_or_else(|v| panic!("{v}: {:?}", String::from_utf8_lossy(&d)));
    }
}

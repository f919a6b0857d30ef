//! The tunnel control stream: length-prefixed JSON messages (u32 big-endian length, at most
//! [`MAX_MESSAGE`] bytes). Sans-IO: [`Decoder`] takes bytes as they arrive and yields
//! messages; [`encode`] frames one. Unknown message types are skipped (forward
//! compatibility); anything else malformed is an error that ends the stream.

use std::net::SocketAddr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::params::SignedParamsJson;

/// Largest control message.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// A peer address as exchanged between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The peer's prefix.
    pub prefix: Ipv6Net,
    /// Its UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Its country as it states it (ISO 3166 alpha-2), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Control stream messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMsg {
    /// First message on every control stream, both directions.
    Hello {
        /// Sender's protocol version.
        protocol: u32,
        /// Sender's network parameters version.
        params_version: u64,
        /// Where the sender can be reached.
        endpoints: Vec<SocketAddr>,
        /// The sender's country (ISO 3166 alpha-2), if it states one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        country: Option<String>,
        /// The address and port the sender sees this connection come from: the receiver's
        /// address as the outside sees it (behind a NAT, the mapped one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed: Option<SocketAddr>,
    },
    /// "Send me your parameters" (the receiver has a newer version).
    ParamsRequest,
    /// A signed parameters document.
    Params {
        /// The signed document.
        params: SignedParamsJson,
        /// The CRL the document names (base64 DER), when the sender holds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crl: Option<String>,
    },
    /// Peer addresses the sender knows.
    Peers {
        /// Peers.
        peers: Vec<PeerAddr>,
    },
    /// The sender asks to close this tunnel (end of the lock cycle).
    KillRequest,
    /// Answer to a kill request.
    KillResponse {
        /// The receiver agrees and closes.
        accepted: bool,
    },
    /// "Send me the certificate of this node prefix": origin authentication of routes
    /// (the receiver announced a route for it, so it verified it with that certificate).
    CertRequest {
        /// The node prefix.
        prefix: Ipv6Net,
    },
    /// Answer to a [`ControlMsg::CertRequest`].
    Cert {
        /// The node prefix asked for.
        prefix: Ipv6Net,
        /// The certificate (base64 DER); absent when the sender does not hold it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert: Option<String>,
    },
}

/// Why the control stream is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A length above [`MAX_MESSAGE`].
    #[error("control message of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// Not a JSON object with a known shape.
    #[error("malformed control message: {0}")]
    Malformed(String),
}

/// Frames one message.
pub fn encode(msg: &ControlMsg) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Incremental decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Unknown message
    /// types are consumed and skipped.
    pub fn next_message(&mut self) -> Result<Option<ControlMsg>, ControlError> {
        loop {
            let Some(len_bytes) = self.buf.get(..4) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]])
                as usize;
            if len > MAX_MESSAGE {
                return Err(ControlError::TooLong(len));
            }
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let body: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ControlError::Malformed(e.to_string()))?;
            let known = matches!(
                value.get("type").and_then(|t| t.as_str()),
                Some(
                    "hello"
                        | "params_request"
                        | "params"
                        | "peers"
                        | "kill_request"
                        | "kill_response"
                        | "cert_request"
                        | "cert"
                )
            );
            if !known {
                if value.get("type").and_then(|t| t.as_str()).is_none() {
                    return Err(ControlError::Malformed("message without a type".into()));
                }
                continue;
            }
            return serde_json::from_value(value)
                .map(Some)
                .map_err(|e| ControlError::Malformed(e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ControlMsg {
        ControlMsg::Hello {
            protocol: 1,
            params_version: 7,
            endpoints: vec!["[fd00::1]:6464".parse().unwrap()],
            country: None,
            observed: Some("[2001:db8::7]:40000".parse().unwrap()),
        }
    }

    #[test]
    fn decodes_messages_split_anywhere() {
        let mut wire = encode(&hello());
        wire.extend(encode(&ControlMsg::KillResponse { accepted: true }));
        for split in 0..wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.push(&wire[..split]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            d.push(&wire[split..]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(
                got,
                vec![hello(), ControlMsg::KillResponse { accepted: true }]
            );
        }
    }

    #[test]
    fn certificate_requests_and_answers_round_trip() {
        let prefix: Ipv6Net = "fd00:1:0:3::/64".parse().unwrap();
        let msgs = [
            ControlMsg::CertRequest { prefix },
            ControlMsg::Cert {
                prefix,
                cert: Some("MIIB".into()),
            },
            ControlMsg::Cert { prefix, cert: None },
        ];
        let mut d = Decoder::default();
        for m in &msgs {
            d.push(&encode(m));
        }
        for m in msgs {
            assert_eq!(d.next_message().unwrap(), Some(m));
        }
        assert_eq!(
            String::from_utf8(encode(&ControlMsg::CertRequest { prefix })[4..].to_vec()).unwrap(),
            r#"{"type":"cert_request","prefix":"fd00:1:0:3::/64"}"#
        );
    }

    #[test]
    fn the_certificate_fuzz_seed_decodes() {
        // fuzz/corpus/tunnel_control/cert: split byte, then the stream.
        let seed = include_bytes!("../../../fuzz/corpus/tunnel_control/cert");
        let mut d = Decoder::default();
        d.push(&seed[1..]);
        let mut got = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            got.push(m);
        }
        assert!(matches!(
            &got[..],
            [
                ControlMsg::CertRequest { .. },
                ControlMsg::Cert { cert: Some(_), .. },
                ControlMsg::Cert { cert: None, .. }
            ]
        ));
    }

    #[test]
    fn skips_unknown_message_types() {
        let body = br#"{"type":"from_the_future","x":1}"#;
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(body);
        wire.extend(encode(&ControlMsg::ParamsRequest));
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(d.next_message().unwrap(), Some(ControlMsg::ParamsRequest));
    }

    #[test]
    fn rejects_oversized_and_malformed_messages() {
        let mut d = Decoder::default();
        d.push(&(MAX_MESSAGE as u32 + 1).to_be_bytes());
        assert!(matches!(d.next_message(), Err(ControlError::TooLong(_))));
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(d.next_message(), Err(ControlError::Malformed(_))));
        let mut d = Decoder::default();
        let body = br#"{"type":"hello","protocol":"one"}"#;
        d.push(&(body.len() as u32).to_be_bytes());
        d.push(body);
        assert!(matches!(d.next_message(), Err(ControlError::Malformed(_))));
    }
}

//! The network parameters and CRL a node holds, and the rule for taking newer ones from
//! anybody — the registry or a neighbour — without trusting the messenger.
//!
//! A parameters document is accepted when its signature verifies with the network CA and
//! its version is newer than ours. The CRL travels next to it: it is accepted when its
//! SHA-256 is the one the (signed) parameters name and its own signature verifies with the
//! CA. Parameters may be taken before their CRL arrives (the CRL is then "wanted" and the
//! node asks its neighbours and the registry); a CRL that does not match the parameters in
//! force is refused.
//!
//! Fail closed: revocations are never forgotten by waiting. Until the CRL the parameters name
//! arrives, the revoked set of the last CRL verified stays in force (a CRL only grows, but
//! for certificates that have expired anyway), and that CRL is what [`NetState::crl_to_store`]
//! gives the state directory, so a restart with the registry down keeps it too.
//! Pure logic: no I/O.

use std::collections::HashSet;

use crate::identity;
use crate::params::{NetworkParams, SignedParams};

/// Parameters and CRL in force on this node.
#[derive(Debug, Clone)]
pub struct NetState {
    ca_der: Vec<u8>,
    signed: SignedParams,
    params: NetworkParams,
    crl_der: Option<Vec<u8>>,
    /// While the CRL the parameters name is wanted: the last CRL verified (its revoked set is
    /// the one in force).
    stale_crl_der: Option<Vec<u8>>,
    revoked: HashSet<String>,
}

/// What an offer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// A newer parameters version is now in force.
    pub params: bool,
    /// A new CRL is now in force (the revoked set changed or was first learnt).
    pub crl: bool,
    /// The version of the offered parameters (verified), newer or not.
    pub offered: Option<u64>,
}

impl Applied {
    /// True when anything changed.
    pub fn any(self) -> bool {
        self.params || self.crl
    }
}

/// Why an offer was refused. Nothing changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    /// The parameters' signature or encoding is bad.
    #[error("the offered parameters are not valid: {0}")]
    BadParams(String),
    /// The CRL's signature or encoding is bad.
    #[error("the offered CRL is not valid: {0}")]
    BadCrl(String),
    /// The CRL is not the one the parameters in force name.
    #[error("the offered CRL is not the one the parameters name")]
    CrlMismatch,
}

/// Verifies a DER CRL with the CA and returns its revoked serials (lowercase hex).
pub fn verify_crl(ca_der: &[u8], der: &[u8]) -> Result<HashSet<String>, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|e| format!("bad CA: {e}"))?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| format!("malformed CRL: {e}"))?;
    crl.verify_signature(ca.public_key())
        .map_err(|_| "the CRL is not signed by the network CA".to_string())?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| identity::serial_hex(r.raw_serial()))
        .collect())
}

impl NetState {
    /// State from parameters already verified (e.g. at load) and no CRL yet.
    pub fn new(ca_der: Vec<u8>, signed: SignedParams) -> Result<NetState, OfferError> {
        let params = signed
            .verify(&ca_der)
            .map_err(|e| OfferError::BadParams(e.to_string()))?;
        Ok(NetState {
            ca_der,
            signed,
            params,
            crl_der: None,
            stale_crl_der: None,
            revoked: HashSet::new(),
        })
    }

    /// State from stored parameters and the CRL stored with them. A stored CRL signed by the
    /// CA but not the one the parameters name (older, or newer after an interrupted save)
    /// still keeps its revocations in force while the right one is wanted. A CRL that does
    /// not verify is dropped: the error says why.
    pub fn with_stored_crl(
        ca_der: Vec<u8>,
        signed: SignedParams,
        crl_der: Option<&[u8]>,
    ) -> Result<(NetState, Option<OfferError>), OfferError> {
        let mut st = NetState::new(ca_der, signed)?;
        let Some(der) = crl_der else {
            return Ok((st, None));
        };
        match st.offer(None, Some(der)) {
            Ok(_) => Ok((st, None)),
            Err(OfferError::CrlMismatch) => match verify_crl(&st.ca_der, der) {
                Ok(revoked) => {
                    st.revoked = revoked;
                    st.stale_crl_der = Some(der.to_vec());
                    Ok((st, None))
                }
                Err(e) => Ok((st, Some(OfferError::BadCrl(e)))),
            },
            Err(e) => Ok((st, Some(e))),
        }
    }

    /// The network CA's certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The parameters in force.
    pub fn params(&self) -> &NetworkParams {
        &self.params
    }

    /// Their signed form (to pass on).
    pub fn signed(&self) -> &SignedParams {
        &self.signed
    }

    /// The CRL in force, when it is the one the parameters name (to pass on).
    pub fn crl_der(&self) -> Option<&[u8]> {
        self.crl_der.as_deref()
    }

    /// Revoked serials of the CRL in force.
    pub fn revoked(&self) -> &HashSet<String> {
        &self.revoked
    }

    /// True when the parameters name a CRL we do not hold yet.
    pub fn crl_wanted(&self) -> bool {
        self.crl_der.is_none()
    }

    /// The CRL to store next to the parameters: the one in force, or else the last one
    /// verified (whose revocations stay in force until the right one arrives).
    pub fn crl_to_store(&self) -> Option<&[u8]> {
        self.crl_der.as_deref().or(self.stale_crl_der.as_deref())
    }

    /// Takes `signed` if it is newer, and `crl` if it is the CRL the parameters (new or in
    /// force) name. Verifies everything before changing anything.
    pub fn offer(
        &mut self,
        signed: Option<&SignedParams>,
        crl: Option<&[u8]>,
    ) -> Result<Applied, OfferError> {
        let mut offered = None;
        let newer = match signed {
            Some(s) => {
                let p = s
                    .verify(&self.ca_der)
                    .map_err(|e| OfferError::BadParams(e.to_string()))?;
                offered = Some(p.version);
                (p.version > self.params.version).then(|| (s.clone(), p))
            }
            None => None,
        };
        let want_sha = newer
            .as_ref()
            .map(|(_, p)| p.crl.sha256.clone())
            .unwrap_or_else(|| self.params.crl.sha256.clone());
        let crl_new = match crl {
            Some(der) if self.crl_der.as_deref() != Some(der) => {
                if hex::encode(identity::fingerprint(der)) != want_sha {
                    // A stale CRL next to newer parameters is not an error of the sender's
                    // (it may not have the new one yet); alone, it is refused.
                    if newer.is_none() {
                        return Err(OfferError::CrlMismatch);
                    }
                    None
                } else {
                    Some((
                        der.to_vec(),
                        verify_crl(&self.ca_der, der).map_err(OfferError::BadCrl)?,
                    ))
                }
            }
            _ => None,
        };
        let mut applied = Applied {
            offered,
            ..Applied::default()
        };
        if let Some((s, p)) = newer {
            if p.crl.sha256 != self.params.crl.sha256 && crl_new.is_none() {
                // The CRL in force is not the one the new parameters name: keep applying
                // the old revoked set (revocations are never undone by waiting) and want
                // the new one.
                if let Some(old) = self.crl_der.take() {
                    self.stale_crl_der = Some(old);
                }
            }
            self.signed = s;
            self.params = p;
            applied.params = true;
        }
        if let Some((der, revoked)) = crl_new {
            self.crl_der = Some(der);
            self.stale_crl_der = None;
            self.revoked = revoked;
            applied.crl = true;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ca::Ca;

    struct World {
        ca: Ca,
    }

    /// A fixed issue time: the CRL checks here are about signatures and numbers, not dates.
    const WHEN: time::OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

    fn doc(version: u64, crl_der: &[u8]) -> NetworkParams {
        let mut p = crate::params::tests::sample(version);
        p.crl.sha256 = hex::encode(identity::fingerprint(crl_der));
        p
    }

    impl World {
        fn new() -> World {
            World {
                ca: Ca::generate(&"fd00:1::/48".parse().unwrap(), WHEN).unwrap(),
            }
        }
        fn sign(&self, p: &NetworkParams) -> SignedParams {
            let document = p.to_bytes();
            SignedParams {
                signature: self.ca.sign(&document).unwrap(),
                document,
            }
        }
        fn crl(&self, number: u64, serials: &[&str]) -> Vec<u8> {
            self.ca
                .crl(
                    number,
                    &serials
                        .iter()
                        .map(|s| (s.to_string(), 0i64))
                        .collect::<Vec<_>>(),
                    WHEN,
                )
                .unwrap()
        }
    }

    #[test]
    fn newer_params_with_their_crl_are_taken_together() {
        let w = World::new();
        let crl1 = w.crl(1, &[]);
        let mut st = NetState::new(w.ca.cert_der().to_vec(), w.sign(&doc(1, &crl1))).unwrap();
        assert!(st.crl_wanted());
        let crl2 = w.crl(2, &["0abc"]);
        let a = st
            .offer(Some(&w.sign(&doc(2, &crl2))), Some(&crl2))
            .unwrap();
        assert_eq!(
            a,
            Applied {
                params: true,
                crl: true,
                offered: Some(2),
            }
        );
        assert_eq!(st.params().version, 2);
        assert!(st.revoked().contains("0abc"));
        assert!(!st.crl_wanted());
        // the same again changes nothing
        let a = st
            .offer(Some(&w.sign(&doc(2, &crl2))), Some(&crl2))
            .unwrap();
        assert!(!a.any());
    }

    #[test]
    fn older_params_and_a_crl_they_do_not_name_change_nothing() {
        let w = World::new();
        let crl2 = w.crl(2, &["01"]);
        let mut st = NetState::new(w.ca.cert_der().to_vec(), w.sign(&doc(5, &crl2))).unwrap();
        st.offer(None, Some(&crl2)).unwrap();
        let crl1 = w.crl(1, &[]);
        let a = st.offer(Some(&w.sign(&doc(4, &crl1))), Some(&crl1));
        assert_eq!(a, Err(OfferError::CrlMismatch));
        assert_eq!(st.params().version, 5);
        assert!(st.revoked().contains("01"), "a revocation was undone");
    }

    #[test]
    fn parameters_signed_by_another_ca_are_refused() {
        let (w, other) = (World::new(), World::new());
        let crl = w.crl(1, &[]);
        let mut st = NetState::new(w.ca.cert_der().to_vec(), w.sign(&doc(1, &crl))).unwrap();
        let forged = other.sign(&doc(9, &crl));
        assert!(matches!(
            st.offer(Some(&forged), None),
            Err(OfferError::BadParams(_))
        ));
        // a CRL from another CA with the right hash cannot exist; one with a tampered
        // signature but named by forged params is refused with the params
        let mut tampered = w.sign(&doc(9, &crl));
        tampered.document[0] ^= 1;
        assert!(st.offer(Some(&tampered), None).is_err());
        assert_eq!(st.params().version, 1);
    }

    #[test]
    fn new_params_without_their_crl_keep_the_old_revocations_and_want_the_new_crl() {
        let w = World::new();
        let crl1 = w.crl(1, &["aa"]);
        let mut st = NetState::new(w.ca.cert_der().to_vec(), w.sign(&doc(1, &crl1))).unwrap();
        st.offer(None, Some(&crl1)).unwrap();
        let crl2 = w.crl(2, &["aa", "bb"]);
        // a neighbour that has the new params but still the old CRL
        let a = st
            .offer(Some(&w.sign(&doc(2, &crl2))), Some(&crl1))
            .unwrap();
        assert_eq!(
            a,
            Applied {
                params: true,
                crl: false,
                offered: Some(2),
            }
        );
        assert!(st.crl_wanted());
        assert!(st.revoked().contains("aa"));
        let a = st.offer(None, Some(&crl2)).unwrap();
        assert!(a.crl && st.revoked().contains("bb") && !st.crl_wanted());
    }

    #[test]
    fn a_stored_crl_older_than_the_parameters_keeps_its_revocations() {
        let w = World::new();
        let crl1 = w.crl(1, &["aa"]);
        let crl2 = w.crl(2, &["aa", "bb"]);
        // parameters v2 were stored, the CRL they name was not (registry down): crl1 stays
        let (st, err) = NetState::with_stored_crl(
            w.ca.cert_der().to_vec(),
            w.sign(&doc(2, &crl2)),
            Some(&crl1),
        )
        .unwrap();
        assert_eq!(err, None);
        assert!(st.crl_wanted());
        assert!(
            st.revoked().contains("aa"),
            "a stored revocation was forgotten"
        );
        assert_eq!(st.crl_to_store(), Some(&crl1[..]));
        // and the CRL in force is stored once it arrives
        let mut st = st;
        assert!(st.offer(None, Some(&crl2)).unwrap().crl);
        assert_eq!(st.crl_to_store(), Some(&crl2[..]));
        assert!(st.revoked().contains("bb"));
    }

    #[test]
    fn new_parameters_without_their_crl_store_the_old_crl() {
        let w = World::new();
        let crl1 = w.crl(1, &["aa"]);
        let (mut st, _) = NetState::with_stored_crl(
            w.ca.cert_der().to_vec(),
            w.sign(&doc(1, &crl1)),
            Some(&crl1),
        )
        .unwrap();
        assert!(!st.crl_wanted());
        let crl2 = w.crl(2, &["aa", "bb"]);
        assert!(
            st.offer(Some(&w.sign(&doc(2, &crl2))), None)
                .unwrap()
                .params
        );
        assert!(st.crl_wanted());
        // what a restart now would load keeps "aa" revoked
        assert_eq!(st.crl_to_store(), Some(&crl1[..]));
        let (again, _) = NetState::with_stored_crl(
            w.ca.cert_der().to_vec(),
            st.signed().clone(),
            st.crl_to_store(),
        )
        .unwrap();
        assert!(again.revoked().contains("aa") && again.crl_wanted());
    }

    #[test]
    fn a_stored_crl_of_another_ca_is_dropped_with_a_reason() {
        let (w, other) = (World::new(), World::new());
        let crl = w.crl(1, &[]);
        let forged = other.crl(1, &["aa"]);
        let (st, err) = NetState::with_stored_crl(
            w.ca.cert_der().to_vec(),
            w.sign(&doc(1, &crl)),
            Some(&forged),
        )
        .unwrap();
        assert!(matches!(err, Some(OfferError::BadCrl(_))), "{err:?}");
        assert!(st.revoked().is_empty() && st.crl_wanted());
        assert_eq!(st.crl_to_store(), None);
    }

    #[test]
    fn garbage_crl_bytes_are_refused() {
        let w = World::new();
        let crl = w.crl(1, &[]);
        let mut st = NetState::new(w.ca.cert_der().to_vec(), w.sign(&doc(1, &crl))).unwrap();
        assert_eq!(st.offer(None, Some(b"junk")), Err(OfferError::CrlMismatch));
    }
}

//! An issued certificate as the store keeps it: the hash
//! `P:ACME:CERT:<first name>` with the PEM chain, the private key sealed
//! (see `sealed`), `not_after` (Unix seconds) and the names, so every node
//! can serve it and decide when it is due. Sans-IO.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

use super::sealed::Sealer;
use super::validity::{Validity, validity};

/// One stored certificate.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub(super) chain_pem: String,
    pub(super) sealed_key: String,
    /// The expiry renewals count from (the `not_after` field: the leaf's
    /// at issuance; an operator may lower it to force a renewal).
    pub(super) not_after: i64,
    pub(super) names: Vec<String>,
    /// The leaf's own validity, read from the chain (never from a field).
    pub(super) leaf: Validity,
}

/// The validity of the first certificate of a PEM chain.
fn leaf_validity(chain_pem: &str) -> Result<Validity, String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("no certificate in the chain")?
        .map_err(|e| format!("the chain: {e}"))?;
    validity(&leaf).ok_or_else(|| String::from("the certificate has no readable validity"))
}

impl Record {
    /// A record for a newly issued chain; `store_key` is where it will live.
    pub(super) fn seal(
        chain_pem: String,
        key_pem: &str,
        names: &[String],
        sealer: &Sealer,
        store_key: &str,
    ) -> Result<Self, String> {
        let leaf = leaf_validity(&chain_pem)?;
        Ok(Self {
            sealed_key: sealer.seal(key_pem.as_bytes(), store_key)?,
            chain_pem,
            not_after: leaf.not_after,
            names: names.to_vec(),
            leaf,
        })
    }

    /// The hash fields.
    pub(super) fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("chain", self.chain_pem.clone().into_bytes()),
            ("key", self.sealed_key.clone().into_bytes()),
            ("not_after", self.not_after.to_string().into_bytes()),
            ("names", self.names.join(" ").into_bytes()),
        ]
    }

    /// From HGETALL's pairs; `None` for no record (or a partial or
    /// unreadable one: it is ordered again).
    pub(super) fn from_fields(pairs: &[(String, Vec<u8>)]) -> Option<Self> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(f, _)| f == name)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        };
        let chain_pem = get("chain")?;
        let leaf = leaf_validity(&chain_pem).ok()?;
        Some(Self {
            chain_pem,
            sealed_key: get("key")?,
            not_after: get("not_after")?.parse().ok()?,
            names: get("names")?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            leaf,
        })
    }

    /// The chain and the opened key, ready for rustls, if the leaf covers
    /// every one of `names` (the record's `names` field is not trusted for
    /// that: only the certificate itself).
    pub(super) fn certified_key(
        &self,
        sealer: &Sealer,
        store_key: &str,
        names: &[String],
    ) -> Result<Arc<CertifiedKey>, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("chain: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the chain")?;
        let end_entity =
            webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("certificate: {e}"))?;
        for name in names {
            // A wildcard is checked with a name only it (or that very
            // name) covers.
            let probe = match name.strip_prefix("*.") {
                Some(base) => format!("wildcard-probe.{base}"),
                None => name.clone(),
            };
            let server_name =
                ServerName::try_from(probe).map_err(|_| format!("{name}: not a DNS name"))?;
            end_entity
                .verify_is_valid_for_subject_name(&server_name)
                .map_err(|_| format!("the certificate does not cover {name}"))?;
        }
        let key_pem = sealer.open(&self.sealed_key, store_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, key, &provider)
            .map(Arc::new)
            .map_err(|e| format!("chain and key: {e}"))
    }

    /// Whether it is time to order again: within the renewal window of
    /// `not_after` (`renew_time`, but at most a third of the certificate's
    /// lifetime, so short-lived certificates are not ordered on every
    /// look), or past it, or the names asked for changed.
    pub(super) fn is_due(&self, now: i64, renew_time: i64, names: &[String]) -> bool {
        let lifetime = self.leaf.not_after.saturating_sub(self.leaf.not_before);
        let window = renew_time.min(lifetime / 3);
        self.not_after.saturating_sub(now) <= window || self.names != names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str], days: i64) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        params.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_record_round_trips_through_the_store_fields_and_opens_for_rustls() {
        let sealer = Sealer::from_key_text(&"42".repeat(32)).unwrap();
        let wanted = names(&["a.test", "www.a.test"]);
        let (chain, key) = issued(&["a.test", "www.a.test"], 90);
        let record = Record::seal(chain, &key, &wanted, &sealer, "RLW:ACME:CERT:a.test").unwrap();
        let fields: Vec<(String, Vec<u8>)> = record
            .fields()
            .into_iter()
            .map(|(f, v)| (f.to_owned(), v))
            .collect();
        assert!(
            !String::from_utf8_lossy(&fields[1].1).contains("PRIVATE KEY"),
            "the key is sealed"
        );
        let back = Record::from_fields(&fields).unwrap();
        assert_eq!(back, record);
        assert!(
            back.certified_key(&sealer, "RLW:ACME:CERT:a.test", &wanted)
                .is_ok()
        );
        assert!(
            back.certified_key(&sealer, "RLW:ACME:CERT:b.test", &wanted)
                .is_err()
        );
        let err = back
            .certified_key(&sealer, "RLW:ACME:CERT:a.test", &names(&["bank.test"]))
            .err()
            .unwrap();
        assert!(err.contains("does not cover bank.test"), "{err}");
        assert_eq!(Record::from_fields(&fields[..2]), None);
    }

    #[test]
    fn wildcards_are_checked_against_the_certificate() {
        let sealer = Sealer::from_key_text(&"42".repeat(32)).unwrap();
        let (chain, key) = issued(&["*.w.test"], 90);
        let wanted = names(&["*.w.test"]);
        let record = Record::seal(chain, &key, &wanted, &sealer, "k").unwrap();
        assert!(record.certified_key(&sealer, "k", &wanted).is_ok());
        assert!(
            record
                .certified_key(&sealer, "k", &names(&["*.v.test"]))
                .is_err()
        );
    }

    #[test]
    fn renewal_is_due_in_the_window_or_when_names_change() {
        let sealer = Sealer::from_key_text(&"42".repeat(32)).unwrap();
        let wanted = names(&["a.test"]);
        let (chain, key) = issued(&["a.test"], 90);
        let record = Record::seal(chain, &key, &wanted, &sealer, "k").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let day = 86_400;
        assert!(!record.is_due(now, 30 * day, &wanted));
        assert!(
            record.is_due(now + 61 * day, 30 * day, &wanted),
            "inside the window"
        );
        assert!(
            record.is_due(now, 30 * day, &names(&["b.test"])),
            "names changed"
        );
        // A six-day certificate with a 30-day renew_time: renewed at two
        // days left (a third of its life), not on every look.
        let (chain, key) = issued(&["a.test"], 6);
        let short = Record::seal(chain, &key, &wanted, &sealer, "k").unwrap();
        assert!(!short.is_due(now, 30 * day, &wanted));
        assert!(short.is_due(now + 4 * day + 60, 30 * day, &wanted));
    }
}

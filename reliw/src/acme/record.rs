//! An issued certificate as the store keeps it: the hash
//! `P:ACME:CERT:<first name>` with the PEM chain, the private key sealed
//! (see `sealed`), `not_after` (Unix seconds) and the names, so every node
//! can serve it and decide when it is due. Sans-IO.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::sealed::Sealer;

/// One stored certificate.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub(super) chain_pem: String,
    pub(super) sealed_key: String,
    pub(super) not_after: i64,
    pub(super) names: Vec<String>,
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
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or("the CA sent no certificate")?
            .map_err(|e| format!("the CA's chain: {e}"))?;
        let not_after =
            super::validity::not_after(&leaf).ok_or("the certificate has no readable notAfter")?;
        Ok(Self {
            sealed_key: sealer.seal(key_pem.as_bytes(), store_key)?,
            chain_pem,
            not_after,
            names: names.to_vec(),
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

    /// From HGETALL's pairs; `None` for no record (or a partial one).
    pub(super) fn from_fields(pairs: &[(String, Vec<u8>)]) -> Option<Self> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(f, _)| f == name)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        };
        Some(Self {
            chain_pem: get("chain")?,
            sealed_key: get("key")?,
            not_after: get("not_after")?.parse().ok()?,
            names: get("names")?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The chain and the opened key, ready for rustls.
    pub(super) fn certified_key(
        &self,
        sealer: &Sealer,
        store_key: &str,
    ) -> Result<Arc<CertifiedKey>, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("chain: {e}"))?;
        let key_pem = sealer.open(&self.sealed_key, store_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, key, &provider)
            .map(Arc::new)
            .map_err(|e| format!("chain and key: {e}"))
    }

    /// Whether it is time to order again: within `renew_before` seconds of
    /// `not_after`, or past it, or the names asked for changed.
    pub(super) fn is_due(&self, now: i64, renew_before: i64, names: &[String]) -> bool {
        self.not_after - now <= renew_before || self.names != names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str], days: i64) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_record_round_trips_through_the_store_fields_and_opens_for_rustls() {
        let sealer = Sealer::from_key_text(&"42".repeat(32)).unwrap();
        let names = vec![String::from("a.test"), String::from("www.a.test")];
        let (chain, key) = issued(&["a.test", "www.a.test"], 90);
        let record = Record::seal(chain, &key, &names, &sealer, "RLW:ACME:CERT:a.test").unwrap();
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
        assert!(back.certified_key(&sealer, "RLW:ACME:CERT:a.test").is_ok());
        assert!(back.certified_key(&sealer, "RLW:ACME:CERT:b.test").is_err());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(!back.is_due(now, 30 * 86_400, &names));
        assert!(
            back.is_due(now, 91 * 86_400, &names),
            "inside the renewal window"
        );
        assert!(back.is_due(now, 30 * 86_400, &names[..1]), "names changed");
        assert_eq!(Record::from_fields(&fields[..2]), None);
    }
}

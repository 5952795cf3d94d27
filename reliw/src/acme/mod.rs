//! Certificates for the whole fleet from an ACME CA (RFC 8555), kept in
//! the shared store so that one node orders and every node serves.
//!
//! Every node runs the same loop, every `ssl.acme.check_interval`:
//!
//! 1. Read each configured certificate's record (`P:ACME:CERT:<first
//!    name>`, see `record`) and serve it if it changed ([`LiveCertificates`],
//!    read by the TLS resolver on each handshake: no restart, no SIGHUP).
//! 2. If the record is missing, names other names, or is within
//!    `renew_time` of its expiry, take the lock `P:ACME:LOCK:<first name>`
//!    (SET NX with an expiry, so a node that dies mid-order frees it). The
//!    node that gets it orders (`order`), stores the chain with its key
//!    sealed under `ssl.acme.key_file` (`sealed`) and lets the lock go;
//!    the others pick the record up on their next look.
//! 3. A failed order is retried after a backoff that doubles per failure
//!    (from one check interval up to six hours), so a CA's
//!    failed-validation limits are not burnt.
//!
//! The account is made once per directory and kept, sealed, at
//! `P:ACME:ACCOUNT:<directory URL>`. Files in `ssl.default`/`ssl.hosts`
//! keep working: an ACME certificate, when there is one, is preferred for
//! its names.

pub mod live;
mod order;
mod record;
mod sealed;
mod validity;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{Account, AccountCredentials, NewAccount};

pub use live::LiveCertificates;
use record::Record;
use sealed::Sealer;

use crate::config::{AcmeCertificate, AcmeConfig, Config};
use crate::metrics::NodeMetrics;
use crate::store::{Backend, Keys, Store as _, StoreSpec};

/// How long a node may hold an order's lock: orders finish well within
/// it, and a node that died holding it frees the name after this.
const LOCK_TTL: Duration = Duration::from_secs(10 * 60);
/// The longest wait between failed orders of one certificate.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// Why ACME cannot start (start-up stops).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ssl.acme.key_file: {0}")]
    Key(String),
    #[error("starting the ACME manager: {0}")]
    Start(#[from] std::io::Error),
}

/// Starts the manager thread when `ssl.acme` is set and can run (else
/// start-up has warned why not): `true` when it runs.
pub fn spawn(
    config: &Config,
    store: &StoreSpec,
    live: &Arc<LiveCertificates>,
    metrics: &Arc<NodeMetrics>,
) -> Result<bool, AcmeError> {
    let Some(acme) = config.ssl.as_ref().and_then(|s| s.acme.clone()) else {
        return Ok(false);
    };
    if acme.not_run_because(config.store.backend).is_some() {
        return Ok(false);
    }
    let path = acme.key_file.clone().unwrap_or_default();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| AcmeError::Key(format!("{}: {e}", path.display())))?;
    let sealer = Sealer::from_key_text(&text)
        .map_err(|e| AcmeError::Key(format!("{}: {e}", path.display())))?;
    let manager = Manager {
        acme,
        sealer,
        keys: Keys::new(&config.redis.prefix),
        live: Arc::clone(live),
        metrics: Arc::clone(metrics),
        served: HashMap::new(),
        backoff: HashMap::new(),
        account: None,
    };
    let store = store.clone();
    crate::background::spawn("reliw-acme", move || async move {
        match store.open() {
            Ok(Some(backend)) => manager.run(&backend).await,
            Ok(None) => tracing::error!("acme: no store to keep certificates in; ACME is off"),
            Err(e) => tracing::error!(error = %e, "acme: cannot open the store; ACME is off"),
        }
    })?;
    Ok(true)
}

/// One node's ACME state.
struct Manager {
    acme: AcmeConfig,
    sealer: Sealer,
    keys: Keys,
    live: Arc<LiveCertificates>,
    metrics: Arc<NodeMetrics>,
    /// The chain served now, by record key (to install only changes).
    served: HashMap<String, String>,
    /// Failed orders by record key: how many, and when to try again.
    backoff: HashMap<String, (u32, Instant)>,
    account: Option<Account>,
}

impl Manager {
    async fn run(mut self, store: &Backend) {
        let names: Vec<&str> = self
            .acme
            .certificates
            .iter()
            .map(|c| c.names[0].as_str())
            .collect();
        tracing::info!(certificates = ?names, directory = self.acme.directory, "acme: managing certificates");
        let interval = Duration::from_secs_f64(self.acme.check_interval);
        loop {
            for cert in self.acme.certificates.clone() {
                self.tend(store, &cert).await;
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Step 1 to 3 of the module doc for one certificate.
    async fn tend(&mut self, store: &Backend, cert: &AcmeCertificate) {
        let key = self.keys.acme_certificate(&cert.names[0]);
        let record = match store.hgetall(&key).await {
            Ok(pairs) => Record::from_fields(&pairs),
            Err(e) => {
                tracing::warn!(certificate = cert.names[0], error = %e, "acme: cannot read the stored certificate");
                return;
            }
        };
        if let Some(r) = &record {
            self.serve(&key, r);
        }
        let renew_before = i64::try_from(self.acme.renew_time).unwrap_or(i64::MAX);
        if record
            .as_ref()
            .is_some_and(|r| !r.is_due(unix_now(), renew_before, &cert.names))
        {
            return;
        }
        if self
            .backoff
            .get(&key)
            .is_some_and(|(_, at)| Instant::now() < *at)
        {
            return;
        }
        let lock = self.keys.acme_lock(&cert.names[0]);
        let token = format!("{}:{}", std::process::id(), unix_now_nanos());
        match store
            .set_nx_with_ttl(&lock, token.as_bytes(), LOCK_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    certificate = cert.names[0],
                    "acme: another node is ordering"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(certificate = cert.names[0], error = %e, "acme: cannot take the order lock");
                return;
            }
        }
        let reason = match &record {
            None => "none stored",
            Some(r) if r.names != cert.names => "names changed",
            Some(_) => "renewal window",
        };
        tracing::info!(certificate = cert.names[0], reason, "acme: ordering");
        let started = Instant::now();
        let result = self.order(store, cert, &key).await;
        if let Err(e) = store.del_if(&lock, token.as_bytes()).await {
            tracing::warn!(certificate = cert.names[0], error = %e, "acme: cannot free the order lock (it expires by itself)");
        }
        match result {
            Ok(record) => {
                self.metrics
                    .acme_orders
                    .get_or_create(&[("result", "issued")])
                    .inc();
                self.backoff.remove(&key);
                tracing::info!(
                    certificate = cert.names[0],
                    not_after = record.not_after,
                    took_ms = started.elapsed().as_millis() as u64,
                    "acme: certificate issued and stored"
                );
                self.serve(&key, &record);
            }
            Err(e) => {
                self.metrics
                    .acme_orders
                    .get_or_create(&[("result", "failed")])
                    .inc();
                let failures = self.backoff.get(&key).map_or(0, |(n, _)| *n) + 1;
                let wait = Duration::from_secs_f64(self.acme.check_interval)
                    .saturating_mul(1 << failures.min(16))
                    .min(MAX_BACKOFF);
                self.backoff.insert(key, (failures, Instant::now() + wait));
                tracing::error!(certificate = cert.names[0], error = %e, failures, retry_in_s = wait.as_secs(), "acme: order failed");
            }
        }
    }

    /// Orders `cert` and stores it: the stored record.
    async fn order(
        &mut self,
        store: &Backend,
        cert: &AcmeCertificate,
        key: &str,
    ) -> Result<Record, String> {
        let account = self.account(store).await?;
        let issued = order::issue(&account, cert, &self.acme, store, &self.keys).await?;
        let record = Record::seal(
            issued.chain_pem,
            &issued.key_pem,
            &cert.names,
            &self.sealer,
            key,
        )?;
        // Kept a week past expiry, then gone by itself.
        let ttl = Duration::from_secs(
            u64::try_from(record.not_after - unix_now()).unwrap_or(0) + 7 * 86_400,
        );
        let fields = record.fields();
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|(f, v)| (*f, v.as_slice())).collect();
        store
            .hset_with_ttl(key, &fields, ttl)
            .await
            .map_err(|e| format!("storing the certificate: {e}"))?;
        Ok(record)
    }

    /// The account: this process's, the stored one, or a new one (stored).
    async fn account(&mut self, store: &Backend) -> Result<Account, String> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let key = self.keys.acme_account(&self.acme.directory);
        let builder = || match &self.acme.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let builder = builder().map_err(|e| format!("ACME HTTP client: {e}"))?;
        let stored = store
            .get(&key)
            .await
            .map_err(|e| format!("reading the account: {e}"))?;
        let account = match stored {
            Some(sealed) => {
                let text = String::from_utf8(sealed)
                    .map_err(|_| String::from("the stored account is not text"))?;
                let json = self.sealer.open(&text, &key)?;
                let credentials: AccountCredentials = serde_json::from_slice(&json)
                    .map_err(|e| format!("the stored account: {e}"))?;
                builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("the stored account: {e}"))?
            }
            None => {
                let contact: Vec<String> = self
                    .acme
                    .account
                    .iter()
                    .map(|m| format!("mailto:{m}"))
                    .collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.acme.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("creating the account: {e}"))?;
                let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
                let sealed = self.sealer.seal(&json, &key)?;
                store
                    .set_with_ttl(
                        &key,
                        sealed.as_bytes(),
                        Duration::from_secs(10 * 365 * 86_400),
                    )
                    .await
                    .map_err(|e| format!("storing the account: {e}"))?;
                tracing::info!(account = account.id(), "acme: account created");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// Serves `record` from now on, unless it is what is served already.
    fn serve(&mut self, key: &str, record: &Record) {
        if self.served.get(key) == Some(&record.chain_pem) {
            return;
        }
        match record.certified_key(&self.sealer, key) {
            Ok(certified) => {
                self.live.install(&record.names, &certified);
                let first = record.names.first().cloned().unwrap_or_default();
                self.metrics
                    .acme_not_after
                    .get_or_create(&vec![("certificate", first)])
                    .set(record.not_after);
                self.served.insert(key.to_owned(), record.chain_pem.clone());
                tracing::info!(names = ?record.names, not_after = record.not_after, "acme: serving certificate");
            }
            Err(e) => {
                tracing::error!(key, error = %e, "acme: the stored certificate cannot be used")
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

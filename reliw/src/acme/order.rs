//! One ACME order (RFC 8555) with the `instant-acme` client: the
//! challenges answered, the order finalised with a fresh P-256 key, the
//! chain downloaded.
//!
//! - http-01: the key authorization goes to
//!   `P:DATA:<name>:.well-known/acme-challenge/<token>` (RELIW's key), so
//!   whichever node the CA reaches answers it (`site::steps::acme`).
//! - dns-01: the operator's hook publishes the TXT records; reliw waits
//!   `dns_wait` seconds (once per order) before telling the CA to look.
//!
//! Whatever was published is removed again, whether the order worked or not.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use crate::config::{AcmeCertificate, AcmeChallenge, AcmeConfig};
use crate::store::{Backend, Keys, Store as _};

/// How long a published http-01 token lives in the store.
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long the CA may take to validate, and then to issue.
pub(super) const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the DNS hook may take, each call.
pub(super) const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// The CA's answer: the PEM chain and the PEM private key it certifies.
pub(super) struct Issued {
    pub(super) chain_pem: String,
    pub(super) key_pem: String,
}

/// Something published for a challenge, to take back afterwards.
enum Published {
    Token(String),
    Txt { domain: String, value: String },
}

/// Orders `cert` from the CA behind `account`.
pub(super) async fn issue(
    account: &Account,
    cert: &AcmeCertificate,
    acme: &AcmeConfig,
    store: &Backend,
    keys: &Keys,
) -> Result<Issued, String> {
    let mut published = Vec::new();
    let result = run(account, cert, acme, store, keys, &mut published).await;
    for p in published {
        match p {
            Published::Token(key) => {
                if let Err(e) = store.del(&key).await {
                    tracing::warn!(key, error = %e, "acme: cannot remove a challenge token");
                }
            }
            Published::Txt { domain, value } => {
                if let Err(e) = dns_hook(acme, cert, "cleanup", &domain, &value).await {
                    tracing::warn!(domain, error = %e, "acme: dns_hook cleanup failed");
                }
            }
        }
    }
    result
}

async fn run(
    account: &Account,
    cert: &AcmeCertificate,
    acme: &AcmeConfig,
    store: &Backend,
    keys: &Keys,
    published: &mut Vec<Published>,
) -> Result<Issued, String> {
    let ids: Vec<Identifier> = cert
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let (kind, wanted) = match cert.challenge() {
        AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
        AcmeChallenge::Dns01 => (ChallengeType::Dns01, "dns-01"),
    };
    // First every answer is published, then (after one DNS wait) the CA
    // is told to look at all of them: an order's time does not grow with
    // its names.
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(format!("authorization is {other:?}")),
        }
        let challenge = authorization
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {wanted} challenge"))?;
        // A wildcard's identifier is its base name (`*.a.test`: `a.test`).
        let Identifier::Dns(domain) = challenge.identifier().identifier else {
            return Err(String::from("the CA asks about a non-DNS identifier"));
        };
        let domain = domain.clone();
        let authz = challenge.key_authorization();
        match cert.challenge() {
            AcmeChallenge::Http01 => {
                let key = keys.data(
                    &domain,
                    &format!(".well-known/acme-challenge/{}", challenge.token),
                );
                // Noted before it is written: a write that fails halfway
                // is removed all the same.
                published.push(Published::Token(key.clone()));
                store
                    .set_with_ttl(&key, authz.as_str().as_bytes(), TOKEN_TTL)
                    .await
                    .map_err(|e| format!("publishing the http-01 token: {e}"))?;
            }
            AcmeChallenge::Dns01 => {
                let value = authz.dns_value();
                published.push(Published::Txt {
                    domain: domain.clone(),
                    value: value.clone(),
                });
                dns_hook(acme, cert, "present", &domain, &value).await?;
            }
        }
    }
    if cert.challenge() == AcmeChallenge::Dns01 && !published.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(acme.dns_wait)).await;
    }
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {wanted} challenge"))?;
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge ready: {e}"))?;
    }
    let patience = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(POLL_TIMEOUT);
    let status = order
        .poll_ready(&patience)
        .await
        .map_err(|e| format!("waiting for validation: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!(
            "the order is {status:?}, not ready (a challenge failed)"
        ));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&patience)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(Issued { chain_pem, key_pem })
}

/// Runs `dns_hook <action> <domain> _acme-challenge.<domain> <value> <provider>`,
/// bounded in time; its exit status is the answer.
async fn dns_hook(
    acme: &AcmeConfig,
    cert: &AcmeCertificate,
    action: &str,
    domain: &str,
    value: &str,
) -> Result<(), String> {
    let Some(hook) = &acme.dns_hook else {
        return Err(String::from("ssl.acme.dns_hook is not set"));
    };
    let record = format!("_acme-challenge.{domain}");
    let mut command = tokio::process::Command::new(hook);
    command
        .args([
            action,
            domain,
            &record,
            value,
            cert.provider.as_deref().unwrap_or(""),
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(HOOK_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            format!(
                "{} {action} took over {} s",
                hook.display(),
                HOOK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("{} {action}: {e}", hook.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {action} {domain}: {}: {}",
            hook.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

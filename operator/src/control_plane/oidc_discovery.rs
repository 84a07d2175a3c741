//! Discovery of OpenID providers' endpoints (I/O shell): a SecurityPolicy may name only its
//! provider's issuer, as upstream's examples do, and leave the authorization and token
//! endpoints to the issuer's discovery document. The translator does no I/O, so the control
//! plane fetches the documents of the issuers the policies need
//! ([`crate::translate::oidc_issuers_to_discover`]) and hands the results to the translator in
//! its snapshot; each result that arrives triggers a translation.
//!
//! A document is fetched once per issuer and kept while policies need it; a failed fetch is
//! retried with a growing delay. Until an issuer's endpoints are known its policies are
//! `Accepted=False`, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::mpsc;

use super::AbortOnDrop;
use crate::translate::{OidcEndpoints, parse_oidc_discovery};

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before a failed fetch is retried; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(2);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

type Outcome = Result<OidcEndpoints, String>;

/// The discovery results so far, and a fetch task per issuer still wanted.
pub struct OidcDiscovery {
    http: reqwest::Client,
    results: BTreeMap<String, Outcome>,
    fetches: BTreeMap<String, AbortOnDrop>,
    done_tx: mpsc::UnboundedSender<(String, Outcome)>,
    done_rx: mpsc::UnboundedReceiver<(String, Outcome)>,
}

impl std::fmt::Debug for OidcDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcDiscovery")
            .field("wanted", &self.fetches.keys().collect::<Vec<_>>())
            .field("results", &self.results)
            .finish_non_exhaustive()
    }
}

impl OidcDiscovery {
    /// Trusts the public CAs and those of `extra_ca_pem`, whose unreadable certificates are
    /// logged and skipped.
    pub fn new(extra_ca_pem: Option<&str>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut builder = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
        match extra_ca_pem.map(|pem| reqwest::Certificate::from_pem_bundle(pem.as_bytes())) {
            Some(Ok(certificates)) => {
                for certificate in certificates {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "OpenID discovery CA bundle skipped"),
            None => {}
        }
        let http = builder.build().unwrap_or_else(|error| {
            tracing::warn!(%error, "OpenID discovery client: default settings used");
            reqwest::Client::new()
        });
        Self {
            http,
            results: BTreeMap::new(),
            fetches: BTreeMap::new(),
            done_tx,
            done_rx,
        }
    }

    /// Makes `issuers` the ones wanted: starts fetching new ones, forgets the others.
    pub fn want(&mut self, issuers: &BTreeSet<String>) {
        self.results.retain(|issuer, _| issuers.contains(issuer));
        self.fetches.retain(|issuer, _| issuers.contains(issuer));
        for issuer in issuers {
            if !self.fetches.contains_key(issuer) {
                let task = tokio::spawn(fetch_until_found(
                    self.http.clone(),
                    issuer.clone(),
                    self.done_tx.clone(),
                ));
                self.fetches.insert(issuer.clone(), AbortOnDrop(task));
            }
        }
    }

    /// What is known, for the translator's snapshot.
    pub fn results(&self) -> BTreeMap<String, Outcome> {
        self.results.clone()
    }

    /// Whether every wanted issuer has a result (found or failed).
    pub fn settled(&self) -> bool {
        self.fetches.keys().all(|i| self.results.contains_key(i))
    }

    /// Waits for the next result of a wanted issuer and records it; `true` when it changes
    /// what is known.
    pub async fn next(&mut self) -> bool {
        while let Some((issuer, outcome)) = self.done_rx.recv().await {
            if !self.fetches.contains_key(&issuer) {
                continue;
            }
            let changed = self.results.get(&issuer) != Some(&outcome);
            self.results.insert(issuer, outcome);
            return changed;
        }
        false
    }
}

/// Fetches `issuer`'s discovery document until it yields endpoints, reporting every outcome.
async fn fetch_until_found(
    http: reqwest::Client,
    issuer: String,
    done: mpsc::UnboundedSender<(String, Outcome)>,
) {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let outcome = fetch(&http, &issuer).await;
        let found = outcome.is_ok();
        match &outcome {
            Ok(e) => {
                tracing::info!(%issuer, authorization = %e.authorization_endpoint, token = %e.token_endpoint, "OpenID provider discovered")
            }
            Err(error) => {
                tracing::warn!(%issuer, %error, retry_in = ?delay, "OpenID provider discovery failed")
            }
        }
        if done.send((issuer.clone(), outcome)).is_err() || found {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

async fn fetch(http: &reqwest::Client, issuer: &str) -> Outcome {
    let url = crate::translate::oidc_discovery_url(issuer);
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: {status}"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    parse_oidc_discovery(issuer, &body)
}

//! TLS for S3 endpoints: a private CA named by `AWS_CA_BUNDLE`, and TLS
//! handshake failures told apart from network trouble.
//!
//! Garage and MinIO usually sit behind a TLS proxy whose certificate comes
//! from a private CA. The AWS CLI and boto3 trust one through
//! `AWS_CA_BUNDLE`; the Rust SDK does not read that variable, so bk does,
//! and adds the bundle to the system's roots (which `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` replace, as before).
//!
//! An untrusted certificate does not become trusted by retrying. The SDK
//! classes every failed connection as transient and would try
//! `BK_S3_MAX_ATTEMPTS` times with backoff, and the message would end in
//! a "dispatch failure"; bk stops at the first handshake that fails for a
//! reason a retry cannot change and says what to set.

use crate::error::{Error, Result};
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The PEM bundle `AWS_CA_BUNDLE` names, if it is set, checked the way the
/// SDK's client will load it (which panics on what it cannot parse).
pub(super) fn ca_bundle_from_env() -> Result<Option<Vec<u8>>> {
    let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem = std::fs::read(&path)
        .map_err(|e| Error::Usage(format!("cannot read AWS_CA_BUNDLE {shown}: {e}")))?;
    check_bundle(&pem).map_err(|why| Error::Usage(format!("AWS_CA_BUNDLE {shown}: {why}")))?;
    Ok(Some(pem))
}

fn check_bundle(pem: &[u8]) -> std::result::Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
    }
    Ok(())
}

/// The SDK's HTTPS client (rustls on aws-lc-rs) trusting the system's
/// roots and `bundle` besides.
pub(super) fn https_client(bundle: Vec<u8>) -> Result<SharedHttpClient> {
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(bundle))
        .build()
        .map_err(|e| Error::Usage(format!("AWS_CA_BUNDLE: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// What to tell the user when `e` (or an error it wraps) is a TLS
/// handshake failure that a retry cannot mend; `None` otherwise.
pub(super) fn handshake_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let (tls, hint) = permanent_tls_failure(e)?;
    Some(format!("TLS handshake failed: {tls}; {hint}"))
}

/// The TLS error in `e` that a retry cannot mend, with the hint for it.
fn permanent_tls_failure<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<(&'a rustls::Error, &'static str)> {
    use rustls::{CertificateError, Error as Tls};
    let tls = super::find_cause::<rustls::Error>(e)?;
    let hint = match tls {
        Tls::InvalidCertificate(CertificateError::UnknownIssuer)
        | Tls::InvalidCertificate(CertificateError::BadSignature) => {
            "set AWS_CA_BUNDLE to the PEM file of the CA that signed the server's certificate"
        }
        Tls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "address the server by a name its certificate was issued for (AWS_ENDPOINT_URL)",
        Tls::InvalidCertificate(_) => "the server's certificate must be replaced",
        // What a plain-HTTP answer looks like to a TLS client; other
        // malformed records may be damage in transit, left to the retries.
        Tls::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the endpoint may not speak TLS: for a plain-HTTP server write http:// in AWS_ENDPOINT_URL"
        }
        Tls::AlertReceived(_) | Tls::PeerIncompatible(_) | Tls::NoCertificatesPresented => {
            "the server ended the handshake; bk offers TLS 1.2 and 1.3 with current ciphers and no client certificate"
        }
        _ => return None,
    };
    Some((tls, hint))
}

/// Forbids the SDK's retries of a connection whose TLS handshake failed
/// for good ([`permanent_tls_failure`]).
#[derive(Debug)]
pub(super) struct NoRetryOnTlsFailure;

impl ClassifyRetry for NoRetryOnTlsFailure {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(e)) => match e.as_connector_error() {
                Some(c) if permanent_tls_failure(c).is_some() => RetryAction::RetryForbidden,
                _ => RetryAction::NoActionIndicated,
            },
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "bk: no retry on a TLS handshake failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_checked_before_the_sdk_would_panic_on_them() {
        assert!(check_bundle(b"")
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(check_bundle(b"hello\n")
            .unwrap_err()
            .contains("no PEM certificate"));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(check_bundle(bad).unwrap_err().contains("trust anchor"));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(check_bundle(broken)
            .unwrap_err()
            .contains("not a PEM certificate bundle"));
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let msg = handshake_failure(&io).unwrap();
        assert!(msg.contains("UnknownIssuer"), "{msg}");
        assert!(msg.contains("AWS_CA_BUNDLE"), "{msg}");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(handshake_failure(&reset).is_none());
        // A transient TLS error (here a failed decryption) is left to the
        // retry rules.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(handshake_failure(&io).is_none());
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(handshake_failure(&io).unwrap().contains("http://"));
    }
}

//! TLS to fvd with rustls (ring provider).
//!
//! The server's certificate is trusted in exactly one of these ways, chosen by the user:
//! - `--fingerprint HEX`: the leaf certificate's SHA-256 must be this (a pin; the host
//!   name is not checked, the pin being stronger). This fits fvd's self-signed certificate.
//! - `--cafile FILE`: the chain must verify against these PEM certificates and the name
//!   given to `-s` must be in the certificate. fvd's own `fvd-cert.pem` works as a CA file
//!   (it is self-signed) when `-s` names the host as the certificate does (`localhost` or
//!   its hostname).
//! - neither: the system's CA bundle (`SSL_CERT_FILE`, else Debian's or Red Hat's path).
//! - `--no-verify`: anything, with a warning on every connection that shows the
//!   fingerprint. Never the default.
//!
//! When a certificate is refused, the error says its fingerprint and how to trust it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::Error;

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Fingerprint([u8; 32]),
    CaFile(PathBuf),
    System,
    NoVerify,
}

/// Where CA bundles live, in order, after `$SSL_CERT_FILE`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Parses a SHA-256 fingerprint: 64 hex digits, with or without `:` separators, with an
/// optional `sha256:` prefix (as `openssl x509 -fingerprint -sha256` prints it, with its
/// `sha256 Fingerprint=` prefix too).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let t = text.trim();
    let t = t.rsplit_once('=').map_or(t, |(_, h)| h);
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bad = || {
        Error::usage(format!(
            "--fingerprint {text}: not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// `AA:BB:...`, as openssl prints a fingerprint.
pub fn show_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn roots(trust: &Trust) -> Result<Option<RootCertStore>, Error> {
    let path = match trust {
        Trust::CaFile(p) => p.clone(),
        Trust::System => {
            let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let found = env
                .into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
                .find(|p| p.is_file());
            match found {
                Some(p) => p,
                None => {
                    return Err(Error::Tls(
                        "no system CA bundle found; give --cafile FILE or --fingerprint HEX".into(),
                    ))
                }
            }
        }
        Trust::Fingerprint(_) | Trust::NoVerify => return Ok(None),
    };
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(load_pem_certs(&path)?);
    if added == 0 {
        return Err(Error::Tls(format!(
            "{} holds no usable CA certificate",
            path.display()
        )));
    }
    Ok(Some(store))
}

/// The fingerprint of the last certificate a server presented, for error messages.
pub type Seen = Arc<Mutex<Option<[u8; 32]>>>;

#[derive(Debug)]
struct Verifier {
    trust: Trust,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    seen: Seen,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = sha256(end_entity.as_ref());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp);
        }
        match (&self.trust, &self.webpki) {
            (Trust::Fingerprint(pin), _) if *pin == fp => Ok(ServerCertVerified::assertion()),
            (Trust::Fingerprint(_), _) => Err(rustls::Error::General(
                "the certificate's fingerprint is not the one given with --fingerprint".into(),
            )),
            (Trust::NoVerify, _) => Ok(ServerCertVerified::assertion()),
            (_, Some(w)) => w.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            (_, None) => Err(rustls::Error::General("no trust anchors".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Whatever the trust, the server must hold the certificate's key.
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for `trust`, and where the presented certificate's fingerprint
/// is recorded.
pub fn config(trust: &Trust) -> Result<(Arc<ClientConfig>, Seen), Error> {
    let provider = provider();
    let webpki = match roots(trust)? {
        Some(store) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| Error::Tls(e.to_string()))?,
        ),
        None => None,
    };
    let seen: Seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(Verifier {
        trust: trust.clone(),
        webpki,
        provider: provider.clone(),
        seen: seen.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((Arc::new(config), seen))
}

/// The error for a failed handshake: what rustls said, the certificate's fingerprint if
/// one was presented, and how to trust it.
pub fn handshake_error(target: &str, e: &std::io::Error, seen: &Seen) -> Error {
    let fp = seen.lock().ok().and_then(|s| *s);
    let mut msg = format!("handshake with {target} failed: {e}");
    if let Some(fp) = fp {
        msg.push_str(&format!(
            "\nThe server's certificate has SHA-256 fingerprint {}.\n\
             If that is fvd's (on the host: openssl x509 -noout -fingerprint -sha256 -in \
             /var/lib/ferrovisor/fvd-cert.pem), trust it with --fingerprint {} \
             (or FV_FINGERPRINT), or give its certificate with --cafile FILE.",
            show_fingerprint(&fp),
            show_fingerprint(&fp)
        ));
    }
    Error::Tls(msg)
}

/// The name the server is checked against: `-s`'s host (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_owned())
        .map_err(|_| Error::usage(format!("-s {host}: not a host name or IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_openssl_and_plain_forms() {
        let hex = "ab".repeat(32);
        let want = [0xabu8; 32];
        assert_eq!(parse_fingerprint(&hex).unwrap(), want);
        let colons = show_fingerprint(&want);
        assert_eq!(colons.len(), 95);
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={colons}")).unwrap(),
            want
        );
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")).unwrap(), want);
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"ab".repeat(33),
            "é".repeat(64).as_str(),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_build_for_each_trust() {
        assert!(config(&Trust::Fingerprint([0; 32])).is_ok());
        assert!(config(&Trust::NoVerify).is_ok());
        let e = config(&Trust::CaFile("/nonexistent/ca.pem".into())).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(config(&Trust::CaFile(empty)).is_err());
    }

    #[test]
    fn server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn sha256_is_sha256() {
        assert_eq!(
            show_fingerprint(&sha256(b"abc")),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}

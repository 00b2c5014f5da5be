//! The HTTPS certificate: self-signed, made at first start and kept in the data directory,
//! as XAPI does for a fresh host.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

const CERT_FILE: &str = "fvd-cert.pem";
const KEY_FILE: &str = "fvd-key.pem";

fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(Error::io("creating", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io("writing", path))
}

/// Makes the certificate and key if they are missing, for `names` (the host's names).
pub fn ensure_certificate(dir: &Path, names: &[String]) -> Result<(), Error> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::Tls(format!("cannot make a certificate: {e}")))?;
    // Key first: a certificate without its key would be kept and never work.
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(&cert_path);
    write_private(&key_path, &generated.signing_key.serialize_pem(), 0o600)?;
    write_private(&cert_path, &generated.cert.pem(), 0o644)?;
    tracing::info!("made a self-signed certificate: {}", cert_path.display());
    Ok(())
}

/// The acceptor for the TLS listener, from the files in `dir`.
pub fn acceptor(dir: &Path) -> Result<TlsAcceptor, Error> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

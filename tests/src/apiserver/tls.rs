//! The server's identity and its clients' configuration: a CA and a serving certificate made
//! with rcgen (the CA key is kept in the directory and reused, so clients keep trusting a
//! restarted server), the bearer token, and a kubeconfig that kubectl and kube-rs accept.

use std::{fs, io, net::SocketAddr, path::Path, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// Standard base64 (with padding), for `certificate-authority-data`.
#[must_use]
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn ca_params() -> io::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new()).map_err(other)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "egret-test-apiserver-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    Ok(params)
}

/// The server's TLS configuration, and the CA's PEM for clients. Writes `ca.crt` and
/// `ca.key` into `dir` (reusing them when present) .
///
/// # Errors
///
/// When the files cannot be read or written, or a certificate cannot be made.
pub fn server_config(
    dir: &Path,
    listen: SocketAddr,
) -> io::Result<(Arc<rustls::ServerConfig>, String)> {
    let (ca_crt, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let params = ca_params()?;
    let (ca_key, ca_pem) = match (
        fs::read_to_string(&ca_key_path),
        fs::read_to_string(&ca_crt),
    ) {
        (Ok(key), Ok(pem)) => (KeyPair::from_pem(&key).map_err(other)?, pem),
        _ => {
            let key = KeyPair::generate().map_err(other)?;
            let pem = params.self_signed(&key).map_err(other)?.pem();
            fs::write(&ca_key_path, key.serialize_pem())?;
            fs::write(&ca_crt, &pem)?;
            (key, pem)
        }
    };
    let issuer = Issuer::new(params, ca_key);
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ];
    let ip = listen.ip().to_string();
    if !names.contains(&ip) && !listen.ip().is_unspecified() {
        names.push(ip);
    }
    let mut server = CertificateParams::new(names).map_err(other)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "egret-test-apiserver");
    server.not_before = rcgen::date_time_ymd(2020, 1, 1);
    server.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().map_err(other)?;
    let cert = server.signed_by(&key, &issuer).map_err(other)?;
    // ring, as the workspace builds rustls (no C toolchain); its missing post-quantum key
    // exchange does not matter to a lab server on loopback and veths.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), ca_pem))
}

/// The kubeconfig for the server at `url` (`https://ADDR:PORT`).
#[must_use]
pub fn kubeconfig(url: &str, ca_pem: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: egret-lab\n  cluster:\n    server: {url}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: egret-lab\n  user:\n    token: {token}\n\
         contexts:\n- name: egret-lab\n  context:\n    cluster: egret-lab\n    user: egret-lab\n    \
         namespace: default\ncurrent-context: egret-lab\npreferences: {{}}\n",
        ca = base64(ca_pem.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_ca_is_reused_across_starts() {
        let dir = std::env::temp_dir().join(format!("egret-tls-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let addr: SocketAddr = "127.0.0.1:6443".parse().expect("address");
        let (_, first) = server_config(&dir, addr).expect("makes certificates");
        let (_, second) = server_config(&dir, addr).expect("reuses them");
        assert_eq!(first, second);
        assert!(
            kubeconfig("https://127.0.0.1:6443", &first, "t")
                .contains("server: https://127.0.0.1:6443")
        );
        fs::remove_dir_all(dir).expect("cleanup");
    }
}

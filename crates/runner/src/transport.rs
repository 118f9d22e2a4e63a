//! How the runner reaches the control plane: one HTTPS client for `/oauth/token` and a rustls
//! configuration for the WebSocket, both trusting the web PKI plus `TETHER_CA_FILE`, both honouring
//! `HTTPS_PROXY` / `NO_PROXY` (the WebSocket through an HTTP CONNECT tunnel).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use crate::config::RunnerConfig;

#[derive(Debug, Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    pub tls: Arc<rustls::ClientConfig>,
    proxy: Option<Url>,
    no_proxy: Vec<String>,
}

impl Transport {
    pub fn new(config: &RunnerConfig) -> anyhow::Result<Self> {
        let extra: Vec<CertificateDer<'static>> = match &config.ca_file {
            Some(path) => CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading TETHER_CA_FILE {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing TETHER_CA_FILE {}", path.display()))?,
            None => Vec::new(),
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tether-runner/", env!("CARGO_PKG_VERSION")));
        for cert in &extra {
            roots
                .add(cert.clone())
                .context("adding a certificate from TETHER_CA_FILE")?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_der(cert.as_ref())
                    .context("certificate from TETHER_CA_FILE")?,
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS configuration")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok())
                .filter(|v| !v.is_empty())
        };
        let proxy = env(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
            .map(|p| Url::parse(&p).with_context(|| format!("HTTPS_PROXY is not a URL: {p}")))
            .transpose()?;
        let no_proxy = env(&["NO_PROXY", "no_proxy"])
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            http: http.build().context("building the HTTP client")?,
            tls: Arc::new(tls),
            proxy,
            no_proxy,
        })
    }

    /// The proxy to use for `host`, honouring `NO_PROXY` (`*`, exact hosts, domain suffixes).
    fn proxy_for(&self, host: &str) -> Option<&Url> {
        let host = host.to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|entry| {
            let entry = entry.trim_start_matches('.');
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        });
        if bypass {
            None
        } else {
            self.proxy.as_ref()
        }
    }

    /// A TCP stream to `host:port`, through an HTTP CONNECT tunnel when a proxy applies.
    pub async fn connect_tcp(&self, host: &str, port: u16) -> anyhow::Result<TcpStream> {
        let Some(proxy) = self.proxy_for(host) else {
            let stream = TcpStream::connect((host, port))
                .await
                .with_context(|| format!("connecting to {host}:{port}"))?;
            // Session messages are small and latency-bound: no Nagle delay behind delayed ACKs.
            stream.set_nodelay(true).context("setting TCP_NODELAY")?;
            return Ok(stream);
        };
        let proxy_host = proxy.host_str().context("HTTPS_PROXY has no host")?;
        let proxy_port = proxy.port_or_known_default().unwrap_or(8080);
        let mut stream = TcpStream::connect((proxy_host, proxy_port))
            .await
            .with_context(|| format!("connecting to proxy {proxy_host}:{proxy_port}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let mut request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        if !proxy.username().is_empty() {
            use base64::Engine;
            let user = format!(
                "{}:{}",
                proxy.username(),
                proxy.password().unwrap_or_default()
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(user);
            request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .context("writing CONNECT to the proxy")?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192
                || stream
                    .read(&mut byte)
                    .await
                    .context("reading the proxy's answer")?
                    == 0
            {
                bail!("the proxy closed the connection during CONNECT");
            }
            head.push(byte[0]);
        }
        let status_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if status_line.split_whitespace().nth(1) != Some("200") {
            bail!("the proxy refused CONNECT {host}:{port}: {status_line}");
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(no_proxy: &[&str]) -> Transport {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Transport {
            http: reqwest::Client::new(),
            tls: Arc::new(tls),
            proxy: Some(Url::parse("http://proxy:3128").expect("url")),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn no_proxy_matching() {
        let t = transport(&["internal.example", ".corp", "10.0.0.1"]);
        assert!(t.proxy_for("tether.example.com").is_some());
        assert!(t.proxy_for("internal.example").is_none());
        assert!(t.proxy_for("api.internal.example").is_none());
        assert!(t.proxy_for("x.corp").is_none());
        assert!(t.proxy_for("10.0.0.1").is_none());
        assert!(t.proxy_for("notinternal.example").is_some());
        assert!(transport(&["*"]).proxy_for("anything").is_none());
    }
}

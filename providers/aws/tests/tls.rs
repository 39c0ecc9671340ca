//! The HTTPS clients really speak TLS on ring (docs/ARCHITECTURE.md decision 25): a server on
//! 127.0.0.1 with a self-signed certificate made here, answered over https:// by reqwest (after
//! `install_tls_crypto`) and by the AWS SDK's client from `chimera_aws::https_client_with`, and a
//! client that does not trust the certificate is refused before any request is sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, Region, retry::RetryConfig};
use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const VPC_ID: &str = "vpc-0a1b2c3d4e5f60718";

/// EC2's answer to `DescribeVpcs` (the query protocol's XML), one VPC.
fn describe_vpcs_xml() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
    <vpcSet>
        <item>
            <vpcId>{VPC_ID}</vpcId>
            <state>available</state>
            <cidrBlock>10.42.0.0/16</cidrBlock>
            <isDefault>false</isDefault>
        </item>
    </vpcSet>
</DescribeVpcsResponse>"#
    )
}

/// A self-signed certificate for localhost and 127.0.0.1 named `name`, made for this run.
fn certificate(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("subject names");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let signing_key = rcgen::KeyPair::generate().expect("key pair");
    let cert = params
        .self_signed(&signing_key)
        .expect("self-signed certificate");
    rcgen::CertifiedKey { cert, signing_key }
}

/// HTTPS on 127.0.0.1 (ephemeral port), rustls on ring, one connection at a time, each answered
/// with `Connection: close` and the DescribeVpcs body; it keeps the requests it answered.
struct TlsServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    fn start(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> TlsServer {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    // A refused handshake or a broken connection ends that connection only.
                    if let Ok(request) = serve(tcp, config.clone()) {
                        requests.lock().unwrap().push(request);
                    }
                }
            })
        };
        TlsServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request over TLS: its request line and body, answered with the DescribeVpcs XML.
fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> std::io::Result<String> {
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut request_line = String::new();
    tls.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        tls.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0; length];
    tls.read_exact(&mut body)?;
    let xml = describe_vpcs_xml();
    let mut tls = tls.into_inner();
    write!(
        tls,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{xml}",
        xml.len()
    )?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(format!(
        "{} {}",
        request_line.trim_end(),
        String::from_utf8_lossy(&body)
    ))
}

fn reqwest_trusting(pem: &str) -> reqwest::Client {
    chimera_providers::install_tls_crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).expect("PEM")])
        .build()
        .expect("reqwest client")
}

/// EC2 over the SDK's HTTPS client on ring, trusting only `pem`.
fn ec2_trusting(pem: &str, endpoint: &str) -> aws_sdk_ec2::Client {
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem.as_bytes()))
        .build()
        .expect("TLS context");
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version_latest()
        .http_client(chimera_aws::https_client_with(tls))
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        // A refused handshake is a dispatch failure: fail at once rather than retry it.
        .retry_config(RetryConfig::disabled())
        .credentials_provider(Credentials::new(
            "AKIDTLSTEST",
            "tls-test",
            None,
            None,
            "tls",
        ))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// The messages of an error and its sources, one string.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[tokio::test]
async fn reqwest_on_ring_gets_the_answer_over_https() {
    let cert = certificate("chimera tls test");
    let server = TlsServer::start(&cert);
    let response = reqwest_trusting(&cert.cert.pem())
        .post(format!("{}/", server.url()))
        .body("Action=DescribeVpcs&Version=2016-11-15")
        .send()
        .await
        .expect("an answer over https");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(body.contains(VPC_ID), "{body}");
    assert_eq!(
        server.requests(),
        ["POST / HTTP/1.1 Action=DescribeVpcs&Version=2016-11-15"]
    );
}

#[tokio::test]
async fn the_sdk_https_client_on_ring_describes_vpcs_over_https() {
    let cert = certificate("chimera tls test");
    let server = TlsServer::start(&cert);
    let out = ec2_trusting(&cert.cert.pem(), &server.url())
        .describe_vpcs()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e)));
    let vpcs = out.vpcs();
    assert_eq!(vpcs.len(), 1);
    assert_eq!(vpcs[0].vpc_id(), Some(VPC_ID));
    assert_eq!(vpcs[0].cidr_block(), Some("10.42.0.0/16"));
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("POST / HTTP/1.1 Action=DescribeVpcs&Version="),
        "{requests:?}"
    );
}

/// Clients that trust another certificate fail the handshake, and the server never sees a
/// request: an impostor (the server's name, another key) has a bad signature, an unrelated
/// certificate an unknown issuer.
#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let cert = certificate("chimera tls test");
    let server = TlsServer::start(&cert);
    let strangers = [
        (certificate("chimera tls test"), "BadSignature"),
        (certificate("someone else"), "UnknownIssuer"),
    ];
    for (stranger, why) in &strangers {
        let error = reqwest_trusting(&stranger.cert.pem())
            .get(format!("{}/", server.url()))
            .send()
            .await
            .expect_err("an untrusted certificate is refused");
        let text = chain(&error);
        assert!(error.is_connect(), "{text}");
        assert!(text.contains("invalid peer certificate"), "{text}");
        assert!(text.contains(why), "{why}: {text}");

        let error = ec2_trusting(&stranger.cert.pem(), &server.url())
            .describe_vpcs()
            .send()
            .await
            .expect_err("an untrusted certificate is refused");
        let text = aws_sdk_ec2::error::DisplayErrorContext(&error).to_string();
        assert!(
            matches!(error, aws_sdk_ec2::error::SdkError::DispatchFailure(_)),
            "{text}"
        );
        assert!(text.contains("invalid peer certificate"), "{text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    assert_eq!(server.requests(), Vec::<String>::new());
}

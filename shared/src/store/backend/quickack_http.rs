//! The HTTP client bk's S3 backend uses for plain `http://` endpoints: the
//! SDK's own hyper client, except that every read from a connection is
//! acknowledged at once (`TCP_QUICKACK`).
//!
//! Why: Garage and s3s-fs leave Nagle's algorithm on (neither sets
//! `TCP_NODELAY`). A response whose headers and body are written
//! separately puts the headers on the wire and holds the body until they
//! are acknowledged, while Linux, which has just sent the request, delays
//! that acknowledgement by up to 40 ms. Measured with tcpdump against
//! s3s-fs: a 275-byte header segment, then 42 ms until our delayed ACK,
//! then the 8,806-byte body; `bk-ls` took 0.10 s of which 0.09 s was such
//! waits. An immediate ACK after every read costs one `setsockopt` per read.
//! HTTPS endpoints keep the SDK's default client, with its TLS setup; the
//! wait was measured on plain HTTP, which is how the seeds run Garage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An SDK HTTP client for plain-HTTP endpoints whose connections
/// acknowledge every read at once; see the module documentation.
///
/// The SDK asks for a connector on every request attempt, so connectors
/// are kept per connect timeout: a new one would mean a new connection
/// pool, and a new TCP connection for every request.
pub(crate) fn client() -> SharedHttpClient {
    let connectors = Connectors::default();
    http_client_fn(move |settings: &HttpConnectorSettings, _components| {
        connectors.get(settings.connect_timeout())
    })
}

/// The connectors made so far, one per connect timeout.
#[derive(Default)]
struct Connectors(Mutex<Vec<(Option<Duration>, SharedHttpConnector)>>);

impl Connectors {
    fn get(&self, connect_timeout: Option<Duration>) -> SharedHttpConnector {
        let mut connectors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = connectors.iter().find(|(t, _)| *t == connect_timeout) {
            return c.clone();
        }
        let c = SharedHttpConnector::new(QuickAckClient::new(connect_timeout));
        connectors.push((connect_timeout, c.clone()));
        c
    }
}

#[derive(Debug)]
struct QuickAckClient {
    client: hyper_util::client::legacy::Client<QuickAckConnector, SdkBody>,
}

impl QuickAckClient {
    fn new(connect_timeout: Option<Duration>) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(QuickAckConnector { tcp });
        QuickAckClient { client }
    }
}

impl HttpConnector for QuickAckClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let response = client.request(request).await.map_err(classify)?;
            let response = response.map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK's classification of a failed request (its `to_connector_error`
/// for hyper 1): timeouts and I/O failures are transient and retried, a
/// request bk built wrongly is not.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    if err.is_connect() {
        return ConnectorError::io(err.into());
    }
    let hyper_err = super::find_cause::<hyper::Error>(&err);
    if hyper_err.is_some_and(|h| h.is_timeout()) {
        return ConnectorError::timeout(err.into());
    }
    if hyper_err.is_some_and(|h| h.is_user()) {
        return ConnectorError::user(err.into());
    }
    if hyper_err.is_some_and(|h| h.is_closed() || h.is_canceled() || h.is_incomplete_message())
        || super::find_cause::<std::io::Error>(&err).is_some()
    {
        return ConnectorError::io(err.into());
    }
    ConnectorError::other(err.into(), None)
}

/// hyper-util's TCP connector, with its streams wrapped in [`QuickAckStream`].
#[derive(Debug, Clone)]
struct QuickAckConnector {
    tcp: TcpConnector,
}

impl tower_service::Service<http::Uri> for QuickAckConnector {
    type Response = QuickAckStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAckStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            Ok(QuickAckStream {
                io: connecting.await?,
            })
        })
    }
}

/// A TCP stream that acknowledges what it has read at once.
#[derive(Debug)]
struct QuickAckStream {
    io: TokioIo<tokio::net::TcpStream>,
}

impl hyper::rt::Read for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        // Linux clears the flag again whenever it sees a request and its
        // response as an exchange, so it is set after every read. A failure
        // only means the old 40 ms wait. Elsewhere there is no such flag.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Poll::Ready(Ok(())) = polled {
            let _ = socket2::SockRef::from(self.io.inner()).set_tcp_quickack(true);
        }
        polled
    }
}

impl hyper::rt::Write for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.io.inner().connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A keep-alive HTTP/1.1 server that counts its connections and
    /// answers every request with "ok", headers and body in two writes as
    /// Garage and s3s-fs send them.
    fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let (mut buf, mut tmp) = (Vec::new(), [0u8; 4096]);
                    loop {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            match conn.read(&mut tmp) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        buf.drain(..end);
                        if conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                            .is_err()
                            || conn.write_all(b"ok").is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get(connector: &SharedHttpConnector, addr: std::net::SocketAddr) -> Vec<u8> {
        let request = http::Request::builder()
            .uri(format!("http://{addr}/object"))
            .body(SdkBody::empty())
            .unwrap();
        let response = connector
            .call(HttpRequest::try_from(request).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        bytes
    }

    /// Regression: the SDK asks for a connector on every attempt, and a
    /// new connector per request meant a new TCP connection per request
    /// (bk-ls opened 12).
    #[test]
    fn requests_share_one_connection_across_attempts() {
        let (addr, accepted) = server();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connectors = Connectors::default();
        rt.block_on(async {
            for _ in 0..3 {
                let connector = connectors.get(Some(Duration::from_secs(10)));
                assert_eq!(get(&connector, addr).await, b"ok");
            }
        });
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three sequential requests"
        );
    }
}

//! A fault-injecting HTTP proxy for one-request-per-connection S3 traffic:
//! it answers some requests with 500/503 SlowDown, resets or stalls the
//! connection, truncates a response or flips a byte in its body, flips a
//! byte in an upload's body on its way to the server, and forwards the rest
//! to the real server unchanged. It can also hide the server's echo of an
//! upload checksum (a server that ignores `x-amz-checksum-sha256`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    None,
    InternalError,
    SlowDown,
    Reset,
    FlipByte,
    /// A byte of the request body flipped before it reaches the server
    /// (nothing happens to requests without a body).
    FlipRequestByte,
    Truncate,
    Stall,
}

const FAULTS: [Fault; 7] = [
    Fault::InternalError,
    Fault::SlowDown,
    Fault::Reset,
    Fault::FlipByte,
    Fault::FlipRequestByte,
    Fault::Truncate,
    Fault::Stall,
];

/// What the proxy saw of uploads (requests with a body).
#[derive(Debug, Default, Clone, Copy)]
pub struct Uploads {
    pub total: u64,
    pub with_content_md5: u64,
    pub with_sha256_checksum: u64,
    pub unsigned_payload: u64,
    /// Uploads whose body the proxy damaged.
    pub flipped: u64,
}

/// One request the proxy read, as the server would have seen it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD TARGET` (e.g. `PUT /bucket/key?partNumber=1&uploadId=…`).
    pub line: String,
    /// The region of the SigV4 credential scope, if the request was signed.
    pub region: Option<String>,
    pub content_md5: bool,
}

/// What the proxy's threads share with the test, changeable while it runs.
pub struct ProxyState {
    stop: AtomicBool,
    /// Faults that altered what a client or the server got, per kind
    /// (`None`: forwarded unchanged). A fault drawn for a request it cannot
    /// alter (a byte flip with no body) counts as `None`.
    pub counts: Mutex<std::collections::HashMap<Fault, u64>>,
    /// Percent of requests that get a fault.
    pub rate: AtomicU64,
    /// The faults drawn from.
    pub faults: Mutex<Vec<Fault>>,
    /// Remove `x-amz-checksum-*` headers from responses.
    pub hide_checksum_echo: AtomicBool,
    /// Upload bodies the proxy may still damage (unlimited by default).
    pub request_flips_left: AtomicU64,
    pub uploads: Mutex<Uploads>,
    /// Every request read, in the order they were read.
    pub seen: Mutex<Vec<Seen>>,
}

impl ProxyState {
    fn applied(&self, fault: Fault) {
        *self.counts.lock().unwrap().entry(fault).or_insert(0) += 1;
    }

    /// Requests whose `METHOD TARGET` contains `pattern`.
    pub fn requests_matching(&self, pattern: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.line.contains(pattern))
            .cloned()
            .collect()
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl std::ops::Deref for FaultProxy {
    type Target = ProxyState;
    fn deref(&self) -> &ProxyState {
        &self.state
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr, seed: u64, rate_percent: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            stop: AtomicBool::new(false),
            counts: Mutex::new(std::collections::HashMap::new()),
            rate: AtomicU64::new(rate_percent),
            faults: Mutex::new(FAULTS.to_vec()),
            hide_checksum_echo: AtomicBool::new(false),
            request_flips_left: AtomicU64::new(u64::MAX),
            uploads: Mutex::new(Uploads::default()),
            seen: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            let mut x = seed | 1;
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let fault = {
                    let faults = shared.faults.lock().unwrap();
                    if x % 100 < shared.rate.load(Ordering::SeqCst) && !faults.is_empty() {
                        faults[((x >> 8) % faults.len() as u64) as usize]
                    } else {
                        Fault::None
                    }
                };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, fault, &state);
                });
            }
        });
        FaultProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

fn read_request(c: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = c.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut len = 0usize;
    let mut expect = false;
    for line in head.lines() {
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("expect:") && l.contains("100-continue") {
            expect = true;
        }
        assert!(
            !(l.starts_with("transfer-encoding:") && l.contains("chunked")),
            "chunked request bodies are not supported by the fault proxy"
        );
    }
    if expect {
        c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    // Rewrite headers: one request per connection, no 100-continue upstream.
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let l = line.to_ascii_lowercase();
        if l.starts_with("connection:") || l.starts_with("expect:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok((out, body))
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    state: &ProxyState,
) -> std::io::Result<()> {
    let (head, mut body) = read_request(&mut client)?;
    let lower = head.to_ascii_lowercase();
    let content_md5 = lower.contains("\r\ncontent-md5:");
    state.seen.lock().unwrap().push(Seen {
        line: head.split(' ').take(2).collect::<Vec<_>>().join(" "),
        region: lower
            .split_once("credential=")
            .and_then(|(_, scope)| scope.split('/').nth(2))
            .map(str::to_string),
        content_md5,
    });
    let mut flip = false;
    if !body.is_empty() {
        let head = lower;
        flip = fault == Fault::FlipRequestByte
            && state
                .request_flips_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if flip {
            let i = body.len() / 3;
            body[i] ^= 0x40;
        }
        let mut u = state.uploads.lock().unwrap();
        u.total += 1;
        u.flipped += u64::from(flip);
        u.with_content_md5 += u64::from(content_md5);
        u.with_sha256_checksum += u64::from(head.contains("\r\nx-amz-checksum-sha256:"));
        u.unsigned_payload += u64::from(head.contains("x-amz-content-sha256: unsigned-payload"));
    }
    match fault {
        Fault::InternalError => {
            state.applied(fault);
            return client.write_all(&error_response(
                "500 Internal Server Error",
                "InternalError",
            ));
        }
        Fault::SlowDown => {
            state.applied(fault);
            return client.write_all(&error_response("503 Slow Down", "SlowDown"));
        }
        Fault::Stall => {
            state.applied(fault);
            std::thread::sleep(Duration::from_secs(5));
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let mut body_start = find(&resp, b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    if state.hide_checksum_echo.load(Ordering::SeqCst) {
        let head = String::from_utf8_lossy(&resp[..body_start]).to_string();
        let kept: String = head
            .split_inclusive("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("x-amz-checksum-"))
            .collect();
        resp.splice(..body_start, kept.into_bytes());
        body_start = find(&resp, b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(resp.len());
    }
    let has_body = resp.len() > body_start;
    match fault {
        Fault::Reset => {
            // The request reached the server; the client never hears back.
            state.applied(fault);
            let _ = client.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Fault::Truncate if has_body => {
            state.applied(fault);
            let cut = body_start + (resp.len() - body_start) / 2;
            client.write_all(&resp[..cut])
        }
        Fault::FlipByte if has_body => {
            state.applied(fault);
            let i = body_start + (resp.len() - body_start) / 3;
            resp[i] ^= 0x40;
            client.write_all(&resp)
        }
        _ => {
            state.applied(if flip {
                Fault::FlipRequestByte
            } else {
                Fault::None
            });
            client.write_all(&resp)
        }
    }
}

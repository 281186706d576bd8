//! A fault-injecting HTTP proxy for one-request-per-connection S3 traffic:
//! it answers some requests with 500/503 SlowDown, resets or stalls the
//! connection, truncates a response or flips a byte in its body, and
//! forwards the rest to the real server unchanged.

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
    Truncate,
    Stall,
}

const FAULTS: [Fault; 6] = [
    Fault::InternalError,
    Fault::SlowDown,
    Fault::Reset,
    Fault::FlipByte,
    Fault::Truncate,
    Fault::Stall,
];

pub struct FaultProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub counts: Arc<Mutex<std::collections::HashMap<Fault, u64>>>,
    /// Percent of requests that get a fault (changeable while running).
    pub rate: Arc<AtomicU64>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let rate = Arc::new(AtomicU64::new(rate_percent));
        let (stop2, counts2, rate2) = (stop.clone(), counts.clone(), rate.clone());
        std::thread::spawn(move || {
            let rng = Arc::new(Mutex::new(seed | 1));
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let fault = {
                    let mut x = rng.lock().unwrap();
                    *x ^= *x << 13;
                    *x ^= *x >> 7;
                    *x ^= *x << 17;
                    if *x % 100 < rate2.load(Ordering::SeqCst) {
                        FAULTS[((*x >> 8) % FAULTS.len() as u64) as usize]
                    } else {
                        Fault::None
                    }
                };
                *counts2.lock().unwrap().entry(fault).or_insert(0) += 1;
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, fault);
                });
            }
        });
        FaultProxy {
            addr,
            stop,
            counts,
            rate,
        }
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

fn handle(mut client: TcpStream, upstream: SocketAddr, fault: Fault) -> std::io::Result<()> {
    let (head, body) = read_request(&mut client)?;
    match fault {
        Fault::InternalError => {
            return client.write_all(&error_response(
                "500 Internal Server Error",
                "InternalError",
            ))
        }
        Fault::SlowDown => return client.write_all(&error_response("503 Slow Down", "SlowDown")),
        Fault::Stall => {
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
    let body_start = find(&resp, b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    match fault {
        Fault::Reset => {
            // The request reached the server; the client never hears back.
            let _ = client.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Fault::Truncate => {
            let cut = body_start + (resp.len() - body_start) / 2;
            client.write_all(&resp[..cut])
        }
        Fault::FlipByte if resp.len() > body_start => {
            let i = body_start + (resp.len() - body_start) / 3;
            resp[i] ^= 0x40;
            client.write_all(&resp)
        }
        _ => client.write_all(&resp),
    }
}

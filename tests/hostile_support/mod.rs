//! Misbehaving HTTP/1.1 servers for the hostile-server tests: raw bytes on
//! a tokio `TcpListener` on 127.0.0.1, no framework. Each route answers
//! with one `Reply`: a normal answer, an endless (or huge) body, nothing at
//! all, or headers / body trickled one byte at a time. The server records,
//! per request, how many bytes it managed to write and whether the client
//! hung up on it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How an endless body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` declared (this many bytes), then that many sent.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the connection closes.
    Close,
}

impl Framing {
    /// The three framings an oversized answer is tried with.
    pub const ALL: [Framing; 3] = [
        Framing::ContentLength(1 << 40),
        Framing::Chunked,
        Framing::Close,
    ];
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// A normal, complete answer.
    Fixed {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// `status` and a body of `total` bytes (`u64::MAX`: endless).
    Huge {
        status: u16,
        framing: Framing,
        total: u64,
    },
    /// Reads the request, then answers nothing, ever.
    Silent,
    /// The status line and headers one byte every `every`, never ending.
    TrickleHeaders { every: Duration },
    /// Complete headers (`Content-Length: 1000000`), then one body byte
    /// every `every`.
    TrickleBody { every: Duration },
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Fixed {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    /// 200 with an endless body framed as `framing`.
    pub fn endless(framing: Framing) -> Reply {
        Reply::Huge {
            status: 200,
            framing,
            total: u64::MAX,
        }
    }
}

/// How one request ended, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The whole answer was written.
    Completed,
    /// A write failed or the read side closed: the client hung up.
    ClientClosed,
}

#[derive(Clone, Debug)]
pub struct Served {
    pub method: String,
    pub path: String,
    /// Bytes of the answer (head and body) written before it ended.
    pub written: u64,
    pub end: End,
    /// From accepting the connection to the end of this request.
    pub lasted: Duration,
}

pub struct HostileServer {
    url: String,
    /// Paths of the requests read so far (ended or not).
    seen: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<Served>>>,
    task: JoinHandle<()>,
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet: every connection task
        // is aborted with it.
        self.task.abort();
    }
}

const BLOCK: usize = 64 * 1024;

impl HostileServer {
    /// Serves `routes` (first path-prefix match wins; anything else 404).
    pub async fn start(routes: Vec<(&str, Reply)>) -> HostileServer {
        let routes: Arc<Vec<(String, Reply)>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let socket = TcpSocket::new_v4().expect("socket");
        // A small send buffer (inherited by accepted sockets) keeps what
        // the kernel holds for a client that stopped reading small, so the
        // byte counts below say what the client took.
        socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(64).expect("listen");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = (seen.clone(), served.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(connection(stream, routes.clone(), rec.0.clone(), rec.1.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        HostileServer {
            url,
            seen,
            served,
            task,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request that has ended so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().expect("lock").clone()
    }

    /// Requests to paths starting with `prefix` that have ended.
    pub fn served_at(&self, prefix: &str) -> Vec<Served> {
        self.served()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .collect()
    }

    /// How many requests to paths starting with `prefix` were read.
    pub fn requests_at(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    /// Waits until every request to `prefix` read so far (at least one)
    /// has ended; panics after `within`.
    pub async fn wait_all_ended(&self, prefix: &str, within: Duration) -> Vec<Served> {
        let start = Instant::now();
        loop {
            let n = self.requests_at(prefix);
            if n > 0 {
                let got = self.served_at(prefix);
                if got.len() >= n {
                    return got;
                }
            }
            assert!(
                start.elapsed() < within,
                "{}: requests to {prefix} still open after {within:?}: {:?}",
                self.url,
                self.served_at(prefix)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one request head (and its Content-Length body). None: the client
/// closed or sent garbage.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some((method, path))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn connection(
    mut stream: TcpStream,
    routes: Arc<Vec<(String, Reply)>>,
    seen: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<Served>>>,
) {
    let accepted = Instant::now();
    let mut buf = Vec::new();
    while let Some((method, path)) = read_request(&mut stream, &mut buf).await {
        seen.lock().expect("lock").push(path.clone());
        let reply = routes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| Reply::json(404, serde_json::json!({"message": "no route"})));
        let mut written = 0u64;
        let end = answer(&mut stream, &reply, &mut written).await;
        served.lock().expect("lock").push(Served {
            method,
            path,
            written,
            end,
            lasted: accepted.elapsed(),
        });
        if end != End::Completed || !matches!(reply, Reply::Fixed { .. }) {
            return;
        }
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8], written: &mut u64) -> bool {
    // Byte by byte would be exact but slow: a block is counted once it was
    // accepted whole by the kernel.
    match stream.write_all(bytes).await {
        Ok(()) => {
            *written += bytes.len() as u64;
            true
        }
        Err(_) => false,
    }
}

async fn answer(stream: &mut TcpStream, reply: &Reply, written: &mut u64) -> End {
    match reply {
        Reply::Fixed {
            status,
            content_type,
            body,
        } => {
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                reason(*status),
                body.len()
            );
            if write(stream, head.as_bytes(), written).await && write(stream, body, written).await {
                End::Completed
            } else {
                End::ClientClosed
            }
        }
        Reply::Huge {
            status,
            framing,
            total,
        } => {
            let framing_header = match framing {
                Framing::ContentLength(n) => format!("Content-Length: {n}\r\n"),
                Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
                Framing::Close => "Connection: close\r\n".to_string(),
            };
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n{framing_header}\r\n",
                reason(*status)
            );
            if !write(stream, head.as_bytes(), written).await {
                return End::ClientClosed;
            }
            let total = match framing {
                Framing::ContentLength(n) => (*n).min(*total),
                _ => *total,
            };
            // Spaces: valid JSON whitespace, valid CSV... never a value.
            let block = vec![b' '; BLOCK];
            let chunk_head = format!("{BLOCK:x}\r\n");
            let mut sent = 0u64;
            while sent < total {
                let n = (total - sent).min(BLOCK as u64) as usize;
                let ok = if *framing == Framing::Chunked {
                    let mut frame = format!("{n:x}\r\n").into_bytes();
                    if n == BLOCK {
                        frame = chunk_head.clone().into_bytes();
                    }
                    frame.extend_from_slice(&block[..n]);
                    frame.extend_from_slice(b"\r\n");
                    write(stream, &frame, written).await
                } else {
                    write(stream, &block[..n], written).await
                };
                if !ok {
                    return End::ClientClosed;
                }
                sent += n as u64;
            }
            if *framing == Framing::Chunked && !write(stream, b"0\r\n\r\n", written).await {
                return End::ClientClosed;
            }
            let _ = stream.shutdown().await;
            End::Completed
        }
        Reply::Silent => {
            // Wait for the client to give up (EOF or reset).
            let mut sink = [0u8; 1024];
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return End::ClientClosed,
                    Ok(_) => {}
                }
            }
        }
        Reply::TrickleHeaders { every } => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ";
            for i in 0.. {
                let byte = head.get(i).copied().unwrap_or(b'a');
                if !write(stream, &[byte], written).await {
                    return End::ClientClosed;
                }
                tokio::time::sleep(*every).await;
            }
            End::Completed
        }
        Reply::TrickleBody { every } => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
            if !write(stream, head, written).await {
                return End::ClientClosed;
            }
            for _ in 0..1_000_000 {
                if !write(stream, b" ", written).await {
                    return End::ClientClosed;
                }
                tokio::time::sleep(*every).await;
            }
            End::Completed
        }
    }
}

/// This process's peak resident set (`VmHWM`), in KiB.
pub fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Runs `fut`, failing the test if it has not finished after `bound` (a
/// guard that the configured timeout fired, not a speed measurement).
pub async fn within<T>(
    what: &str,
    bound: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(v) => v,
        Err(_) => {
            panic!("{what}: still running after {bound:?}; the client has no working timeout")
        }
    }
}

//! A fault-injecting HTTP proxy for tests: it stands between an S3 client (the library's
//! `S3Store`, or a `force-returns` process) and the S3 test server (moto), forwards every request,
//! and, for a bounded number of requests that match a rule, does something else.
//!
//! It is Rust in the test crate rather than a separate (Python) program: it runs on its own
//! thread and tokio runtime inside the test binary (a test that blocks its own thread, waiting
//! for a child process, does not stall it), tests drive it with typed calls and await its
//! events instead of polling a control port, it needs nothing `tests/run` must install or
//! start, and it owns its sockets, so it can reset a connection (`SO_LINGER` 0) or cut an
//! answer short at an exact byte.
//!
//! # Faults
//!
//! A [`Rule`] matches requests by method and by a regular expression over the request's
//! *target*: the object key, percent-decoded, without the bucket (path-style addressing, as the
//! tests use), followed by `?` and the decoded query when there is one (the Rust SDK adds
//! `?x-id=GetObject`, `?x-id=PutObject`... to most object requests, so anchor a whole key with
//! `\?`, not `$`). So `^incoming/` is every request for an upload's key (`GET` is its download),
//! `^\?.*prefix=_state/done/` the listing of done-markers, `^_state/claims/` a claim. The first rule that matches and has requests left
//! applies; a [`RuleHandle`] tells how many requests it has hit. Each [`Fault`]:
//!
//! - [`Fault::ServerError`]: answers `500 InternalError` (an S3 XML error body), not forwarded;
//! - [`Fault::SlowDown`]: answers `503 SlowDown` (S3's throttling answer), not forwarded;
//! - [`Fault::Reset`]: resets the connection (TCP RST) once the request is read, not forwarded;
//! - [`Fault::ResetAfterForward`]: forwards the request, then resets the connection instead of
//!   answering: the request took effect and its answer was lost;
//! - [`Fault::Truncate`]: forwards, then sends the answer's head and half its body (half its
//!   head when it has no body) and closes the connection;
//! - [`Fault::Delay`]: waits, then forwards; a request whose client gave up meanwhile (its
//!   attempt timed out) is dropped, never forwarded late;
//! - [`Fault::Hold`]: holds the request, unforwarded, until the test decides.
//!
//! # Holding a request (to crash a worker at an exact step)
//!
//! [`FaultProxy::next_held`] waits for the next request a `Hold` rule caught and returns it as
//! a [`Held`]: its method and target, and the decision. While it is held nothing of it has
//! reached the bucket, so a test can kill the worker at exactly that step (say, while its
//! done-marker `PUT` is held, `Rule::new("PUT", "^_state/done/", Fault::Hold)`) and then
//! [`Held::reset`] it, so the bucket never sees it (the worker died before the write), or
//! [`Held::release`] it, to see the write land after its worker died (the write was in
//! flight; [`Held::release_and_wait`] returns once it has landed). A released request goes on
//! through the other rules as if it had just arrived. Dropping a `Held` releases it.
//!
//! Every answer carries `Connection: close` and every connection carries one request: the
//! client opens a new connection for each, as it does after any failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// What the proxy does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 InternalError`, not forwarded.
    ServerError,
    /// `503 SlowDown`, not forwarded.
    SlowDown,
    /// TCP reset once the request is read, not forwarded.
    Reset,
    /// Forwarded, then a TCP reset instead of the answer.
    ResetAfterForward,
    /// Forwarded; the answer's head and half its body, then the connection closes.
    Truncate,
    /// Forwarded after this long, unless the client gave up first.
    Delay(Duration),
    /// Held until the test releases or resets it ([`FaultProxy::next_held`]).
    Hold,
}

/// Which requests get a fault, and how many of them.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    target: Regex,
    times: usize,
    fault: Fault,
}

impl Rule {
    /// Requests with `method` (`"*"` for any) whose target matches the regular expression
    /// `target` get `fault`, once (see [`Rule::times`]).
    pub fn new(method: &str, target: &str, fault: Fault) -> Rule {
        Rule {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            target: Regex::new(target).expect("a valid regular expression"),
            times: 1,
            fault,
        }
    }

    /// The first `times` matching requests get the fault (`usize::MAX`: all of them).
    pub fn times(self, times: usize) -> Rule {
        Rule { times, ..self }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.target.is_match(target)
    }
}

/// A rule in force, and how many requests it has hit.
#[derive(Debug)]
struct Active {
    id: usize,
    rule: Rule,
    hits: AtomicUsize,
}

/// Tells how many requests a rule has hit.
#[derive(Debug, Clone)]
pub struct RuleHandle(Arc<Active>);

impl RuleHandle {
    /// Requests the rule has hit so far.
    pub fn hits(&self) -> usize {
        self.0.hits.load(Ordering::SeqCst)
    }
}

/// What to do with a held request. A release may carry a sender that the proxy drops once
/// it is done with the request.
#[derive(Debug)]
enum Decision {
    Release(Option<oneshot::Sender<()>>),
    Reset,
}

/// A request a [`Fault::Hold`] rule holds.
#[derive(Debug)]
pub struct Held {
    /// Its method.
    pub method: String,
    /// Its target: key (and `?query`), decoded, without the bucket.
    pub target: String,
    decision: Option<oneshot::Sender<Decision>>,
}

impl Held {
    /// Lets the request go on (through the other rules, then to the bucket).
    pub fn release(mut self) {
        self.decide(Decision::Release(None));
    }

    /// Lets the request go on, as [`Held::release`], and returns once the proxy is done with
    /// it: forwarded and answered (or failed on the way), so a write it carried has landed.
    pub async fn release_and_wait(mut self) {
        let (done, finished) = oneshot::channel();
        self.decide(Decision::Release(Some(done)));
        let _ = finished.await;
    }

    /// Resets its connection: the bucket never sees it.
    pub fn reset(mut self) {
        self.decide(Decision::Reset);
    }

    fn decide(&mut self, decision: Decision) {
        if let Some(tx) = self.decision.take() {
            let _ = tx.send(decision);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.decide(Decision::Release(None));
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Arc<Active>>>,
    next_id: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Vec<(String, String)>>,
    held: mpsc::UnboundedSender<Held>,
}

/// The proxy: listening on a loopback port until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    held: tokio::sync::Mutex<mpsc::UnboundedReceiver<Held>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:<port>`), on a free loopback port.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the upstream is http://<ip>:<port>");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            held: held_tx,
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the proxy");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a tokio listener");
                let accepting = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(handle(Arc::clone(&serving), client));
                    }
                };
                tokio::select! {
                    () = accepting => {}
                    _ = stop_rx => {}
                }
            });
            runtime.shutdown_background();
        });
        FaultProxy {
            endpoint,
            shared,
            held: tokio::sync::Mutex::new(held_rx),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give the client.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Puts a rule in force, after those already in force.
    pub fn add(&self, rule: Rule) -> RuleHandle {
        let active = Arc::new(Active {
            id: self.shared.next_id.fetch_add(1, Ordering::SeqCst),
            rule,
            hits: AtomicUsize::new(0),
        });
        lock(&self.shared.rules).push(Arc::clone(&active));
        RuleHandle(active)
    }

    /// Takes every rule out of force: from now on every request is forwarded.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order of arrival: method and target (what rules
    /// match), for writing rules and for messages.
    pub fn seen(&self) -> Vec<(String, String)> {
        lock(&self.shared.seen).clone()
    }

    /// The next request a [`Fault::Hold`] rule caught, waiting at most `within`.
    pub async fn next_held(&self, within: Duration) -> Held {
        tokio::time::timeout(within, async { self.held.lock().await.recv().await })
            .await
            .unwrap_or_else(|_| panic!("no request was held within {within:?}"))
            .expect("the proxy is running")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One HTTP/1.1 message: its head (start line and headers, with the blank line) and body.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    fn start_line(&self) -> &str {
        std::str::from_utf8(&self.head)
            .unwrap_or("")
            .split("\r\n")
            .next()
            .unwrap_or("")
    }

    /// Header values named `name` (any case).
    fn header(&self, name: &str) -> Option<String> {
        std::str::from_utf8(&self.head)
            .ok()?
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    }

    /// The same message with `Connection: close` and without `Expect`: what goes upstream.
    fn closing(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.head);
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let mut out = format!("{}\r\n", lines.next().unwrap_or(""));
        for line in lines {
            let name = line.split(':').next().unwrap_or("").trim();
            if !["connection", "expect", "keep-alive", "proxy-connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Reads one message from `stream`. For a request whose client waits for `100 Continue`, the
/// proxy says it before reading the body. `head_only` marks the answer to a `HEAD`.
async fn read_message(
    stream: &mut TcpStream,
    request: bool,
    head_only: bool,
) -> std::io::Result<Message> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if read_more(stream, &mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    };
    let mut message = Message {
        head: buf[..head_end].to_vec(),
        body: buf[head_end..].to_vec(),
    };
    if request
        && message
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let status = message
        .start_line()
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let bodiless = !request && (head_only || matches!(status, Some(204 | 304)));
    if bodiless {
        message.body.clear();
    } else if let Some(length) = message.header("content-length") {
        let length: usize = length.parse().unwrap_or(0);
        while message.body.len() < length {
            if read_more(stream, &mut message.body).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        message.body.truncate(length);
    } else if message
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    {
        while !chunked_complete(&message.body) {
            if read_more(stream, &mut message.body).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    } else if !request {
        // An answer without a length ends when the connection does.
        while read_more(stream, &mut message.body).await? > 0 {}
    }
    Ok(message)
}

/// Appends what the stream has next to `buf`; 0 at its end.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(64 * 1024);
    stream.read_buf(buf).await
}

/// Whether `body` holds a whole chunked body: chunks, the last one empty, and the trailers.
fn chunked_complete(body: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let Some(line_end) = body[at..].windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&body[at..at + line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return true;
        };
        at += line_end + 2;
        if size == 0 {
            return body[at..].windows(2).any(|w| w == b"\r\n")
                && (body[at..].starts_with(b"\r\n")
                    || body[at..].windows(4).any(|w| w == b"\r\n\r\n"));
        }
        if body.len() < at + size + 2 {
            return false;
        }
        at += size + 2;
    }
}

/// The request's target: decoded key without the bucket, then `?query` if any.
fn target_of(request_target: &str) -> String {
    let (path, query) = request_target
        .split_once('?')
        .unwrap_or((request_target, ""));
    let path = path.trim_start_matches('/');
    let key = path.split_once('/').map_or("", |(_bucket, key)| key);
    let mut target = decode(key);
    if !query.is_empty() {
        target.push('?');
        target.push_str(&decode(query));
    }
    target
}

/// Percent-decoding (and `+` left as it is, as S3 keys keep it).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rule that applies to a request: the first that matches and has requests left, its hit
/// counted; its id and fault. `skip` is a rule already spent on this request (a hold it was
/// released from).
fn decide(
    shared: &Shared,
    method: &str,
    target: &str,
    skip: Option<usize>,
) -> Option<(usize, Fault)> {
    let rules = lock(&shared.rules);
    rules.iter().find_map(|active| {
        if Some(active.id) == skip || !active.rule.matches(method, target) {
            return None;
        }
        let taken = active
            .hits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |hits| {
                (hits < active.rule.times).then_some(hits + 1)
            });
        taken.is_ok().then_some((active.id, active.rule.fault))
    })
}

/// Serves one connection: one request.
async fn handle(shared: Arc<Shared>, mut client: TcpStream) {
    let Ok(request) = read_message(&mut client, true, false).await else {
        return;
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let start = request.start_line().to_owned();
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = target_of(parts.next().unwrap_or(""));
    lock(&shared.seen).push((method.clone(), target.clone()));
    let mut skip = None;
    // Dropped when this request is done with, for a test waiting in `release_and_wait`.
    let mut released_to = None;
    let fault = loop {
        match decide(&shared, &method, &target, skip) {
            Some((id, Fault::Hold)) => {
                let (tx, rx) = oneshot::channel();
                let held = Held {
                    method: method.clone(),
                    target: target.clone(),
                    decision: Some(tx),
                };
                if shared.held.send(held).is_err() {
                    return reset(client);
                }
                match rx.await {
                    Ok(Decision::Release(done)) => {
                        skip = Some(id);
                        released_to = done;
                    }
                    Err(_) => skip = Some(id),
                    Ok(Decision::Reset) => return reset(client),
                }
            }
            other => break other.map(|(_, fault)| fault),
        }
    };
    match fault {
        None | Some(Fault::Hold) => pass_on(&shared, &request, &method, client).await,
        Some(Fault::ServerError) => {
            answer_error(
                client,
                &method,
                "500 Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
            .await;
        }
        Some(Fault::SlowDown) => {
            answer_error(
                client,
                &method,
                "503 Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            )
            .await;
        }
        Some(Fault::Reset) => reset(client),
        Some(Fault::ResetAfterForward) => {
            let _ = forward(&shared, &request, &method).await;
            reset(client);
        }
        Some(Fault::Truncate) => {
            if let Ok(answer) = forward(&shared, &request, &method).await {
                if answer.body.is_empty() {
                    let _ = client
                        .write_all(&answer.head[..answer.head.len() / 2])
                        .await;
                } else {
                    let _ = client.write_all(&answer.head).await;
                    let _ = client
                        .write_all(&answer.body[..answer.body.len() / 2])
                        .await;
                }
            }
            let _ = client.shutdown().await;
        }
        Some(Fault::Delay(wait)) => {
            tokio::select! {
                () = tokio::time::sleep(wait) => pass_on(&shared, &request, &method, client).await,
                () = closed(&client) => {}
            }
        }
    }
    drop(released_to);
}

/// Forwards the request and passes the answer back whole.
async fn pass_on(shared: &Shared, request: &Message, method: &str, mut client: TcpStream) {
    match forward(shared, request, method).await {
        Ok(answer) => {
            let _ = client.write_all(&answer.head).await;
            let _ = client.write_all(&answer.body).await;
            let _ = client.shutdown().await;
        }
        // The bucket could not be reached: the client sees the connection fail.
        Err(_) => reset(client),
    }
}

/// Sends the request upstream on a new connection and reads the whole answer.
async fn forward(shared: &Shared, request: &Message, method: &str) -> std::io::Result<Message> {
    let mut upstream = TcpStream::connect(shared.upstream).await?;
    upstream.write_all(&request.closing()).await?;
    read_message(&mut upstream, false, method == "HEAD").await
}

async fn answer_error(mut client: TcpStream, method: &str, status: &str, code: &str, text: &str) {
    let body = if method == "HEAD" {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{text}</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>"
        )
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: FAULTPROXY\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Drops the connection with a TCP reset.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

/// Resolves when the client closes its side (it gave up waiting).
async fn closed(client: &TcpStream) {
    let mut probe = [0u8; 1];
    loop {
        if client.readable().await.is_err() {
            return;
        }
        match client.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proxy itself, in front of a tiny upstream that answers every request alike.

    use std::time::Instant;

    use super::*;

    const BODY: &str = "twenty-two bytes body!";

    /// An upstream that answers `200 OK` with [`BODY`] (and counts requests).
    async fn upstream() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    if read_message(&mut s, true, false).await.is_ok() {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"e\"\r\nConnection: close\r\n\r\n{BODY}",
                            BODY.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        (endpoint, count)
    }

    /// Sends one raw request and reads until the connection ends.
    async fn send(proxy: &FaultProxy, method: &str, target: &str) -> std::io::Result<String> {
        let addr = proxy.endpoint().trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_fault_hits_only_the_requests_it_matches_and_as_many_as_it_is_told() {
        let (endpoint, forwarded) = upstream().await;
        let proxy = FaultProxy::start(&endpoint);
        let slow = proxy.add(Rule::new("GET", "^incoming/", Fault::SlowDown).times(2));
        let error = proxy.add(Rule::new("PUT", "^_state/done/", Fault::ServerError));
        let listing = proxy.add(Rule::new(
            "*",
            r"^\?.*prefix=_state/claims/",
            Fault::Truncate,
        ));

        for _ in 0..2 {
            let answer = send(&proxy, "GET", "/b/incoming/kent/a%20b.csv")
                .await
                .unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 503 Slow Down\r\n")
                    && answer.contains("<Code>SlowDown</Code>"),
                "{answer}"
            );
        }
        assert_eq!(forwarded.load(Ordering::SeqCst), 0, "not forwarded");
        let answer = send(&proxy, "GET", "/b/incoming/kent/a%20b.csv")
            .await
            .unwrap();
        assert!(answer.ends_with(BODY), "the third is forwarded: {answer}");
        assert_eq!(slow.hits(), 2);

        let answer = send(&proxy, "PUT", "/b/_state/done/m.json").await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 500 ") && answer.contains("<Code>InternalError</Code>"),
            "{answer}"
        );
        assert!(
            send(&proxy, "GET", "/b/_state/done/m.json")
                .await
                .unwrap()
                .ends_with(BODY),
            "another method is not matched"
        );
        assert_eq!(error.hits(), 1);

        let answer = send(&proxy, "GET", "/b?list-type=2&prefix=_state%2Fclaims%2F")
            .await
            .unwrap();
        assert!(answer.contains("Content-Length: 22\r\n"), "{answer}");
        assert!(
            answer.ends_with(&BODY[..11]),
            "half the body, then the end: {answer}"
        );
        assert_eq!(listing.hits(), 1);
        assert_eq!(proxy.requests(), 6);
        assert_eq!(forwarded.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resets_before_and_after_forwarding_and_delays() {
        let (endpoint, forwarded) = upstream().await;
        let proxy = FaultProxy::start(&endpoint);
        proxy.add(Rule::new("GET", "^a$", Fault::Reset));
        let err = send(&proxy, "GET", "/b/a").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(forwarded.load(Ordering::SeqCst), 0);

        proxy.add(Rule::new("PUT", "^a$", Fault::ResetAfterForward));
        let err = send(&proxy, "PUT", "/b/a").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(forwarded.load(Ordering::SeqCst), 1, "the write took effect");

        let wait = Duration::from_millis(300);
        proxy.add(Rule::new("GET", "^slow$", Fault::Delay(wait)));
        let started = Instant::now();
        let answer = send(&proxy, "GET", "/b/slow").await.unwrap();
        assert!(answer.ends_with(BODY));
        assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
        assert_eq!(forwarded.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_request_waits_for_the_test_and_goes_on_through_the_other_rules() {
        let (endpoint, forwarded) = upstream().await;
        let proxy = Arc::new(FaultProxy::start(&endpoint));
        proxy.add(Rule::new("PUT", "^_state/done/", Fault::Hold).times(2));

        let sending = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { send(&proxy, "PUT", "/b/_state/done/m%201.json").await })
        };
        let held = proxy.next_held(Duration::from_secs(10)).await;
        assert_eq!(
            (held.method.as_str(), held.target.as_str()),
            ("PUT", "_state/done/m 1.json")
        );
        assert_eq!(
            forwarded.load(Ordering::SeqCst),
            0,
            "nothing reached the bucket"
        );
        held.release();
        assert!(sending.await.unwrap().unwrap().ends_with(BODY));
        assert_eq!(forwarded.load(Ordering::SeqCst), 1);

        // Held, then an outage starts: the released request meets it.
        let sending = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { send(&proxy, "PUT", "/b/_state/done/m2.json").await })
        };
        let held = proxy.next_held(Duration::from_secs(10)).await;
        proxy.add(Rule::new("*", "", Fault::SlowDown));
        held.release();
        let answer = sending.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");

        // Held and reset: the bucket never sees it.
        proxy.clear();
        proxy.add(Rule::new("PUT", "^x$", Fault::Hold));
        let sending = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { send(&proxy, "PUT", "/b/x").await })
        };
        proxy.next_held(Duration::from_secs(10)).await.reset();
        assert_eq!(
            sending.await.unwrap().unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
        assert_eq!(forwarded.load(Ordering::SeqCst), 1);
    }
}

//! A real SMTP server (the RFC 5321 subset a submission client uses) that keeps every message
//! it accepts, so tests can assert on mail sent by the code under test through its normal SMTP
//! transport — pooling, pipelining and encodings included.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mail_parser::{MessageParser, PartType};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Largest message accepted (advertised with the SIZE extension).
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// RFC 5321 §4.5.3.1.4 allows 512 octets per command line; be generous, but bounded.
const MAX_COMMAND_LINE: u64 = 4096;
/// Text lines are limited to 1000 octets by RFC 5321; some clients exceed it, so allow more
/// while still bounding memory per line.
const MAX_DATA_LINE: u64 = 1024 * 1024;
/// Pooled client connections sit idle between messages (lettre's default idle timeout is
/// 60 s), so the server must wait longer than that before hanging up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const HOSTNAME: &str = "cqrs-mailsink.test";

/// One message accepted by the sink.
///
/// `from` and `to` are the SMTP envelope (`MAIL FROM` / `RCPT TO`), which is what was actually
/// delivered; `subject`, `text` and `html` are decoded from the message itself.
#[derive(Clone, PartialEq, Eq)]
pub struct CapturedMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// The decoded text/plain body (converted from HTML when the message has no text part).
    pub text: String,
    /// The decoded text/html body, if the message has one.
    pub html: Option<String>,
    /// The message as received, after undoing dot-stuffing.
    pub raw: String,
}

impl fmt::Debug for CapturedMail {
    // `raw` repeats everything else and makes assertion failures unreadable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedMail")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &self.text)
            .field("html", &self.html)
            .finish_non_exhaustive()
    }
}

impl CapturedMail {
    /// Parses a received message; `from`/`to` come from the envelope.
    pub fn parse(from: String, to: Vec<String>, raw: &[u8]) -> CapturedMail {
        let parsed = MessageParser::default().parse(raw);
        let (subject, text, html) = match &parsed {
            Some(message) => {
                let subject = message.subject().unwrap_or_default().to_owned();
                let text = message
                    .text_bodies()
                    .find_map(|part| match &part.body {
                        PartType::Text(text) => Some(text.to_string()),
                        _ => None,
                    })
                    .or_else(|| message.body_text(0).map(|text| text.into_owned()))
                    .unwrap_or_default();
                let html = message.html_bodies().find_map(|part| match &part.body {
                    PartType::Html(html) => Some(html.to_string()),
                    _ => None,
                });
                (subject, text, html)
            }
            None => (String::new(), String::new(), None),
        };
        CapturedMail {
            from,
            to,
            subject,
            text,
            html,
            raw: String::from_utf8_lossy(raw).into_owned(),
        }
    }

    /// Every http(s) URL in the text body, in order.
    pub fn links(&self) -> Vec<url::Url> {
        find_links(&self.text)
    }

    /// The `token` query parameter of the first http(s) link in the text body.
    pub fn link_token(&self) -> Option<String> {
        let link = self.links().into_iter().next()?;
        link.query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
    }
}

fn find_links(text: &str) -> Vec<url::Url> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = find_scheme(rest) {
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | ')' | ']'))
            .unwrap_or(candidate.len());
        // Sentence punctuation right after a link is not part of it.
        let raw = candidate[..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if let Ok(url) = url::Url::parse(raw) {
            links.push(url);
        }
        rest = &candidate[end.max(1)..];
    }
    links
}

fn find_scheme(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

type OnMessage = Arc<dyn Fn(&CapturedMail) + Send + Sync>;

struct Shared {
    messages: Mutex<Vec<CapturedMail>>,
    /// Number of messages accepted so far; `wait_for` watches it.
    count: watch::Sender<usize>,
    down: AtomicBool,
    next_id: AtomicU64,
    on_message: Option<OnMessage>,
}

impl Shared {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    fn store(&self, mail: CapturedMail) {
        if let Some(callback) = &self.on_message {
            callback(&mail);
        }
        let len = {
            let mut messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
            messages.push(mail);
            messages.len()
        };
        self.count.send_replace(len);
    }
}

/// An SMTP server on a local port that captures every message. Dropping it stops the server
/// and closes open sessions.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl SmtpSink {
    /// Starts a sink on `127.0.0.1:<free port>`.
    pub async fn start() -> SmtpSink {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        SmtpSink::start_on(addr)
            .await
            .unwrap_or_else(|e| panic!("SmtpSink: cannot listen on {addr}: {e}"))
    }

    /// Starts a sink on the given address.
    pub async fn start_on(addr: SocketAddr) -> io::Result<SmtpSink> {
        SmtpSink::listen(addr, None).await
    }

    /// Starts a sink on the given address that also calls `on_message` for each accepted
    /// message (before it becomes visible through [`SmtpSink::messages`]). The callback runs on
    /// the session's task, so it must not block for long.
    pub async fn start_with(
        addr: SocketAddr,
        on_message: impl Fn(&CapturedMail) + Send + Sync + 'static,
    ) -> io::Result<SmtpSink> {
        SmtpSink::listen(addr, Some(Arc::new(on_message))).await
    }

    async fn listen(addr: SocketAddr, on_message: Option<OnMessage>) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            on_message,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SmtpSink {
            addr,
            shared,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("smtp://{}:{}", self.addr.ip(), self.addr.port())
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<CapturedMail> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Messages accepted so far whose envelope includes `recipient` (case-insensitive).
    pub fn messages_to(&self, recipient: &str) -> Vec<CapturedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|to| to.eq_ignore_ascii_case(recipient)))
            .collect()
    }

    /// Forgets every message accepted so far.
    pub fn clear(&self) {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.count.send_replace(0);
    }

    /// Waits until at least `n` messages have been accepted and returns all of them.
    ///
    /// # Panics
    /// When fewer than `n` have arrived after `timeout`; the message says how many did.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<CapturedMail> {
        let mut count = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        if !matches!(reached, Ok(Ok(_))) {
            let messages = self.messages();
            panic!(
                "SmtpSink: expected at least {n} message(s) within {timeout:?}, but {} arrived: {messages:#?}",
                messages.len(),
            );
        }
        self.messages()
    }

    /// While down, new connections are greeted with `421` and closed, and open sessions answer
    /// their next command with `421` and are closed — what a client sees when the mail server
    /// goes away.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Sessions live in this set so that stopping the sink (aborting this task) ends them too.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // SMTP is a lock-step exchange of short lines: with Nagle's algorithm
                    // each reply can wait out the client's delayed ACK (~40 ms).
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(session(stream, shared.clone()));
                }
                // Usually EMFILE or a connection reset before accept; back off briefly rather
                // than spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

enum Step {
    Continue,
    Close,
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

struct Session<R, W> {
    reader: BufReader<R>,
    writer: W,
    shared: Arc<Shared>,
    greeted: bool,
    tx: Transaction,
}

async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let (read, write) = stream.into_split();
    let mut session = Session {
        reader: BufReader::new(read),
        writer: write,
        shared,
        greeted: false,
        tx: Transaction::default(),
    };
    // Errors here are the client hanging up or misbehaving; there is nobody to report to.
    let _ = session.run().await;
}

impl<R, W> Session<R, W>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    async fn run(&mut self) -> io::Result<()> {
        if self.shared.is_down() {
            return self.reply("421 4.3.0 service not available").await;
        }
        self.reply(&format!("220 {HOSTNAME} ESMTP cqrs-testkit sink ready"))
            .await?;
        loop {
            let line =
                match tokio::time::timeout(IDLE_TIMEOUT, self.read_line(MAX_COMMAND_LINE)).await {
                    Ok(line) => line?,
                    Err(_) => {
                        return self
                            .reply("421 4.4.2 idle timeout, closing connection")
                            .await;
                    }
                };
            let Some(line) = line else {
                return Ok(());
            };
            if self.shared.is_down() {
                return self.reply("421 4.3.0 service not available").await;
            }
            let Some(line) = line.strip_suffix(b"\n") else {
                self.reply("500 5.5.2 line too long").await?;
                self.discard_rest_of_line().await?;
                continue;
            };
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            if let Step::Close = self.command(&line).await? {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &str) -> io::Result<Step> {
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, arg.trim()),
            None => (line.trim(), ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                self.greeted = true;
                self.tx = Transaction::default();
                let client = if arg.is_empty() { "client" } else { arg };
                self.reply(&format!(
                    "250-{HOSTNAME} greets {client}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE {MAX_MESSAGE_BYTES}"
                ))
                .await?;
            }
            "HELO" => {
                self.greeted = true;
                self.tx = Transaction::default();
                self.reply(&format!("250 {HOSTNAME}")).await?;
            }
            "MAIL" => self.mail(arg).await?,
            "RCPT" => self.rcpt(arg).await?,
            "DATA" => self.data().await?,
            "RSET" => {
                self.tx = Transaction::default();
                self.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => self.reply("250 2.0.0 OK").await?,
            "VRFY" => {
                self.reply("252 2.1.5 cannot verify, but will accept")
                    .await?;
            }
            "QUIT" => {
                self.reply("221 2.0.0 bye").await?;
                return Ok(Step::Close);
            }
            _ => self.reply("500 5.5.2 command not recognized").await?,
        }
        Ok(Step::Continue)
    }

    async fn mail(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 send EHLO or HELO first").await;
        }
        if self.tx.from.is_some() {
            return self.reply("503 5.5.1 nested MAIL command").await;
        }
        let Some((path, params)) = parse_path(arg, "FROM:") else {
            return self.reply("501 5.5.4 syntax: MAIL FROM:<address>").await;
        };
        let declared_size = params.split_whitespace().find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.eq_ignore_ascii_case("SIZE")
                .then(|| value.parse::<usize>().ok())
                .flatten()
        });
        if declared_size.is_some_and(|size| size > MAX_MESSAGE_BYTES) {
            return self
                .reply("552 5.3.4 message size exceeds fixed maximum message size")
                .await;
        }
        self.tx.from = Some(path);
        self.reply("250 2.1.0 OK").await
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        if self.tx.from.is_none() {
            return self.reply("503 5.5.1 need MAIL before RCPT").await;
        }
        match parse_path(arg, "TO:") {
            Some((path, _)) if !path.is_empty() => {
                self.tx.to.push(path);
                self.reply("250 2.1.5 OK").await
            }
            _ => self.reply("501 5.5.4 syntax: RCPT TO:<address>").await,
        }
    }

    async fn data(&mut self) -> io::Result<()> {
        if self.tx.from.is_none() {
            return self.reply("503 5.5.1 need MAIL before DATA").await;
        }
        if self.tx.to.is_empty() {
            return self.reply("554 5.5.1 no valid recipients").await;
        }
        self.reply("354 start mail input; end with <CRLF>.<CRLF>")
            .await?;
        let mut body = Vec::new();
        let mut too_big = false;
        loop {
            let Some(line) = self.read_line(MAX_DATA_LINE).await? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            // Dot-stuffing (RFC 5321 §4.5.2): the client doubled every leading dot.
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if body.len() + line.len() > MAX_MESSAGE_BYTES {
                too_big = true;
            }
            if !too_big {
                body.extend_from_slice(line);
            }
        }
        let tx = std::mem::take(&mut self.tx);
        if too_big {
            return self
                .reply("552 5.3.4 message size exceeds fixed maximum message size")
                .await;
        }
        let mail = CapturedMail::parse(tx.from.unwrap_or_default(), tx.to, &body);
        self.shared.store(mail);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.reply(&format!("250 2.0.0 OK queued as {id}")).await
    }

    /// One line including its terminator; `None` at end of stream. A line longer than `limit`
    /// comes back without its `\n`.
    async fn read_line(&mut self, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        Ok((n > 0).then_some(line))
    }

    async fn discard_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            match self.read_line(MAX_COMMAND_LINE).await? {
                Some(line) if line.ends_with(b"\n") => return Ok(()),
                Some(_) => continue,
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }

    async fn reply(&mut self, reply: &str) -> io::Result<()> {
        // One write per reply, so a reply never leaves in two segments.
        self.writer
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
        self.writer.flush().await
    }
}

/// Parses `FROM:<path> params` / `TO:<path> params` (keyword case-insensitive, optional space
/// after the colon). Returns the address without brackets (empty for the null path `<>`) and
/// the remaining parameters.
fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((rest[..end].to_owned(), rest[end + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("FROM:<a@b.test> SIZE=10", "FROM:"),
            Some(("a@b.test".to_owned(), "SIZE=10"))
        );
        assert_eq!(parse_path("from: <>", "FROM:"), Some((String::new(), "")));
        assert_eq!(
            parse_path("to:<x@y.test>", "TO:"),
            Some(("x@y.test".to_owned(), ""))
        );
        assert_eq!(parse_path("TO x@y", "TO:"), None);
        assert_eq!(parse_path("", "TO:"), None);
    }

    #[test]
    fn finds_links_and_token() {
        let mail = CapturedMail {
            from: String::new(),
            to: vec![],
            subject: String::new(),
            text: "Hello,\nfollow (https://example.test/reset?token=abc%2Bd&x=1).\nor http://other.test/?token=zzz\n".into(),
            html: None,
            raw: String::new(),
        };
        let links = mail.links();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].host_str(), Some("example.test"));
        assert_eq!(mail.link_token().as_deref(), Some("abc+d"));

        let none = CapturedMail {
            text: "no links here".into(),
            ..mail
        };
        assert_eq!(none.link_token(), None);
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cqrs_testkit::SmtpSink;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn mailer(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
        .port(sink.port())
        .timeout(Some(Duration::from_secs(5)))
        .build()
}

fn mailbox(s: &str) -> Mailbox {
    s.parse().unwrap()
}

fn plain(to: &str, subject: &str, text: &str) -> Message {
    Message::builder()
        .from(mailbox("CQRS <no-reply@cqrs.test>"))
        .to(mailbox(to))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_owned())
        .unwrap()
}

#[tokio::test]
async fn captures_a_single_message() {
    let sink = SmtpSink::start().await;
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));
    let text = "Hello Ada,\r\n\r\nReset your password: https://id.cqrs.test/reset?token=AbC-123_x&x=1\r\n.leading dot survives\r\n";
    mailer(&sink)
        .send(plain(
            "Ada Lovelace <ada@example.test>",
            "Reset your password",
            text,
        ))
        .await
        .unwrap();

    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "no-reply@cqrs.test");
    assert_eq!(mail.to, vec!["ada@example.test".to_owned()]);
    assert_eq!(mail.subject, "Reset your password");
    // lettre ends the data with CRLF . CRLF after the body's own CRLF, so the received
    // message carries one more empty line than was given.
    assert_eq!(
        mail.text.replace("\r\n", "\n").trim_end(),
        text.replace("\r\n", "\n").trim_end()
    );
    assert_eq!(mail.html, None);
    assert_eq!(mail.link_token().as_deref(), Some("AbC-123_x"));
    assert!(mail.raw.contains("Subject: Reset your password"));
    assert_eq!(sink.messages_to("ADA@example.test").len(), 1);
    assert!(sink.messages_to("bob@example.test").is_empty());
}

#[tokio::test]
async fn multipart_with_many_recipients() {
    let sink = SmtpSink::start().await;
    let message = Message::builder()
        .from(mailbox("no-reply@cqrs.test"))
        .to(mailbox("a@example.test"))
        .to(mailbox("b@example.test"))
        .cc(mailbox("c@example.test"))
        .subject("Invitation")
        .multipart(MultiPart::alternative_plain_html(
            "Accept: https://id.cqrs.test/invite?token=t1".to_owned(),
            "<p><a href=\"https://id.cqrs.test/invite?token=t1\">Accept</a></p>".to_owned(),
        ))
        .unwrap();
    mailer(&sink).send(message).await.unwrap();

    let mail = sink.wait_for(1, WAIT).await.remove(0);
    assert_eq!(
        mail.to,
        ["a@example.test", "b@example.test", "c@example.test"]
    );
    assert_eq!(mail.text, "Accept: https://id.cqrs.test/invite?token=t1");
    assert_eq!(
        mail.html.as_deref(),
        Some("<p><a href=\"https://id.cqrs.test/invite?token=t1\">Accept</a></p>")
    );
    assert_eq!(mail.link_token().as_deref(), Some("t1"));
}

#[tokio::test]
async fn decodes_non_ascii_and_long_quoted_printable_lines() {
    let sink = SmtpSink::start().await;
    let long_line = "Zoë Œuvre — ünïcödé ✓ ".repeat(40);
    let text = format!("Grüße, Zoë!\n{long_line}\nhttps://id.cqrs.test/r?token=%C3%A9t%C3%A9\n");
    let message = Message::builder()
        .from(mailbox("no-reply@cqrs.test"))
        .to(mailbox("zoe@example.test"))
        .subject("Réinitialisez votre mot de passe ✓")
        .singlepart(
            SinglePart::builder().header(ContentType::TEXT_PLAIN).body(
                Body::new_with_encoding(text.clone(), ContentTransferEncoding::QuotedPrintable)
                    .unwrap(),
            ),
        )
        .unwrap();
    mailer(&sink).send(message).await.unwrap();

    let mail = sink.wait_for(1, WAIT).await.remove(0);
    assert!(
        mail.raw.contains("quoted-printable"),
        "expected a quoted-printable body: {}",
        mail.raw
    );
    assert!(
        mail.raw.lines().all(|line| line.len() <= 78),
        "quoted-printable lines are wrapped"
    );
    assert_eq!(mail.subject, "Réinitialisez votre mot de passe ✓");
    assert_eq!(mail.text.replace("\r\n", "\n").trim_end(), text.trim_end());
    assert_eq!(mail.link_token().as_deref(), Some("été"));
}

#[tokio::test]
async fn many_concurrent_messages_over_pooled_connections() {
    let sink = SmtpSink::start().await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
        .port(sink.port())
        .pool_config(PoolConfig::new().max_size(4))
        .build();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..40 {
        let transport = transport.clone();
        sends.spawn(async move {
            transport
                .send(plain(
                    &format!("user{i}@example.test"),
                    &format!("message {i}"),
                    &format!("body {i} https://x.test/?token=tok{i}"),
                ))
                .await
        });
    }
    while let Some(result) = sends.join_next().await {
        result.unwrap().unwrap();
    }

    let mails = sink.wait_for(40, WAIT).await;
    assert_eq!(mails.len(), 40);
    for i in 0..40 {
        let to = format!("user{i}@example.test");
        let mine = sink.messages_to(&to);
        assert_eq!(mine.len(), 1, "{to}");
        assert_eq!(mine[0].subject, format!("message {i}"));
        assert_eq!(mine[0].link_token(), Some(format!("tok{i}")));
    }
}

#[tokio::test]
async fn refuses_while_down_and_recovers() {
    let sink = SmtpSink::start().await;
    let transport = mailer(&sink);
    transport
        .send(plain("a@example.test", "before", "1"))
        .await
        .unwrap();

    sink.set_down(true);
    let err = transport
        .send(plain("a@example.test", "while down", "2"))
        .await
        .expect_err("sending while the sink is down must fail");
    assert!(err.is_transient(), "421 is a transient error: {err}");
    // A fresh transport (no pooled connection) is refused at the greeting.
    let fresh = mailer(&sink)
        .send(plain("a@example.test", "while down", "3"))
        .await
        .expect_err("a new connection while down must fail");
    assert!(fresh.is_transient(), "421 is a transient error: {fresh}");

    sink.set_down(false);
    transport
        .send(plain("a@example.test", "after", "4"))
        .await
        .unwrap();
    let subjects: Vec<_> = sink
        .wait_for(2, WAIT)
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[tokio::test]
#[should_panic(expected = "expected at least 2 message(s)")]
async fn wait_for_panics_naming_how_many_arrived() {
    let sink = SmtpSink::start().await;
    mailer(&sink)
        .send(plain("a@example.test", "only one", "1"))
        .await
        .unwrap();
    sink.wait_for(2, Duration::from_millis(500)).await;
}

/// A minimal line-based client for protocol details lettre does not exercise.
struct Raw {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(sink: &SmtpSink) -> (Raw, String) {
        let (read, writer) = TcpStream::connect(sink.addr()).await.unwrap().into_split();
        let mut raw = Raw {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    /// A full (possibly multi-line) reply, lines joined with '\n'.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            if n == 0 {
                break;
            }
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        lines.join("\n")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(
            tokio::time::timeout(WAIT, self.reader.read_line(&mut buf)).await,
            Ok(Ok(0))
        )
    }
}

#[tokio::test]
async fn speaks_the_protocol() {
    let sink = SmtpSink::start().await;
    let (mut c, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("220 "), "{greeting}");

    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("503"));
    let ehlo = c.cmd("EHLO client.test").await;
    for ext in ["8BITMIME", "SMTPUTF8", "PIPELINING", "SIZE"] {
        assert!(ehlo.contains(ext), "EHLO advertises {ext}: {ehlo}");
    }
    assert!(ehlo.lines().last().unwrap().starts_with("250 "));
    assert!(ehlo.lines().next().unwrap().starts_with("250-"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(c.cmd("BOGUS").await.starts_with("500"));
    assert!(c.cmd("RCPT TO:<a@x.test>").await.starts_with("503"));
    assert!(c.cmd("DATA").await.starts_with("503"));

    // A transaction abandoned with RSET delivers nothing.
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@x.test>").await.starts_with("250"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("503"));

    // Pipelined: all commands of a transaction in one write, then the replies in order.
    c.send("MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n")
        .await;
    for expected in ["250", "250", "250", "354"] {
        let reply = c.reply().await;
        assert!(reply.starts_with(expected), "{expected}: {reply}");
    }
    c.send("Subject: one\r\n\r\n..dot-stuffed\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));

    // A second message on the same connection, with HELO this time.
    assert!(c.cmd("HELO old.test").await.starts_with("250 "));
    assert!(c.cmd("mail from: <d@x.test>").await.starts_with("250"));
    assert!(c.cmd("rcpt to: <e@x.test>").await.starts_with("250"));
    assert!(c.cmd("data").await.starts_with("354"));
    c.send("Subject: two\r\n\r\nsecond\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert!(c.closed().await);

    let mails = sink.wait_for(2, WAIT).await;
    assert_eq!(mails[0].from, "");
    assert_eq!(mails[0].to, ["b@x.test", "c@x.test"]);
    assert_eq!(mails[0].subject, "one");
    assert_eq!(mails[0].raw, "Subject: one\r\n\r\n.dot-stuffed\r\n");
    assert_eq!(mails[0].text.trim_end(), ".dot-stuffed");
    assert_eq!(mails[1].from, "d@x.test");
    assert_eq!(mails[1].subject, "two");

    sink.clear();
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn down_ends_sessions_in_progress_and_refuses_new_ones() {
    let sink = SmtpSink::start().await;
    let (mut open, _) = Raw::connect(&sink).await;
    assert!(open.cmd("EHLO a").await.starts_with("250"));

    sink.set_down(true);
    let (mut refused, greeting) = Raw::connect(&sink).await;
    assert_eq!(greeting, "421 4.3.0 service not available");
    assert!(refused.closed().await);

    assert!(open.cmd("NOOP").await.starts_with("421"));
    assert!(open.closed().await);

    sink.set_down(false);
    let (_, greeting) = Raw::connect(&sink).await;
    assert!(greeting.starts_with("220"), "{greeting}");
}

#[tokio::test]
async fn start_with_calls_back_for_each_message() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = SmtpSink::start_with("127.0.0.1:0".parse().unwrap(), move |mail| {
        tx.send(mail.subject.clone()).unwrap();
    })
    .await
    .unwrap();
    mailer(&sink)
        .send(plain("a@example.test", "hello callback", "x"))
        .await
        .unwrap();
    let subject = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert_eq!(subject.as_deref(), Some("hello callback"));
}

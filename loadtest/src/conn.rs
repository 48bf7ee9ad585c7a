//! Connection: one WebSocket to a node, opened with a bearer token, and its reader task.
//!
//! The measured connect is TCP connect + WebSocket upgrade with `Authorization: Bearer` until the
//! `welcome` frame. After that the socket is split: the reader task owns the read half and the
//! connection's `ConnTracker`, records deliveries itself (so a busy sender never delays reading)
//! and forwards acks, errors, sync answers and the close to the owning user task. Reading and
//! writing are separate tasks because a client that stops reading while it writes can stall the
//! server's writes to it and get itself disconnected as a slow consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::stats::recorder::Latency;
use crate::stats::recorder::Recorder;
use crate::target::Target;
use crate::tracker::Arrival;
use crate::tracker::ConnTracker;
use crate::wire;
use crate::wire::Incoming;

/// Largest page a `sync` asks for (the protocol's maximum).
pub const SYNC_LIMIT: usize = 200;
/// Longest wait for the TCP connect, the upgrade and `welcome`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub type Socket = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Socket, Message>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect_failed")]
    Tcp(#[source] std::io::Error),
    #[error("upgrade_failed")]
    Upgrade(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("upgrade_refused_{0}")]
    Refused(u16),
    #[error("no_welcome")]
    NoWelcome,
    #[error("connect_timeout")]
    Timeout,
    #[error("bad_token")]
    BadToken,
}

impl ConnectError {
    /// The error code counted in the report (`connect_failed`, `upgrade_refused_401`, ...).
    pub fn code(&self) -> String {
        self.to_string()
    }
}

/// What the reader tells the user task.
#[derive(Debug)]
pub enum ReaderMsg {
    Ack {
        reference: Option<String>,
        conversation: u64,
        seq: u64,
    },
    Error {
        reference: Option<String>,
        code: String,
        retryable: bool,
        retry_after_ms: Option<u64>,
    },
    /// A `synced` arrived; `complete` is false when a re-sync was needed (and is queued in
    /// `write`).
    Synced { complete: bool },
    /// A frame to write (a re-sync after `limited`).
    Write(String),
    /// The connection ended; the close code if the server sent one.
    Closed { code: Option<u16> },
}

/// A live connection as the user task holds it.
#[derive(Debug)]
pub struct Conn {
    pub sink: Sink,
    pub from_reader: mpsc::UnboundedReceiver<ReaderMsg>,
    reader: JoinHandle<ConnTracker>,
    kill: Option<oneshot::Sender<()>>,
}

impl Conn {
    /// Stop the reader (at most after `grace` for the server's close) and get its tracker.
    pub async fn finish(mut self, grace: Duration) -> Option<ConnTracker> {
        match tokio::time::timeout(grace, &mut self.reader).await {
            Ok(joined) => joined.ok(),
            Err(_) => {
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(());
                }
                self.reader.await.ok()
            }
        }
    }
}

/// Open a connection and send the first `sync` with `cursors`. Returns the connection and when
/// `welcome` arrived (Unix ns).
pub async fn open(
    target: &Target,
    token: &str,
    cursors: &BTreeMap<u64, u64>,
    recorder: Arc<Recorder>,
    shard: usize,
) -> Result<Conn, ConnectError> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, handshake(target, token))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let (mut sink, stream) = socket.split();
    let sync = wire::sync_frame("s0", cursors, SYNC_LIMIT);
    futures_util::SinkExt::send(&mut sink, Message::text(sync))
        .await
        .map_err(ConnectError::Upgrade)?;
    let (tx, from_reader) = mpsc::unbounded_channel();
    let (kill, killed) = oneshot::channel();
    let tracker = ConnTracker::new(cursors);
    let reader = tokio::spawn(read_loop(stream, tracker, tx, recorder, shard, killed));
    Ok(Conn {
        sink,
        from_reader,
        reader,
        kill: Some(kill),
    })
}

async fn handshake(target: &Target, token: &str) -> Result<Socket, ConnectError> {
    let stream = TcpStream::connect(target.addr).await.map_err(ConnectError::Tcp)?;
    stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let mut request = target.ws_url().into_client_request().map_err(ConnectError::Upgrade)?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ConnectError::BadToken)?;
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => ConnectError::Refused(response.status().as_u16()),
            other => ConnectError::Upgrade(other),
        })?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                if matches!(wire::decode(text.as_str()), Ok(Incoming::Welcome)) {
                    return Ok(socket);
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(ConnectError::NoWelcome),
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Socket>,
    mut tracker: ConnTracker,
    tx: mpsc::UnboundedSender<ReaderMsg>,
    recorder: Arc<Recorder>,
    shard: usize,
    mut killed: oneshot::Receiver<()>,
) -> ConnTracker {
    let code = loop {
        let message = tokio::select! {
            _ = &mut killed => break None,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => match wire::decode(text.as_str()) {
                Ok(incoming) => on_frame(incoming, &mut tracker, &tx, &recorder, shard),
                Err(_) => recorder.error(shard, "bad_frame"),
            },
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    let _ = tx.send(ReaderMsg::Closed { code });
    tracker
}

fn on_frame(
    incoming: Incoming,
    tracker: &mut ConnTracker,
    tx: &mpsc::UnboundedSender<ReaderMsg>,
    recorder: &Recorder,
    shard: usize,
) {
    match incoming {
        Incoming::Event {
            conversation,
            seq,
            is_message,
            planned_ns,
        } => {
            let arrival = tracker.on_event(conversation, seq);
            if arrival == Arrival::New && is_message {
                if let Some(planned) = planned_ns {
                    recorder.latency(shard, Latency::Deliver, planned, recorder.clock().now_ns());
                    recorder.count(shard, |c| c.delivered += 1);
                }
            }
        }
        Incoming::Ack {
            reference,
            conversation,
            seq,
            ..
        } => {
            let _ = tx.send(ReaderMsg::Ack {
                reference,
                conversation,
                seq,
            });
        }
        Incoming::Error {
            reference,
            code,
            retryable,
            retry_after_ms,
        } => {
            let _ = tx.send(ReaderMsg::Error {
                reference,
                code,
                retryable,
                retry_after_ms,
            });
        }
        Incoming::Synced { entries, .. } => {
            let limited: Vec<_> = entries.iter().filter(|e| e.limited).collect();
            if limited.is_empty() {
                let _ = tx.send(ReaderMsg::Synced { complete: true });
                return;
            }
            let mut cursors = tracker.cursors();
            for entry in limited {
                cursors.insert(entry.conversation, entry.synced_to);
            }
            tracker.resynced();
            let _ = tx.send(ReaderMsg::Write(wire::sync_frame("s1", &cursors, SYNC_LIMIT)));
            let _ = tx.send(ReaderMsg::Synced { complete: false });
        }
        Incoming::Welcome | Incoming::Other => {}
    }
}

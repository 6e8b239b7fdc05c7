//! The listener and the state every client thread shares.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::client::{read_messages, write_updates, Client, SessionEnd};
use super::config::VncListen;
use super::handshake::handshake;
use super::protocol::server_init;
use super::stream::Stream;
use crate::input::InputSink;
use crate::picture::Picture;

/// Most connections at once (handshakes included); more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has for the whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of each connection's reader thread (its buffers are on the heap).
const THREAD_STACK: usize = 256 * 1024;
/// Stack of each client's update thread (zlib's state is built on the stack first).
const UPDATE_THREAD_STACK: usize = 2 << 20;
/// Interval of the rate limit on connection log lines.
const CONNECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the listener and every client thread share.
pub struct Shared {
    screen: Mutex<Picture>,
    clients: Mutex<Vec<Arc<Client>>>,
    connections: AtomicUsize,
    next_id: AtomicU64,
    updates: AtomicU64,
    stop: AtomicBool,
    password: Option<[u8; 8]>,
    /// Where key and pointer events go.
    pub input: Option<Arc<dyn InputSink>>,
    name: String,
}

impl Shared {
    /// Locks the screen.
    pub fn screen(&self) -> MutexGuard<'_, Picture> {
        self.screen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connected clients (a snapshot).
    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one sent update.
    pub fn count_update(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Updates sent to all clients so far.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    fn remove(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.id != id);
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn bind(at: &VncListen) -> io::Result<Listener> {
        Ok(match at {
            VncListen::Tcp(a) => Listener::Tcp(TcpListener::bind(a)?),
            VncListen::Unix(path) => {
                // A socket file nobody listens on is left over from an earlier run.
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    if m.file_type().is_socket() && UnixStream::connect(path).is_err() {
                        std::fs::remove_file(path)?;
                    }
                }
                Listener::Unix(UnixListener::bind(path)?, path.clone())
            }
        })
    }

    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            Listener::Unix(l, _) => Stream::Unix(l.accept()?.0),
        })
    }

    fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Connects to it (to wake a blocked accept).
    fn poke(&self) {
        let _ = match self {
            Listener::Tcp(l) => l
                .local_addr()
                .and_then(std::net::TcpStream::connect)
                .map(drop),
            Listener::Unix(_, p) => UnixStream::connect(p).map(drop),
        };
    }
}

/// A running server: the listener thread and its clients. Dropping it stops them.
pub struct Server {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    address: String,
}

impl Server {
    /// Listens at `at`; clients must know `password` if there is one; key and pointer events
    /// go to `input`.
    pub fn start(
        at: &VncListen,
        password: Option<[u8; 8]>,
        input: Option<Arc<dyn InputSink>>,
        name: String,
    ) -> io::Result<Server> {
        let listener = Arc::new(Listener::bind(at)?);
        let shared = Arc::new(Shared {
            screen: Mutex::new(Picture::default()),
            clients: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            updates: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            password,
            input,
            name,
        });
        let address = listener.address();
        let (s, l) = (shared.clone(), listener.clone());
        std::thread::Builder::new()
            .name("vnc-listen".into())
            .spawn(move || accept_loop(&s, &l))?;
        Ok(Server {
            shared,
            listener,
            address,
        })
    }

    /// The shared state (screen and clients).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Where it listens (with the port the system chose for port 0).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.listener.poke();
        for c in self.shared.clients() {
            c.close();
        }
        if let Listener::Unix(_, path) = self.listener.as_ref() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Releases a connection slot when the connection's thread ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    loop {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                log_limit::warn_limit_global!(1, CONNECTION_LOG_INTERVAL, "vnc: accept: {e}");
                // Out of fds, say: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            log_limit::warn_limit_global!(
                1,
                CONNECTION_LOG_INTERVAL,
                "vnc: {} refused: already {MAX_CONNECTIONS} connections",
                stream.peer()
            );
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vnc-client-{id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _slot = Slot(&s.connections);
                session(&s, id, stream);
            });
        if let Err(e) = spawned {
            log_limit::warn_limit_global!(1, CONNECTION_LOG_INTERVAL, "vnc: client thread: {e}");
        }
    }
}

/// One connection from handshake to goodbye (the reader runs here, the writer in a thread).
fn session(shared: &Arc<Shared>, id: u64, mut stream: Stream) {
    let peer = stream.peer();
    let hello = stream
        .set_timeouts(Some(HANDSHAKE_TIMEOUT))
        .map_err(Into::into)
        .and_then(|()| handshake(&mut stream, shared.password.as_ref()));
    if let Err(e) = hello {
        log_limit::info_limit_global!(
            20,
            CONNECTION_LOG_INTERVAL,
            "vnc: client {id} ({peer}) handshake failed: {e}"
        );
        return;
    }
    let sockets = stream.set_timeouts(None).and_then(|()| {
        Ok((
            stream.try_clone()?,
            stream.try_clone()?,
            stream.try_clone()?,
        ))
    });
    let (own, writer_socket, reader_socket) = match sockets {
        Ok(s) => s,
        Err(e) => {
            log::warn!("vnc: client {id} ({peer}): {e}");
            return;
        }
    };
    let client = {
        // The size the client is told and its registration happen under the screen lock, so
        // a resize in between cannot be missed.
        let screen = shared.screen();
        let size = screen.size();
        let client = Arc::new(Client::new(id, size, own));
        shared
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client.clone());
        drop(screen);
        if let Err(e) =
            std::io::Write::write_all(&mut stream, &server_init(size.0, size.1, &shared.name))
        {
            log::info!("vnc: client {id} ({peer}): {e}");
            shared.remove(id);
            return;
        }
        client
    };
    log_limit::info_limit_global!(
        20,
        CONNECTION_LOG_INTERVAL,
        "vnc: client {id} connected from {peer}"
    );
    let (s, c) = (shared.clone(), client.clone());
    let writer = std::thread::Builder::new()
        .name(format!("vnc-update-{id}"))
        .stack_size(UPDATE_THREAD_STACK)
        .spawn(move || {
            let r = write_updates(&s, &c, writer_socket);
            c.close();
            r
        });
    let end = read_messages(shared, &client, reader_socket);
    client.close();
    let written = match writer {
        Ok(w) => w.join().unwrap_or(Err(SessionEnd::Stopped)),
        Err(e) => Err(SessionEnd::Io(e)),
    };
    shared.remove(id);
    let sent = client.state().sent;
    let why = match (end, written) {
        (Err(e), _) => e.to_string(),
        (Ok(()), Err(SessionEnd::Io(e))) => format!("sending: {e}"),
        (Ok(()), _) => "closed by the client".to_string(),
    };
    log_limit::info_limit_global!(
        20,
        CONNECTION_LOG_INTERVAL,
        "vnc: client {id} ({peer}) disconnected: {why}; {sent}"
    );
}

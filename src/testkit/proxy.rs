//! A loopback TCP proxy a test can cut: an outage of whatever server sits behind it
//! (the ClickHouse front, a real ClickHouse, Postgres) without touching the server.
//! While cut, open connections are shut down and new ones are closed at once, which is
//! what a client sees when a server or the network goes away.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::KitResult;

/// The proxy; dropping it stops it.
pub struct TcpProxy {
    /// The port clients connect to.
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    target: Arc<Mutex<SocketAddr>>,
}

impl TcpProxy {
    /// Forwards a fresh loopback port to `target`.
    pub fn start(target: SocketAddr) -> KitResult<TcpProxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy cannot listen: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("proxy address: {e}"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("proxy listener: {e}"))?;
        let proxy = TcpProxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            target: Arc::new(Mutex::new(target)),
        };
        let (cut, stop, open) = (proxy.cut.clone(), proxy.stop.clone(), proxy.open.clone());
        let current = proxy.target.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if cut.load(Ordering::SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let target = match current.lock() {
                            Ok(t) => *t,
                            Err(p) => *p.into_inner(),
                        };
                        let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        if let Ok(mut list) = open.lock() {
                            for s in [&client, &server] {
                                if let Ok(c) = s.try_clone() {
                                    list.push(c);
                                }
                            }
                        }
                        pipe(&client, &server);
                        pipe(&server, &client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(proxy)
    }

    /// Every connection breaks; new ones are refused until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.close_all();
    }

    /// Connections are accepted and forwarded again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// From now on forwards to `target`, and breaks every open connection: what a
    /// client sees when a DNS name that follows the primary (PlanetScale's) moves to a
    /// promoted standby.
    pub fn retarget(&self, target: SocketAddr) {
        match self.target.lock() {
            Ok(mut t) => *t = target,
            Err(p) => *p.into_inner() = target,
        }
        self.close_all();
    }

    fn close_all(&self) {
        if let Ok(mut list) = self.open.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.close_all();
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

//! A loopback HTTP proxy that counts how many requests of one kind are in flight at
//! once: what a test needs to prove a bound on concurrency from outside the process.
//!
//! A request is "in flight" on its connection from the first client bytes whose chunk
//! contains the needle (e.g. `query_id=pgch-cdc-` in an insert's request line) until
//! the server's first response bytes. HTTP/1.1 without pipelining (what the clickhouse
//! crate speaks) has at most one request per connection in flight, so the sum over
//! connections is the number of such requests the server is working on.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::KitResult;

/// The proxy; dropping it stops accepting.
pub struct RequestWatch {
    /// The port clients connect to.
    pub port: u16,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

impl RequestWatch {
    /// Forwards a fresh loopback port to `target`, watching requests that contain
    /// `needle` in their first chunk.
    pub fn start(target: SocketAddr, needle: &str) -> KitResult<RequestWatch> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("watch cannot listen: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("watch address: {e}"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("watch listener: {e}"))?;
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let needle: Arc<[u8]> = needle.as_bytes().into();
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let busy = Arc::new(AtomicBool::new(false));
                        forward(&client, &server, Side::Request(needle.clone()), &busy, &c);
                        forward(&server, &client, Side::Response, &busy, &c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(RequestWatch { port, counts, stop })
    }

    /// The most watched requests that were in flight at once since the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.counts.max.load(Ordering::SeqCst)
    }

    /// Watched requests seen since the last reset.
    pub fn total(&self) -> usize {
        self.counts.total.load(Ordering::SeqCst)
    }

    /// Starts counting afresh (e.g. after an initial copy whose inserts differ).
    pub fn reset(&self) {
        self.counts.max.store(
            self.counts.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.counts.total.store(0, Ordering::SeqCst);
    }
}

impl Drop for RequestWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

enum Side {
    Request(Arc<[u8]>),
    Response,
}

fn forward(from: &TcpStream, to: &TcpStream, side: Side, busy: &Arc<AtomicBool>, c: &Arc<Counts>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (busy, c) = (busy.clone(), c.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match &side {
                Side::Request(needle) => {
                    let starts = buf[..n].windows(needle.len()).any(|w| w == &needle[..]);
                    if starts && !busy.swap(true, Ordering::SeqCst) {
                        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        c.max.fetch_max(now, Ordering::SeqCst);
                        c.total.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Side::Response => {
                    if busy.swap(false, Ordering::SeqCst) {
                        c.in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        // A connection that breaks mid-request ends that request.
        if matches!(side, Side::Response) && busy.swap(false, Ordering::SeqCst) {
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

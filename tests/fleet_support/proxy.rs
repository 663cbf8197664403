//! A TCP proxy in the test, between the fleet and Redis, that can delay,
//! stall, reset or black-hole the traffic (`tc netem` is not available).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards as is.
    Pass,
    /// Forwards each chunk after a delay.
    Delay(Duration),
    /// Holds every byte until the fault ends (a stalled Redis).
    Stall,
    /// Closes every connection at once, and new ones as they come.
    Reset,
    /// Accepts and reads, never answers; a connection that lost bytes
    /// this way is closed when the fault ends (a real black hole leaves a
    /// TCP connection dead, never desynchronized).
    BlackHole,
}

/// A running proxy; dropping it stops accepting.
pub struct Proxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `backend` on a free loopback port.
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watch) = watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let watch = watch.clone();
                tokio::spawn(async move {
                    if *watch.borrow() == Fault::Reset {
                        drop(client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pump(cr, sw, watch.clone()) => {}
                        () = pump(sr, cw, watch.clone()) => {}
                    }
                });
            }
        });
        Self { addr, fault, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.fault.send_replace(Fault::Reset);
    }
}

/// Copies one direction under the fault in force; returns to close both.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut lost_bytes = false;
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                let now = *fault.borrow();
                if changed.is_err() || now == Fault::Reset || (lost_bytes && now != Fault::BlackHole) {
                    return;
                }
                continue;
            }
        };
        // Apply the fault in force to this chunk.
        let mut swallow = false;
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Reset => return,
                Fault::BlackHole => {
                    swallow = true;
                    lost_bytes = true;
                    break;
                }
                Fault::Stall => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if swallow {
            continue;
        }
        if lost_bytes {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

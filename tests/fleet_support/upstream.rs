//! A loopback HTTP upstream that counts the requests it is serving at once
//! (a request counts from its arrival until its streamed body ends or is
//! dropped): the oracle for "never above the limit".
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::Router;

/// The concurrency the upstream saw.
#[derive(Default)]
pub struct Counts {
    current: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicUsize,
    /// worker -> (current, peak)
    per_worker: Mutex<HashMap<String, (usize, usize)>>,
}

impl Counts {
    pub fn current(&self) -> usize {
        self.current.load(SeqCst)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
    pub fn served(&self) -> usize {
        self.served.load(SeqCst)
    }
    /// Starts a new measuring window: the peak is the current count.
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), SeqCst);
    }
    pub fn peak_of(&self, worker: &str) -> usize {
        self.per_worker
            .lock()
            .unwrap()
            .get(worker)
            .map_or(0, |c| c.1)
    }
}

/// One request being served; counted out when its body ends or drops.
struct Serving {
    counts: Arc<Counts>,
    worker: String,
}

impl Serving {
    fn new(counts: Arc<Counts>, worker: String) -> Self {
        let now = counts.current.fetch_add(1, SeqCst) + 1;
        counts.peak.fetch_max(now, SeqCst);
        counts.served.fetch_add(1, SeqCst);
        {
            let mut per = counts.per_worker.lock().unwrap();
            let entry = per.entry(worker.clone()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(entry.0);
        }
        Self { counts, worker }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.counts.current.fetch_sub(1, SeqCst);
        if let Some(entry) = self.counts.per_worker.lock().unwrap().get_mut(&self.worker) {
            entry.0 -= 1;
        }
    }
}

/// `ms` and `chunks` from a query such as `ms=20&chunks=3`.
fn query(uri: &Uri) -> (u64, u32) {
    let (mut ms, mut chunks) = (0, 1);
    for pair in uri.query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("ms", v)) => ms = v.parse().unwrap_or(0),
            Some(("chunks", v)) => chunks = v.parse().unwrap_or(1),
            _ => {}
        }
    }
    (ms, chunks)
}

async fn work(State(counts): State<Arc<Counts>>, headers: HeaderMap, uri: Uri) -> Body {
    let worker = headers
        .get("x-worker")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let serving = Serving::new(counts, worker);
    let (ms, chunks) = query(&uri);
    let chunks = chunks.max(1);
    let pause = Duration::from_millis(ms) / chunks;
    let stream = futures::stream::unfold((0, serving), move |(i, serving)| async move {
        if i == chunks {
            drop(serving);
            return None;
        }
        tokio::time::sleep(pause).await;
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"chunk ")),
            (i + 1, serving),
        ))
    });
    Body::from_stream(stream)
}

/// Starts the upstream on a free loopback port.
pub async fn start() -> (SocketAddr, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/work", get(work))
        .with_state(Arc::clone(&counts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, counts)
}

//! A private `redis-server` for one test, benchmark or example: started as
//! a child on a free loopback port with persistence off, killed by PID.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` child.
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
}

/// Whether `redis-server` can be started here.
pub fn redis_server_on_path() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server for the test `what`, or `None` after saying loudly why the
/// test is skipped. With `TC_REQUIRE_REDIS=1` (CI) a missing server fails
/// the test instead.
pub fn redis_or_skip(what: &str) -> Option<RedisServer> {
    if redis_server_on_path() {
        return Some(RedisServer::start());
    }
    let why = "`redis-server` is not on PATH (Debian/Ubuntu: apt-get install -y redis-server)";
    if std::env::var("TC_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
        panic!("{what}: TC_REQUIRE_REDIS=1 but {why}");
    }
    // Straight to the process's stderr, past the test harness's capture,
    // so the skip is seen even when the test passes.
    let message = format!(
        "\n!!!!!!!!!! SKIPPED {what}: {why}; set TC_REQUIRE_REDIS=1 to fail instead !!!!!!!!!!\n"
    );
    match std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
        Ok(mut stderr) => {
            use std::io::Write;
            let _ = stderr.write_all(message.as_bytes());
        }
        Err(_) => eprintln!("{message}"),
    }
    None
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port(), None)
    }

    /// Starts a server that wants `password`.
    pub fn with_password(password: &str) -> Self {
        Self::start_on(free_port(), Some(password.to_owned()))
    }

    fn start_on(port: u16, password: Option<String>) -> Self {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ]);
        if let Some(password) = &password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Self {
            child,
            port,
            password,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills it (SIGKILL by PID) and starts a new one on the same port:
    /// every key is lost, as after a restart without persistence.
    pub fn restart_empty(&mut self) {
        self.kill();
        let fresh = Self::start_on(self.port, self.password.clone());
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A plain client on it, for audits.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid url")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

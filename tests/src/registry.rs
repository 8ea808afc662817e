//! A real OCI registry for tests: Debian's `docker-registry` (CNCF
//! distribution 2.8) on 127.0.0.1, with a configuration, storage and log of
//! the test's own, stopped when dropped.
//!
//! Standard library only, so the CLI tests of the `portcullis` crate include
//! this file too (`#[path]`).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry is set up.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require basic auth; the htpasswd file's content (bcrypt lines).
    pub htpasswd: Option<String>,
}

/// A running `docker-registry serve`.
pub struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    options: RegistryOptions,
}

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, RegistryOptions::default())
    }

    /// A registry set up with `options`, storing under `dir`.
    pub fn start_with(dir: &Path, options: RegistryOptions) -> Self {
        let binary = "docker-registry";
        if Command::new(binary).arg("--version").output().is_err() {
            panic!(
                "`{binary}` is not installed: `scripts/test` installs it \
                 (apt-get install docker-registry)"
            );
        }
        std::fs::create_dir_all(dir).unwrap();
        let mut registry = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.to_owned(),
            options,
        };
        // A port found free can be taken before the registry binds it: retry.
        for _ in 0..5 {
            registry.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            if registry.spawn() {
                return registry;
            }
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            registry.log()
        );
    }

    /// Starts the registry again on the same port and storage (after `stop`).
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "docker-registry did not restart:\n{}",
            self.log()
        );
    }

    /// `127.0.0.1:PORT`: the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the registry logged (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many times the blob `digest` was served (a 200 to a GET in the
    /// access log).
    pub fn blob_downloads(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest} HTTP/1.1\" 200");
        self.log()
            .lines()
            .filter(|line| line.contains("\"GET ") && line.contains(&needle))
            .count()
    }

    /// Where the registry keeps the bytes of blob `digest` (to damage them).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the configuration and starts the process; false if it exited
    /// without listening (its port was taken).
    fn spawn(&mut self) -> bool {
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {}\n",
            self.dir.join("storage").display(),
            self.addr
        );
        if let Some((cert, key)) = &self.options.tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(htpasswd) = &self.options.htpasswd {
            let path = self.dir.join("htpasswd");
            std::fs::write(&path, htpasswd).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: portcullis-test\n    path: {}\n",
                path.display()
            );
        }
        let config_path = self.dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = self.dir.join("registry.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let marker = format!("--- portcullis test: starting on {}", self.addr);
        writeln!(log, "{marker}").unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Connecting is not proof: another process may hold the port.
            let log = self.log();
            let this_run = log.rsplit_once(&marker).map_or("", |(_, after)| after);
            if this_run.contains(&format!("listening on {}", self.addr)) {
                return true;
            }
            if let Some(child) = &mut self.child
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

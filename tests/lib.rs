//! Harness for the end-to-end tests: starts real processes — Helios FHIR
//! Server (the upstream) and the `inkan` binary — on ephemeral loopback
//! ports, and stops them when dropped.
//!
//! The HFS binary comes from `scripts/install-hfs.sh` (or `INKAN_HFS_BIN`);
//! the `inkan` binary from this workspace's target directory (the test
//! script builds it first). A missing binary fails the test loudly: an
//! end-to-end test that silently skips proves nothing.

// Panicking is how a harness reports a broken environment to the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod hfs_db;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `fixtures/<rel>` in the repository (each folder's README gives source and license).
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("fixtures").join(rel)
}

/// A peer installed by one of the project's scripts: `env_var` when set,
/// else `relative` under the cache (`INKAN_CACHE`, default
/// `~/.cache/inkan`). Missing is a loud failure naming the script.
fn cached_binary(env_var: &str, relative: &str, what: &str, script: &str) -> PathBuf {
    if let Ok(bin) = std::env::var(env_var) {
        return bin.into();
    }
    let cache = std::env::var("INKAN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/inkan"));
    let bin = cache.join(relative);
    assert!(
        bin.exists(),
        "{what} not found at {}: run {script} (or scripts/test.sh)",
        bin.display()
    );
    bin
}

/// Helios FHIR Server: `INKAN_HFS_BIN` or scripts/install-hfs.sh's cache.
pub fn hfs_binary() -> PathBuf {
    cached_binary(
        "INKAN_HFS_BIN",
        "hfs-0.2.7-r4-sqlite/bin/hfs",
        "Helios FHIR Server",
        "scripts/install-hfs.sh",
    )
}

/// The `inkan` binary next to this test executable (`target/<profile>/inkan`).
pub fn inkan_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> → target/<profile>/inkan
    let bin = exe.parent().unwrap().parent().unwrap().join("inkan");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p inkan` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub fn wait_until_ok(url: &str, timeout: Duration) -> bool {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send() {
            if response.status().is_success() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Polls until `127.0.0.1:port` accepts TCP connections.
pub fn wait_until_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A running process that is killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's combined output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Resident set size in KiB (Linux), for benches and sanity checks.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_logged(mut command: Command, log_path: &Path) -> Process {
    let log = std::fs::File::create(log_path).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    Process {
        child: Some(child),
        log_path: log_path.to_owned(),
    }
}

/// Helios FHIR Server on a temporary SQLite database.
#[derive(Debug)]
pub struct Hfs {
    pub process: Process,
    pub port: u16,
    /// Where we connect: `http://127.0.0.1:<port>`.
    pub url: String,
    pub database: PathBuf,
    dir: tempfile::TempDir,
}

impl Hfs {
    pub fn start() -> Hfs {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hfs.sqlite");
        Hfs::start_in(dir, database, free_port())
    }

    fn start_in(dir: tempfile::TempDir, database: PathBuf, port: u16) -> Hfs {
        // HFS searches only by the SearchParameters in its data directory.
        let generated = Command::new("python3")
            .arg(workspace_root().join("scripts/hfs-search-parameters.py"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            generated.success(),
            "scripts/hfs-search-parameters.py failed"
        );
        let mut command = Command::new(hfs_binary());
        command
            .arg("--port")
            .arg(port.to_string())
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--database-url")
            .arg(&database)
            .env("HFS_DATA_DIR", dir.path())
            .env("HFS_LOG_LEVEL", "warn")
            .current_dir(dir.path());
        let process = spawn_logged(command, &dir.path().join(format!("hfs-{port}.log")));
        let url = format!("http://127.0.0.1:{port}");
        if !wait_until_ok(&format!("{url}/metadata"), Duration::from_secs(60)) {
            panic!("HFS did not come up on {url}:\n{}", process.log());
        }
        Hfs {
            process,
            port,
            url,
            database,
            dir,
        }
    }

    /// Stops the server (the database stays).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and database.
    pub fn restart(self) -> Hfs {
        let Hfs {
            mut process,
            port,
            database,
            dir,
            ..
        } = self;
        process.kill();
        Hfs::start_in(dir, database, port)
    }
}

fn sekmet_binary() -> PathBuf {
    cached_binary(
        "INKAN_SEKMET_BIN",
        "sekmet-fhir-0.1.1/bin/sekmet",
        "sekmet-fhir",
        "scripts/install-sekmet.sh",
    )
}

/// sekmet-fhir 0.1.1 on a temporary SQLite database: the second upstream,
/// which speaks FHIR XML natively and pages with `_count`/`_offset`
/// (its quirks: [`Quirks`] and docs/upstreams.md).
#[derive(Debug)]
pub struct Sekmet {
    pub process: Process,
    pub port: u16,
    /// Its FHIR base, where we connect: `http://127.0.0.1:<port>/fhir`.
    pub url: String,
    /// The base it writes into its links: `http://localhost:<port>/fhir`,
    /// another name for `url` (as HFS's `http://localhost:8080` is), so URL
    /// rewriting is exercised.
    pub advertised: String,
    /// Tables `resources` (current versions) and `versions` (all).
    pub database: PathBuf,
    /// Removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl Sekmet {
    pub fn start() -> Sekmet {
        Sekmet::start_in(tempfile::tempdir().unwrap(), free_port())
    }

    /// Stops the server (the database stays).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and database.
    pub fn restart(self) -> Sekmet {
        let Sekmet {
            mut process,
            port,
            _dir: dir,
            ..
        } = self;
        process.kill();
        Sekmet::start_in(dir, port)
    }

    fn start_in(dir: tempfile::TempDir, port: u16) -> Sekmet {
        let data = dir.path().join("data");
        let database = data.join("sekmet.db");
        let advertised = format!("http://localhost:{port}/fhir");
        let config = dir.path().join("settings.yaml");
        // A JSON string is a YAML double-quoted scalar.
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        std::fs::write(
            &config,
            format!(
                "base_url: {}\nhost: 127.0.0.1\nport: {port}\ndata_dir: {}\ndb_path: {}\n\
                 simulator: {{enabled: false}}\nlog_inbound: false\n",
                quoted(advertised.as_str()),
                quoted(&data.display().to_string()),
                quoted(&database.display().to_string()),
            ),
        )
        .unwrap();
        let mut command = Command::new(sekmet_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // Its settings come from the file alone.
            .env_remove("SEKMET_CONFIG")
            .env_remove("SEKMET_BASE_URL")
            .env_remove("SEKMET_DB")
            .env_remove("SEKMET_PORT")
            .env_remove("SEKMET_PUBLIC_URL")
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(dir.path());
        let process = spawn_logged(command, &dir.path().join(format!("sekmet-{port}.log")));
        let url = format!("http://127.0.0.1:{port}/fhir");
        if !wait_until_ok(&format!("{url}/metadata"), Duration::from_secs(60)) {
            panic!("sekmet-fhir did not come up on {url}:\n{}", process.log());
        }
        Sekmet {
            process,
            port,
            url,
            advertised,
            database,
            _dir: dir,
        }
    }
}

/// Which real FHIR server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Helios FHIR Server 0.2.7: JSON only, compresses, cursor paging.
    Hfs,
    /// sekmet-fhir 0.1.1: native XML, no compression, `_offset` paging.
    Sekmet,
}

/// Each upstream's quirks that tests must know, in one place (the prose
/// version is docs/upstreams.md).
#[derive(Debug, Clone)]
pub struct Quirks {
    /// Compresses answers when the client accepts gzip.
    pub compresses: bool,
    /// Serves and accepts FHIR XML itself (otherwise the gateway bridges).
    pub native_xml: bool,
    /// The base it writes into its own links (what rewriting must remove).
    pub advertised_base: String,
}

/// A running upstream of either kind.
#[derive(Debug)]
pub enum Upstream {
    Hfs(Hfs),
    Sekmet(Sekmet),
}

impl Upstream {
    pub fn start(kind: UpstreamKind) -> Upstream {
        match kind {
            UpstreamKind::Hfs => Upstream::Hfs(Hfs::start()),
            UpstreamKind::Sekmet => Upstream::Sekmet(Sekmet::start()),
        }
    }

    /// Where the gateway connects.
    pub fn url(&self) -> &str {
        match self {
            Upstream::Hfs(hfs) => &hfs.url,
            Upstream::Sekmet(sekmet) => &sekmet.url,
        }
    }

    pub fn kind(&self) -> UpstreamKind {
        match self {
            Upstream::Hfs(_) => UpstreamKind::Hfs,
            Upstream::Sekmet(_) => UpstreamKind::Sekmet,
        }
    }

    pub fn quirks(&self) -> Quirks {
        match self {
            Upstream::Hfs(_) => Quirks {
                compresses: true,
                native_xml: false,
                advertised_base: "http://localhost:8080".into(),
            },
            Upstream::Sekmet(sekmet) => Quirks {
                compresses: false,
                native_xml: true,
                advertised_base: sekmet.advertised.clone(),
            },
        }
    }

    /// Replaces `from` by `to` in one stored version, directly in the
    /// server's database, behind every API: the insider the seal is for.
    /// Panics when `from` is not in that version.
    pub fn alter_version(
        &self,
        resource_type: &str,
        id: &str,
        version: &str,
        from: &str,
        to: &str,
    ) {
        match self {
            Upstream::Hfs(hfs) => {
                hfs_db::alter_version(&hfs.database, resource_type, id, version, from, to)
            }
            Upstream::Sekmet(sekmet) => {
                // `versions` holds every version, `resources` the current one;
                // both keep the resource JSON (with `meta`) as TEXT.
                let conn = rusqlite::Connection::open(&sekmet.database).unwrap();
                let version: i64 = version.parse().unwrap();
                let json: String = conn
                    .query_row(
                        "SELECT json FROM versions WHERE type = ?1 AND id = ?2 AND version = ?3",
                        rusqlite::params![resource_type, id, version],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(json.contains(from), "{from:?} not in {json}");
                let altered = json.replace(from, to);
                for table in ["versions", "resources"] {
                    conn.execute(
                        &format!(
                            "UPDATE {table} SET json = ?4 WHERE type = ?1 AND id = ?2 AND version = ?3"
                        ),
                        rusqlite::params![resource_type, id, version, altered],
                    )
                    .unwrap();
                }
            }
        }
    }

    /// Whether `text` holds a URL of this upstream (advertised or real).
    pub fn leaks_into(&self, text: &str) -> bool {
        text.contains(&self.quirks().advertised_base) || text.contains(self.url())
    }
}

/// An `inkan serve` process in front of an upstream.
#[derive(Debug)]
pub struct Gateway {
    pub process: Process,
    pub port: u16,
    /// The public FHIR base: `http://127.0.0.1:<port>/fhir`.
    pub base: String,
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway for `upstream_url`, with extra TOML appended to the
    /// generated config (use it for limits and modes).
    pub fn start(upstream_url: &str, extra_toml: &str) -> Gateway {
        Gateway::start_with_upstream_table(upstream_url, extra_toml, "")
    }

    /// A gateway with a TLS listener (`tls_toml` is the `[tls]` table); ready
    /// when its port accepts connections.
    pub fn start_tls(upstream_url: &str, tls_toml: &str) -> Gateway {
        Gateway::launch(upstream_url, tls_toml, "", false, &[])
    }

    /// Like [`Gateway::start`], with extra environment variables (fault
    /// injection).
    pub fn start_with_env(upstream_url: &str, extra_toml: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::launch(upstream_url, extra_toml, "", true, env)
    }

    /// Like [`Gateway::start`], with extra keys for the `[upstream]` table.
    pub fn start_with_upstream_table(
        upstream_url: &str,
        extra_toml: &str,
        upstream_keys: &str,
    ) -> Gateway {
        Gateway::launch(upstream_url, extra_toml, upstream_keys, true, &[])
    }

    fn launch(
        upstream_url: &str,
        extra_toml: &str,
        upstream_keys: &str,
        plain_http: bool,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("inkan.toml");
        let admin_token_file = dir.path().join("admin.token");
        write_private(&admin_token_file, ADMIN_TOKEN.as_bytes());
        let extra_toml = with_ledger_dir(extra_toml, &dir.path().join("ledger"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nbase_path = \"/fhir\"\n{extra_toml}\n[upstream]\nurl = \"{upstream_url}\"\n{upstream_keys}\n[admin]\ntoken_file = \"{}\"\n",
                admin_token_file.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(inkan_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .current_dir(dir.path())
            .envs(env.iter().copied());
        let process = spawn_logged(command, &dir.path().join("inkan.log"));
        let origin = format!("http://127.0.0.1:{port}");
        let up = if plain_http {
            wait_until_ok(&format!("{origin}/-/livez"), Duration::from_secs(20))
        } else {
            wait_until_listening(port, Duration::from_secs(20))
        };
        if !up {
            panic!("inkan did not come up:\n{}", process.log());
        }
        Gateway {
            process,
            port,
            base: format!("{origin}/fhir"),
            origin,
            dir,
        }
    }
}

/// The admin bearer token every test gateway is configured with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

impl Gateway {
    /// GET an admin path (`/-/readyz`) with the admin token.
    pub fn admin_get(&self, path: &str) -> reqwest::blocking::Response {
        client()
            .get(format!("{}{path}", self.origin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
    }

    /// The gateway's `/-/metrics` text.
    pub fn metrics(&self) -> String {
        client()
            .get(format!("{}/-/metrics", self.origin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }
}

/// Writes a secret file readable by its owner only, as the gateway
/// requires of keys and tokens.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A blocking HTTP client with a sane timeout and no automatic redirects
/// (a proxy test must see `Location` as sent).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// OpenSSL's time-stamp authority behind scripts/tsa-shim.py, on a free
/// port, with a test CA (`ca.pem`) and an untrusted one (`rogue-ca.pem`).
#[derive(Debug)]
pub struct TsaShim {
    pub process: Process,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    tls: bool,
}

impl TsaShim {
    pub fn start() -> TsaShim {
        TsaShim::start_with(false)
    }

    /// Over HTTPS, requiring a client certificate (`https-client.pem`,
    /// `https-client.key`; server certificate from `ca.pem`).
    pub fn start_tls() -> TsaShim {
        TsaShim::start_with(true)
    }

    fn start_with(tls: bool) -> TsaShim {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("python3")
            .arg(workspace_root().join("scripts/tsa-shim.py"))
            .arg("init")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "tsa-shim.py init failed (needs openssl)");
        TsaShim::serve(dir, free_port(), tls)
    }

    fn serve(dir: tempfile::TempDir, port: u16, tls: bool) -> TsaShim {
        let mut command = Command::new("python3");
        command
            .arg(workspace_root().join("scripts/tsa-shim.py"))
            .arg("serve")
            .arg(dir.path())
            .arg(port.to_string());
        if tls {
            command.arg("tls");
        }
        let process = spawn_logged(command, &dir.path().join(format!("shim-{port}.log")));
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let up = if tls {
            wait_until_listening(port, Duration::from_secs(20))
        } else {
            wait_until_ok(&format!("{url}/-/mode"), Duration::from_secs(20))
        };
        assert!(up, "the TSA shim did not come up:\n{}", process.log());
        TsaShim {
            process,
            port,
            url,
            dir,
            tls,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// ok, http-error, garbage, rejection, wrong-imprint, foreign, slow.
    pub fn set_mode(&self, mode: &str) {
        let response = client()
            .post(format!("{}/-/mode", self.url))
            .body(mode.to_owned())
            .send()
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Stops it (the port stays reserved for a restart).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(self) -> TsaShim {
        let TsaShim {
            mut process,
            port,
            dir,
            tls,
            ..
        } = self;
        process.kill();
        TsaShim::serve(dir, port, tls)
    }
}

/// `extra_toml` with `[ledger] dir` naming `ledger` unless it names one:
/// the gateway and every CLI command run with its config file share the
/// ledger in the test's temporary directory.
fn with_ledger_dir(extra_toml: &str, ledger: &Path) -> String {
    let dir_line = format!("dir = \"{}\"", ledger.display());
    let mut in_ledger = false;
    let mut named = false;
    for line in extra_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_ledger = line == "[ledger]";
        } else if in_ledger && line.starts_with("dir") {
            named = true;
        }
    }
    match (named, extra_toml.contains("[ledger]")) {
        (true, _) => extra_toml.to_owned(),
        (false, true) => extra_toml.replacen("[ledger]", &format!("[ledger]\n{dir_line}"), 1),
        (false, false) => format!("{extra_toml}\n[ledger]\n{dir_line}\n"),
    }
}

/// Runs the `inkan` binary with `args`, asserts it succeeded, returns stdout.
pub fn run_inkan<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(inkan_binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A local EVM node: ganache (scripts/install-ganache.sh), chain id 1337,
/// deterministic accounts, its chain kept in a directory so it survives a
/// restart.
#[derive(Debug)]
pub struct Ganache {
    pub process: Process,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// ganache --wallet.deterministic account 0 (a well-known test key).
pub const GANACHE_KEY: &str = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";

impl Ganache {
    pub fn start() -> Ganache {
        Ganache::start_with(&[])
    }

    /// With extra ganache options, e.g. `["--chain.hardfork", "berlin"]`.
    pub fn start_with(extra: &[&str]) -> Ganache {
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        Ganache::launch(tempfile::tempdir().unwrap(), free_port(), extra)
    }

    fn launch(dir: tempfile::TempDir, port: u16, extra: Vec<String>) -> Ganache {
        let bin = cached_binary(
            "INKAN_GANACHE_BIN",
            "ganache-7.9.2/node_modules/.bin/ganache",
            "ganache",
            "scripts/install-ganache.sh",
        );
        let mut command = Command::new(bin);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--chain.chainId",
                "1337",
                "--wallet.deterministic",
                "--logging.quiet",
            ])
            .arg("--database.dbPath")
            .arg(dir.path().join("chain"))
            .args(&extra);
        let process = spawn_logged(command, &dir.path().join(format!("ganache-{port}.log")));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let ganache = Ganache {
            process,
            port,
            url,
            dir,
            extra,
        };
        while ganache
            .try_rpc("eth_chainId", serde_json::json!([]))
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "ganache did not come up:\n{}",
                ganache.process.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ganache
    }

    fn try_rpc(&self, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = client().post(&self.url).json(&body).send().ok()?;
        let value: serde_json::Value = response.json().ok()?;
        Some(value["result"].clone())
    }

    /// One JSON-RPC call; its `result`.
    pub fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.try_rpc(method, params)
            .unwrap_or_else(|| panic!("{method} failed"))
    }

    pub fn block_number(&self) -> u64 {
        let hex = self.rpc("eth_blockNumber", serde_json::json!([]));
        u64::from_str_radix(hex.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// Writes the test key to a file for `anchors.evm.key_file`.
    pub fn key_file(&self) -> PathBuf {
        let path = self.dir.path().join("evm.key");
        write_private(&path, GANACHE_KEY.as_bytes());
        path
    }

    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and chain data.
    pub fn restart(self) -> Ganache {
        let Ganache {
            mut process,
            port,
            dir,
            extra,
            ..
        } = self;
        process.kill();
        Ganache::launch(dir, port, extra)
    }
}

/// nginx in front of an upstream, admitting bearer tokens per path: an
/// upstream that really enforces authorization, as a hospital's does (the
/// caller-bound `$proof` and `$verify` tests). Anonymous requests get 401,
/// tokens without a matching rule 403; `/metadata` is open.
#[derive(Debug)]
pub struct AuthzNginx {
    pub process: Process,
    pub port: u16,
    /// `http://127.0.0.1:<port>`, the gateway's upstream.
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl AuthzNginx {
    /// `rules`: (token, regex over the request path) pairs; a token may
    /// have several. The token `writer` may do anything.
    pub fn start(upstream_url: &str, rules: &[(&str, &str)]) -> AuthzNginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let mut who = String::from("    \"Bearer writer\" writer;\n");
        let mut allowed = String::from("    \"~^writer \" 1;\n");
        let mut tokens: Vec<&str> = rules.iter().map(|(token, _)| *token).collect();
        tokens.dedup();
        for token in tokens {
            who.push_str(&format!("    \"Bearer {token}\" {token};\n"));
        }
        for (token, path) in rules {
            allowed.push_str(&format!("    \"~^{token} {path}\" 1;\n"));
        }
        let config = format!(
            r#"master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  map $http_authorization $who {{
    default unknown;
    "" anonymous;
{who}  }}
  map "$who $uri" $allowed {{
    default 0;
{allowed}  }}
  server {{
    listen 127.0.0.1:{port};
    location = /metadata {{ proxy_pass {upstream_url}; }}
    location / {{
      if ($who = anonymous) {{ return 401; }}
      if ($allowed = 0) {{ return 403; }}
      proxy_pass {upstream_url};
    }}
  }}
}}
"#
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        // Debian puts it in /usr/sbin, often not on a user's PATH.
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("nginx");
        let mut command = Command::new(nginx);
        command
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(dir.path());
        let process = spawn_logged(command, &dir.path().join("stderr.log"));
        let url = format!("http://127.0.0.1:{port}");
        if !wait_until_ok(&format!("{url}/metadata"), Duration::from_secs(20)) {
            panic!(
                "nginx did not come up on {url}:\n{}\n{}",
                process.log(),
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        AuthzNginx {
            process,
            port,
            url,
            dir,
        }
    }
}

/// node-oidc-provider on 127.0.0.1 (`scripts/oidc-provider.mjs`, installed
/// by `scripts/install-oidc-provider.sh`): fresh RS256 and ES256 keys, one
/// confidential client, JWT access tokens for one resource.
#[derive(Debug)]
pub struct OpenIdProvider {
    pub process: Process,
    pub issuer: String,
    /// The audience of its access tokens (the gateway's FHIR base).
    pub resource: String,
    pub dir: tempfile::TempDir,
}

impl OpenIdProvider {
    /// The test client's id and secret.
    pub const CLIENT: (&'static str, &'static str) = ("inkan-test", "inkan-test-secret");

    pub fn start(resource: &str) -> OpenIdProvider {
        // The installation root, which holds its node_modules.
        let install = cached_binary(
            "INKAN_OIDC_PROVIDER_DIR",
            "oidc-provider-9.13.3",
            "oidc-provider",
            "scripts/install-oidc-provider.sh",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("node");
        command
            .arg(workspace_root().join("scripts/oidc-provider.mjs"))
            .arg(port.to_string())
            .arg(resource)
            .env("INKAN_OIDC_PROVIDER_DIR", &install);
        let process = spawn_logged(command, &dir.path().join("oidc-provider.log"));
        let issuer = format!("http://127.0.0.1:{port}");
        assert!(
            wait_until_ok(
                &format!("{issuer}/.well-known/openid-configuration"),
                Duration::from_secs(30)
            ),
            "oidc-provider did not start; see {}",
            dir.path().join("oidc-provider.log").display()
        );
        OpenIdProvider {
            process,
            issuer,
            resource: resource.to_owned(),
            dir,
        }
    }

    /// The token endpoint's answer to a client-credentials request for
    /// `scope`: (status, JSON body).
    pub fn client_credentials(&self, scope: &str) -> (u16, serde_json::Value) {
        let (id, secret) = OpenIdProvider::CLIENT;
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", self.resource.as_str()),
            ])
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }
}

/// A PostgreSQL cluster of its own in a temporary directory, run by
/// `scripts/postgres.sh` (Debian's server, pg_ctl, 127.0.0.1, an
/// unprivileged owner), stopped when dropped.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://inkan@127.0.0.1:<port>/inkan`.
    pub url: String,
    pub port: u16,
    cluster: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster");
        let port = free_port();
        let url = Postgres::run("start", &cluster, &port.to_string());
        Postgres {
            url,
            port,
            cluster,
            _dir: dir,
        }
    }

    /// Stops the server: `fast` (clean) or `immediate` (as in a crash,
    /// recovered from the WAL at the next start).
    pub fn stop(&self, mode: &str) {
        Postgres::run("stop", &self.cluster, mode);
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&self) {
        Postgres::run("start", &self.cluster, &self.port.to_string());
    }

    /// Runs SQL with `psql` (one session; statements separated by `;`),
    /// returning the unaligned, tuples-only output; panics on an error.
    pub fn sql(&self, sql: &str) -> String {
        let output = self.psql(sql);
        assert!(
            output.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// `psql` with `sql`, whatever it answers.
    pub fn psql(&self, sql: &str) -> std::process::Output {
        Command::new("psql")
            .arg(&self.url)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap()
    }

    fn run(what: &str, cluster: &Path, arg: &str) -> String {
        let output = Command::new(workspace_root().join("scripts/postgres.sh"))
            .arg(what)
            .arg(cluster)
            .arg(arg)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/postgres.sh {what} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts/postgres.sh"))
            .arg("stop")
            .arg(&self.cluster)
            .arg("immediate")
            .output();
    }
}

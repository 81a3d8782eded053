//! A throwaway single-node Garage (the S3-compatible distributed object store) for the tests
//! of stores in buckets: a real server, not a mock.
//!
//! [`Garage::start`] writes a config (random RPC secret, metadata and data folders in a
//! temporary folder, replication factor 1, the S3 API on a free local port), starts
//! `garage server`, applies a one-node layout, creates a bucket and a key allowed on it, and
//! hands out the environment gmat needs (`AWS_*`, `GMAT_S3_ENDPOINT`). Dropping it stops the
//! server and removes everything. Without the `garage` binary (`cargo install garage --locked`;
//! `.ci/run` installs it) the tests that need it skip with a message saying so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The S3 region the test node answers as.
pub const REGION: &str = "garage";

/// A running single-node Garage with one bucket and one key.
pub struct Garage {
    child: Child,
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The garage binary: `$GARAGE_BIN`, else `garage` on the PATH, else cargo's bin folder.
pub fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("garage"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(home.join("bin/garage")).filter(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn hex_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Garage {
    /// Starts a node, or returns `None` after saying why when the garage binary is missing.
    pub fn start(test: &str) -> Option<Garage> {
        let Some(bin) = garage_bin() else {
            eprintln!(
                "skipped {test}: the garage binary (S3-compatible object store) is not installed; \
                 install it with `cargo install garage --locked` (.ci/run does) or set GARAGE_BIN"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
            d = dir.path().display(),
            secret = hex_secret(),
            token = hex_secret(),
        );
        std::fs::write(dir.path().join("garage.toml"), config).expect("garage config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("garage server starts");
        let mut g = Garage {
            child,
            bin,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "gmat-test".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        g.set_up();
        Some(g)
    }

    /// Runs `garage -c <config> args...` and returns its stdout, panicking with its output
    /// (and the server's log) if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("garage runs");
        if !out.status.success() {
            panic!(
                "garage {args:?} failed: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn set_up(&mut self) {
        let started = Instant::now();
        loop {
            let ok = Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.path().join("garage.toml"))
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("garage server exited ({s}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "garage did not start in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let id = self.cli(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap_or_default().to_string();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        self.cli(&["layout", "apply", "--version", "1"]);
        self.cli(&["bucket", "create", &self.bucket]);
        let key = self.cli(&["key", "create", "gmat-test-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in `garage key create`'s output:\n{key}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &self.bucket,
            "--key",
            "gmat-test-key",
        ]);
    }

    /// The environment gmat reads its S3 settings from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", REGION.into()),
            ("GMAT_S3_ENDPOINT", self.endpoint.clone()),
        ]
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The temporary folder of the node (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(REGION)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .build()
            .expect("S3 client")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// The keys and ETags of the objects under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<(String, String)> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let s3 = self.client();
        let p = object_store::path::Path::from(prefix);
        let mut v: Vec<(String, String)> =
            Self::block_on(async move { s3.list(Some(&p)).try_collect::<Vec<_>>().await })
                .expect("list")
                .into_iter()
                .map(|m| (m.location.to_string(), m.e_tag.unwrap_or_default()))
                .collect();
        v.sort();
        v
    }

    /// The bytes of object `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let s3 = self.client();
        let p = object_store::path::Path::from(key);
        Self::block_on(async move {
            match s3.get(&p).await {
                Ok(r) => Some(r.bytes().await.expect("object body").to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("cannot get {key}: {e}"),
            }
        })
    }

    /// Writes object `key`.
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let s3 = self.client();
        let p = object_store::path::Path::from(key);
        Self::block_on(async move { s3.put(&p, bytes.into()).await }).expect("put");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

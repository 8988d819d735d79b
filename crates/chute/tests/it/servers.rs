//! The real components the tests run against (clamd, nginx, PostgreSQL, Garage), each started
//! by one of the project's scripts (`scripts/*-test.sh`) in a temporary folder of its own,
//! waited for until it answers, and stopped by its own shutdown signal when dropped.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::script;

/// A server process started by a script; stopped (signal, then SIGKILL after 10 s) on drop.
pub struct ScriptServer {
    name: &'static str,
    script: &'static str,
    args: Vec<String>,
    /// The signal that shuts this server down cleanly (nginx's master takes its workers
    /// along on TERM; PostgreSQL's fast shutdown is INT).
    signal: &'static str,
    child: Child,
    dir: tempfile::TempDir,
}

impl ScriptServer {
    /// Runs `scripts/<script>` with the arguments `args` builds from the server's folder.
    /// The script's output goes to `server.log` there (shown when the server fails to start).
    pub fn spawn(
        name: &'static str,
        script: &'static str,
        signal: &'static str,
        args: impl FnOnce(&Path) -> Vec<String>,
    ) -> ScriptServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args(dir.path());
        let child = run(name, script, &args, dir.path());
        ScriptServer {
            name,
            script,
            args,
            signal,
            child,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until `ready` says yes; panics (with the script's log) when the process ends
    /// first or `within` passes.
    pub async fn wait_until<F, Fut>(&mut self, within: Duration, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if ready().await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited before it was ready ({status}); its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {within:?}; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`.
    pub async fn wait_for_port(&mut self, port: u16, within: Duration) {
        self.wait_until(within, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// Stops the server and starts it again with the same folder and arguments (wait for it
    /// again afterwards).
    pub fn restart(&mut self) {
        self.stop();
        self.child = run(self.name, self.script, &self.args, self.dir.path());
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args([format!("-{}", self.signal), self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(name: &str, script_name: &str, args: &[String], dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("server.log");
    let err = log.try_clone().expect("server.log");
    Command::new(script(script_name))
        .args(args)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "scripts/{script_name} must run ({name} is installed by scripts/setup-e2e.sh): {e}"
            )
        })
}

//! A watchdog process that runs a cleanup script once the test process is gone — even
//! after SIGKILL — so no server or directory outlives a test run.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::KitResult;

/// Kills its watchdog on drop (the owner cleaned up itself by then).
pub struct Reaper {
    child: Option<Child>,
}

impl Reaper {
    /// Starts `sh -c` that waits for this process to exit, then runs `cleanup`.
    pub fn watch(cleanup: &str) -> KitResult<Reaper> {
        let pid = std::process::id();
        let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the reaper: {e}"))?;
        Ok(Reaper { child: Some(child) })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Quotes a path or word for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

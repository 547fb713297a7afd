//! Starts a test's server through a small shell that stops it when the test binary is
//! gone: a server kept in a `static` (shared by a suite's cases) is never dropped, and
//! would outlive the test binary. SIGTERM to the shell kills the server at once
//! (SIGKILL, as a crash would).

use std::process::{Command, Stdio};

/// `program` under the watchdog; add its arguments, then spawn.
pub fn command(program: &str) -> Command {
    let script = format!(
        r#"{program} "$@" & server=$!
trap 'kill -9 $server 2>/dev/null; exit 0' TERM
while kill -0 "$PARENT" 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.2; done
kill -9 $server 2>/dev/null"#
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script, "sh"])
        .env("PARENT", std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

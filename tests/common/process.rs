//! Processes the end-to-end tests start: the programs from outside Cargo that some of them
//! drive (curl, openssl, chromium, chromedriver), found or failed for loudly with how to install
//! them, and signals sent to the processes they start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where `program` is (an absolute path, or a name looked up in `PATH`), or a failure that names
/// the Debian package to install: a test that needs it never passes or skips without it.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| executable(p))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| executable(p))
        })
    };
    match found {
        Some(path) => path,
        None => panic!(
            "this test runs `{program}`, which is not installed: run scripts/test, which \
             installs it, or `apt-get install {package}`"
        ),
    }
}

/// Send `signal` (e.g. `libc::SIGTERM`) to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

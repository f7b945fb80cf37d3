//! Tiny test images made locally, so no test ever pulls from a registry.
//!
//! [`busybox_image`] imports Debian's static busybox (`apt-get install
//! busybox-static`) into a one-binary image with the usual applets, a web
//! root at `/www` and a default command that serves "hello from <hostname>"
//! on port 80.
//!
//! Use it from a test file with
//! `#[path = "common/images.rs"] mod images;` (or `pub mod images;` in
//! `tests/common/mod.rs`), then `let image = images::busybox_image("orc-test/busybox:1");`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Bump when the image's content changes, so stale local images are rebuilt.
const CONTENT_VERSION: &str = "2";
const VERSION_LABEL: &str = "orc.test.busybox";

/// Applets reachable by name inside the image.
const APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "sleep", "echo", "cat", "wget", "hostname", "ls", "true", "false",
    "test", "kill", "ps", "env", "printf", "mkdir", "rm", "grep", "nc", "id", "touch", "date",
];

/// The image's default command: a web server whose page names the container.
pub const WEB_CMD: &str =
    "echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www";

fn built() -> &'static Mutex<HashSet<String>> {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    BUILT.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Makes (once per process, and only if Docker does not have it yet) a tiny
/// busybox image named `tag` (a full reference such as "orc-test/busybox:1"
/// or "127.0.0.1:9/orc-test/busybox:1") and returns that name.
///
/// The image has `/bin/busybox` with links for the common applets, a
/// `/www/index.html`, and `/bin/notelf`, an executable that is no program,
/// for exec format error tests. Its default command is `sh -c WEB_CMD`.
///
/// Panics with instructions when `/bin/busybox` or the `docker` command is missing.
pub fn busybox_image(tag: &str) -> String {
    // Holding the lock while building keeps two threads from importing at once.
    let mut done = built().lock().unwrap_or_else(|p| p.into_inner());
    if done.contains(tag) {
        return tag.to_string();
    }
    if !Path::new(BUSYBOX).exists() {
        panic!(
            "{BUSYBOX} is missing: the Docker tests build their image from Debian's static busybox; \
             install it with `apt-get install busybox-static`"
        );
    }
    if !image_is_current(tag) {
        import(tag);
    }
    done.insert(tag.to_string());
    tag.to_string()
}

fn image_is_current(tag: &str) -> bool {
    let format = format!("{{{{index .Config.Labels \"{VERSION_LABEL}\"}}}}");
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", &format, tag])
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker command: {e}"));
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == CONTENT_VERSION
}

fn import(tag: &str) {
    let root = tempfile::tempdir().expect("temporary directory");
    let r = root.path();
    for dir in ["bin", "www", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(r.join(dir)).expect("create image directory");
    }
    std::fs::copy(BUSYBOX, r.join("bin/busybox")).expect("copy /bin/busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(r.join("www/index.html"), "hello from orc-test\n").expect("write index");
    std::fs::write(r.join("bin/notelf"), "this file is no program\n").expect("write notelf");
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    std::fs::write(r.join("etc/group"), "root:x:0:\n").expect("group");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r.join("bin/notelf"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod notelf");
        std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
    }

    let tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(r)
        .args(["-cf", "-", "."])
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&tar.stderr)
    );

    let cmd = serde_json::to_string(&["sh", "-c", WEB_CMD]).expect("json");
    let mut child = Command::new("docker")
        .args(["import"])
        .args(["--change", &format!("CMD {cmd}")])
        .args(["--change", "ENV PATH=/bin"])
        .args([
            "--change",
            &format!("LABEL {VERSION_LABEL}={CONTENT_VERSION}"),
        ])
        .args(["--change", "EXPOSE 80"])
        .args(["-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the docker command: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&tar.stdout)
        .expect("write tarball to docker import");
    let out = child.wait_with_output().expect("docker import");
    assert!(
        out.status.success(),
        "docker import {tag} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `docker` with its config (and logins) in `config`; (success, output).
pub fn docker_in(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Removes image references from the local Docker when dropped.
pub struct DockerTags(pub Vec<String>);

impl Drop for DockerTags {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "--force", tag])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

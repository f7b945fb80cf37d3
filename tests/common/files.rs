//! Reading every file under a directory: the tests that prove a secret
//! appears nowhere on disk grep the data dirs with these.

use std::path::{Path, PathBuf};

/// Calls `visit` with the path and bytes of every readable file under `dir`.
pub fn each_file(dir: &Path, mut visit: impl FnMut(&Path, &[u8])) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                visit(&path, &bytes);
            }
        }
    }
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    each_file(dir, |path, bytes| {
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(path.to_path_buf());
        }
    });
    found
}

//! Reads the `.eml` files a service writes without RECOVERY_SMTP_URL: every few milliseconds
//! the files that appeared since the start are parsed and their codes handed to the
//! [`CodeBook`]. A file being written may be read short: it is read again until it yields a
//! code or its size stops changing (a message without a code).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use super::{CodeBook, mime};

const POLL: Duration = Duration::from_millis(5);

/// A running reader; stops when dropped.
#[derive(Debug)]
pub struct MailDir {
    task: JoinHandle<()>,
}

impl MailDir {
    /// Watches `dir`. Files already there are ignored (older runs' mail). With `delete`, files
    /// are removed once read (a directory the tool owns).
    pub async fn start(dir: PathBuf, codes: Arc<CodeBook>, delete: bool) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let done: HashSet<PathBuf> = list(&dir)
            .await
            .with_context(|| format!("cannot read {}", dir.display()))?
            .into_iter()
            .collect();
        let task = tokio::spawn(poll(dir, codes, done, delete));
        Ok(Self { task })
    }
}

impl Drop for MailDir {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "eml") {
            files.push(path);
        }
    }
    Ok(files)
}

async fn poll(dir: PathBuf, codes: Arc<CodeBook>, mut done: HashSet<PathBuf>, delete: bool) {
    // Size at the last read of files that gave no code yet.
    let mut partial: HashMap<PathBuf, usize> = HashMap::new();
    loop {
        if let Ok(files) = list(&dir).await {
            for path in files {
                if done.contains(&path) {
                    continue;
                }
                let Ok(raw) = tokio::fs::read(&path).await else {
                    continue;
                };
                let raw = String::from_utf8_lossy(&raw);
                let finished = match mime::recipient_and_code(&raw) {
                    Some((recipient, code)) => {
                        codes.deliver(&recipient, code);
                        true
                    }
                    None => partial.insert(path.clone(), raw.len()) == Some(raw.len()),
                };
                if finished {
                    partial.remove(&path);
                    if delete {
                        let _ = tokio::fs::remove_file(&path).await;
                    } else {
                        done.insert(path);
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn codes_in_new_files_are_found_and_old_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.eml"), "To: ann@x.example\n\n111111\n").unwrap();
        let codes = CodeBook::new();
        let _reader = MailDir::start(dir.path().to_owned(), Arc::clone(&codes), false)
            .await
            .unwrap();
        std::fs::write(
            dir.path().join("new.eml"),
            "To: Ann <ann@x.example>\nContent-Type: text/plain\n\n222 222\n",
        )
        .unwrap();
        assert_eq!(
            codes
                .wait("ann@x.example", Duration::from_secs(2))
                .await
                .as_deref(),
            Some("222222")
        );
        assert_eq!(codes.received(), 1);
    }
}

//! `--session FILE`: the client's session kept in a file between invocations, so a `get
//! --local` sees everything earlier commands with the same file wrote or read
//! (read-your-writes and monotonic reads across processes) without passing `--min-version`.

use super::commands::CliError;
use shardedstore_node::client::kv::Session;
use std::path::Path;

/// The session saved in `path`; an empty one when the file does not exist yet. A file that
/// is not a session is an error (and is left as it is).
pub fn load(path: &Path) -> Result<Session, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Session::default()),
        Err(source) => {
            return Err(CliError::SessionRead {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|source| CliError::SessionFormat {
        path: path.to_owned(),
        source,
    })
}

/// Writes `session` to `path` atomically (a temporary file renamed over it), so a reader or
/// a crash never sees half a session.
pub fn save(path: &Path, session: &Session) -> Result<(), CliError> {
    let write_err = |source| CliError::SessionWrite {
        path: path.to_owned(),
        source,
    };
    let text = serde_json::to_string(session).map_err(CliError::Encode)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    std::fs::write(&tmp, text + "\n").map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_empty_session_and_a_saved_one_loads_back()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("session.json");
        assert_eq!(load(&path)?, Session::default());
        let mut s = Session::default();
        s.advance("orders", 7, 12);
        save(&path, &s)?;
        assert_eq!(load(&path)?, s);
        Ok(())
    }

    #[test]
    fn a_file_that_is_not_a_session_is_an_error_and_kept() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("session.json");
        std::fs::write(&path, "not json")?;
        let err = load(&path).err().ok_or("loaded garbage")?;
        assert!(err.to_string().contains("session.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&path)?, "not json");
        Ok(())
    }
}

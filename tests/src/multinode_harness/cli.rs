//! The `shardedstore` CLI run inside a worker: a client on that machine, in that machine's
//! zone. Its `-v` lines (`version V session-version S served-by NODE staleness-ms T` for a
//! local read, `created|updated, version N` for a put) are parsed by pure functions.

use super::{MultinodeError, Worker};
use std::path::PathBuf;
use std::time::Duration;

/// What `get --local -v` reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalAnswer {
    pub value: String,
    pub version: u64,
    pub session_version: u64,
    pub served_by: Option<String>,
    pub staleness: Option<Duration>,
}

/// Parses the `-v` line of `get --local` (the last line of stderr that starts with
/// `version `) and the value on stdout.
pub fn parse_local_read(stdout: &str, stderr: &str) -> Option<LocalAnswer> {
    let line = stderr.lines().rev().find(|l| l.starts_with("version "))?;
    let mut answer = LocalAnswer {
        value: stdout.to_owned(),
        ..LocalAnswer::default()
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    for pair in words.chunks(2) {
        let [name, value] = pair else { return None };
        match *name {
            "version" => answer.version = value.parse().ok()?,
            "session-version" => answer.session_version = value.parse().ok()?,
            "served-by" => answer.served_by = Some((*value).to_owned()),
            "staleness-ms" => answer.staleness = Some(Duration::from_millis(value.parse().ok()?)),
            _ => {}
        }
    }
    Some(answer)
}

/// The version of `put -v` (`created, version N` or `updated, version N` on stderr).
pub fn parse_put_version(stderr: &str) -> Option<u64> {
    stderr.lines().rev().find_map(|l| {
        l.split_once(", version ")
            .and_then(|(_, v)| v.trim().parse().ok())
    })
}

/// The CLI binary run in `worker` against `endpoint` (the client Service), with options.
#[derive(Clone, Debug)]
pub struct WorkerCli {
    pub worker: Worker,
    pub binary: PathBuf,
    pub endpoint: String,
    /// `--zone`: go straight to a replica in this zone.
    pub zone: Option<String>,
    /// `--via-endpoints`: every request to the endpoint (the Service picks the node).
    pub via_endpoint: bool,
    /// `--session FILE`.
    pub session: Option<PathBuf>,
}

impl WorkerCli {
    fn run(&self, command: &[&str]) -> Result<(String, String), MultinodeError> {
        let mut args = vec!["-e", self.endpoint.as_str(), "-v", "--timeout", "15s"];
        if let Some(z) = &self.zone {
            args.extend(["--zone", z.as_str()]);
        }
        if self.via_endpoint {
            args.push("--via-endpoints");
        }
        let session = self
            .session
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        if let Some(s) = &session {
            args.extend(["--session", s.as_str()]);
        }
        args.extend_from_slice(command);
        let binary = self.binary.to_string_lossy();
        let out = self.worker.run(&binary, &args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(MultinodeError::Cli(format!(
                "shardedstore {} in worker {}: {}: {stderr}",
                args.join(" "),
                self.worker.0,
                out.status
            )));
        }
        Ok((stdout, stderr))
    }

    /// `get --local KEY` (with `--max-staleness-ms` when given).
    pub fn get_local(
        &self,
        key: &str,
        max_staleness: Option<Duration>,
    ) -> Result<LocalAnswer, MultinodeError> {
        let ms = max_staleness.map(|d| d.as_millis().to_string());
        let mut command = vec!["get", "--local"];
        if let Some(ms) = &ms {
            command.extend(["--max-staleness-ms", ms.as_str()]);
        }
        command.push(key);
        let (stdout, stderr) = self.run(&command)?;
        parse_local_read(&stdout, &stderr)
            .ok_or_else(|| MultinodeError::Cli(format!("no version line for {key}: {stderr}")))
    }

    /// `put KEY VALUE`; the version written.
    pub fn put(&self, key: &str, value: &str) -> Result<u64, MultinodeError> {
        let (_, stderr) = self.run(&["put", key, value])?;
        parse_put_version(&stderr)
            .ok_or_else(|| MultinodeError::Cli(format!("no version for put {key}: {stderr}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_local_read() {
        let a = parse_local_read(
            "v1",
            "some log\nversion 7 session-version 9 served-by mn-1 staleness-ms 12\n",
        );
        assert_eq!(
            a,
            Some(LocalAnswer {
                value: "v1".into(),
                version: 7,
                session_version: 9,
                served_by: Some("mn-1".into()),
                staleness: Some(Duration::from_millis(12)),
            })
        );
        assert_eq!(parse_local_read("v", "error: nope"), None);
        assert_eq!(parse_local_read("v", "version x"), None);
    }

    #[test]
    fn parses_the_version_of_a_put() {
        assert_eq!(parse_put_version("created, version 12\n"), Some(12));
        assert_eq!(parse_put_version("updated, version 3"), Some(3));
        assert_eq!(parse_put_version("error"), None);
    }
}

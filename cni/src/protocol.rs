//! What the plugin and the node agent say to each other on the agent's Unix socket: one
//! connection per request, the request as one JSON line, the answer as one JSON line.
//!
//! The socket is the agent's (`/run/egret/cni.sock`, root-only): only the container
//! runtime, which runs the plugin as root, can ask the agent to program a pod.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A pod as the runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub ips: Vec<IpAddr>,
}

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Program this pod now (its labels from the API if the agent has not seen it yet), and
    /// answer once its entries are in the data path or it is known not to be selected.
    Add(Pod),
    /// The pod's sandbox goes: remove what ADD programmed.
    Del(Pod),
    /// Is the pod programmed as its policies say?
    Check(Pod),
    /// Can the agent program pods now (its watches have listed)?
    Status,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    /// The pod's entries are in the data path, for these policies.
    Programmed { policies: Vec<String> },
    /// No policy selects the pod: nothing to program.
    NotSelected,
    /// Done (DEL, a CHECK that holds, a STATUS that is ready).
    Done,
    /// The agent cannot do it; the reason says why (not ready, the pod unknown to the API,
    /// a CHECK that does not hold).
    Refused { reason: String },
}

/// Why the agent gave no answer.
#[derive(Debug)]
pub enum AskError {
    /// Nothing listens on the socket: the agent is not running.
    Unreachable(std::io::Error),
    /// It did not answer within the timeout.
    TimedOut(Duration),
    /// It answered something else than an answer.
    Malformed(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Unreachable(e) => write!(f, "the agent is not reachable: {e}"),
            AskError::TimedOut(t) => write!(f, "the agent did not answer within {t:?}"),
            AskError::Malformed(m) => write!(f, "the agent's answer is not understood: {m}"),
        }
    }
}

/// Sends `request` to the agent at `socket` and waits at most `timeout` for its answer.
pub fn ask(socket: &Path, request: &Request, timeout: Duration) -> Result<Answer, AskError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(AskError::TimedOut(timeout))
    };
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            AskError::TimedOut(timeout)
        }
        _ => AskError::Unreachable(e),
    };
    let stream = UnixStream::connect(socket).map_err(AskError::Unreachable)?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(AskError::Unreachable)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| AskError::Malformed(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(timed_out)?;
    stream
        .set_read_timeout(Some(remaining()?))
        .map_err(AskError::Unreachable)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&stream, MAX_LINE))
        .read_line(&mut answer)
        .map_err(timed_out)?;
    if answer.is_empty() {
        return Err(AskError::Malformed(
            "the agent closed the connection".to_owned(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| AskError::Malformed(format!("{e}: {answer:?}")))
}

/// The longest line either side accepts.
pub const MAX_LINE: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn pod() -> Pod {
        Pod {
            container_id: "c0ffee".into(),
            namespace: "alice".into(),
            name: "frontend".into(),
            uid: None,
            ips: vec!["10.244.1.7".parse().expect("ip")],
        }
    }

    #[test]
    fn requests_and_answers_are_one_json_line_each() {
        let text = serde_json::to_string(&Request::Add(pod())).expect("json");
        assert_eq!(
            text,
            r#"{"op":"add","container_id":"c0ffee","namespace":"alice","name":"frontend","ips":["10.244.1.7"]}"#
        );
        let answer: Answer =
            serde_json::from_str(r#"{"outcome":"programmed","policies":["p"]}"#).expect("answer");
        assert_eq!(
            answer,
            Answer::Programmed {
                policies: vec!["p".into()]
            }
        );
        let status = serde_json::to_string(&Request::Status).expect("json");
        assert_eq!(status, r#"{"op":"status"}"#);
    }

    fn socket_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("egret-cni-{}-{tag}.sock", std::process::id()))
    }

    /// A stand-in agent on `path` answering one request with `answer`; returns the request.
    fn stand_in(path: &Path, answer: &'static [u8]) -> std::thread::JoinHandle<Request> {
        let listener = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).expect("read");
            (&stream).write_all(answer).expect("write");
            serde_json::from_str(&line).expect("request")
        })
    }

    #[test]
    fn ask_gets_the_agents_answer() {
        let path = socket_path("answer");
        let _ = std::fs::remove_file(&path);
        let server = stand_in(&path, b"{\"outcome\":\"not_selected\"}\n");
        let answer = ask(&path, &Request::Add(pod()), Duration::from_secs(5)).expect("answer");
        assert_eq!(answer, Answer::NotSelected);
        assert_eq!(server.join().expect("server"), Request::Add(pod()));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_silent_agent_times_out_and_a_missing_one_is_unreachable() {
        let path = socket_path("silent");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let started = Instant::now();
        let error = ask(&path, &Request::Status, Duration::from_millis(200)).expect_err("silent");
        assert!(matches!(error, AskError::TimedOut(_)), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(listener);
        let _ = std::fs::remove_file(&path);
        let error = ask(&path, &Request::Status, Duration::from_millis(200)).expect_err("gone");
        assert!(matches!(error, AskError::Unreachable(_)), "{error}");
    }

    #[test]
    fn garbage_from_the_agent_is_malformed_not_a_panic() {
        let path = socket_path("garbage");
        let _ = std::fs::remove_file(&path);
        let server = stand_in(&path, b"{\"outcome\":\"maybe\"}\n");
        let error = ask(&path, &Request::Status, Duration::from_secs(5)).expect_err("garbage");
        assert!(matches!(error, AskError::Malformed(_)), "{error}");
        server.join().expect("server");
        let _ = std::fs::remove_file(&path);
    }
}

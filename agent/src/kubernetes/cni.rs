//! The agent's side of `egret-cni`: a Unix socket only root may use, where the plugin asks
//! the agent to program a pod before the pod runs.
//!
//! Each connection carries one request line and gets one answer line
//! ([`egret_cni::protocol`]). The listener only carries requests to the agent's loop (which
//! owns the node) and answers back; a request that is not understood, too long or too slow
//! is answered `refused` or dropped, never a crash.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use egret_cni::protocol::{Answer, MAX_LINE, Pod as CniPodRequest, Request};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::node::Follower;
use crate::api::{self, SharedRecorded, Trigger};
use crate::cluster::PodInfo;
use crate::cluster::cni::{AddOutcome, CniPod};

/// A request from the plugin and where its answer goes.
pub struct CniRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
    /// When the request was read off the socket: where `egret_agent_programming_latency_seconds`
    /// starts for an ADD.
    pub received: std::time::Instant,
}

/// How long a plugin may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent's loop may take to answer (the plugin's own timeout is shorter).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests waiting for the loop at most; more are refused at once.
const QUEUE: usize = 256;

/// Listens on `path` (a stale socket file is replaced; mode 0600) and returns the requests.
pub fn serve(path: &Path) -> io::Result<mpsc::Receiver<CniRequest>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, sender.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "CNI socket: accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(receiver)
}

/// One plugin's connection: its request to the loop, the loop's answer back.
async fn connection(stream: UnixStream, loop_: mpsc::Sender<CniRequest>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    let answer = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => ask_loop(request, &loop_).await,
            Err(error) => Answer::Refused {
                reason: format!("the request is not understood: {error}"),
            },
        },
        Ok(Err(error)) => Answer::Refused {
            reason: format!("cannot read the request: {error}"),
        },
        Err(_) => return,
    };
    let Ok(mut text) = serde_json::to_string(&answer) else {
        return;
    };
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

async fn ask_loop(request: Request, loop_: &mpsc::Sender<CniRequest>) -> Answer {
    let (reply, answer) = oneshot::channel();
    let received = std::time::Instant::now();
    if loop_
        .try_send(CniRequest {
            request,
            reply,
            received,
        })
        .is_err()
    {
        return Answer::Refused {
            reason: "the agent is busy with other pods".to_owned(),
        };
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(answer)) => answer,
        _ => Answer::Refused {
            reason: "the agent did not get to the request".to_owned(),
        },
    }
}

/// Carries out egret-cni's requests on the node, for the agent's loop: an ADD is
/// programmed before it is answered; the pod's labels come from the store, or from the API
/// when its watch event has not arrived yet. Such a read runs beside the loop (see
/// [`Requests::next_read`]), so other pods' requests and the cluster's events go on meanwhile.
pub struct Requests {
    client: Client,
    recorded: SharedRecorded,
    reads: FuturesUnordered<PodRead>,
}

/// An ADD whose pod is being read from the API.
type PodRead = Pin<Box<dyn Future<Output = ReadPod>>>;

/// An ADD whose pod was read from the API (or could not be).
pub struct ReadPod {
    pod: CniPodRequest,
    reply: oneshot::Sender<Answer>,
    received: Instant,
    fetched: Result<PodInfo, String>,
}

impl Requests {
    pub fn new(client: Client, recorded: SharedRecorded) -> Self {
        Requests {
            client,
            recorded,
            reads: FuturesUnordered::new(),
        }
    }

    /// Answers `request`, or starts reading its pod from the API; `synced`: the cluster's
    /// first listing is in.
    pub fn handle(&mut self, follower: &mut Follower, synced: bool, request: CniRequest) {
        let CniRequest {
            request,
            reply,
            received,
        } = request;
        let command = match &request {
            Request::Add(_) => "add",
            Request::Del(_) => "del",
            Request::Check(_) => "check",
            Request::Status => "status",
        };
        let answer = match request {
            _ if !synced => not_ready(),
            Request::Status => Answer::Done,
            Request::Add(pod) if !follower.knows_pod(&pod.namespace, &pod.name) => {
                let client = self.client.clone();
                self.reads.push(Box::pin(async move {
                    let fetched = read_pod(&client, &pod.namespace, &pod.name).await;
                    ReadPod {
                        pod,
                        reply,
                        received,
                        fetched,
                    }
                }));
                return;
            }
            Request::Add(pod) => self.add(follower, pod, None, received),
            Request::Del(pod) => {
                match follower.cni_del(&pod.container_id, &pod.namespace, &pod.name) {
                    Ok(()) => Answer::Done,
                    Err(err) => Answer::Refused {
                        reason: crate::error_chain(&err),
                    },
                }
            }
            Request::Check(pod) => match follower.cni_check(&pod.namespace, &pod.name, &pod.ips) {
                Ok(Some(outcome)) => answer_of(outcome),
                Ok(None) => not_ready(),
                Err(reason) => Answer::Refused { reason },
            },
        };
        self.answer(command, reply, answer);
    }

    /// The next ADD whose pod read finished; never, while there is none.
    pub async fn next_read(&mut self) -> ReadPod {
        match self.reads.next().await {
            Some(read) => read,
            None => std::future::pending().await,
        }
    }

    /// Answers an ADD whose pod read finished.
    pub fn finish(&mut self, follower: &mut Follower, read: ReadPod) {
        let answer = match read.fetched {
            Err(reason) => Answer::Refused { reason },
            Ok(fetched) => self.add(follower, read.pod, Some(fetched), read.received),
        };
        self.answer("add", read.reply, answer);
    }

    fn add(
        &self,
        follower: &mut Follower,
        pod: CniPodRequest,
        fetched: Option<PodInfo>,
        received: Instant,
    ) -> Answer {
        let what = format!("{}/{}", pod.namespace, pod.name);
        let added = CniPod {
            container_id: pod.container_id,
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
            ips: pod.ips,
            fetched,
        };
        match follower.cni_add(added) {
            Ok(outcome) => {
                // The maps are written: the ADD is obeyed (or there was nothing to write
                // for it).
                api::record(&self.recorded, |r| {
                    r.programmed(Trigger::Cni, received.elapsed());
                });
                tracing::info!(pod = %what, ?outcome, elapsed = ?received.elapsed(), "CNI ADD");
                answer_of(outcome)
            }
            Err(err) => Answer::Refused {
                reason: crate::error_chain(&err),
            },
        }
    }

    fn answer(&self, command: &'static str, reply: oneshot::Sender<Answer>, answer: Answer) {
        let outcome = match &answer {
            Answer::Programmed { .. } => "programmed",
            Answer::NotSelected => "not_selected",
            Answer::Done => "done",
            Answer::Refused { .. } => "refused",
        };
        api::record(&self.recorded, |r| r.cni(command, outcome));
        let _ = reply.send(answer);
    }
}

fn not_ready() -> Answer {
    Answer::Refused {
        reason: "the agent waits for the cluster's first listing".to_owned(),
    }
}

fn answer_of(outcome: AddOutcome) -> Answer {
    match outcome {
        AddOutcome::Programmed(policies) => Answer::Programmed { policies },
        AddOutcome::NotSelected => Answer::NotSelected,
    }
}

/// Reads a pod from the API, for an ADD that comes before the pod's watch event.
pub async fn read_pod(client: &Client, namespace: &str, name: &str) -> Result<PodInfo, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match tokio::time::timeout(Duration::from_secs(2), api.get(name)).await {
        Ok(Ok(pod)) => Ok(PodInfo::from(&pod)),
        Ok(Err(error)) => Err(format!("reading pod {namespace}/{name}: {error}")),
        Err(_) => Err(format!(
            "reading pod {namespace}/{name}: no answer within 2s"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_cni::protocol::{Pod as CniPod, ask};

    fn path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("egret-agent-cni-{}-{tag}.sock", std::process::id()))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_reach_the_loop_and_answers_the_plugin() {
        let path = path("loop");
        let mut requests = serve(&path).expect("serve");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let agent = tokio::spawn(async move {
            let CniRequest { request, reply, .. } = requests.recv().await.expect("a request");
            let _ = reply.send(Answer::NotSelected);
            request
        });
        let pod = CniPod {
            container_id: "c".into(),
            namespace: "alice".into(),
            name: "p".into(),
            uid: None,
            ips: vec!["10.244.1.7".parse().expect("ip")],
        };
        let asked = path.clone();
        let request = Request::Add(pod);
        let sent = request.clone();
        let answer =
            tokio::task::spawn_blocking(move || ask(&asked, &sent, Duration::from_secs(5)))
                .await
                .expect("join")
                .expect("answer");
        assert_eq!(answer, Answer::NotSelected);
        assert_eq!(agent.await.expect("agent"), request);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn garbage_is_refused_and_the_socket_keeps_serving() {
        let path = path("garbage");
        let mut requests = serve(&path).expect("serve");
        tokio::spawn(async move {
            while let Some(CniRequest { reply, .. }) = requests.recv().await {
                let _ = reply.send(Answer::Done);
            }
        });
        for garbage in ["not json\n", "{\"op\":\"launch\"}\n", "\u{0}\u{1}\n"] {
            let mut stream = UnixStream::connect(&path).await.expect("connect");
            stream.write_all(garbage.as_bytes()).await.expect("write");
            let mut answer = String::new();
            BufReader::new(stream)
                .read_line(&mut answer)
                .await
                .expect("read");
            let answer: Answer = serde_json::from_str(&answer).expect("an answer");
            assert!(
                matches!(answer, Answer::Refused { .. }),
                "{garbage:?}: {answer:?}"
            );
        }
        let asked = path.clone();
        let status = tokio::task::spawn_blocking(move || {
            ask(&asked, &Request::Status, Duration::from_secs(5))
        })
        .await
        .expect("join")
        .expect("answer");
        assert_eq!(status, Answer::Done);
        let _ = std::fs::remove_file(&path);
    }
}

//! Container logs, with no I/O: the line format of the kubelet's per-container log files (the
//! CRI one, `TIMESTAMP STREAM F CONTENT`, so every line carries the time it was written and
//! `sinceTime` can be exact), the kubelet API's `GET /containerLogs/{ns}/{pod}/{container}`
//! request the apiserver proxies `pods/log` to, which file answers it, and which lines of that
//! file (`tailLines`, `sinceTime` / `sinceSeconds`, `timestamps`, `limitBytes`).
//!
//! `follow=true` is accepted and answered like `follow=false`: the lines there are, then the end
//! of the response. Nothing in the tests or the conformance suite follows a log, and a stream
//! that ends is what a client sees anyway when the container stops.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Which output of a process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One log-file line for `content` (a line of the process' output, with or without its `\n`)
/// written at `time`.
pub fn log_line(time: Timestamp, stream: Stream, content: &[u8]) -> Vec<u8> {
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    // A lone `\r` before the newline is part of the line ending, not of what a reader wants.
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    let mut line = format!("{} {} F ", rfc3339_nano(time), stream.as_str()).into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// RFC 3339 with nine fractional digits, so the lines of a file sort as text too.
fn rfc3339_nano(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// A line of a log file: when it was written, and what the process printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: Timestamp,
    pub content: &'a str,
}

/// Reads a log-file line; `None` for a line in no known format (it is then shown as it is).
pub fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?.parse::<Timestamp>().ok()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
        return None;
    }
    Some(LogLine {
        time,
        content: parts.next().unwrap_or(""),
    })
}

/// What a request asks of a container's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    /// Lines written before this are left out.
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub follow: bool,
    pub previous: bool,
    pub limit_bytes: Option<usize>,
}

/// A parsed `GET /containerLogs/{namespace}/{pod}/{container}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    /// The apiserver always names one; a direct caller may leave it out for a one-container pod.
    pub container: Option<String>,
    pub options: LogOptions,
}

/// Why a log request gets no log; each maps to the HTTP status a kubelet answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl LogError {
    pub fn status(&self) -> u16 {
        match self {
            LogError::BadRequest(_) => 400,
            LogError::NotFound(_) => 404,
        }
    }
}

/// Parses the request's path and query; `now` anchors `sinceSeconds`.
pub fn parse_request(path: &str, query: &str, now: Timestamp) -> Result<LogRequest, LogError> {
    let segments: Vec<String> = path
        .strip_prefix("/containerLogs/")
        .ok_or_else(|| LogError::NotFound(format!("no such kubelet endpoint: {path}")))?
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let (namespace, pod, container) = match segments.as_slice() {
        [ns, pod] => (ns, pod, None),
        [ns, pod, container] => (ns, pod, Some(container.clone())),
        _ => {
            return Err(LogError::NotFound(format!(
                "{path}: expected /containerLogs/NAMESPACE/POD/CONTAINER"
            )));
        }
    };
    if namespace.is_empty() || pod.is_empty() || container.as_ref().is_some_and(String::is_empty) {
        return Err(LogError::BadRequest(format!("{path}: empty name")));
    }
    let mut options = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let bad = |what: &str| LogError::BadRequest(format!("{key}={value:?}: {what}"));
        match key {
            "tailLines" => {
                // Negative means all lines, as for a kubelet.
                let n: i64 = value.parse().map_err(|_| bad("not an integer"))?;
                options.tail_lines = usize::try_from(n).ok();
            }
            "limitBytes" => {
                let n: i64 = value.parse().map_err(|_| bad("not an integer"))?;
                options.limit_bytes =
                    Some(usize::try_from(n).map_err(|_| bad("must be positive"))?);
            }
            "sinceSeconds" => {
                let n: i64 = value.parse().map_err(|_| bad("not an integer"))?;
                if n <= 0 {
                    return Err(bad("must be positive"));
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                since_time = Some(
                    value
                        .parse::<Timestamp>()
                        .map_err(|_| bad("not an RFC 3339 time"))?,
                );
            }
            "timestamps" => options.timestamps = flag(&value).ok_or_else(|| bad("not a bool"))?,
            "follow" => options.follow = flag(&value).ok_or_else(|| bad("not a bool"))?,
            "previous" => options.previous = flag(&value).ok_or_else(|| bad("not a bool"))?,
            // Ignored by this kubelet: insecureSkipTLSVerifyBackend and the like.
            _ => {}
        }
    }
    options.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(LogError::BadRequest(
                "at most one of sinceTime or sinceSeconds may be given".into(),
            ));
        }
        (Some(s), None) => now.checked_sub(SignedDuration::from_secs(s)).ok(),
        (None, t) => t,
    };
    Ok(LogRequest {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container,
        options,
    })
}

/// A query flag as Go's `strconv.ParseBool` reads it (what the apiserver sends is `true`/`false`).
fn flag(value: &str) -> Option<bool> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `%XX` escapes and `+` (a space, in a query) decoded; a broken escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The log files of one container of a running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogs {
    pub name: String,
    /// The log of the container's current (or last) run.
    pub current: PathBuf,
    /// The log of the run before, once the container has restarted.
    pub previous: Option<PathBuf>,
}

/// The pods running on a kubelet by `(namespace, name)`, with their containers' logs.
pub type LogIndex = HashMap<(String, String), Vec<ContainerLogs>>;

/// The file that answers `request`, or why there is none.
pub fn locate(index: &LogIndex, request: &LogRequest) -> Result<PathBuf, LogError> {
    let (ns, pod) = (&request.namespace, &request.pod);
    let containers = index
        .get(&(ns.clone(), pod.clone()))
        .ok_or_else(|| LogError::NotFound(format!("pod {ns}/{pod} is not running on this node")))?;
    let names = || {
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let container = match &request.container {
        Some(name) => containers.iter().find(|c| &c.name == name).ok_or_else(|| {
            LogError::NotFound(format!(
                "container {name} is not valid for pod {ns}/{pod}; choose one of: [{}]",
                names()
            ))
        })?,
        None => match containers.as_slice() {
            [only] => only,
            _ => {
                return Err(LogError::BadRequest(format!(
                    "a container name must be specified for pod {ns}/{pod}, choose one of: [{}]",
                    names()
                )));
            }
        },
    };
    if request.options.previous {
        container.previous.clone().ok_or_else(|| {
            LogError::BadRequest(format!(
                "previous terminated container {} in pod {ns}/{pod} not found",
                container.name
            ))
        })
    } else {
        Ok(container.current.clone())
    }
}

/// What a log file shows for `options`: the last `tail_lines` lines, of those the ones written
/// since `since` (the kubelet's order), each prefixed with its time if `timestamps`, the whole cut
/// at `limit_bytes`.
pub fn select(file: &str, options: &LogOptions) -> String {
    let lines: Vec<&str> = file.lines().collect();
    let start = options
        .tail_lines
        .map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = String::new();
    for line in &lines[start..] {
        let parsed = parse_line(line);
        if let (Some(since), Some(parsed)) = (options.since, &parsed)
            && parsed.time < since
        {
            continue;
        }
        match parsed {
            Some(parsed) if options.timestamps => {
                out.push_str(&rfc3339_nano(parsed.time));
                out.push(' ');
                out.push_str(parsed.content);
            }
            Some(parsed) => out.push_str(parsed.content),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    if let Some(limit) = options.limit_bytes
        && out.len() > limit
    {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    const NOW: &str = "2026-11-26T12:00:00Z";

    fn file() -> String {
        let lines = [
            log_line(at("2026-11-26T11:59:00Z"), Stream::Stdout, b"starting\n"),
            log_line(
                at("2026-11-26T11:59:30.5Z"),
                Stream::Stderr,
                b"warming up\r\n",
            ),
            log_line(
                at("2026-11-26T11:59:59Z"),
                Stream::Stdout,
                b"Echoing back /a",
            ),
        ]
        .concat();
        String::from_utf8(lines).expect("utf-8")
    }

    #[test]
    fn lines_carry_their_time_and_stream_and_read_back() {
        let line = log_line(at("2026-11-26T11:59:30.5Z"), Stream::Stderr, b"a b  c\n");
        let text = String::from_utf8(line).expect("utf-8");
        assert_eq!(text, "2026-11-26T11:59:30.500000000Z stderr F a b  c\n");
        let parsed = parse_line(text.trim_end()).expect("parses");
        assert_eq!(parsed.time, at("2026-11-26T11:59:30.5Z"));
        assert_eq!(parsed.content, "a b  c");
        assert_eq!(parse_line("listening on 0.0.0.0:8080"), None);
        let empty = String::from_utf8(log_line(at(NOW), Stream::Stdout, b"\n")).expect("utf-8");
        assert_eq!(
            parse_line(empty.trim_end_matches('\n')).map(|l| l.content),
            Some("")
        );
    }

    #[test]
    fn a_plain_request_shows_every_line_without_timestamps() {
        let out = select(&file(), &LogOptions::default());
        assert_eq!(out, "starting\nwarming up\nEchoing back /a\n");
    }

    #[test]
    fn tail_then_since_then_limit() {
        let tail = LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        assert_eq!(select(&file(), &tail), "warming up\nEchoing back /a\n");
        let since = LogOptions {
            since: Some(at("2026-11-26T11:59:30.5Z")),
            ..LogOptions::default()
        };
        assert_eq!(select(&file(), &since), "warming up\nEchoing back /a\n");
        let both = LogOptions {
            tail_lines: Some(2),
            since: Some(at("2026-11-26T11:59:45Z")),
            ..LogOptions::default()
        };
        assert_eq!(select(&file(), &both), "Echoing back /a\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..LogOptions::default()
        };
        assert_eq!(select(&file(), &none), "");
        let limited = LogOptions {
            limit_bytes: Some(4),
            ..LogOptions::default()
        };
        assert_eq!(select(&file(), &limited), "star");
    }

    #[test]
    fn timestamps_prefix_each_line_and_unknown_lines_pass_through() {
        let options = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..LogOptions::default()
        };
        assert_eq!(
            select(&file(), &options),
            "2026-11-26T11:59:59.000000000Z Echoing back /a\n"
        );
        let mixed = format!("{}raw line\n", file());
        let since = LogOptions {
            since: Some(at(NOW)),
            ..LogOptions::default()
        };
        assert_eq!(select(&mixed, &since), "raw line\n");
    }

    #[test]
    fn parses_what_the_apiserver_sends() {
        let request = parse_request(
            "/containerLogs/gateway-conformance-infra/echo-v1-abc/echo-v1",
            "sinceTime=2026-11-26T11%3A59%3A30Z&tailLines=10&timestamps=true&follow=false\
             &previous=false&insecureSkipTLSVerifyBackend=true",
            at(NOW),
        )
        .expect("parses");
        assert_eq!(request.namespace, "gateway-conformance-infra");
        assert_eq!(request.pod, "echo-v1-abc");
        assert_eq!(request.container.as_deref(), Some("echo-v1"));
        assert_eq!(
            request.options,
            LogOptions {
                tail_lines: Some(10),
                since: Some(at("2026-11-26T11:59:30Z")),
                timestamps: true,
                follow: false,
                previous: false,
                limit_bytes: None,
            }
        );
        let relative =
            parse_request("/containerLogs/ns/p/c", "sinceSeconds=90", at(NOW)).expect("parses");
        assert_eq!(relative.options.since, Some(at("2026-11-26T11:58:30Z")));
        let bare = parse_request("/containerLogs/ns/p", "", at(NOW)).expect("parses");
        assert_eq!(bare.container, None);
        assert_eq!(bare.options, LogOptions::default());
        let all = parse_request("/containerLogs/ns/p/c", "tailLines=-1", at(NOW)).expect("ok");
        assert_eq!(all.options.tail_lines, None);
    }

    #[test]
    fn refuses_what_a_kubelet_refuses() {
        let err =
            |path: &str, query: &str| parse_request(path, query, at(NOW)).expect_err("refused");
        assert_eq!(err("/pods", "").status(), 404);
        assert_eq!(err("/containerLogs/ns", "").status(), 404);
        assert_eq!(err("/containerLogs/ns/p/c/x", "").status(), 404);
        assert_eq!(err("/containerLogs/ns//c", "").status(), 400);
        assert_eq!(err("/containerLogs/ns/p/c", "tailLines=x").status(), 400);
        assert_eq!(err("/containerLogs/ns/p/c", "sinceSeconds=0").status(), 400);
        assert_eq!(
            err("/containerLogs/ns/p/c", "sinceTime=yesterday").status(),
            400
        );
        assert_eq!(
            err(
                "/containerLogs/ns/p/c",
                "sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"
            )
            .status(),
            400
        );
        assert_eq!(err("/containerLogs/ns/p/c", "follow=maybe").status(), 400);
    }

    #[test]
    fn percent_escapes_decode_and_broken_ones_stay() {
        assert_eq!(percent_decode("a%3Ab+c"), "a:b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    fn index() -> LogIndex {
        let mut index = LogIndex::new();
        index.insert(
            ("ns".into(), "one".into()),
            vec![ContainerLogs {
                name: "app".into(),
                current: "/s/one/app-1.log".into(),
                previous: Some("/s/one/app-0.log".into()),
            }],
        );
        index.insert(
            ("ns".into(), "two".into()),
            vec![
                ContainerLogs {
                    name: "envoy".into(),
                    current: "/s/two/envoy-0.log".into(),
                    previous: None,
                },
                ContainerLogs {
                    name: "shutdown-manager".into(),
                    current: "/s/two/shutdown-manager-0.log".into(),
                    previous: None,
                },
            ],
        );
        index
    }

    fn request(pod: &str, container: Option<&str>, previous: bool) -> LogRequest {
        LogRequest {
            namespace: "ns".into(),
            pod: pod.into(),
            container: container.map(str::to_owned),
            options: LogOptions {
                previous,
                ..LogOptions::default()
            },
        }
    }

    #[test]
    fn locates_the_current_or_previous_run_of_a_container() {
        let index = index();
        assert_eq!(
            locate(&index, &request("one", None, false)),
            Ok("/s/one/app-1.log".into())
        );
        assert_eq!(
            locate(&index, &request("one", Some("app"), true)),
            Ok("/s/one/app-0.log".into())
        );
        assert_eq!(
            locate(&index, &request("two", Some("shutdown-manager"), false)),
            Ok("/s/two/shutdown-manager-0.log".into())
        );
    }

    #[test]
    fn unknown_pods_and_containers_are_not_found() {
        let index = index();
        let gone = locate(&index, &request("three", None, false)).expect_err("refused");
        assert_eq!(gone.status(), 404);
        assert!(gone.to_string().contains("ns/three"), "{gone}");
        let wrong = locate(&index, &request("two", Some("app"), false)).expect_err("refused");
        assert_eq!(wrong.status(), 404);
        assert!(
            wrong.to_string().contains("envoy shutdown-manager"),
            "{wrong}"
        );
        assert_eq!(
            locate(&index, &request("two", None, false))
                .expect_err("refused")
                .status(),
            400
        );
        assert_eq!(
            locate(&index, &request("two", Some("envoy"), true))
                .expect_err("refused")
                .status(),
            400
        );
    }
}

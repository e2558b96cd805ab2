//! The control protocol between lbctl and lbd: over a Unix socket (root's,
//! mode 0600, or 0660 for lbd's control_group), one JSON request per
//! connection, one JSON response. This is the client's side; lbd serves it
//! (lb-userspace's `control`).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::conn_filter::ConnFilter;
use crate::explain::{ExplainQuery, Explanation};
use crate::snapshot::{Connection, Table, Timeouts};
use crate::vrrp::VrrpStatus;

/// Where lbd listens unless its config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/lbd.sock";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The virtual-server table with counters and rates.
    Table,
    /// The connection table, whole, in one answer (lbctl asks for pages,
    /// [`Request::ConnectionPage`], and this of an lbd without them).
    Connections,
    /// A page of the connection table, filtered in lbd (`lbctl -c
    /// --vip/--real/--client`; see `conn_filter`): from `cursor` on (the
    /// start for `None`), as the last page's `next` said.
    ConnectionPage {
        #[serde(default)]
        filter: ConnFilter,
        #[serde(default)]
        cursor: Option<String>,
    },
    Timeouts,
    /// The datapath's verdict counters, and connection sync's (`sync_*`).
    Counters,
    /// ipvsadm commands, carried out all or none.
    Apply { commands: Vec<Command> },
    /// The VRRP instances.
    Vrrp,
    /// Where a flow went or would go, and why (`lbctl explain`).
    Explain { query: ExplainQuery },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Table { table: Table },
    Connections { connections: Vec<Connection> },
    /// The entries of a page that match; `next` is the cursor of the next
    /// page (`None`: this was the last).
    ConnectionPage { connections: Vec<Connection>, next: Option<String> },
    Timeouts { timeouts: Timeouts },
    Counters { counters: BTreeMap<String, u64> },
    /// The commands were carried out.
    Done,
    Vrrp { instances: Vec<VrrpStatus> },
    Explain { explanation: Box<Explanation> },
    /// A command was refused and nothing changed: ipvsadm's message and
    /// exit status.
    Refused { message: String, exit_code: i32 },
    Error { message: String },
}

/// Sends one request to lbd and waits for the answer.
pub fn ask(socket: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach lbd at {} (is it running? --socket sets the path)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        bail!("lbd closed the connection without an answer");
    }
    let response: Response = serde_json::from_str(&answer).context("lbd's answer is not valid")?;
    if let Response::Error { message } = &response {
        bail!("{message}");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{grammar::parse, names::Names};

    /// Every kind of command crosses the socket as it was parsed.
    #[test]
    fn apply_carries_typed_commands() {
        let lines = [
            "-A -t 10.0.0.1:80 -s sh -b sh-port -p 100 -M 255.255.0.0",
            "-A -t [2001:db8::1]:80 -s rr -p 60 -M 64",
            "-E -t 10.0.0.1:80",
            "-D -u 10.0.0.1:53",
            "-C",
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i -w 3 -x 10 -y 5",
            "-e -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 0",
            "-d -t 10.0.0.1:80 -r 10.0.0.2",
            "-Z",
            "-Z -t 10.0.0.1:80",
            "--set 900 120 300",
            "-L -n -t 10.0.0.1:80 --stats",
            "-S -n",
            "--start-daemon backup --syncid 7 --mcast-group 224.0.0.81",
            "--stop-daemon master",
            "-h",
            "-A -f 2 -6 -s rr",
            "-a -f 1 -r 10.0.0.10 -g -w 2",
        ];
        let commands: Vec<Command> = lines
            .iter()
            .map(|l| parse(&l.split_whitespace().collect::<Vec<_>>(), &Names::default()).unwrap())
            .collect();
        let request = Request::Apply { commands };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        let address = r#"{"request":"apply","commands":[{"add_service":{"service":{"address":{"protocol":"tcp""#;
        assert!(json.starts_with(address), "{json}");
        assert!(json.contains(r#"{"add_service":{"service":{"fwmark":{"mark":2,"family":"ipv6"}},"#), "{json}");
    }
}

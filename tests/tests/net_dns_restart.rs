//! The node-local DNS while nobody listens (the agent restarting), on the real kernel with the
//! real `iptables-restore`, as root, in a private network namespace holding the cluster DNS
//! address: without the proxy's rules a query is refused at once (ICMP port unreachable for
//! UDP, RST for TCP), with them (`render_dns`) it times out, so resolvers retry; a server that
//! binds later answers through the same rules. Everything (namespace, chains) is removed on
//! drop, failure included.

#![allow(clippy::print_stderr)] // what happened is part of the report

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8slite_network::host::{PrepOptions, RealHost, ensure_iptables};
use k8slite_network::proxy::{IptablesBackend, Proxier, ProxyConfig, RecordingConntrack};

const DNS_IP: &str = "10.197.0.10";
const WAIT: Duration = Duration::from_secs(3);

fn require_root_and_tools() {
    k8slite_tests::require_root("this test creates a network namespace");
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "prerequisite missing: ip (iproute2)"
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, deleted on drop (with every rule in it).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// Run `f` on a thread inside the namespace.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// A DNS-sized UDP query to the DNS address: the error kind of the receive (`None`: an
/// answer came), and how long it took.
fn udp_query() -> (Option<ErrorKind>, Duration) {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    sock.connect(format!("{DNS_IP}:53")).expect("udp connect");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let start = Instant::now();
    sock.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01")
        .expect("udp send");
    let mut buf = [0u8; 512];
    let r = sock.recv(&mut buf);
    (r.err().map(|e| e.kind()), start.elapsed())
}

/// A TCP connection to the DNS address: the error kind (`None`: connected), and how long.
fn tcp_connect() -> (Option<ErrorKind>, Duration) {
    let addr: SocketAddr = format!("{DNS_IP}:53").parse().expect("addr");
    let start = Instant::now();
    let r = TcpStream::connect_timeout(&addr, WAIT);
    (r.err().map(|e| e.kind()), start.elapsed())
}

fn is_timeout(k: Option<ErrorKind>) -> bool {
    matches!(k, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn dns_queries_wait_instead_of_being_refused_while_no_server_listens() {
    require_root_and_tools();
    let id = std::process::id();
    let prefix = format!("KDR{}", id % 100_000);
    let ns = Netns(format!("kdnsr{id}"));
    let _ = run("ip", &["netns", "del", &ns.0]);
    must("ip", &["netns", "add", &ns.0]);
    must("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    must(
        "ip",
        &[
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{DNS_IP}/32"),
            "dev",
            "lo",
        ],
    );

    // Nobody listens, no rules: refused at once.
    let (udp, took) = in_netns(&ns.0, udp_query);
    eprintln!("udp without rules: {udp:?} after {took:?}");
    assert_eq!(udp, Some(ErrorKind::ConnectionRefused), "udp without rules");
    let (tcp, took) = in_netns(&ns.0, tcp_connect);
    eprintln!("tcp without rules: {tcp:?} after {took:?}");
    assert_eq!(tcp, Some(ErrorKind::ConnectionRefused), "tcp without rules");

    // The proxy's rules, with the node-local DNS on.
    let run_dir = tempfile::tempdir().expect("tmp");
    let (iptables, kind, _) =
        ensure_iptables(&RealHost, &PrepOptions::new(run_dir.path().join("run")))
            .expect("prerequisite missing: iptables");
    eprintln!(
        "iptables: {} ({kind:?}); prefix {prefix}",
        iptables.display()
    );
    let mut cfg = ProxyConfig::new(
        "node",
        vec![],
        "10.196.0.0/16".parse().expect("cidr"),
        "10.197.0.0/16".parse().expect("cidr"),
    );
    cfg.chain_prefix = prefix.clone();
    cfg.local_dns = Some(DNS_IP.parse().expect("ip"));
    let backend = IptablesBackend::new(iptables.clone())
        .in_netns(PathBuf::from(format!("/run/netns/{}", ns.0)));
    let mut proxier = Proxier::new(cfg, backend, RecordingConntrack::new());
    let report = proxier.sync(&[], &[]).expect("sync (iptables-restore)");
    assert!(report.applied);

    // Nobody listens, with the rules: the replies are dropped, the client times out.
    let (udp, took) = in_netns(&ns.0, udp_query);
    eprintln!("udp with rules: {udp:?} after {took:?}");
    assert!(is_timeout(udp), "udp with rules: {udp:?} after {took:?}");
    let (tcp, took) = in_netns(&ns.0, tcp_connect);
    eprintln!("tcp with rules: {tcp:?} after {took:?}");
    assert!(is_timeout(tcp), "tcp with rules: {tcp:?} after {took:?}");
    let save = iptables.with_file_name(format!(
        "{}-save",
        iptables
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("iptables")
    ));
    let dump = run(
        "nsenter",
        &[
            &format!("--net=/run/netns/{}", ns.0),
            "--",
            save.to_str().unwrap_or("iptables-save"),
            "-c",
            "-t",
            "filter",
        ],
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let dropped: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains(&format!("-A {prefix}-OUTPUT")) && l.ends_with("-j DROP"))
        .collect();
    eprintln!("{}", dropped.join("\n"));
    assert_eq!(dropped.len(), 2, "{dump}");
    assert!(
        dropped.iter().all(|l| !l.starts_with("[0:0]")),
        "both rules matched a reply: {dropped:?}"
    );

    // A server that binds later answers through the same rules (UDP and TCP).
    let answered = in_netns(&ns.0, || {
        let server = UdpSocket::bind(format!("{DNS_IP}:53")).expect("server bind udp");
        let listener = TcpListener::bind(format!("{DNS_IP}:53")).expect("server bind tcp");
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
            if let Ok((mut c, _)) = listener.accept() {
                let mut b = [0u8; 4];
                let _ = c.read_exact(&mut b);
                let _ = c.write_all(&b);
            }
        });
        let (udp, _) = udp_query();
        let mut c =
            TcpStream::connect_timeout(&format!("{DNS_IP}:53").parse().expect("addr"), WAIT)
                .expect("tcp connect to the server");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        c.write_all(b"ping").expect("tcp write");
        let mut b = [0u8; 4];
        c.read_exact(&mut b).expect("tcp read");
        let _ = c.shutdown(Shutdown::Both);
        let _ = t.join();
        (udp, b)
    });
    assert_eq!(answered.0, None, "udp answered by the server");
    assert_eq!(&answered.1, b"ping");

    proxier.cleanup().expect("cleanup");
    let after = run(
        "nsenter",
        &[
            &format!("--net=/run/netns/{}", ns.0),
            "--",
            save.to_str().unwrap_or("iptables-save"),
        ],
    );
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains(&prefix),
        "chains left after cleanup"
    );
}

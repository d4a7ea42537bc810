//! The command guard (issue 10 item 1), against a real `redis-server` whose `default` user is
//! on without a password (as Redis ships) plus ACL users: a session can never become another
//! db-user, whatever it sends after its opening — AUTH, HELLO … AUTH, RESET, inline or with a
//! NUL in the name — and its own AUTH is answered in order without its password going
//! upstream. Database `passdb` (`relay = "passthrough"`) is the byte relay of before: there the
//! same bytes DO switch the user, which proves each check can fail.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::clients::{python, redis_cli_stdin};
use support::raw::{command, command_str, show, Raw};
use support::stack::{Stack, StackOpts, Via, APP, CLIENT_PASSWORD, PASSWORD_ENV};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Redis' `default` user on without a password, `passdb` (passthrough) and, with `recorder`,
/// `recdb`: the plaintext upstream behind that byte recorder.
fn stack(recorder: Option<&Recorder>) -> Stack {
    let extra_toml = recorder.map_or(String::new(), |r| {
        format!(
            "\n[[databases]]\nname = \"recdb\"\naddress = \"{}\"\n\
             auth = {{ mode = \"password\", password_env = \"{PASSWORD_ENV}\" }}\n\
             default_db_user = \"app\"\n",
            r.addr
        )
    });
    let s = Stack::start_with(StackOpts {
        open_db: true,
        passthrough_db: true,
        extra_toml,
        // With a recorder the test counts each session's own AUTHs upstream: none ahead.
        extra_limits: recorder.map_or(String::new(), |_| "warm_connections = 0".into()),
        ..StackOpts::default()
    });
    if let Some(r) = recorder {
        *r.target.lock().unwrap() = Some(s.redis.plain_addr());
    }
    s
}

const APP_BULK: &[u8] = b"$3\r\napp\r\n";
const DEFAULT_BULK: &[u8] = b"$7\r\ndefault\r\n";

async fn whoami(c: &mut Raw) -> Vec<u8> {
    c.request_str(&["ACL", "WHOAMI"]).await.expect("ACL WHOAMI")
}

fn is_guard_refusal(reply: &[u8]) -> bool {
    reply.starts_with(b"-ERR unknown command 'bastion: ")
}

/// The ways to switch users, as raw requests (each answered with one frame).
fn switches() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("AUTH", command_str(&["AUTH", "default", "x"])),
        (
            "HELLO AUTH",
            command_str(&["HELLO", "2", "AUTH", "default", "x"]),
        ),
        ("RESET", command_str(&["RESET"])),
        ("inline AUTH", b"AUTH default x\r\n".to_vec()),
        ("inline reset", b"reset\r\n".to_vec()),
        (
            "inline quoted AUTH\\0",
            b"\"AUTH\\x00\" default x\r\n".to_vec(),
        ),
        ("AUTH\\0", command(&[b"AUTH\0", b"default", b"x"])),
    ]
}

#[test]
fn a_session_cannot_switch_db_user() {
    let s = stack(None);
    for via in [Via::Unix, Via::Mtls] {
        let ep = s.endpoint(via, "plaindb");
        let mark = s.bastion.log_mark();
        rt().block_on(async {
            let mut c = Raw::connect(&ep).await.expect("connect");
            assert_eq!(whoami(&mut c).await, APP_BULK);
            for (what, bytes) in switches() {
                c.send(&bytes).await.expect("send");
                let r = c.read_frame().await.expect("reply");
                assert!(is_guard_refusal(&r), "{via:?} {what}: {}", show(&r));
                assert_eq!(whoami(&mut c).await, APP_BULK, "{via:?} after {what}");
            }
        });
        s.bastion
            .expect_log_line(mark, &["command.refused", "command=\"RESET\""], &[]);
        s.bastion.expect_log_line(
            mark,
            &[
                "command.refused",
                "command=\"AUTH\"",
                "reconnect as that user",
            ],
            &[],
        );
    }
    // redis-cli on one connection: the refusals print in place, the user never changes.
    let out = redis_cli_stdin(
        &s.unix("plaindb"),
        &[],
        b"ACL WHOAMI\nAUTH default x\nHELLO 3 AUTH default x\nRESET\nACL WHOAMI\n",
    );
    let lines = out.lines();
    assert_eq!(lines.first().map(String::as_str), Some(APP), "{out}");
    assert_eq!(lines.last().map(String::as_str), Some(APP), "{out}");
    let refused = lines.iter().filter(|l| l.contains("'bastion: ")).count();
    assert_eq!(refused, 3, "{out}");
    s.assert_no_secrets_in_logs();
}

/// The same with redis-py on one connection: the refusals are `ResponseError`s naming the
/// bastion, its own AUTH (alone and in a pipeline) answers `True`, the user stays `app`.
#[test]
fn redis_py_sees_refusals_and_answers_in_place() {
    let s = stack(None);
    let script = r#"
r = connect(single_connection_client=True, username="app", password="x")
print(r.acl_whoami())
for args in (("AUTH", "default", "x"), ("HELLO", "3", "AUTH", "default", "x"), ("RESET",)):
    try:
        r.execute_command(*args)
        print("ran", args[0])
    except redis.ResponseError as e:
        print("refused", args[0], "bastion:" in str(e))
print(r.acl_whoami())
print(r.execute_command("AUTH", "app", "y"))
p = r.pipeline(transaction=False)
p.ping(); p.execute_command("AUTH", "app", "z"); p.set("k", "v"); p.get("k")
print(p.execute())
print(r.acl_whoami())
"#;
    for via in [Via::Unix, Via::Mtls] {
        let out = python(&s.endpoint(via, "plaindb"), script);
        out.assert_success();
        assert_eq!(
            out.lines(),
            [
                "app",
                "refused AUTH True",
                "refused HELLO True",
                "refused RESET True",
                "app",
                "True",
                "[True, True, True, b'v']",
                "app",
            ],
            "{via:?}: {out}"
        );
    }
}

/// Without the guard the same bytes switch the user: the attack is real and the checks above
/// can fail. (Only the spellings Redis itself runs as AUTH/HELLO/RESET.)
#[test]
fn passthrough_relays_the_switch_untouched() {
    let s = stack(None);
    let ep = s.unix("passdb");
    rt().block_on(async {
        for (what, bytes) in &switches()[..5] {
            let mut c = Raw::connect(&ep).await.expect("connect");
            assert_eq!(whoami(&mut c).await, APP_BULK);
            c.send(bytes).await.expect("send");
            let r = c.read_frame().await.expect("reply");
            assert!(!is_guard_refusal(&r), "{what}: {}", show(&r));
            let after = whoami(&mut c).await;
            // RESET makes the connection `default` again (no password needed on this Redis).
            assert_eq!(after, DEFAULT_BULK, "{what}: {}", show(&r));
        }
    });
}

/// `AUTH app <password>` and `HELLO 3 AUTH app <password>` in a pipeline of one write: each
/// answered where it stands (+OK from the re-AUTH, HELLO's own map), every reply in order; the
/// client's password never reaches the upstream (bytes recorded between bastion and Redis),
/// and MONITOR shows AUTH as the bastion's two-argument form and the refusal by name.
#[test]
fn own_auth_is_answered_in_order_and_its_password_never_goes_upstream() {
    let recorder = Recorder::start();
    let s = stack(Some(&recorder));
    let monitor = s.redis.monitor();
    for via in [Via::Unix, Via::Mtls] {
        let ep = s.endpoint(via, "recdb");
        rt().block_on(async {
            let mut c = Raw::connect(&ep).await.expect("connect");
            let pipeline = [
                command_str(&["PING"]),
                command_str(&["AUTH", APP, CLIENT_PASSWORD]),
                command_str(&["SET", "k", "v"]),
                format!("AUTH {CLIENT_PASSWORD}\r\n").into_bytes(),
                command_str(&["AUTH", "default", CLIENT_PASSWORD]),
                command_str(&["GET", "k"]),
                command_str(&["HELLO", "2", "AUTH", APP, CLIENT_PASSWORD, "SETNAME", "n1"]),
                command_str(&["CLIENT", "GETNAME"]),
                command_str(&["ACL", "WHOAMI"]),
            ]
            .concat();
            c.send(&pipeline).await.expect("send pipeline");
            let r = c.read_frames(9).await.expect("replies");
            assert_eq!(r[0], b"+PONG\r\n");
            assert_eq!(r[1], b"+OK\r\n", "{}", show(&r[1]));
            assert_eq!(r[2], b"+OK\r\n");
            assert_eq!(r[3], b"+OK\r\n", "one-argument AUTH: {}", show(&r[3]));
            assert!(is_guard_refusal(&r[4]), "{}", show(&r[4]));
            assert_eq!(r[5], b"$1\r\nv\r\n");
            assert!(
                r[6].starts_with(b"*14\r\n$6\r\nserver\r\n"),
                "{}",
                show(&r[6])
            );
            assert_eq!(r[7], b"$2\r\nn1\r\n");
            assert_eq!(r[8], APP_BULK);
        });
    }
    let seen = recorder.bytes();
    assert!(
        seen.windows(b"CLIENT GETNAME".len()).count() > 0 && !seen.is_empty(),
        "the recorder saw the session"
    );
    let pw = CLIENT_PASSWORD.as_bytes();
    assert!(
        !seen.windows(pw.len()).any(|w| w == pw),
        "the client's password reached the upstream"
    );
    let upstream_pw = s.upstream_password.as_bytes();
    assert!(seen.windows(upstream_pw.len()).any(|w| w == upstream_pw));
    // Upstream, HELLO came without its AUTH part, and every AUTH was the bastion's
    // two-argument one (the opening and one per client AUTH), never the client's one-argument
    // AUTH nor the refused one (Redis does not show unknown commands).
    let out = monitor.expect("\"HELLO\" \"2\" \"SETNAME\" \"n1\"");
    let auths: Vec<&str> = out.lines().filter(|l| l.contains("\"AUTH\"")).collect();
    assert_eq!(auths.len(), 2 * 3, "{out}");
    assert!(
        auths
            .iter()
            .all(|l| l.ends_with("\"AUTH\" \"(redacted)\" \"(redacted)\"")),
        "{out}"
    );
    s.assert_no_secrets_in_logs();
}

/// A large argument goes through the guard without being looked at — on plain legs (Unix
/// client, plaintext upstream) by splice, the session's `path_client_to_upstream` says so — but
/// never a byte past it: an AUTH sent in the same write right after a 1 MB value is still
/// framed and refused, and the value arrives whole. Each way the bypass could overreach (a
/// splice past the value's end) would put `AUTH default x` upstream unframed, and the session
/// would become `default`.
#[test]
fn a_large_value_is_spliced_but_what_follows_it_is_still_guarded() {
    let s = stack(None);
    let value: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for (via, path) in [(Via::Unix, "splice"), (Via::Mtls, "copy")] {
        let ep = s.endpoint(via, "plaindb");
        let mark = s.bastion.log_mark();
        rt().block_on(async {
            let mut c = Raw::connect(&ep).await.expect("connect");
            let pipeline = [
                command(&[b"SET", b"big", &value]),
                b"AUTH default x\r\n".to_vec(),
                command(&[b"SET", b"big2", &value]),
                command_str(&["AUTH", "default", "x"]),
                command_str(&["ACL", "WHOAMI"]),
                command_str(&["STRLEN", "big"]),
            ]
            .concat();
            c.send(&pipeline).await.expect("send pipeline");
            let r = c.read_frames(6).await.expect("replies");
            assert_eq!(r[0], b"+OK\r\n", "{via:?}: {}", show(&r[0]));
            assert!(is_guard_refusal(&r[1]), "{via:?}: {}", show(&r[1]));
            assert_eq!(r[2], b"+OK\r\n", "{via:?}: {}", show(&r[2]));
            assert!(is_guard_refusal(&r[3]), "{via:?}: {}", show(&r[3]));
            assert_eq!(r[4], APP_BULK, "{via:?}: {}", show(&r[4]));
            assert_eq!(r[5], b":1000000\r\n", "{via:?}: {}", show(&r[5]));
            for key in ["big", "big2"] {
                let got = c.request_str(&["GET", key]).await.expect("GET");
                let mut want = format!("${}\r\n", value.len()).into_bytes();
                want.extend_from_slice(&value);
                want.extend_from_slice(b"\r\n");
                assert!(got == want, "{via:?}: {key} came back different");
            }
        });
        let end = s
            .bastion
            .expect_log_line(mark, &["session.end", "plaindb"], &[]);
        assert!(
            end.contains(&format!("path_client_to_upstream=\"{path}\"")),
            "{via:?}: {end}"
        );
    }
}

/// A protocol error gets Redis' own reply after the replies to the commands before it, then
/// the connection closes — the same bytes as from Redis directly.
#[test]
fn a_protocol_error_gets_redis_own_reply_then_the_connection_closes() {
    let s = stack(None);
    let cases: [&[u8]; 4] = [
        b"*1\r\n$-1\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\nfooz\r\n",
        b"*x\r\n",
        b"ECHO \"a\r\n",
    ];
    rt().block_on(async {
        for case in cases {
            let bytes = [&command_str(&["PING"])[..], case, b"PING\r\n"].concat();
            let mut direct = Raw::connect_tcp_only(s.redis.plain_addr())
                .await
                .expect("direct");
            direct.send(&bytes).await.expect("send");
            let want = direct
                .read_until_closed(Duration::from_secs(10))
                .await
                .map_err(|b| show(&b))
                .expect("Redis closes");
            assert!(
                want.starts_with(b"+PONG\r\n-ERR Protocol error: "),
                "{}",
                show(&want)
            );
            for via in [Via::Unix, Via::Mtls] {
                let mut c = Raw::connect(&s.endpoint(via, "plaindb"))
                    .await
                    .expect("connect");
                c.send(&bytes).await.expect("send");
                let got = c
                    .read_until_closed(Duration::from_secs(10))
                    .await
                    .map_err(|b| show(&b))
                    .expect("the bastion closes");
                assert_eq!(show(&got), show(&want), "{via:?} {}", show(case));
            }
        }
    });
}

/// Bytes a client sent towards `target`, recorded on the way (client → server only).
struct Recorder {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("recorder addr");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (t, s) = (target.clone(), seen.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let Some(to) = *t.lock().unwrap() else {
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(to) else {
                    continue;
                };
                let seen = s.clone();
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                thread::spawn(move || pump(client, upstream, Some(seen)));
                thread::spawn(move || pump(u2, c2, None));
            }
        });
        Recorder { addr, target, seen }
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(r) = &record {
            r.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

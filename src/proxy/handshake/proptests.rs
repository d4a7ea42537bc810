//! Property tests: the parsers' answers do not depend on how the bytes were split across reads.

use proptest::collection::vec;
use proptest::prelude::*;

use super::client::{parse_opening, Opening, Parsed};
use super::upstream::{parse_reply, Reply};
use super::HandshakeError;

/// Small, so generated AUTH/HELLO frames sometimes cross it.
const LIMIT: usize = 200;
const REPLY_LIMIT: usize = 512;

/// Feed `data[..cut]` for each (sorted) cut, then `data` whole, as a session would after each
/// read: the answers must be `Ok(None)` up to some prefix and `expected` from then on.
fn feed<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    mut cuts: Vec<usize>,
    expected: &Result<Option<T>, HandshakeError>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, HandshakeError>,
) -> Result<(), TestCaseError> {
    cuts.iter_mut().for_each(|c| *c = (*c).min(data.len()));
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut decided = false;
    for cut in cuts {
        let answer = parse(&data[..cut]);
        if answer == Ok(None) {
            prop_assert!(!decided, "undecided again at {} bytes", cut);
        } else {
            decided = true;
            prop_assert_eq!(&answer, expected, "at {} bytes", cut);
        }
    }
    Ok(())
}

/// A command as RESP, built by hand so the test does not trust the code under test.
fn resp(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `word` with each letter's case chosen by `upper`.
fn recase(word: &str, upper: &[bool]) -> Vec<u8> {
    word.bytes()
        .zip(upper.iter().cycle())
        .map(|(b, &u)| {
            if u {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum HelloOption {
    Auth(String, Vec<u8>),
    SetName(String),
}

/// What the client opens with, before it is turned into bytes.
#[derive(Debug, Clone)]
enum Generated {
    Auth {
        user: Option<String>,
        password: Vec<u8>,
    },
    Hello {
        protover: Option<u8>,
        options: Vec<HelloOption>,
    },
    Command {
        name: String,
        args: Vec<Vec<u8>>,
    },
}

impl Generated {
    fn args(&self, upper: &[bool]) -> Vec<Vec<u8>> {
        match self {
            Generated::Auth { user, password } => {
                let mut args = vec![recase("auth", upper)];
                args.extend(user.iter().map(|u| u.as_bytes().to_vec()));
                args.push(password.clone());
                args
            }
            Generated::Hello { protover, options } => {
                let mut args = vec![recase("hello", upper)];
                args.extend(protover.iter().map(|v| v.to_string().into_bytes()));
                for option in options {
                    match option {
                        HelloOption::Auth(user, password) => args.extend([
                            recase("auth", upper),
                            user.as_bytes().to_vec(),
                            password.clone(),
                        ]),
                        HelloOption::SetName(name) => {
                            args.extend([recase("setname", upper), name.as_bytes().to_vec()])
                        }
                    }
                }
                args
            }
            Generated::Command { name, args } => {
                let mut all = vec![name.as_bytes().to_vec()];
                all.extend(args.iter().cloned());
                all
            }
        }
    }

    fn opening(&self) -> Opening {
        match self {
            Generated::Auth { user, .. } => Opening::Auth {
                db_user: user.clone(),
            },
            Generated::Hello { protover, options } => {
                let (mut db_user, mut setname) = (None, None);
                for option in options {
                    match option {
                        HelloOption::Auth(user, _) => db_user = Some(user.clone()),
                        HelloOption::SetName(name) => setname = Some(name.clone().into_bytes()),
                    }
                }
                Opening::Hello {
                    protover: *protover,
                    db_user,
                    setname,
                }
            }
            Generated::Command { name, .. } => Opening::Command { name: name.clone() },
        }
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}"
}

/// Passwords: usually short, sometimes longer than the limit; any bytes in RESP form.
fn password() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..24),
        1 => vec(any::<u8>(), LIMIT - 40..LIMIT + 40),
    ]
}

/// Passwords an inline command can carry: no whitespace, quotes or newlines.
fn inline_password() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9!#$%&*+,./:;<=>?@^_|~-]{1,24}",
        1 => "[a-z]{160,240}",
    ]
    .prop_map(String::into_bytes)
}

fn hello_options(password: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<HelloOption>> {
    vec(
        prop_oneof![
            (word(), password).prop_map(|(u, p)| HelloOption::Auth(u, p)),
            word().prop_map(HelloOption::SetName),
        ],
        0..4,
    )
}

fn generated(password: BoxedStrategy<Vec<u8>>, inline: bool) -> impl Strategy<Value = Generated> {
    let auth = (proptest::option::of(word()), password.clone())
        .prop_map(|(user, password)| Generated::Auth { user, password });
    let hello = prop_oneof![
        Just(Generated::Hello {
            protover: None,
            options: vec![]
        }),
        (prop_oneof![Just(2u8), Just(3u8)], hello_options(password)).prop_map(
            |(protover, options)| Generated::Hello {
                protover: Some(protover),
                options
            }
        ),
    ];
    let value = if inline {
        "[a-z0-9]{0,300}".prop_map(String::into_bytes).boxed()
    } else {
        prop_oneof![
            3 => vec(any::<u8>(), 0..16),
            1 => vec(any::<u8>(), 1000..5000),
        ]
        .boxed()
    };
    let command = (
        "[a-zA-Z][a-zA-Z0-9_]{0,11}".prop_filter("not AUTH or HELLO", |n| {
            !n.eq_ignore_ascii_case("auth") && !n.eq_ignore_ascii_case("hello")
        }),
        vec(value, 0..3),
    )
        .prop_map(|(name, args)| Generated::Command { name, args });
    prop_oneof![auth, hello, command]
}

/// A generated opening as bytes (RESP or inline), followed by pipelined bytes, and the answer
/// `parse_opening(bytes, LIMIT)` must give.
fn opening_case() -> impl Strategy<Value = (Vec<u8>, Result<Option<Parsed>, HandshakeError>)> {
    let resp_case = (
        generated(password().boxed(), false),
        vec(any::<bool>(), 1..8),
    )
        .prop_map(|(g, upper)| (g.clone(), resp(&g.args(&upper))));
    let inline_case = (
        generated(inline_password().boxed(), true),
        vec(any::<bool>(), 1..8),
        prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..])],
    )
        .prop_map(|(g, upper, eol)| {
            let mut line = g.args(&upper).join(&b' ');
            line.extend_from_slice(eol);
            (g, line)
        });
    (prop_oneof![resp_case, inline_case], vec(any::<u8>(), 0..64)).prop_map(
        |((g, frame), pipelined)| {
            let opening = g.opening();
            let expected = match opening {
                Opening::Command { .. } => Ok(Some(Parsed {
                    opening,
                    consumed: 0,
                })),
                _ if frame.len() > LIMIT => Err(HandshakeError::TooLarge { limit: LIMIT }),
                _ => Ok(Some(Parsed {
                    opening,
                    consumed: frame.len(),
                })),
            };
            let mut bytes = frame;
            bytes.extend_from_slice(&pipelined);
            (bytes, expected)
        },
    )
}

/// Byte soup that often looks like RESP, to reach deeper than random bytes do.
fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"*"[..]),
        Just(&b"$"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b" "[..]),
        Just(&b"1"[..]),
        Just(&b"2"[..]),
        Just(&b"3"[..]),
        Just(&b"4"[..]),
        Just(&b"5"[..]),
        Just(&b"-1"[..]),
        Just(&b"AUTH"[..]),
        Just(&b"hello"[..]),
        Just(&b"SETNAME"[..]),
        Just(&b"%"[..]),
        Just(&b"|"[..]),
        Just(&b"+OK"[..]),
        Just(&b"-ERR"[..]),
        Just(&b"!"[..]),
        Just(&b"\""[..]),
        Just(&b"x"[..]),
    ];
    prop_oneof![
        vec(any::<u8>(), 0..300),
        vec(piece, 0..60).prop_map(|pieces| pieces.concat()),
    ]
}

/// Every prefix of `data`: once an answer is given, longer prefixes give the same one.
fn assert_monotone<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, HandshakeError>,
) -> Result<(), TestCaseError> {
    let mut first: Option<(usize, Result<Option<T>, HandshakeError>)> = None;
    for end in 0..=data.len() {
        let answer = parse(&data[..end]);
        match &first {
            Some((at, decided)) => {
                prop_assert_eq!(&answer, decided, "decided at {}, changed at {}", at, end)
            }
            None if answer != Ok(None) => first = Some((end, answer)),
            None => {}
        }
    }
    Ok(())
}

/// A reply tree: what the upstream might send, and the error text it carries at the top.
fn reply_case() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    let text = "[a-zA-Z0-9 _.-]{0,30}";
    let leaf = prop_oneof![
        text.prop_map(|t| (format!("+{t}\r\n").into_bytes(), None)),
        text.prop_map(|t| (format!("-{t}\r\n").into_bytes(), Some(t))),
        text.prop_map(|t| (format!("!{}\r\n{t}\r\n", t.len()).into_bytes(), Some(t))),
        any::<i64>().prop_map(|i| (format!(":{i}\r\n").into_bytes(), None)),
        vec(any::<u8>(), 0..40).prop_map(|b| {
            let mut out = format!("${}\r\n", b.len()).into_bytes();
            out.extend_from_slice(&b);
            out.extend_from_slice(b"\r\n");
            (out, None)
        }),
        Just((b"_\r\n".to_vec(), None)),
        Just((b"#t\r\n".to_vec(), None)),
        any::<i32>().prop_map(|i| (format!(",{i}.5\r\n").into_bytes(), None)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            (
                prop_oneof![Just('*'), Just('~'), Just('>')],
                vec(inner.clone(), 0..8)
            )
                .prop_map(|(kind, items)| {
                    // Set members must be hashable for the decoder: use bulk strings there.
                    let items: Vec<Vec<u8>> = if kind == '~' {
                        (0..items.len())
                            .map(|i| format!("${}\r\n{i}\r\n", i.to_string().len()).into_bytes())
                            .collect()
                    } else {
                        items.into_iter().map(|(b, _)| b).collect()
                    };
                    let mut out = format!("{kind}{}\r\n", items.len()).into_bytes();
                    out.extend(items.concat());
                    (out, None)
                }),
            vec(("[a-z]{1,8}", inner), 0..6).prop_map(|pairs| {
                let mut out = format!("%{}\r\n", pairs.len()).into_bytes();
                for (key, (value, _)) in pairs {
                    out.extend(format!("${}\r\n{key}\r\n", key.len()).into_bytes());
                    out.extend(value);
                }
                (out, None)
            }),
        ]
    })
}

proptest! {
    #[test]
    fn opening_is_split_invariant(
        (data, expected) in opening_case(),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        prop_assert_eq!(&parse_opening(&data, LIMIT), &expected);
        let cuts = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        feed(&data, cuts, &expected, |b| parse_opening(b, LIMIT))?;
    }

    #[test]
    fn opening_never_panics_and_never_changes_its_mind(data in resp_soup()) {
        assert_monotone(&data, |b| parse_opening(b, LIMIT))?;
        assert_monotone(&data, |b| parse_opening(b, 16))?;
    }

    #[test]
    fn reply_is_split_invariant(
        (frame, error) in reply_case(),
        trailing in vec(any::<u8>(), 0..32),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let expected = if frame.len() > REPLY_LIMIT {
            Err(HandshakeError::TooLarge { limit: REPLY_LIMIT })
        } else {
            Ok(Some(Reply { len: frame.len(), error }))
        };
        let mut data = frame;
        data.extend_from_slice(&trailing);
        prop_assert_eq!(&parse_reply(&data, REPLY_LIMIT), &expected);
        let cuts = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        feed(&data, cuts, &expected, |b| parse_reply(b, REPLY_LIMIT))?;
    }

    #[test]
    fn reply_never_panics_and_never_changes_its_mind(data in resp_soup()) {
        assert_monotone(&data, |b| parse_reply(b, REPLY_LIMIT))?;
        assert_monotone(&data, |b| parse_reply(b, 16))?;
    }
}

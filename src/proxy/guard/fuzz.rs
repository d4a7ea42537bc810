//! The fuzz entry point for the framer, in the library so `cargo test` runs it over a corpus and
//! the cargo-fuzz target (`fuzz/fuzz_targets/guard_framer.rs`) is a one-line call.
//!
//! It frames `data` whole, one byte at a time, at cut points chosen by the data, and moving
//! opaque payload bytes with `skip`; all four must report the same events at the same offsets,
//! and the events must keep their own invariants (order, offsets, nothing after `Dead`).

use super::framer::{Event, Framer, FramerConfig, Kind};
use super::ProtocolError;

/// Small limits so a fuzzer reaches them (`proto-max-bulk-len`, the inspect budget).
const FUZZ_CONFIG: FramerConfig = FramerConfig {
    proto_max_bulk_len: 1000,
    authenticated: true,
    inspect_bytes: 100,
    hold_bytes: 300,
};

/// Fuzz the framer: never panics, split-invariant, events well ordered.
pub fn fuzz_framer(data: &[u8]) {
    // The first byte picks the options, so the fuzzer steers them too.
    let (opts, data) = data.split_first().map_or((0, data), |(o, d)| (*o, d));
    let config = FramerConfig {
        authenticated: opts & 1 == 0,
        ..FUZZ_CONFIG
    };
    let inspect = opts & 2 != 0;
    let whole = record(config, inspect, false, &[data]);
    check_order(&whole, data.len() as u64);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(
        record(config, inspect, false, &bytes),
        whole,
        "byte by byte"
    );
    assert_eq!(record(config, inspect, true, &[data]), whole, "with skip");
    let cut = usize::from(opts) % (data.len() + 1);
    let (a, b) = data.split_at(cut);
    assert_eq!(
        record(config, inspect, true, &[a, b]),
        whole,
        "cut at {cut}"
    );
    // The guard's fast path frames the same commands, whole or cut.
    let plain = without_offsets(&record(config, false, false, &[data]));
    assert_eq!(record_skimming(config, &[data]), plain, "skimming");
    assert_eq!(
        record_skimming(config, &[a, b]),
        plain,
        "skimming, cut at {cut}"
    );
}

/// The events of `record`, without the offsets at which they came.
pub(super) fn without_offsets(events: &[(u64, Rec)]) -> Vec<Rec> {
    events.iter().map(|(_, rec)| rec.clone()).collect()
}

/// Frame `chunks` as the guard does without an observer: whole commands its rules forward
/// taken by [`Framer::skim`] (recorded as the `Command` and `End` that `advance` would have
/// reported), the rest by `advance`, opaque payloads moved with `skip`.
pub(super) fn record_skimming(config: FramerConfig, chunks: &[&[u8]]) -> Vec<Rec> {
    let mut framer = Framer::new(config);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        loop {
            let skimmed = framer.skim(rest, |command| {
                if !super::rules::forwards(command.name) {
                    return false;
                }
                out.push(Rec::Command {
                    kind: Kind::Multibulk,
                    start: command.start,
                    argc: command.argc,
                    name_len: command.name.len() as u64,
                    name: command.name.to_vec(),
                });
                out.push(Rec::End { end: command.end });
                true
            });
            rest = &rest[skimmed..];
            let n = framer.opaque_len().min(rest.len() as u64);
            framer.skip(n);
            rest = &rest[n as usize..];
            let step = framer.advance(rest);
            rest = &rest[step.consumed..];
            match step.event {
                Some(event) => out.push(own(event)),
                None if step.consumed == 0 => break,
                None => {}
            }
        }
    }
    out
}

/// An event, owned, with the stream offset at which it was reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rec {
    Command {
        kind: Kind,
        start: u64,
        argc: u64,
        name_len: u64,
        name: Vec<u8>,
    },
    Arg {
        index: u64,
        len: u64,
        prefix: Vec<u8>,
        whole: bool,
    },
    End {
        end: u64,
    },
    Dead {
        error: ProtocolError,
        at: u64,
    },
}

/// Frame `chunks` in order, inspecting every command if `inspect`, moving opaque bytes with
/// `skip` if `use_skip`. Returns each event with the offset at which it came.
pub(super) fn record(
    config: FramerConfig,
    inspect: bool,
    use_skip: bool,
    chunks: &[&[u8]],
) -> Vec<(u64, Rec)> {
    let mut framer = Framer::new(config);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        loop {
            if use_skip {
                let n = framer.opaque_len().min(rest.len() as u64);
                framer.skip(n);
                rest = &rest[n as usize..];
            }
            let step = framer.advance(rest);
            rest = &rest[step.consumed..];
            let Some(event) = step.event else {
                if step.consumed == 0 {
                    break;
                }
                continue;
            };
            let rec = own(event);
            if inspect && matches!(rec, Rec::Command { .. }) {
                // Every other command held (its larger budget), at a split-independent offset.
                if framer.offset() % 2 == 0 {
                    framer.hold();
                } else {
                    framer.inspect();
                }
            }
            out.push((framer.offset(), rec));
        }
    }
    out
}

fn own(event: Event<'_>) -> Rec {
    match event {
        Event::Command(head) => Rec::Command {
            kind: head.kind,
            start: head.start,
            argc: head.argc,
            name_len: head.name_len,
            name: head.name().to_vec(),
        },
        Event::Arg(arg) => Rec::Arg {
            index: arg.index,
            len: arg.len,
            prefix: arg.prefix().to_vec(),
            whole: arg.value().is_some(),
        },
        Event::End { end } => Rec::End { end },
        Event::Dead { error, at } => Rec::Dead { error, at },
    }
}

/// Command → Args (increasing index, below argc) → End; offsets never go back nor past the
/// data; `Dead` is last; reported lengths agree with what was kept.
fn check_order(events: &[(u64, Rec)], len: u64) {
    let mut open: Option<(u64, u64)> = None; // (argc, last arg index)
    let mut last_offset = 0;
    for (i, (offset, rec)) in events.iter().enumerate() {
        assert!(*offset >= last_offset && *offset <= len, "offset {offset}");
        last_offset = *offset;
        match rec {
            Rec::Command {
                start,
                argc,
                name_len,
                name,
                ..
            } => {
                assert!(open.is_none(), "command inside a command");
                assert!(*argc >= 1 && start < offset);
                assert_eq!(name.len() as u64, (*name_len).min(super::NAME_CAP as u64));
                open = Some((*argc, 0));
            }
            Rec::Arg {
                index,
                len,
                prefix,
                whole,
            } => {
                let (argc, last) = open.expect("argument outside a command");
                assert!(*index > last && *index < argc, "argument {index} of {argc}");
                assert_eq!(*whole, prefix.len() as u64 == *len);
                assert!(prefix.len() as u64 >= (*len).min(super::NAME_CAP as u64));
                open = Some((argc, *index));
            }
            Rec::End { end } => {
                assert!(open.take().is_some(), "end without a command");
                assert_eq!(end, offset);
            }
            Rec::Dead { at, .. } => {
                assert_eq!(at, offset);
                assert_eq!(i, events.len() - 1, "events after dead");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd and ordinary request streams; the option byte comes first.
    const CORPUS: &[&[u8]] = &[
        b"",
        b"\x00*1\r\n$4\r\nPING\r\n",
        b"\x02*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200\r\n",
        b"\x02*2\r\n$4\r\nAUTH\r\n$2\r\npwXX*1\r\n$4\r\nPING\r\n",
        b"\x03*11\r\n",
        b"\x02HELLO 3 AUTH \"us\\x65r\" 'p w'\r\nPING\n\n\r\n",
        b"\x00*0\r\n*-1\r\n*1\rX$4\r\nPING\r\n",
        b"\x02*1\r\n$4\x00\r\nPING\r\n",
        b"\x00PING\x00\r\n",
        b"\x00ECHO \"a\"b\r\n",
        b"\x00*1\r\n\r\n",
        b"\x00*01\r\n",
        b"\x00*1\r\n$-1\r\n",
        b"\x00*1\r\n$1001\r\n",
        b"\x01*1\r\n$1000\r\n",
        b"\x02*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"\x02*2\r\n$70\r\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n$0\r\n\r\n",
        b"\x02ECHO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b\n",
        b"\x02*99999999999999999999999\r\n",
        b"\xff",
    ];

    #[test]
    fn fuzz_entry_point_runs_over_the_corpus() {
        for data in CORPUS {
            fuzz_framer(data);
        }
    }

    #[test]
    fn every_cut_of_the_corpus_gives_the_same_events() {
        for data in CORPUS {
            let whole = record(FUZZ_CONFIG, true, false, &[data]);
            for cut in 0..=data.len() {
                let (a, b) = data.split_at(cut);
                assert_eq!(
                    record(FUZZ_CONFIG, true, true, &[a, b]),
                    whole,
                    "{data:?} at {cut}"
                );
            }
        }
    }
}

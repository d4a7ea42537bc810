//! Split invariance: any split of a request stream into reads gives the same events at the same
//! offsets as feeding it whole, with and without inspection and `skip`.

use proptest::prelude::*;

use super::framer::FramerConfig;
use super::fuzz::record;

/// Pieces that make ordinary and odd streams when concatenated.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let bulk = proptest::collection::vec(any::<u8>(), 0..80).prop_map(|v| {
        let mut out = format!("${}\r\n", v.len()).into_bytes();
        out.extend_from_slice(&v);
        out.extend_from_slice(b"\r\n");
        out
    });
    let command = proptest::collection::vec("[a-zA-Z\"' \\\\]{0,12}", 1..5).prop_map(|args| {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    });
    let inline = "[a-zA-Z\"' \\\\x0-9\t\r]{0,30}\n".prop_map(String::into_bytes);
    prop_oneof![
        4 => command,
        3 => inline,
        2 => bulk,
        1 => Just(b"*0\r\n".to_vec()),
        1 => Just(b"*-1\r\n".to_vec()),
        1 => Just(b"*2\r\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(b"$-1\r\n".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(fragment(), 0..12).prop_map(|f| f.concat())
}

fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts {
        out.push(data[from..cut].to_vec());
        from = cut;
    }
    out.push(data[from..].to_vec());
    out
}

proptest! {
    #[test]
    fn any_split_gives_the_same_events(
        data in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        inspect in any::<bool>(),
        authenticated in any::<bool>(),
    ) {
        let config = FramerConfig {
            proto_max_bulk_len: 50,
            authenticated,
            inspect_bytes: 40,
            hold_bytes: 0,
        };
        let whole = record(config, inspect, false, &[&data]);
        let chunks = split(&data, &cuts);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(&record(config, inspect, false, &chunks), &whole);
        prop_assert_eq!(&record(config, inspect, true, &chunks), &whole);
    }
}

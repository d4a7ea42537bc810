//! Redis' `sdssplitargs` (sds.c) as a byte-at-a-time state machine, so an inline command is
//! split into arguments while it streams past, without holding its line.
//!
//! The rules, exactly as `sdssplitargs` applies them to one inline line:
//! - blanks between arguments are C `isspace` (space, `\t`, `\n`, `\v`, `\f`, `\r`); an unquoted
//!   argument ends only at space, `\t`, `\n`, `\r` (so `\v` and `\f` inside one are kept);
//! - `"…"` takes `\xHH` (two hex digits), `\n \r \t \b \a`, and `\<any>` as that byte;
//!   `'…'` takes only `\'`; a quote may start in the middle of an argument (`a"b c"` is `ab c`);
//! - a closing quote must be followed by a blank or the end of the line, and the line must not
//!   end inside quotes: either is "unbalanced quotes", decided only when the line ends.
//!
//! Redis strips one `\r` before the `\n`; feeding that `\r` here gives the same arguments and the
//! same verdict (outside quotes it ends an argument like the end of the line does; inside quotes
//! the line is unbalanced either way), so the framer does not need to hold it back.

/// Where the tokenizer is. `Escape*` states wait for the bytes after a backslash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tokenizer {
    /// Between arguments (skipping blanks).
    Blank,
    /// Inside an unquoted part of an argument.
    Plain,
    Double,
    DoubleEscape,
    /// Saw `\x` inside double quotes.
    DoubleHex,
    /// Saw `\x` and one hex digit.
    DoubleHex1(u8),
    /// Right after a closing quote: the next byte must be a blank.
    Closed,
    Single,
    SingleEscape,
    /// The line is unbalanced; reported when it ends.
    Unbalanced,
}

/// Receives the arguments as they are recognised.
pub(super) trait Sink {
    /// A new argument starts.
    fn start(&mut self);
    /// One byte of the current argument (after unescaping).
    fn byte(&mut self, b: u8);
}

impl Tokenizer {
    pub(super) fn new() -> Tokenizer {
        Tokenizer::Blank
    }

    /// Feed one byte of the line (never the final `\n`; never NUL, which stalls the line).
    pub(super) fn feed(&mut self, b: u8, sink: &mut impl Sink) {
        *self = match *self {
            Tokenizer::Blank if is_space(b) => Tokenizer::Blank,
            Tokenizer::Blank => {
                sink.start();
                plain(b, sink)
            }
            Tokenizer::Plain => plain(b, sink),
            Tokenizer::Double => double(b, sink),
            Tokenizer::DoubleEscape if b == b'x' => Tokenizer::DoubleHex,
            Tokenizer::DoubleEscape => {
                sink.byte(unescape(b));
                Tokenizer::Double
            }
            Tokenizer::DoubleHex if b.is_ascii_hexdigit() => Tokenizer::DoubleHex1(b),
            Tokenizer::DoubleHex => {
                // `\x` without two hex digits is the escape `\x`: the byte `x`.
                sink.byte(b'x');
                double(b, sink)
            }
            Tokenizer::DoubleHex1(h) if b.is_ascii_hexdigit() => {
                sink.byte(hex(h) * 16 + hex(b));
                Tokenizer::Double
            }
            Tokenizer::DoubleHex1(h) => {
                sink.byte(b'x');
                sink.byte(h);
                double(b, sink)
            }
            Tokenizer::Closed if is_space(b) => Tokenizer::Blank,
            Tokenizer::Closed => Tokenizer::Unbalanced,
            Tokenizer::Single => single(b, sink),
            Tokenizer::SingleEscape if b == b'\'' => {
                sink.byte(b'\'');
                Tokenizer::Single
            }
            Tokenizer::SingleEscape => {
                sink.byte(b'\\');
                single(b, sink)
            }
            Tokenizer::Unbalanced => Tokenizer::Unbalanced,
        }
    }

    /// The line ended: `false` if Redis would answer "unbalanced quotes in request".
    pub(super) fn finish(self) -> bool {
        matches!(
            self,
            Tokenizer::Blank | Tokenizer::Plain | Tokenizer::Closed
        )
    }
}

fn plain(b: u8, sink: &mut impl Sink) -> Tokenizer {
    match b {
        b' ' | b'\n' | b'\r' | b'\t' => Tokenizer::Blank,
        b'"' => Tokenizer::Double,
        b'\'' => Tokenizer::Single,
        _ => {
            sink.byte(b);
            Tokenizer::Plain
        }
    }
}

fn double(b: u8, sink: &mut impl Sink) -> Tokenizer {
    match b {
        b'\\' => Tokenizer::DoubleEscape,
        b'"' => Tokenizer::Closed,
        _ => {
            sink.byte(b);
            Tokenizer::Double
        }
    }
}

fn single(b: u8, sink: &mut impl Sink) -> Tokenizer {
    match b {
        b'\\' => Tokenizer::SingleEscape,
        b'\'' => Tokenizer::Closed,
        _ => {
            sink.byte(b);
            Tokenizer::Single
        }
    }
}

/// C `isspace` in the "C" locale (Redis never sets `LC_CTYPE`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn unescape(b: u8) -> u8 {
    match b {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// The value of an ASCII hex digit (callers checked `is_ascii_hexdigit`).
fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Args(Vec<Vec<u8>>);

    impl Sink for Args {
        fn start(&mut self) {
            self.0.push(Vec::new());
        }
        fn byte(&mut self, b: u8) {
            self.0.last_mut().expect("byte before start").push(b);
        }
    }

    /// Split one line (without its `\n`) the way `sdssplitargs` does; `None` = unbalanced.
    fn split(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut t = Tokenizer::new();
        let mut args = Args::default();
        for &b in line {
            t.feed(b, &mut args);
        }
        t.finish().then_some(args.0)
    }

    fn ok(line: &[u8], want: &[&[u8]]) {
        let got = split(line).unwrap_or_else(|| panic!("{line:?} unbalanced"));
        let want: Vec<Vec<u8>> = want.iter().map(|a| a.to_vec()).collect();
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
    }

    #[test]
    fn plain_arguments_split_on_blanks() {
        ok(b"SET k v", &[b"SET", b"k", b"v"]);
        ok(b"  PING\t\t x  ", &[b"PING", b"x"]);
        ok(b"", &[]);
        ok(b" \t\r", &[]);
        ok(b"PING\r", &[b"PING"]);
    }

    #[test]
    fn vertical_tab_and_form_feed_are_blanks_between_but_kept_inside() {
        ok(b"\x0bECHO\x0c x", &[b"ECHO\x0c", b"x"]);
        ok(b"ECHO a\x0bb", &[b"ECHO", b"a\x0bb"]);
    }

    #[test]
    fn double_quotes_take_escapes() {
        ok(br#"ECHO "a b""#, &[b"ECHO", b"a b"]);
        ok(br#""""#, &[b""]);
        ok(br#""\x41\x4a\x4A""#, &[b"AJJ"]);
        ok(br#""\x4g""#, &[b"x4g"]);
        ok(br#""\xg""#, &[b"xg"]);
        ok(br#""\n\r\t\b\a\q\"\\""#, &[b"\n\r\t\x08\x07q\"\\"]);
        ok(br#""AUTH\x00x""#, &[b"AUTH\0x"]);
    }

    #[test]
    fn single_quotes_take_only_escaped_quote() {
        ok(br"'a\'b'", &[b"a'b"]);
        ok(br"'a\nb'", &[b"a\\nb"]);
        ok(br"'\\''", &[b"\\'"]);
    }

    #[test]
    fn quotes_may_start_mid_argument() {
        ok(br#"ECHO a"b c""#, &[b"ECHO", b"ab c"]);
        ok(br"a'b c' d", &[b"ab c", b"d"]);
    }

    #[test]
    fn closing_quote_needs_a_blank_after_it() {
        assert_eq!(split(br#"ECHO "a"b"#), None);
        assert_eq!(split(br"'a''b'"), None);
        ok(b"\"a\"\x0bb", &[b"a", b"b"]);
        ok(b"\"a\"\r", &[b"a"]);
    }

    #[test]
    fn unterminated_quotes_are_unbalanced() {
        assert_eq!(split(br#"ECHO "a"#), None);
        assert_eq!(split(br"ECHO 'a"), None);
        assert_eq!(split(br#""a\"#), None);
        assert_eq!(split(br#""\x4"#), None);
        assert_eq!(split(b"'a\\\r"), None);
    }
}

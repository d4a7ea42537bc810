//! The replies-direction framer: tells inspect mode where each upstream reply (RESP2 or RESP3)
//! starts and ends, and what it is, as the bytes stream past.
//!
//! Sans-IO like the guard's request framer: [`ReplyFramer::advance`] takes the unread part of a
//! chunk, consumes some of it and returns at most one complete top-level [`Reply`]; call again
//! with the rest. Reads may split anywhere. Bulk payloads are counted through, not buffered:
//! [`ReplyFramer::opaque_len`] says how many bytes can be moved without being shown to it
//! ([`ReplyFramer::skip`] accounts them). Only a few fixed bytes are kept per reply (the error
//! code, the first string of an aggregate, the last integer of an aggregate); nothing is
//! allocated after [`ReplyFramer::new`].
//!
//! The grammar (RESP3 spec, as Redis 7 writes it):
//! - lines: `+` simple string, `-` error, `:` integer, `,` double, `(` big number, `#t`/`#f`,
//!   `_` null;
//! - lengths: `$N` bulk string (`$-1` RESP2 null), `!N` bulk error, `=N` verbatim string, each
//!   followed by N bytes and CRLF; `$?` a streamed string of `;N` chunks ended by `;0`;
//! - aggregates: `*N` array (`*-1` RESP2 null), `%N` map (2N elements), `~N` set, `>N` push,
//!   `|N` attribute (2N elements, then the value it describes); `*?`, `%?`, `~?` streamed, ended by
//!   `.`.
//!
//! An attribute belongs to the value after it: a top-level attribute is reported as part of the
//! following reply ([`Reply::attribute`]), a nested one does not count as an element. A `>` push
//! is reported with [`ReplyKind::Push`]: it answers no request (the matcher decides what it is).
//!
//! Strict where the guard framer is lenient: Redis' request parser skips bytes unchecked, but a
//! reply stream Redis wrote always ends lines and payloads with CRLF, so anything else is a
//! [`ReplyError`] (the upstream is broken or not Redis; the session ends).
//!
//! Bounds:
//! - nesting depth [`MAX_DEPTH`] (64): the stack of open aggregates is fixed-size. Redis' own
//!   replies nest at most about four deep (COMMAND DOCS, XINFO STREAM FULL); only a module or a
//!   script could nest deeper, and a reply deeper than 64 ends the session rather than growing
//!   memory per connection;
//! - length and count headers at most 20 characters after the type byte (what `string2ll`
//!   accepts, and all Redis ever writes);
//! - other lines (`+`, `-`, `,`, `(`) at most [`ReplyConfig::max_line`] bytes. Nothing of them is
//!   buffered, and Redis puts no limit on status or error lengths (a script's error can be long),
//!   so the default is `proto-max-bulk-len` (512 MiB): the bound only ends a stream that never
//!   ends a line.
//!
//! What it must never do: buffer a payload, allocate per reply, or panic on any input.

use crate::proxy::guard::framer::{string2ll, PROTO_MAX_BULK_LEN};

/// Deepest aggregate nesting accepted (see the module docs).
pub const MAX_DEPTH: usize = 64;
/// Bytes kept of an error code or an aggregate's first string.
pub const WORD_CAP: usize = 32;
/// Characters of a length or count after its type byte (`string2ll`'s limit).
const NUMBER_CAP: u64 = 20;

/// Limits of the reply framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyConfig {
    /// Longest simple string / error / double / big number line.
    pub max_line: u64,
    /// Longest bulk payload (the upstream's `proto-max-bulk-len` is a fair value).
    pub max_bulk: u64,
}

impl Default for ReplyConfig {
    fn default() -> ReplyConfig {
        ReplyConfig {
            max_line: PROTO_MAX_BULK_LEN,
            max_bulk: PROTO_MAX_BULK_LEN,
        }
    }
}

/// The type of a complete top-level reply (after any attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    SimpleString,
    Error,
    Integer,
    Double,
    BigNumber,
    Boolean,
    /// `_`, `$-1` or `*-1`.
    Null,
    /// `$N` or a streamed `$?`.
    BulkString,
    BulkError,
    Verbatim,
    Array,
    Map,
    Set,
    Push,
}

/// A few bytes kept of a reply: an error code, an aggregate's first string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Word {
    bytes: [u8; WORD_CAP],
    len: u8,
}

impl Word {
    const EMPTY: Word = Word {
        bytes: [0; WORD_CAP],
        len: 0,
    };

    fn push(&mut self, b: u8) {
        if usize::from(self.len) < WORD_CAP {
            self.bytes[usize::from(self.len)] = b;
            self.len += 1;
        }
    }

    /// The kept bytes (at most [`WORD_CAP`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// ASCII case-insensitive comparison with `word`.
    pub fn is(&self, word: &str) -> bool {
        self.as_bytes().eq_ignore_ascii_case(word.as_bytes())
    }

    /// The part before the first space (an error's code: `ERR`, `NOPERM`, `WRONGTYPE`…).
    fn first_word(mut self) -> Word {
        if let Some(space) = self.as_bytes().iter().position(|&b| b == b' ') {
            self.len = space as u8;
        }
        self
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes().escape_ascii().to_string())
    }
}

/// One complete top-level reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    /// Stream offset of its first byte (its attribute's, if it has one).
    pub start: u64,
    /// Stream offset just past its last byte.
    pub end: u64,
    /// Preceded by a top-level attribute (counted in `start..end`).
    pub attribute: bool,
    /// For an error: its first word, at most [`WORD_CAP`] bytes (`ERR`, `NOPERM`, …).
    pub code: Option<Word>,
    /// For an array or push: its first element, if a simple or bulk string (first
    /// [`WORD_CAP`] bytes) — `message`, `subscribe`, `invalidate`, `pong`…
    pub head: Option<Word>,
    /// For an array or push: the value of its last integer element (a subscribe
    /// confirmation's count).
    pub last_int: Option<i64>,
}

impl Reply {
    /// Bytes on the wire.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_push(&self) -> bool {
        self.kind == ReplyKind::Push
    }
}

/// What [`ReplyFramer::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyStep {
    pub consumed: usize,
    pub reply: Option<Reply>,
}

/// A reply stream Redis would never write; the stream offset is that of the offending byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("upstream reply: unknown type byte {:?} at offset {at}", [*byte].escape_ascii().to_string())]
    UnknownType { byte: u8, at: u64 },
    #[error("upstream reply: invalid length or count at offset {at}")]
    BadLength { at: u64 },
    #[error("upstream reply: invalid {what} at offset {at}")]
    BadValue { what: &'static str, at: u64 },
    #[error("upstream reply: line longer than {limit} bytes at offset {at}")]
    LineTooLong { limit: u64, at: u64 },
    #[error("upstream reply: missing CRLF at offset {at}")]
    MissingCrlf { at: u64 },
    #[error("upstream reply: nested deeper than {MAX_DEPTH} at offset {at}")]
    TooDeep { at: u64 },
    #[error("upstream reply: push inside another value at offset {at}")]
    NestedPush { at: u64 },
    #[error("upstream reply: '.' outside a streamed aggregate at offset {at}")]
    MisplacedEnd { at: u64 },
}

/// The streaming framer for one connection's replies. See the module docs.
#[derive(Debug, Clone)]
pub struct ReplyFramer {
    config: ReplyConfig,
    offset: u64,
    state: State,
    stack: Vec<Level>,
    top: Top,
    /// The current line's first bytes, or the captured start of a payload.
    scratch: Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a type byte.
    Type,
    /// A line after its type byte: `len` content bytes so far, `cr` seen.
    Line {
        ty: u8,
        len: u64,
        cr: bool,
    },
    /// `left` payload bytes, then `crlf` of the two trailer bytes checked; `capture` keeps the
    /// first bytes in `scratch`; `chunk` if part of a streamed string.
    Payload {
        ty: u8,
        left: u64,
        crlf: u8,
        capture: bool,
        chunk: bool,
    },
    /// Inside `$?`: expecting the `;` of the next chunk.
    Chunk,
    Dead(ReplyError),
}

/// An open aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    /// Elements still expected, or `None` if streamed (ended by `.`).
    left: Option<u64>,
    /// Elements read (attributes not counted).
    done: u64,
    attribute: bool,
    map: bool,
}

/// The top-level reply being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Top {
    start: u64,
    /// The type byte of the value (not of an attribute before it), once seen.
    ty: Option<u8>,
    null: bool,
    attribute: bool,
    code: Option<Word>,
    head: Option<Word>,
    last_int: Option<i64>,
}

impl Top {
    fn new(start: u64) -> Top {
        Top {
            start,
            ty: None,
            null: false,
            attribute: false,
            code: None,
            head: None,
            last_int: None,
        }
    }
}

impl ReplyFramer {
    pub fn new(config: ReplyConfig) -> ReplyFramer {
        ReplyFramer {
            config,
            offset: 0,
            state: State::Type,
            stack: Vec::with_capacity(MAX_DEPTH),
            top: Top::new(0),
            scratch: Word::EMPTY,
        }
    }

    /// Stream offset of the next byte to consume.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Payload bytes from here the framer does not need to see; move them, then [`skip`].
    ///
    /// [`skip`]: ReplyFramer::skip
    pub fn opaque_len(&self) -> u64 {
        match self.state {
            State::Payload { left, capture, .. }
                if !capture || usize::from(self.scratch.len) == WORD_CAP =>
            {
                left
            }
            _ => 0,
        }
    }

    /// Account `n` bytes (at most [`opaque_len`](ReplyFramer::opaque_len)) moved unseen.
    pub fn skip(&mut self, n: u64) {
        let n = n.min(self.opaque_len());
        if let State::Payload { left, .. } = &mut self.state {
            *left -= n;
            self.offset += n;
        }
    }

    /// Consume `input` up to the end of the next complete reply (or all of it). After an
    /// error nothing more is framed: every later call returns the same error.
    pub fn advance(&mut self, input: &[u8]) -> Result<ReplyStep, ReplyError> {
        let mut consumed = 0;
        while consumed < input.len() {
            if let State::Dead(error) = self.state {
                return Err(error);
            }
            let (n, done) = match self.step(&input[consumed..]) {
                Ok(step) => step,
                Err(error) => {
                    self.state = State::Dead(error);
                    return Err(error);
                }
            };
            consumed += n;
            self.offset += n as u64;
            if let Some(mut reply) = done {
                reply.end = self.offset;
                return Ok(ReplyStep {
                    consumed,
                    reply: Some(reply),
                });
            }
        }
        if let State::Dead(error) = self.state {
            return Err(error);
        }
        Ok(ReplyStep {
            consumed,
            reply: None,
        })
    }

    /// Consume from non-empty `input` until a state change; `Some` when a reply completed.
    fn step(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        match self.state {
            State::Dead(error) => Err(error),
            State::Type => {
                let done = self.begin(input[0])?;
                Ok((1, done))
            }
            State::Chunk if input[0] == b';' => {
                self.start_line(b';');
                Ok((1, None))
            }
            State::Chunk => Err(ReplyError::MissingCrlf { at: self.offset }),
            State::Line { ty, len, cr } => self.line(ty, len, cr, input),
            State::Payload { .. } => self.payload(input),
        }
    }

    /// A type byte: start a value (or end a streamed aggregate).
    fn begin(&mut self, ty: u8) -> Result<Option<Reply>, ReplyError> {
        let at = self.offset;
        if self.stack.is_empty() && self.top.ty.is_none() && !self.top.attribute {
            self.top = Top::new(at);
        }
        match ty {
            b'.' => {
                // The end of the innermost streamed aggregate; read its (empty) line first.
                match self.stack.last() {
                    Some(l) if l.left.is_none() && (!l.map || l.done % 2 == 0) => {}
                    _ => return Err(ReplyError::MisplacedEnd { at }),
                }
            }
            b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' | b'$' | b'!' | b'=' | b'*' | b'%'
            | b'~' | b'|' => {}
            b'>' if self.stack.is_empty() => {}
            b'>' => return Err(ReplyError::NestedPush { at }),
            byte => return Err(ReplyError::UnknownType { byte, at }),
        }
        if self.stack.is_empty() && ty != b'|' {
            self.top.ty = Some(ty);
        }
        self.start_line(ty);
        Ok(None)
    }

    fn start_line(&mut self, ty: u8) {
        self.scratch = Word::EMPTY;
        self.state = State::Line {
            ty,
            len: 0,
            cr: false,
        };
    }

    fn line(
        &mut self,
        ty: u8,
        mut len: u64,
        mut cr: bool,
        input: &[u8],
    ) -> Result<(usize, Option<Reply>), ReplyError> {
        let limit = match ty {
            b'+' | b'-' | b',' | b'(' => self.config.max_line,
            _ => NUMBER_CAP,
        };
        for (i, &b) in input.iter().enumerate() {
            let at = self.offset + i as u64;
            if cr {
                if b != b'\n' {
                    return Err(ReplyError::MissingCrlf { at });
                }
                return Ok((i + 1, self.line_end(ty, i + 1)?));
            }
            match b {
                b'\r' => cr = true,
                b'\n' => return Err(ReplyError::MissingCrlf { at }),
                _ => {
                    len += 1;
                    if len > limit {
                        return Err(if limit == NUMBER_CAP {
                            ReplyError::BadLength { at }
                        } else {
                            ReplyError::LineTooLong { limit, at }
                        });
                    }
                    self.scratch.push(b);
                }
            }
        }
        self.state = State::Line { ty, len, cr };
        Ok((input.len(), None))
    }

    /// A line is complete (`used` bytes of this input consumed so far, for offsets).
    fn line_end(&mut self, ty: u8, used: usize) -> Result<Option<Reply>, ReplyError> {
        let at = self.offset + used as u64;
        let text = self.scratch;
        let bad = |what| Err(ReplyError::BadValue { what, at });
        self.state = State::Type;
        match ty {
            b'+' => Ok(self.scalar(Some(text), None)),
            b'-' => {
                if self.stack.is_empty() {
                    self.top.code = Some(text.first_word());
                }
                Ok(self.scalar(None, None))
            }
            b':' => match string2ll(text.as_bytes()) {
                Some(n) => Ok(self.scalar(None, Some(n))),
                None => bad("integer"),
            },
            b'#' if text.as_bytes() == b"t" || text.as_bytes() == b"f" => {
                Ok(self.scalar(None, None))
            }
            b'#' => bad("boolean"),
            b'_' if text.len == 0 => Ok(self.null()),
            b'_' => bad("null"),
            b',' | b'(' if text.len > 0 => Ok(self.scalar(None, None)),
            b',' => bad("double"),
            b'(' => bad("big number"),
            b'.' if text.len == 0 => {
                let level = self.stack.pop();
                Ok(self.complete(level.is_some_and(|l| l.attribute)))
            }
            b'.' => bad("streamed end"),
            b'$' if text.as_bytes() == b"?" => {
                self.state = State::Chunk;
                Ok(None)
            }
            b'*' | b'%' | b'~' if text.as_bytes() == b"?" => self.open(ty, None, at),
            _ => {
                let n = string2ll(text.as_bytes()).ok_or(ReplyError::BadLength { at })?;
                match ty {
                    b'$' | b'*' if n == -1 => Ok(self.null()),
                    _ if n < 0 => Err(ReplyError::BadLength { at }),
                    b'$' | b'!' | b'=' | b';' => self.bulk(ty, n as u64, at),
                    _ => self.open(ty, Some(n as u64), at),
                }
            }
        }
    }

    fn null(&mut self) -> Option<Reply> {
        if self.stack.is_empty() {
            self.top.null = true;
        }
        self.scalar(None, None)
    }

    /// A bulk header of `len`: its payload follows.
    fn bulk(&mut self, ty: u8, len: u64, at: u64) -> Result<Option<Reply>, ReplyError> {
        if len > self.config.max_bulk {
            return Err(ReplyError::BadLength { at });
        }
        let chunk = ty == b';';
        if chunk && len == 0 {
            // `;0`: the streamed string is complete.
            return Ok(self.scalar(None, None));
        }
        let capture = (ty == b'!' && self.stack.is_empty()) || (ty == b'$' && self.first_child());
        self.scratch = Word::EMPTY;
        self.state = State::Payload {
            ty,
            left: len,
            crlf: 0,
            capture,
            chunk,
        };
        Ok(None)
    }

    /// An aggregate header: `count` elements (doubled for maps and attributes) or streamed.
    fn open(&mut self, ty: u8, count: Option<u64>, at: u64) -> Result<Option<Reply>, ReplyError> {
        let pairs = ty == b'%' || ty == b'|';
        let left = match count {
            Some(n) if pairs => Some(n.checked_mul(2).ok_or(ReplyError::BadLength { at })?),
            other => other,
        };
        if left == Some(0) {
            return Ok(self.complete(ty == b'|'));
        }
        if self.stack.len() == MAX_DEPTH {
            return Err(ReplyError::TooDeep { at });
        }
        self.stack.push(Level {
            left,
            done: 0,
            attribute: ty == b'|',
            map: pairs,
        });
        Ok(None)
    }

    fn payload(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        let State::Payload {
            ty,
            mut left,
            mut crlf,
            capture,
            chunk,
        } = self.state
        else {
            return Ok((0, None));
        };
        let mut take = left.min(input.len() as u64) as usize;
        let room = WORD_CAP - usize::from(self.scratch.len);
        if capture && room > 0 {
            // Only the first bytes are looked at; the rest is opaque (see `opaque_len`).
            take = take.min(room);
            for &b in &input[..take] {
                self.scratch.push(b);
            }
        }
        left -= take as u64;
        let mut used = take;
        while left == 0 && crlf < 2 && used < input.len() {
            let want = if crlf == 0 { b'\r' } else { b'\n' };
            if input[used] != want {
                return Err(ReplyError::MissingCrlf {
                    at: self.offset + used as u64,
                });
            }
            crlf += 1;
            used += 1;
        }
        if crlf < 2 {
            self.state = State::Payload {
                ty,
                left,
                crlf,
                capture,
                chunk,
            };
            return Ok((used, None));
        }
        if chunk {
            self.state = State::Chunk;
            return Ok((used, None));
        }
        self.state = State::Type;
        let word = self.scratch;
        let done = match ty {
            b'!' => {
                if self.stack.is_empty() {
                    self.top.code = Some(word.first_word());
                }
                self.scalar(None, None)
            }
            _ => self.scalar(capture.then_some(word), None),
        };
        Ok((used, done))
    }

    /// Whether the value starting now is the first element of a top-level array or push.
    fn first_child(&self) -> bool {
        matches!(self.stack.as_slice(), [l] if !l.attribute && l.done == 0)
    }

    /// A scalar is complete: keep what the matcher needs, then complete it as an element.
    fn scalar(&mut self, string: Option<Word>, int: Option<i64>) -> Option<Reply> {
        if let [level] = self.stack.as_slice() {
            if !level.attribute {
                if level.done == 0 && string.is_some() {
                    self.top.head = string;
                }
                if int.is_some() {
                    self.top.last_int = int;
                }
            }
        }
        self.complete(false)
    }

    /// A value is complete (an attribute if `attribute`): count it in its aggregate, closing
    /// every aggregate it completes; report the top-level reply if that completed.
    fn complete(&mut self, mut attribute: bool) -> Option<Reply> {
        loop {
            let Some(level) = self.stack.last_mut() else {
                if attribute {
                    // The value it describes follows.
                    self.top.attribute = true;
                    return None;
                }
                return Some(self.reply());
            };
            if attribute {
                return None;
            }
            level.done += 1;
            match &mut level.left {
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return None;
                    }
                }
                None => return None,
            }
            attribute = level.attribute;
            self.stack.pop();
        }
    }

    fn reply(&mut self) -> Reply {
        let top = self.top;
        // Every top-level value sets `ty` at its type byte.
        let kind = match (top.null, top.ty) {
            (true, _) => ReplyKind::Null,
            (_, Some(b'+')) => ReplyKind::SimpleString,
            (_, Some(b'-')) => ReplyKind::Error,
            (_, Some(b':')) => ReplyKind::Integer,
            (_, Some(b',')) => ReplyKind::Double,
            (_, Some(b'(')) => ReplyKind::BigNumber,
            (_, Some(b'#')) => ReplyKind::Boolean,
            (_, Some(b'!')) => ReplyKind::BulkError,
            (_, Some(b'=')) => ReplyKind::Verbatim,
            (_, Some(b'%')) => ReplyKind::Map,
            (_, Some(b'~')) => ReplyKind::Set,
            (_, Some(b'>')) => ReplyKind::Push,
            (_, Some(b'*')) => ReplyKind::Array,
            _ => ReplyKind::BulkString,
        };
        self.top = Top::new(0);
        let aggregate = matches!(kind, ReplyKind::Array | ReplyKind::Push);
        Reply {
            kind,
            start: top.start,
            // Set by `advance` once this step's bytes are counted.
            end: 0,
            attribute: top.attribute,
            code: top.code,
            head: top.head.filter(|_| aggregate),
            last_int: top.last_int.filter(|_| aggregate),
        }
    }
}

//! The session's tracing span, entered around each poll of the session's future — except while
//! the relay runs. The relay is polled twice per request (a read each way), and entering and
//! leaving a span through the subscriber costs about 300 instructions: for small unpipelined
//! requests that is most of what the relay itself costs (callgrind), so the relay runs outside
//! it. Nothing is lost: audit events name their session in their own fields, and with debug
//! logging on (the relay's own events) the span stays entered throughout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Whether the session's span is left out of its polls (the relay is running).
#[derive(Clone)]
pub struct Quiet {
    flag: Arc<AtomicBool>,
    span: tracing::Span,
}

impl Quiet {
    pub fn new(span: &tracing::Span) -> Quiet {
        Quiet {
            flag: Arc::default(),
            span: span.clone(),
        }
    }

    /// Leave the span out of the polls from now on, unless debug events are on.
    pub fn relay_started(&self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            self.flag.store(true, Ordering::Relaxed);
        }
    }

    /// Enter the span again: in the polls from the next on, and (the guard returned, if it
    /// was left out) for the rest of this one, where the session's end is logged.
    #[must_use = "the span is entered only while the guard lives"]
    pub fn relay_ended(&self) -> Option<tracing::span::Entered<'_>> {
        self.flag
            .swap(false, Ordering::Relaxed)
            .then(|| self.span.enter())
    }
}

/// `future` with `span` entered around each of its polls while `quiet` is not set.
pub struct SessionSpan<F> {
    quiet: Quiet,
    future: Pin<Box<F>>,
}

impl<F: Future> SessionSpan<F> {
    /// `future` in the span `quiet` was made with.
    pub fn new(quiet: Quiet, future: F) -> Self {
        // The boxed future is what every session holds for its whole life (idle ones too):
        // parts that run once (the handshake, the relay modes, a connection's cleaning for
        // reuse) are boxed where they run. 3–3.4 KB in a debug build; a state inlined by
        // mistake (a 16 KB buffer) fails every test that opens a session.
        debug_assert!(
            std::mem::size_of::<F>() <= 6 * 1024,
            "a session's future is {} bytes",
            std::mem::size_of::<F>()
        );
        SessionSpan {
            quiet,
            future: Box::pin(future),
        }
    }
}

impl<F: Future> Future for SessionSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.quiet.flag.load(Ordering::Relaxed) {
            return this.future.as_mut().poll(cx);
        }
        let _entered = this.quiet.span.enter();
        this.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The span is current in every poll but those between `relay_started` and `relay_ended`.
    #[tokio::test]
    async fn the_span_is_left_out_only_while_the_relay_runs() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("session");
        let quiet = Quiet::new(&span);
        let inner = quiet.clone();
        let seen = SessionSpan::new(quiet, async move {
            let mut seen = vec![tracing::Span::current().id()];
            inner.relay_started();
            tokio::task::yield_now().await;
            seen.push(tracing::Span::current().id());
            {
                let _entered = inner.relay_ended();
                // In the same poll: where the session's end is logged.
                seen.push(tracing::Span::current().id());
            }
            tokio::task::yield_now().await;
            seen.push(tracing::Span::current().id());
            seen
        })
        .await;
        assert_eq!(seen, vec![span.id(), None, span.id(), span.id()]);
    }

    /// With debug events on, the relay's own events keep the session's span.
    #[tokio::test]
    async fn with_debug_events_on_the_span_stays() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG);
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("session");
        let quiet = Quiet::new(&span);
        let inner = quiet.clone();
        let seen = SessionSpan::new(quiet, async move {
            inner.relay_started();
            tokio::task::yield_now().await;
            tracing::Span::current().id()
        })
        .await;
        assert_eq!(seen, span.id());
    }
}

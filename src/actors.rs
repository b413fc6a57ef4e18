//! The one workaround every stateful actor here needs, written once.
//!
//! A handler whose work awaits (a flush, a hand-over to the writers) returns an
//! [`AtomicResponse`], which actix runs one at a time for mailbox messages. But a message
//! the actor sends itself with `ctx.notify` (a timer tick) can start while another
//! handler's future is still in flight (actix issue #458), so state moved into one future
//! would be missing for the other. The state therefore lives behind an async mutex that
//! every handler locks inside its future: overlapping handlers queue in order instead.

use std::rc::Rc;

use actix::prelude::*;
use futures::future::LocalBoxFuture;

/// An actor's state, shared by its handlers' futures.
pub struct Shared<S>(Rc<tokio::sync::Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<S: 'static> Shared<S> {
    pub fn new(state: S) -> Self {
        Self(Rc::new(tokio::sync::Mutex::new(state)))
    }

    /// A handler's response that runs `f` on the state, after every handler started
    /// before it finished.
    pub fn run<A, R, F>(&self, actor: &A, f: F) -> AtomicResponse<A, R>
    where
        A: Actor<Context = Context<A>>,
        R: 'static,
        F: for<'a> FnOnce(&'a mut S) -> LocalBoxFuture<'a, R> + 'static,
    {
        let state = self.clone();
        AtomicResponse::new(Box::pin(
            async move { f(&mut *state.0.lock().await).await }.into_actor(actor),
        ))
    }

    /// Like [`Shared::run`], then `then` with the result, the actor and its context (to
    /// schedule the next message, or stop).
    pub fn run_then<A, R, T, F, G>(&self, actor: &A, f: F, then: G) -> AtomicResponse<A, T>
    where
        A: Actor<Context = Context<A>>,
        R: 'static,
        T: 'static,
        F: for<'a> FnOnce(&'a mut S) -> LocalBoxFuture<'a, R> + 'static,
        G: FnOnce(R, &mut A, &mut Context<A>) -> T + 'static,
    {
        let state = self.clone();
        AtomicResponse::new(Box::pin(
            async move { f(&mut *state.0.lock().await).await }
                .into_actor(actor)
                .map(then),
        ))
    }

    /// The state now, if no handler holds it (for a log line on stop).
    pub fn try_with<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        self.0.try_lock().ok().map(|s| f(&s))
    }
}

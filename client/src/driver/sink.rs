//! Where the driver hands the app its events: a bounded channel the app reads
//! ([`Client::start`](crate::Client::start)), or a handler run on the driver's own task
//! ([`Client::start_inline`](crate::Client::start_inline)). The IM layer uses the handler:
//! it only dispatches answers and forwards events without waiting, so a hop through a
//! second task per event would cost a wake-up and a queue for nothing.

use tokio::sync::mpsc;

use crate::Event;

/// An inline event handler: returns false once the app is gone (the driver stops).
pub type Handler = Box<dyn FnMut(Event) -> bool + Send>;

/// The app is gone: nobody takes events any more.
#[derive(Debug)]
pub(crate) struct Gone;

/// The driver's event outlet.
pub(crate) enum Events {
    Channel(mpsc::Sender<Event>),
    Inline(Handler),
}

impl Events {
    /// Hands `ev` over, waiting for room in the channel (a full channel stops the driver
    /// reading the network).
    pub(crate) async fn send(&mut self, ev: Event) -> Result<(), Gone> {
        match self {
            Events::Channel(tx) => tx.send(ev).await.map_err(|_| Gone),
            Events::Inline(h) => h(ev).then_some(()).ok_or(Gone),
        }
    }

    /// Hands `ev` over if there is room now (best effort).
    pub(crate) fn try_send(&mut self, ev: Event) -> Result<(), Gone> {
        match self {
            Events::Channel(tx) => tx.try_send(ev).map_err(|_| Gone),
            Events::Inline(h) => h(ev).then_some(()).ok_or(Gone),
        }
    }
}

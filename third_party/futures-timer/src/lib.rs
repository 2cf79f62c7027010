//! `futures_timer::Delay` on tokio's timer: the API libp2p uses (`Delay::new`, `Delay::reset`,
//! `Future`), nothing else.
//!
//! A timer belongs to the tokio runtime current where it is created, and is driven by that
//! runtime's time driver. Created outside any runtime, it belongs to a small fallback runtime
//! on its own thread, so `Delay::new` never panics the way `tokio::time::sleep` would.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{runtime::Handle, time::Instant};

/// A future that completes at a point in time.
pub struct Delay {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Delay {
    /// A timer that fires `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        let at = deadline(dur);
        let sleep = match Handle::try_current() {
            Ok(_) => tokio::time::sleep_until(at),
            Err(_) => {
                let _in = fallback().enter();
                tokio::time::sleep_until(at)
            }
        };
        Delay {
            sleep: Box::pin(sleep),
        }
    }

    /// Re-arms the timer to fire `dur` from now (also after it has fired).
    pub fn reset(&mut self, dur: Duration) {
        self.sleep.as_mut().reset(deadline(dur));
    }
}

/// `now + dur`, or about 30 years from now when that overflows (upstream would panic).
fn deadline(dur: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(dur)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// The runtime of timers created outside one; its thread only drives their time.
fn fallback() -> &'static Handle {
    static RT: OnceLock<Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("futures-timer: no fallback timer runtime: {e}"));
        let handle = rt.handle().clone();
        let spawned = std::thread::Builder::new()
            .name("futures-timer".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()));
        if let Err(e) = spawned {
            panic!("futures-timer: no fallback timer thread: {e}");
        }
        handle
    })
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delay")
            .field("deadline", &self.sleep.deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_its_duration_and_again_after_a_reset() {
        let t0 = Instant::now();
        let mut d = Delay::new(Duration::from_secs(5));
        (&mut d).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));
        d.reset(Duration::from_secs(2));
        (&mut d).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(7));
    }

    #[test]
    fn works_outside_a_runtime() {
        let d = Delay::new(Duration::from_millis(20));
        let t0 = std::time::Instant::now();
        futures_lite_block_on(d);
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_huge_duration_does_not_panic() {
        drop(Delay::new(Duration::MAX));
    }

    // A minimal executor: poll on this thread, woken by the fallback runtime's thread.
    fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
        use std::sync::Arc;
        use std::task::Wake;
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}

//! A client connection whose writes must make progress: a client that stops reading holds
//! its request's circuit-breaker permit and upstream connection for as long as the answer
//! waits, so a write that stays blocked for the listener's `send_timeout` ends the
//! connection (nginx's `send_timeout`, HAProxy's `timeout client`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with a deadline on each blocked write. The timer is armed when a write first
/// blocks and disarmed by any progress; it is allocated the first time a write blocks, so a
/// connection whose writes never block carries a pointer's worth of it.
pub struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is blocked.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> SendTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// What a blocked write does: the first time arm the timer, then error once it fires.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            let deadline = crate::deadline::from_now(self.timeout);
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if let Some(timer) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {:?} (listener send_timeout)",
                    self.timeout
                ),
            )));
        }
        Poll::Pending
    }

    /// Pass a write's outcome on, keeping the timer in step with it.
    fn track<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.blocked(cx),
            done => {
                self.armed = false;
                done
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(polled, cx)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_past_the_timeout_fails_and_progress_resets_it() {
        // A pipe with room for 16 bytes: a write past that blocks until the far end reads.
        let (near, mut far) = tokio::io::duplex(16);
        let mut conn = SendTimeout::new(near, Duration::from_secs(60));
        conn.write_all(&[1; 16]).await.unwrap();
        // The pipe is full. The reader frees room after 50 s: the write then goes on.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            tokio::time::sleep(Duration::from_secs(50)).await;
            tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
                .await
                .unwrap();
            far
        });
        let started = Instant::now();
        conn.write_all(&[2; 16]).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(50));
        let _far = reader.await.unwrap();
        // Full again and nobody reads: the 60 s run from this block, not the first one.
        let blocked = Instant::now();
        let err = conn.write_all(&[3; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(blocked.elapsed(), Duration::from_secs(60));
        assert!(err.to_string().contains("send_timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_past_the_clock_never_fires_and_never_panics() {
        let (near, _far) = tokio::io::duplex(16);
        let mut conn = SendTimeout::new(near, Duration::MAX);
        conn.write_all(&[1; 16]).await.unwrap();
        // The pipe is full: the write blocks and arms the timer at the far end of time.
        let write = tokio::time::timeout(Duration::from_secs(86_400), conn.write_all(&[2; 16]));
        assert!(write.await.is_err(), "still waiting a day later");
    }
}

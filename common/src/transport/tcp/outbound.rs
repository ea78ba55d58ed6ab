//! The outbound side of a TCP transport: dial each peer, authenticate, write its queued frames,
//! and reconnect with capped exponential backoff.

use super::inbound::{write_bounded, ConnectionError};
use super::*;

/// Dials `peer` and runs the handshake as the dialer.
pub(super) async fn dial<S: Sockets>(
    ctx: &Ctx,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(Reader<S>, Writer<S>), DialError> {
    let cfg = &ctx.config;
    let (read_half, write_half) = S::connect(addr).await.map_err(DialError::Connect)?;
    let (read_half, write_half) = secure(cfg.tls.as_ref(), read_half, write_half, true)
        .await
        .map_err(|e| DialError::Handshake(HandshakeError::Tls(e.to_string())))?;
    let mut reader: Reader<S> = FramedRead::new(read_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
    let mut writer: Writer<S> = FramedWrite::new(write_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
    let exchange = async {
        let challenge: Challenge = read_msg::<S, _>(&mut reader).await?;
        let my_nonce = handshake::nonce()?;
        let hello = handshake::hello(
            &cfg.cluster_key,
            &cfg.cluster,
            cfg.id,
            peer,
            &challenge,
            my_nonce,
        )?;
        write_msg::<S, _>(&mut writer, &hello).await?;
        let welcome: Welcome = read_msg::<S, _>(&mut reader).await?;
        handshake::check_welcome(
            &cfg.cluster_key,
            &cfg.cluster,
            cfg.id,
            peer,
            &my_nonce,
            &welcome,
        )
    };
    exchange.await.map_err(DialError::Handshake)?;
    reader
        .decoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    writer
        .encoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    Ok((reader, writer))
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
}

/// Keeps a connection to `peer` and writes its queued frames, reconnecting with capped
/// exponential backoff.
pub(super) async fn dial_loop<S: Sockets>(
    ctx: Arc<Ctx>,
    peer: NodeId,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let cfg = &ctx.config;
    let mut backoff = cfg.backoff_min;
    loop {
        let dialed = tokio::time::timeout(cfg.handshake_timeout, dial::<S>(&ctx, peer, addr))
            .await
            .unwrap_or(Err(DialError::Handshake(HandshakeError::Timeout)));
        match dialed {
            Ok((mut reader, mut writer)) => {
                bump(&ctx.counters.handshakes_ok, 1);
                tracing::debug!(peer, %addr, "outbound connection authenticated");
                backoff = cfg.backoff_min;
                let outcome = tokio::select! {
                    // Fixed polling order: tokio would otherwise pick a branch at random, from an
                    // unseeded source, and a seeded simulation (turmoil) would not replay.
                    biased;
                    r = write_frames::<S>(&ctx, &mut writer, &mut queue) => r,
                    r = watch_acceptor::<S>(&ctx, &mut reader) => r.map(|()| false),
                };
                match outcome {
                    Ok(true) => return, // the transport is gone
                    Ok(false) => {}
                    Err(reason) => {
                        bump(&ctx.counters.disconnects, 1);
                        tracing::warn!(peer, %addr, %reason, "outbound connection lost; reconnecting");
                    }
                }
            }
            Err(DialError::Connect(e)) => {
                bump(&ctx.counters.dials_failed, 1);
                tracing::debug!(peer, %addr, error = %e, ?backoff, "dial failed; retrying");
            }
            Err(DialError::Handshake(reason)) => {
                bump(&ctx.counters.handshakes_rejected, 1);
                tracing::warn!(peer, %addr, %reason, ?backoff, "outbound handshake failed; retrying");
            }
        }
        // A production deployment would add random jitter here so that a cluster restarting
        // together does not reconnect in lockstep; the cap keeps the worst case bounded.
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(cfg.backoff_max);
    }
}

/// Writes queued frames in batches, and a keepalive after `keepalive_interval` of silence.
/// `Ok(true)` when the queue closed (the transport is gone).
pub(super) async fn write_frames<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
    queue: &mut mpsc::Receiver<Bytes>,
) -> Result<bool, ConnectionError> {
    let keepalive = ctx.config.keepalive_interval;
    loop {
        let first = match tokio::time::timeout(keepalive, queue.recv()).await {
            Err(_) => {
                write_bounded::<S>(ctx, writer, Bytes::new(), true).await?;
                continue;
            }
            Ok(None) => return Ok(true),
            Ok(Some(frame)) => frame,
        };
        let mut batch = 1;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let len = frame.len() as u64;
            let more = if batch < WRITE_BATCH_FRAMES_MAX {
                queue.try_recv().ok()
            } else {
                None
            };
            if let Err(e) = write_bounded::<S>(ctx, writer, frame, more.is_none()).await {
                // This frame and the next one already taken from the queue are lost with the
                // connection (frames fed before it may be lost too; they were counted as out).
                bump(
                    &ctx.counters.dropped_write_failed,
                    1 + u64::from(more.is_some()),
                );
                return Err(e);
            }
            bump(&ctx.counters.frames_out, 1);
            bump(&ctx.counters.bytes_out, len);
            batch += 1;
            next = more;
        }
    }
}

/// Reads what the acceptor sends (only keepalives) to notice a dead or closed connection.
pub(super) async fn watch_acceptor<S: Sockets>(
    ctx: &Ctx,
    reader: &mut Reader<S>,
) -> Result<(), ConnectionError> {
    let idle = ctx.config.idle_timeout;
    loop {
        match tokio::time::timeout(idle, reader.next()).await {
            Err(_) => return Err(ConnectionError::Idle(idle)),
            Ok(None) => return Err(ConnectionError::PeerClosed),
            Ok(Some(Err(e))) => return Err(ConnectionError::Read(e)),
            Ok(Some(Ok(frame))) if frame.is_empty() => {}
            Ok(Some(Ok(_))) => return Err(ConnectionError::Unexpected),
        }
    }
}

//! The inbound side of a TCP transport: accept connections, authenticate peers, read their
//! frames into the inbound queue, and keep the connections alive.

use super::*;

pub(super) async fn accept_loop<S: Sockets>(
    ctx: Arc<Ctx>,
    listener: S::Listener,
    inbound: mpsc::Sender<Inbound>,
) {
    // Owned here so that aborting this task (shutdown) drops, and so aborts, every connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (reader, writer, addr) = match S::accept(&listener).await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ctx.config.backoff_min).await;
                continue;
            }
        };
        if connections.len() >= ctx.config.connections_max {
            bump(&ctx.counters.connections_refused, 1);
            tracing::warn!(
                %addr,
                open = connections.len(),
                "refusing connection: connections_max reached"
            );
            continue;
        }
        connections.spawn(
            serve_inbound::<S>(Arc::clone(&ctx), reader, writer, addr, inbound.clone())
                .in_current_span(),
        );
    }
}

/// The acceptor's half of the handshake; returns the authenticated peer.
pub(super) async fn accept_handshake<S: Sockets>(
    ctx: &Ctx,
    reader: &mut Reader<S>,
    writer: &mut Writer<S>,
) -> Result<NodeId, HandshakeError> {
    let cfg = &ctx.config;
    let challenge = Challenge {
        version: handshake::HANDSHAKE_VERSION,
        nonce: handshake::nonce()?,
    };
    write_msg::<S, _>(writer, &challenge).await?;
    let hello: Hello = read_msg::<S, _>(reader).await?;
    let (peer, welcome) = handshake::check_hello(
        &cfg.cluster_key,
        &cfg.cluster,
        cfg.id,
        |id| read_links(ctx).contains_key(&id),
        &challenge,
        &hello,
    )?;
    write_msg::<S, _>(writer, &welcome).await?;
    Ok(peer)
}

pub(super) async fn serve_inbound<S: Sockets>(
    ctx: Arc<Ctx>,
    read_half: S::ReadHalf,
    write_half: S::WriteHalf,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
) {
    let cfg = &ctx.config;
    let opened = async {
        let (read_half, write_half) = secure(cfg.tls.as_ref(), read_half, write_half, false)
            .await
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let mut reader: Reader<S> = FramedRead::new(read_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
        let mut writer: Writer<S> = FramedWrite::new(write_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
        let peer = accept_handshake::<S>(&ctx, &mut reader, &mut writer).await?;
        Ok((peer, reader, writer))
    };
    let (peer, mut reader, mut writer) = match tokio::time::timeout(cfg.handshake_timeout, opened)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
    {
        Ok(opened) => opened,
        Err(reason) => {
            bump(&ctx.counters.handshakes_rejected, 1);
            tracing::warn!(%addr, %reason, "inbound handshake rejected; disconnecting");
            return;
        }
    };
    bump(&ctx.counters.handshakes_ok, 1);
    tracing::debug!(peer, %addr, "inbound connection authenticated");
    reader
        .decoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    writer
        .encoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    // A peer has one inbound connection at a time. When it dials again (it restarted, or gave
    // up on a connection it believed dead), the older connection stops reading at once: frames
    // still unread there are lost rather than delivered after the newer connection's, which
    // keeps the link FIFO across reconnects.
    let number = ctx.next_connection.fetch_add(1, Ordering::Relaxed);
    let superseded = Arc::new(tokio::sync::Notify::new());
    let older = lock(&ctx.inbound_by_peer).insert(peer, (number, Arc::clone(&superseded)));
    if let Some((_, older)) = older {
        older.notify_one();
    }
    let reason = tokio::select! {
        // Fixed polling order: tokio would otherwise pick a branch at random, from an
        // unseeded source, and a seeded simulation (turmoil) would not replay.
        biased;
        _ = superseded.notified() => Err(ConnectionError::Superseded),
        r = read_frames::<S>(&ctx, peer, &mut reader, &inbound) => r,
        r = send_keepalives::<S>(&ctx, &mut writer) => r,
    };
    {
        let mut by_peer = lock(&ctx.inbound_by_peer);
        if by_peer.get(&peer).is_some_and(|(n, _)| *n == number) {
            by_peer.remove(&peer);
        }
    }
    match reason {
        Ok(()) => tracing::debug!(peer, %addr, "inbound connection closed"),
        Err(ConnectionError::Superseded) => {
            bump(&ctx.counters.connections_superseded, 1);
            tracing::debug!(peer, %addr, "inbound connection superseded by a newer one");
        }
        Err(reason) => {
            bump(&ctx.counters.disconnects, 1);
            tracing::warn!(peer, %addr, %reason, "disconnecting inbound peer");
        }
    }
}

/// Why an established connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("no frame for {0:?}; the connection is presumed dead")]
    Idle(Duration),
    #[error("read failed (oversize frame or broken connection): {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write did not complete within {0:?}")]
    WriteStalled(Duration),
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("the accepting side sent a data frame; it only ever sends keepalives")]
    Unexpected,
    #[error("the peer opened a newer connection")]
    Superseded,
}

/// Reads frames from an authenticated peer into the inbound queue. `Ok` when the transport is
/// gone; `Err` names why the connection must be dropped.
pub(super) async fn read_frames<S: Sockets>(
    ctx: &Ctx,
    peer: NodeId,
    reader: &mut Reader<S>,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<(), ConnectionError> {
    let idle = ctx.config.idle_timeout;
    loop {
        let frame = match tokio::time::timeout(idle, reader.next()).await {
            Err(_) => return Err(ConnectionError::Idle(idle)),
            Ok(None) => return Err(ConnectionError::PeerClosed),
            Ok(Some(Err(e))) => return Err(ConnectionError::Read(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_empty() {
            continue; // keepalive
        }
        bump(&ctx.counters.frames_in, 1);
        bump(&ctx.counters.bytes_in, frame.len() as u64);
        let inbound_frame = Inbound {
            from: peer,
            frame: frame.freeze(),
        };
        if inbound.send(inbound_frame).await.is_err() {
            return Ok(());
        }
    }
}

/// The accepting side's writer: only keepalives, so the dialer can tell the connection lives.
pub(super) async fn send_keepalives<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
) -> Result<(), ConnectionError> {
    let mut every = tokio::time::interval(ctx.config.keepalive_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        write_bounded::<S>(ctx, writer, Bytes::new(), true).await?;
    }
}

/// Writes (and optionally flushes) one frame within the idle timeout: a write that cannot make
/// progress for that long means the peer stopped reading or vanished.
pub(super) async fn write_bounded<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
    frame: Bytes,
    flush: bool,
) -> Result<(), ConnectionError> {
    let limit = ctx.config.idle_timeout;
    let io = async {
        if flush {
            writer.send(frame).await
        } else {
            writer.feed(frame).await
        }
    };
    match tokio::time::timeout(limit, io).await {
        Err(_) => Err(ConnectionError::WriteStalled(limit)),
        Ok(Err(e)) => Err(ConnectionError::Write(e)),
        Ok(Ok(())) => Ok(()),
    }
}

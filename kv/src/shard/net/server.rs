//! The server side: a process's client port, forwarding to its node.

use super::*;

/// Serves the client protocol on `listener`, forwarding every request to `handle`, until the
/// task is dropped. Each connection is a task of its own; a bad frame closes that connection
/// only.
pub async fn serve(listener: TcpListener, handle: NodeHandle<ShardHost>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "client refused: {CONNECTIONS_MAX} connections open");
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match serve_connection(stream, handle).await {
                Ok(()) => tracing::debug!(%peer, "client connection closed"),
                Err(e) => tracing::error!(%peer, "client connection closed: {e}"),
            }
        });
    }
}

/// One connection: reads requests while fewer than [`IN_FLIGHT_MAX`] are in flight, serves
/// each in a task of its own, and writes the answers as they come.
async fn serve_connection(stream: TcpStream, handle: NodeHandle<ShardHost>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut requests = FramedRead::new(read, shard_codec());
    let (answers, queue) = mpsc::channel::<Bytes>(IN_FLIGHT_MAX);
    let writer = tokio::spawn(write_answers(FramedWrite::new(write, shard_codec()), queue));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let result = loop {
        // Not read while the connection has its share in flight: the client waits.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, requests.next()).await {
            Err(_) if in_flight.available_permits() + 1 < IN_FLIGHT_MAX => continue,
            Err(_) => break Ok(()),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(format!("a bad frame: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let request = match decode_request(&frame) {
            Ok(request) => request,
            Err(e) => break Err(format!("a request that does not decode: {e}")),
        };
        let handle = handle.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let body = match tokio::time::timeout(
                SERVE_TIMEOUT,
                handle.request(request.body.into()),
            )
            .await
            {
                Ok(Ok(response)) => WireResponse::from(response),
                Ok(Err(e)) => WireResponse::Unavailable(e.to_string()),
                Err(_) => WireResponse::Unavailable("the node did not answer in time".into()),
            };
            let bytes = encode_frame(&Frame {
                id: request.id,
                body,
            })
            .or_else(|e| {
                encode_frame(&Frame {
                    id: request.id,
                    body: WireResponse::Unavailable(format!("the answer could not be sent: {e}")),
                })
            });
            match bytes {
                Ok(bytes) => {
                    // The writer is gone only if the connection failed: nothing to tell then.
                    let _ = answers.send(bytes).await;
                }
                Err(e) => tracing::error!("an answer could not be encoded: {e}"),
            }
            drop(permit);
        });
    };
    drop(answers);
    if result.is_err() {
        // The stream cannot be trusted past a bad frame: close it now.
        writer.abort();
    } else {
        // A client that closed its side still gets the answers in flight.
        let _ = writer.await;
    }
    result
}

/// Writes the answers of one connection as they come, with one flush per burst.
async fn write_answers(
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    mut queue: mpsc::Receiver<Bytes>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(e) = sink.feed(bytes).await {
            tracing::debug!("writing an answer failed: {e}");
            return;
        }
        while let Ok(more) = queue.try_recv() {
            if let Err(e) = sink.feed(more).await {
                tracing::debug!("writing an answer failed: {e}");
                return;
            }
        }
        if let Err(e) = SinkExt::<Bytes>::flush(&mut sink).await {
            tracing::debug!("writing an answer failed: {e}");
            return;
        }
    }
}

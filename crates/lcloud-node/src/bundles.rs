//! Bundles over the API, streamed both ways so that their size never becomes the node's
//! memory: `GET /api/bundle` sends the history a few hundred experiences at a time, as fast
//! as the client reads (a client that stops reading holds one piece, then is cut off by the
//! write deadline); `POST /api/bundle` checks the bytes as they arrive and spools them to a
//! file in the node's directory, and the core imports that file a chunk at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lcloud_store::bundle::{Checker, Encoder};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::api::{Api, error};
use crate::node::Call;

/// Largest bundle `POST /api/bundle` accepts.
pub const BUNDLE_BYTES_MAX: u64 = 1 << 30;

/// Bundles received at once (each spools to disk; the core imports them one by one).
pub const UPLOADS_MAX: usize = 2;

/// About how many bytes of experiences are fetched from the core per piece of a streamed
/// bundle (at least one experience).
const PIECE_BYTES: usize = 256 << 10;

/// `GET /api/bundle/shallow`: the state at the deepest final checkpoint, its proof and
/// everything since, as a shallow bundle (`lcloud join --shallow URL`); 409 while no
/// checkpoint is final. Its size is the state's plus the history since the checkpoint.
pub(crate) async fn shallow_out(State(api): State<Api>) -> Response {
    match api.ask(Call::Shallow).await {
        Ok(Ok(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Err(why)) => error(StatusCode::CONFLICT, &why),
        Err(r) => r,
    }
}

/// `GET /api/bundle`: every experience this node holds, as a bundle, streamed.
pub(crate) async fn bundle_out(State(api): State<Api>) -> Response {
    let (count, generation) = match api.ask(Call::BundleHead).await {
        Ok(head) => head,
        Err(r) => return r,
    };
    let (encoder, head) = Encoder::start(&api.cloud, count);
    let pieces = futures::stream::unfold(
        (api, Some(encoder), 0u64, Some(head)),
        move |(api, encoder, next, head)| async move {
            if let Some(head) = head {
                return Some((Ok(head), (api, encoder, next, None)));
            }
            let mut encoder = encoder?;
            let mut out = Vec::new();
            if next == count {
                encoder.finish(&mut out);
                return Some((Ok(out), (api, None, next, None)));
            }
            let records = api
                .ask(|reply| Call::BundleRecords {
                    generation,
                    from: next,
                    bytes: PIECE_BYTES,
                    reply,
                })
                .await;
            match records {
                Ok(Some(records)) if !records.is_empty() => {
                    let upto = (next + records.len() as u64).min(count);
                    for r in &records[..(upto - next) as usize] {
                        encoder.record(&mut out, r);
                    }
                    Some((Ok(out), (api, Some(encoder), upto, None)))
                }
                // The history was loaded again (renumbered) or the node is stopping: the
                // answer is cut short, and the client's checksum says so.
                _ => Some((
                    Err(std::io::Error::other(
                        "the node's history changed; fetch again",
                    )),
                    (api, None, next, None),
                )),
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(pieces),
    )
        .into_response()
}

/// A file a bundle is received into, removed when dropped.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `POST /api/bundle`: a bundle to import, checked as it arrives.
pub(crate) async fn bundle_in(State(api): State<Api>, req: axum::extract::Request) -> Response {
    let claimed = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if claimed.is_some_and(|n| n > BUNDLE_BYTES_MAX) {
        return too_large();
    }
    let Ok(_receiving) = api.uploads.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{UPLOADS_MAX} bundles are being received already: try again later"),
        );
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let spool = Spool(api.dir.join(format!(
        "incoming-{}-{}.bundle",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    let mut file = match tokio::fs::File::create(&spool.0).await {
        Ok(f) => tokio::io::BufWriter::with_capacity(1 << 20, f),
        Err(e) => return cannot_keep(&e),
    };
    let mut checker = Checker::new();
    let mut received = 0u64;
    let mut body = req.into_body().into_data_stream();
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the bundle did not arrive whole: {e}"),
                );
            }
        };
        received += piece.len() as u64;
        if received > BUNDLE_BYTES_MAX {
            return too_large();
        }
        if let Err(e) = checker.feed(&piece) {
            return error(StatusCode::BAD_REQUEST, format!("not a valid bundle: {e}"));
        }
        if let Some(cloud) = checker.cloud()
            && cloud != api.cloud
        {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "a bundle of cloud {cloud}, but this node holds cloud {}",
                    api.cloud
                ),
            );
        }
        if let Err(e) = file.write_all(&piece).await {
            return cannot_keep(&e);
        }
    }
    if let Err(e) = checker.finish() {
        return error(StatusCode::BAD_REQUEST, format!("not a valid bundle: {e}"));
    }
    if let Err(e) = file.flush().await {
        return cannot_keep(&e);
    }
    drop(file);
    match api.ask(|tx| Call::Import(spool.0.clone(), tx)).await {
        Ok(Ok(r)) => Json(json!({
            "new": r.new,
            "known": r.known,
            "rejected": r.rejected,
            "first_rejection": r.first_rejection,
            "root": r.root.map(|id| id.to_hex()),
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(r) => r,
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "a bundle may be at most {BUNDLE_BYTES_MAX} bytes; split the history or import the file with `lcloud import` on the node's machine"
        ),
    )
}

/// The node could not write the bundle it receives (a full disk, mostly).
fn cannot_keep(e: &std::io::Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the node cannot keep the bundle while it arrives: {e}"),
    )
}

//! Frames of the sync protocol on a libp2p stream: a 4-byte big-endian length, then the
//! message's DAG-CBOR bytes. The length is checked against the cap before anything is
//! allocated; the message is decoded with the core's capped decoder.
//!
//! In version 2 (`/lcloud/sync/2`) the frame's bytes start with a kind: `0x00`, the message
//! as it is; `0x01`, the message's length (4 bytes big-endian, at most the cap, checked before
//! anything is allocated) and the message as one zstd frame. A sender compresses a message of
//! at least [`COMPRESS_FROM`] bytes when that saves an eighth.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use lcloud_core::sync::{MESSAGE_BYTES_MAX, Request, Response};
use libp2p::StreamProtocol;

/// Messages shorter than this go as they are (compressing a summary of a few chains saves
/// nothing worth the work).
pub const COMPRESS_FROM: usize = 1024;

/// Whether frames on `protocol` carry a kind byte and may be compressed (version 2).
fn packs(protocol: &StreamProtocol) -> bool {
    protocol.as_ref() == crate::SYNC_PROTOCOL_2
}

/// A message's bytes as a version-2 frame carries them.
fn pack(message: Vec<u8>) -> Vec<u8> {
    if message.len() >= COMPRESS_FROM
        && let Ok(z) = zstd::bulk::compress(&message, 1)
        && z.len() + 5 <= message.len() - message.len() / 8
    {
        let mut out = Vec::with_capacity(5 + z.len());
        out.push(0x01);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&z);
        return out;
    }
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(0x00);
    out.extend_from_slice(&message);
    out
}

/// The message a version-2 frame's bytes carry, expanded within the cap.
fn unpack(mut frame: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let bad = |why: String| FrameError::Undecodable(why);
    match frame.first() {
        Some(0x00) => {
            frame.remove(0);
            Ok(frame)
        }
        Some(0x01) => {
            let len = frame
                .get(1..5)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| bad("a compressed message without its length".into()))?;
            if len > MESSAGE_BYTES_MAX {
                return Err(FrameError::TooLarge(len));
            }
            let message = zstd::bulk::decompress(&frame[5..], len)
                .map_err(|e| bad(format!("a compressed message that does not expand: {e}")))?;
            if message.len() != len {
                return Err(bad(format!(
                    "a compressed message of {} bytes, not the {len} announced",
                    message.len()
                )));
            }
            Ok(message)
        }
        Some(k) => Err(bad(format!("a frame of unknown kind {k:#04x}"))),
        None => Err(bad("an empty frame".into())),
    }
}

/// The codec: stateless.
#[derive(Clone, Default)]
pub struct SyncCodec;

/// Why a frame was refused: what a peer's misbehaviour is counted as.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is above the cap (nothing was allocated).
    #[error("a frame of {0} bytes (at most {MESSAGE_BYTES_MAX})")]
    TooLarge(usize),
    /// The stream ended before the frame did.
    #[error("truncated frame: the stream ended after {got} of {want} bytes")]
    Truncated {
        /// Bytes received (prefix included).
        got: usize,
        /// Bytes the prefix announced (prefix included).
        want: usize,
    },
    /// More bytes followed the frame (a sender closes its side after one frame).
    #[error("bytes after the frame")]
    TrailingBytes,
    /// The frame's bytes are not a message of the protocol.
    #[error("undecodable message: {0}")]
    Undecodable(String),
}

impl FrameError {
    /// A short, stable label (for metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge(_) => "frame too large",
            FrameError::Truncated { .. } => "frame truncated",
            FrameError::TrailingBytes => "frame trailing bytes",
            FrameError::Undecodable(_) => "message undecodable",
        }
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Reads exactly `buf.len()` bytes; a clean end of stream before that is a truncated frame
/// (`got_before` bytes of the frame came earlier), a failed read is passed on.
async fn fill<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    buf: &mut [u8],
    got_before: usize,
    want: usize,
) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match io.read(&mut buf[at..]).await? {
            0 => {
                return Err(FrameError::Truncated {
                    got: got_before + at,
                    want,
                }
                .into());
            }
            n => at += n,
        }
    }
    Ok(())
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    fill(io, &mut len, 0, 4).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MESSAGE_BYTES_MAX {
        return Err(FrameError::TooLarge(len).into());
    }
    let mut buf = vec![0u8; len];
    fill(io, &mut buf, 4, 4 + len).await?;
    // The sender closes its side after the frame: anything more is not the protocol.
    let mut more = [0u8; 1];
    if io.read(&mut more).await? != 0 {
        return Err(FrameError::TrailingBytes.into());
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a frame of {} bytes (at most {MESSAGE_BYTES_MAX})",
                bytes.len()
            ),
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    FrameError::Undecodable(e.to_string()).into()
}

/// The frame error inside `e`, or `e` itself when it is not one (the stream failed).
fn frame_error(e: io::Error) -> io::Result<FrameError> {
    if e.get_ref().is_some_and(|inner| inner.is::<FrameError>()) {
        let inner = e.into_inner().expect("checked above");
        Ok(*inner.downcast::<FrameError>().expect("checked above"))
    } else {
        Err(e)
    }
}

/// A request as read from a peer: the request, or what was wrong with its frame. A broken
/// frame is delivered (not dropped as a failed stream) so that the node learns who sent it
/// and counts it against that peer.
pub type Inbound = Result<Request, FrameError>;

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = match read_frame(io).await {
            Ok(bytes) if packs(p) => match unpack(bytes) {
                Ok(message) => message,
                Err(e) => return Ok(Err(e)),
            },
            Ok(bytes) => bytes,
            Err(e) => return frame_error(e).map(Err),
        };
        Ok(Request::from_bytes(&bytes).map_err(|e| FrameError::Undecodable(e.to_string())))
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = read_frame(io).await?;
        if packs(p) {
            bytes = unpack(bytes)?;
        }
        Response::from_bytes(&bytes).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        req: Inbound,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Ok(req) if packs(p) => write_frame(io, &pack(req.to_bytes())).await,
            Ok(req) => write_frame(io, &req.to_bytes()).await,
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not sending a broken request ({e})"),
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match packs(p) {
            true => write_frame(io, &pack(res.to_bytes())).await,
            false => write_frame(io, &res.to_bytes()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    fn read(bytes: Vec<u8>) -> io::Result<Request> {
        let protocol = StreamProtocol::new(crate::SYNC_PROTOCOL);
        futures::executor::block_on(SyncCodec.read_request(&protocol, &mut Cursor::new(bytes)))
            .and_then(|r| r.map_err(io::Error::from))
    }

    #[test]
    fn a_frame_longer_than_the_cap_is_refused_before_it_is_read() {
        // Claims 4 GiB - 1 and carries nothing: refused from the length alone.
        let err = read(u32::MAX.to_be_bytes().to_vec()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn garbage_and_truncated_frames_are_refused() {
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 8]);
        assert_eq!(read(frame).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut short = 100u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        let err = read(short).unwrap_err();
        assert!(err.to_string().contains("truncated frame"), "{err}");
    }

    #[test]
    fn bytes_after_the_frame_are_refused() {
        let req = Request::Push {
            cloud: lcloud_core::Id([7; 32]),
            exps: vec![],
        };
        let body = req.to_bytes();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(read(frame.clone()).unwrap(), req);
        frame.push(0);
        let err = read(frame).unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FrameError>());
        assert_eq!(inner.map(FrameError::reason), Some("frame trailing bytes"));
    }

    #[test]
    fn a_request_round_trips_through_a_frame() {
        let req = Request::Push {
            cloud: lcloud_core::Id([7; 32]),
            exps: vec![lcloud_core::codec::ByteBuf(vec![1, 2, 3])],
        };
        let protocol = StreamProtocol::new(crate::SYNC_PROTOCOL);
        let mut out = Cursor::new(Vec::new());
        futures::executor::block_on(SyncCodec.write_request(&protocol, &mut out, Ok(req.clone())))
            .unwrap();
        assert_eq!(read(out.into_inner()).unwrap(), req);
    }
}

#[cfg(test)]
mod v2 {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    fn protocol() -> StreamProtocol {
        StreamProtocol::new(crate::SYNC_PROTOCOL_2)
    }

    fn frame(req: &Request) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        futures::executor::block_on(SyncCodec.write_request(
            &protocol(),
            &mut out,
            Ok(req.clone()),
        ))
        .unwrap();
        out.into_inner()
    }

    fn read(bytes: Vec<u8>) -> Inbound {
        futures::executor::block_on(SyncCodec.read_request(&protocol(), &mut Cursor::new(bytes)))
            .unwrap()
    }

    fn push(exps: Vec<Vec<u8>>) -> Request {
        Request::Push {
            cloud: lcloud_core::Id([7; 32]),
            exps: exps.into_iter().map(lcloud_core::codec::ByteBuf).collect(),
        }
    }

    #[test]
    fn a_large_batch_goes_compressed_and_a_small_one_as_it_is() {
        let batch = push(
            (0..200)
                .map(|i| format!("k{i} v{i:015}").into_bytes())
                .collect(),
        );
        let plain = batch.to_bytes().len();
        let f = frame(&batch);
        assert_eq!(f[4], 0x01, "compressed");
        assert!(f.len() * 3 < plain, "{} of {plain}", f.len());
        assert_eq!(read(f).unwrap(), batch);
        let small = push(vec![vec![1, 2, 3]]);
        let f = frame(&small);
        assert_eq!(f[4], 0x00);
        assert_eq!(f.len(), 5 + small.to_bytes().len());
        assert_eq!(read(f).unwrap(), small);
    }

    #[test]
    fn a_bad_compressed_frame_is_refused_by_name() {
        let batch = push(
            (0..200)
                .map(|i| format!("k{i} v{i:015}").into_bytes())
                .collect(),
        );
        let good = frame(&batch);
        let with = |at: usize, bytes: &[u8]| {
            let mut f = good.clone();
            f[at..at + bytes.len()].copy_from_slice(bytes);
            f
        };
        let announced = u32::from_be_bytes(good[5..9].try_into().unwrap());
        let cases = [
            (with(4, &[0x07]), "message undecodable"),
            (with(5, &u32::MAX.to_be_bytes()), "frame too large"),
            (
                with(5, &(announced + 1).to_be_bytes()),
                "message undecodable",
            ),
            (
                with(5, &(announced - 1).to_be_bytes()),
                "message undecodable",
            ),
            (with(good.len() - 4, &[0, 0, 0, 0]), "message undecodable"),
        ];
        for (f, reason) in cases {
            assert_eq!(read(f).unwrap_err().reason(), reason);
        }
        // An empty frame.
        assert_eq!(
            read(0u32.to_be_bytes().to_vec()).unwrap_err().reason(),
            "message undecodable"
        );
    }

    /// Version-2 frames (bolero): no input panics, and nothing expands past the cap.
    #[test]
    fn fuzz_v2_frames() {
        bolero::check!().for_each(|bytes: &[u8]| {
            let _ = read_safely(bytes);
        });
    }

    fn read_safely(bytes: &[u8]) -> io::Result<Inbound> {
        futures::executor::block_on(
            SyncCodec.read_request(&protocol(), &mut Cursor::new(bytes.to_vec())),
        )
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    /// Wire frames (bolero): no input panics; the length prefix is checked before anything is
    /// allocated; an accepted request re-encodes to exactly the input (one frame, nothing
    /// after it).
    #[test]
    fn fuzz_wire_frames() {
        let protocol = StreamProtocol::new(crate::SYNC_PROTOCOL);
        bolero::check!().for_each(|bytes: &[u8]| {
            let read = futures::executor::block_on(
                SyncCodec.read_request(&protocol, &mut Cursor::new(bytes.to_vec())),
            );
            if let Ok(Ok(req)) = read {
                let mut out = Cursor::new(Vec::new());
                futures::executor::block_on(SyncCodec.write_request(&protocol, &mut out, Ok(req)))
                    .unwrap();
                assert_eq!(&out.into_inner()[..], bytes);
            }
        });
    }
}

//! Frames of the sync protocol on a libp2p stream: a 4-byte big-endian length, then the
//! message's DAG-CBOR bytes. The length is checked against the cap before anything is
//! allocated; the message is decoded with the core's capped decoder.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use lcloud_core::sync::{MESSAGE_BYTES_MAX, Request, Response};
use libp2p::StreamProtocol;

/// The codec: stateless.
#[derive(Clone, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MESSAGE_BYTES_MAX})"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
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
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Request::from_bytes(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        Response::from_bytes(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.to_bytes()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.to_bytes()).await
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
        assert!(read(short).is_err());
    }

    #[test]
    fn a_request_round_trips_through_a_frame() {
        let req = Request::Push {
            cloud: lcloud_core::Id([7; 32]),
            exps: vec![lcloud_core::codec::ByteBuf(vec![1, 2, 3])],
        };
        let protocol = StreamProtocol::new(crate::SYNC_PROTOCOL);
        let mut out = Cursor::new(Vec::new());
        futures::executor::block_on(SyncCodec.write_request(&protocol, &mut out, req.clone()))
            .unwrap();
        assert_eq!(read(out.into_inner()).unwrap(), req);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    /// Wire frames (bolero): no input panics; the length prefix is checked before anything is
    /// allocated; an accepted request re-encodes to exactly the frame.
    #[test]
    fn fuzz_wire_frames() {
        let protocol = StreamProtocol::new(crate::SYNC_PROTOCOL);
        bolero::check!().for_each(|bytes: &[u8]| {
            let read = futures::executor::block_on(
                SyncCodec.read_request(&protocol, &mut Cursor::new(bytes.to_vec())),
            );
            if let Ok(req) = read {
                let mut out = Cursor::new(Vec::new());
                futures::executor::block_on(SyncCodec.write_request(&protocol, &mut out, req))
                    .unwrap();
                assert_eq!(
                    &out.into_inner()[..],
                    &bytes[..4 + u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize]
                );
            }
        });
    }
}

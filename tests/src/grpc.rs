//! A gRPC client for the echo backends, on tonic: unary calls to any `/{service}/{method}` path
//! with raw message bytes, so tests need no generated stubs. The echo answers every call with
//! its JSON [`Echo`] as the message.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::backend::Echo;

/// Message bytes in, message bytes out.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// One unary call of `path` (`/{service}/{method}`) with `metadata` headers; the echo the
/// backend answered with.
pub async fn call(
    channel: Channel,
    path: &'static str,
    metadata: &[(&'static str, &'static str)],
) -> Result<Echo, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(b"ping".to_vec());
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, tonic::metadata::MetadataValue::from_static(value));
    }
    let path = http::uri::PathAndQuery::from_static(path);
    let response = grpc.unary(request, path, RawCodec).await?;
    serde_json::from_slice(response.get_ref())
        .map_err(|e| tonic::Status::internal(format!("echo answer is not JSON: {e}")))
}

//! A `tokio_util` codec for control frames (feature `codec`), built on the
//! pure functions of [`crate::control`]: the length is checked against the
//! limit before any buffer is reserved for the body.

use std::io;
use std::marker::PhantomData;
use std::vec::Vec;

use bytes::{Buf as _, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::control::{
    decode_device_message, decode_hub_message, frame_body_len, ControlError, DecodedHubMessage,
    DeviceMessage, FRAME_HEADER_LEN, MAX_FRAME_BODY,
};

/// A message type a [`FrameCodec`] can decode.
pub trait Incoming: Sized {
    /// Decodes one frame body.
    fn decode_body(body: &[u8]) -> Result<Self, ControlError>;

    /// Decodes one frame body the codec owns (override to keep it).
    fn decode_owned(body: BytesMut) -> Result<Self, ControlError> {
        Self::decode_body(&body)
    }
}

/// A decoded message with the frame body it came from, for checking a
/// proof over the bytes as sent (see [`crate::auth`]). Costs no copy.
#[derive(Debug, Clone, PartialEq)]
pub struct WithBody<M> {
    /// The message.
    pub message: M,
    /// Its frame body, as received.
    pub body: Bytes,
}

impl<M: Incoming> Incoming for WithBody<M> {
    fn decode_body(body: &[u8]) -> Result<Self, ControlError> {
        Self::decode_owned(BytesMut::from(body))
    }

    fn decode_owned(body: BytesMut) -> Result<Self, ControlError> {
        let message = M::decode_body(&body)?;
        Ok(WithBody {
            message,
            body: body.freeze(),
        })
    }
}

impl Incoming for DeviceMessage {
    fn decode_body(body: &[u8]) -> Result<Self, ControlError> {
        decode_device_message(body)
    }
}

impl Incoming for DecodedHubMessage {
    fn decode_body(body: &[u8]) -> Result<Self, ControlError> {
        decode_hub_message(body)
    }
}

/// Error of a framed control connection.
#[derive(Debug)]
pub enum CodecError {
    /// The connection failed.
    Io(io::Error),
    /// The peer broke the protocol.
    Protocol(ControlError),
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl From<ControlError> for CodecError {
    fn from(e: ControlError) -> Self {
        CodecError::Protocol(e)
    }
}

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CodecError::Io(e) => write!(f, "connection error: {e}"),
            CodecError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Decodes `In` frames and encodes `Out` frames, bodies at most `max_body`
/// bytes either way.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    max_body: usize,
    scratch: Vec<u8>,
    _messages: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec refusing bodies longer than `max_body` (at most 65 535).
    pub fn new(max_body: usize) -> Self {
        FrameCodec {
            max_body: max_body.min(MAX_FRAME_BODY),
            scratch: Vec::new(),
            _messages: PhantomData,
        }
    }
}

impl<In: Incoming, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        let Some(&[a, b]) = src.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let len = frame_body_len([a, b], self.max_body)?;
        if src.len() < FRAME_HEADER_LEN + len {
            src.reserve(FRAME_HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_LEN);
        let body = src.split_to(len);
        Ok(Some(In::decode_owned(body)?))
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.scratch.clear();
        let body = postcard::to_extend(&item, core::mem::take(&mut self.scratch))
            .map_err(|_| ControlError::BufferTooSmall)?;
        if body.len() > self.max_body {
            return Err(ControlError::Oversized { len: body.len() }.into());
        }
        // Fits u16: max_body is at most MAX_FRAME_BODY.
        dst.extend_from_slice(&(body.len() as u16).to_be_bytes());
        dst.extend_from_slice(&body);
        self.scratch = body;
        Ok(())
    }
}

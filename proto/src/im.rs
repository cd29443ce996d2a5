//! IM payloads (protobuf, prost), generated at build time from
//! `schema/switchboard/im/v1/im.proto`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/switchboard.im.v1.rs"));

pub use prost::Message as ProtoMessage;

//! Receiving marks: a FIFO the recorder creates ([`fifo`]) and a plain file clients append to
//! ([`file`](mod@file)). The line protocol and the client live in [`flinch_core::marks`]; in-process
//! marks go through [`crate::recorder::MarkSender`].

pub mod fifo;
pub mod file;

//! The application's `pre-create` hook for form and session files: asked as each file part
//! begins, before any of its bytes is stored. A refusal (or a hook that fails) refuses the
//! whole request, as Django's `StopUpload` with an error does; an answer may rename the file
//! or lower its size limit (enforced as the bytes stream). Put first in the chain. Resumable
//! uploads ask in `Engine::create_upload` instead.

use bytes::Bytes;

use crate::names::sanitize_file_name;
use crate::upload::handler::{FileInfo, HandlerError, UploadHandler};
use crate::upload::hooks::{Creating, Origin};
use crate::upload::{Engine, UploadError};

/// Who is uploading and how, for the hook.
#[derive(Clone)]
pub struct GateContext {
    pub engine: Engine,
    pub owner_id: i64,
    /// `multipart` or `session`.
    pub protocol: &'static str,
    pub session: Option<String>,
    pub origin: Origin,
}

pub struct GateHandler {
    ctx: GateContext,
    /// This file's limit from the hook, and what it has sent.
    max: Option<u64>,
    received: u64,
}

impl GateHandler {
    pub fn new(ctx: GateContext) -> Self {
        Self {
            ctx,
            max: None,
            received: 0,
        }
    }
}

impl UploadHandler for GateHandler {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn shape_file(&mut self, file: &mut FileInfo) -> Result<(), HandlerError> {
        self.received = 0;
        let c = &self.ctx;
        let ask = Creating {
            owner_id: c.owner_id,
            protocol: c.protocol,
            filename: &file.file_name,
            content_type: file.content_type.as_deref(),
            length: file.content_length,
            metadata: None,
            session: c.session.as_deref(),
            origin: &c.origin,
        };
        // The chain runs on a blocking thread of the runtime: it may wait for the answer.
        let shape = tokio::runtime::Handle::current().block_on(c.engine.pre_create(&ask))?;
        if let Some(name) = shape.filename {
            file.file_name = sanitize_file_name(&name);
            file.raw_name = name;
        }
        self.max = shape.max_size;
        Ok(())
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.received = self.received.saturating_add(chunk.len() as u64);
        if let Some(limit) = self.max.filter(|m| self.received > *m) {
            return Err(HandlerError::Failed(UploadError::TooLarge { limit }));
        }
        Ok(Some(chunk))
    }
}

//! Pre-processing: encoded bytes → the model's input tensor for one image, following the variant's
//! `config.json` (`input.resize`, `layout`, `dtype`, `mean`/`std`).
//!
//! Two steps, so that memory is bounded whatever the image:
//! - [`inspect`]: cheap (the header only), run where the request arrives. Parses the header ([`header`]),
//!   estimates the memory decoding and resizing will take ([`cost`]) and checks the per-image limits
//!   ([`limits`]). The caller then reserves that memory from the process-wide [`budget`].
//! - [`prepare`]: CPU-bound, run on the decode pool or a model thread, never on the async reactor. Decodes
//!   ([`decode`]), resizes ([`resize`]), turns upright ([`orient`]) and normalises ([`normalize`]).
pub mod budget;
pub mod calibrate;
pub mod cost;
mod decode;
pub mod header;
mod jpeg;
pub mod limits;
mod normalize;
mod orient;
mod resize;

pub use budget::{DecodeBudget, Reservation};
pub use decode::try_alloc;
pub use header::{Header, ImageFormat, sniff_format};
pub use limits::ImageLimits;
pub use normalize::{InputData, to_tensor};
pub use resize::resize_rgb;

use crate::{error::Result, repository::InputSpec};

/// One image ready for batching: its tensor (one batch row) and its upright size for post-processing.
#[derive(Debug)]
pub struct Prepared {
    pub data: InputData,
    pub width: u32,
    pub height: u32,
}

/// A decoded, tightly packed RGB8 image.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// An image that passed the limits: its header and its estimated decode memory.
#[derive(Debug, Clone, Copy)]
pub struct Inspection {
    pub header: Header,
    pub memory_bytes: u64,
    /// The per-image memory limit, which also bounds the decoders' own allocations.
    max_memory_bytes: u64,
    /// Whether a JPEG may be decoded at a reduced scale ([`ImageLimits::scaled_jpeg_decode`]).
    scaled_jpeg_decode: bool,
}

/// Reads the header of `bytes` and checks it against `limits` for a model with input `spec`.
pub fn inspect(bytes: &[u8], spec: &InputSpec, limits: &ImageLimits) -> Result<Inspection> {
    let header = header::parse(bytes)?;
    let memory_bytes = cost::estimate(&header, bytes.len(), spec.width, spec.height, spec.resize);
    limits.check(&header, memory_bytes)?;
    Ok(Inspection {
        header,
        memory_bytes,
        max_memory_bytes: limits.max_memory_bytes,
        scaled_jpeg_decode: limits.scaled_jpeg_decode,
    })
}

/// Decodes, resizes, turns upright and normalises an inspected image.
pub fn prepare(bytes: &[u8], inspection: &Inspection, spec: &InputSpec) -> Result<Prepared> {
    let header = &inspection.header;
    let scaled_for = inspection.scaled_jpeg_decode.then_some(spec);
    let decoded = decode::decode_rgb(bytes, header, inspection.max_memory_bytes, scaled_for)?;
    let orientation = decoded.orientation;
    // The client's image size, not the decoded one (a scaled decode is smaller): boxes are in its pixels.
    let (image_width, image_height) =
        orient::resize_target(orientation, header.width, header.height);
    let (width, height) = orient::resize_target(orientation, spec.width, spec.height);
    let resized = resize_rgb(&decoded.image, width, height, spec.resize)?;
    // The full-size pixels go before the tensor is built: they are most of the reservation.
    drop(decoded);
    let upright = orient::apply(resized, orientation)?;
    Ok(Prepared {
        data: to_tensor(upright, spec),
        width: image_width,
        height: image_height,
    })
}

/// An admitted image not decoded yet: its bytes, what [`inspect`] found, and the decode memory reserved for it.
pub struct Encoded {
    pub bytes: bytes::Bytes,
    pub inspection: Inspection,
    pub reservation: Reservation,
}

impl Encoded {
    /// [`prepare`]s it, then gives its decode memory back: how a request's image is prepared wherever it is
    /// decoded (on the decode pool, or on the model thread right before its batch).
    pub fn prepare(self, spec: &InputSpec) -> Result<Prepared> {
        let prepared = prepare(&self.bytes, &self.inspection, spec);
        drop(self.reservation);
        prepared
    }
}

/// [`inspect`] then [`prepare`], without a budget: for tools and tests that decode one image at a time.
pub fn prepare_checked(bytes: &[u8], spec: &InputSpec, limits: &ImageLimits) -> Result<Prepared> {
    prepare(bytes, &inspect(bytes, spec, limits)?, spec)
}

#[cfg(test)]
mod tests;

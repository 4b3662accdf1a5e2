//! Pre-processing: encoded bytes → the model's input tensor for one image, following the variant's
//! `config.json` (`input.resize`, `layout`, `dtype`, `mean`/`std`). CPU-bound: callers run it on the decode
//! pool, never on the async reactor.
mod decode;
mod normalize;
mod resize;

pub use decode::{ImageFormat, decode_rgb, sniff_format};
pub use normalize::{InputData, to_tensor};
pub use resize::resize_rgb;

use crate::{error::Result, repository::InputSpec};

/// One image ready for batching: its tensor (one batch row) and its original size for post-processing.
#[derive(Debug)]
pub struct Prepared {
    pub data: InputData,
    pub width: u32,
    pub height: u32,
}

/// Decodes, resizes and normalises `bytes` for a model with input `spec`.
pub fn prepare(bytes: &[u8], spec: &InputSpec, max_pixels: u64) -> Result<Prepared> {
    let image = decode_rgb(bytes, max_pixels)?;
    let resized = resize_rgb(&image, spec.width, spec.height, spec.resize)?;
    Ok(Prepared {
        data: to_tensor(resized, spec),
        width: image.width,
        height: image.height,
    })
}

/// A decoded, tightly packed RGB8 image.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

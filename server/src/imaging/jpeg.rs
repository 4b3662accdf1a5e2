//! JPEG decoding with libjpeg-turbo (the `turbojpeg` crate, built from its vendored source with SIMD).
//!
//! - **The reference's decoder.** Pillow decodes JPEGs with libjpeg-turbo, with the same defaults (accurate
//!   integer IDCT, smooth chroma upsampling), so a full decode here gives the reference pipeline's pixels
//!   (docs/preprocessing.md). It is also about twice as fast as the pure-Rust decoder it replaces.
//! - **Scaled decode.** libjpeg-turbo can run the IDCT at 1/2, 1/4 or 1/8 scale, as Pillow's `draft()` does.
//!   [`reduction`] picks the strongest one that still leaves twice the model's input size where the resize
//!   samples, so a 12 MP photo for a 224 model decodes a sixteenth of its pixels. It is a choice
//!   (`--jpeg-scaled-decode`), because its pixels are close to the reference's but not the same.
//! - CMYK and YCCK JPEGs (print workflows) stay with the `image` crate's decoder ([`super::decode`]), whose
//!   colour conversion the tests pin.
use image::metadata::Orientation;
use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

use super::{RgbImage, cost::CENTER_CROP_FRACTION, decode::try_alloc, header};
use crate::{
    error::{Error, Result},
    repository::ResizeMode,
};

/// Most scans of a progressive JPEG decoded before it is refused. A camera's progressive JPEG has about 10;
/// a crafted one can have thousands, each a pass over every coefficient of the image.
const MAX_SCANS: u32 = 100;

/// How much larger than the model's input the reduced image must stay, on each side, so that the bilinear
/// resize after it still does part of the shrinking (Pillow's `reducing_gap` for `draft()` in
/// `Image.thumbnail`). At 1 (reduce down to the input size itself) the pixels moved enough to move answers:
/// `parrot.jpg` decoded at 1/2 for the 256 detector gave a box of IoU under the reference tests' bound, and the
/// mean difference from a full decode was 2 levels (docs/preprocessing.md).
pub const REDUCING_GAP: f64 = 2.0;

/// The denominator `d` of the strongest reduction 1/`d` (8, 4, 2, else 1) that leaves at least
/// [`REDUCING_GAP`] times `need` (width, height) pixels where the resize samples: the whole image for
/// `Stretch`, its central square for `CenterCrop`. libjpeg-turbo rounds scaled sides up, so the decoded image
/// is never smaller than this computes.
pub fn reduction(width: u32, height: u32, need: (u32, u32), mode: ResizeMode) -> u32 {
    let (w, h) = (f64::from(width), f64::from(height));
    let (sampled_w, sampled_h) = match mode {
        ResizeMode::Stretch => (w, h),
        ResizeMode::CenterCrop => {
            let side = w.min(h) * CENTER_CROP_FRACTION;
            (side, side)
        }
    };
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| {
            sampled_w / f64::from(d) >= REDUCING_GAP * f64::from(need.0)
                && sampled_h / f64::from(d) >= REDUCING_GAP * f64::from(need.1)
        })
        .unwrap_or(1)
}

/// The EXIF orientation of a JPEG (its APP1 `Exif` segment); upright when absent or unreadable.
pub fn orientation(bytes: &[u8]) -> Orientation {
    header::jpeg_exif(bytes)
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

/// Decodes a JPEG (cut at its end-of-image marker, header already checked) to packed RGB8 at 1/`denom` of
/// its size (lossless JPEGs cannot be scaled and decode in full). Grey is replicated to RGB. `size` is the
/// (width, height) our own header parser read, which the memory estimate was made from.
pub fn decode(bytes: &[u8], size: (u32, u32), denom: u32) -> Result<RgbImage> {
    let mut decompressor = Decompressor::new().map_err(Error::internal)?;
    decompressor
        .set_scan_limit(MAX_SCANS)
        .map_err(Error::internal)?;
    let header = decompressor.read_header(bytes).map_err(invalid)?;
    if (header.width, header.height) != (size.0 as usize, size.1 as usize) {
        return Err(Error::InvalidImage(
            "the decoder reads other dimensions than the header".into(),
        ));
    }
    let scale = if header.is_lossless {
        ScalingFactor::ONE
    } else {
        ScalingFactor::new(1, denom as usize)
    };
    decompressor
        .set_scaling_factor(scale)
        .map_err(Error::internal)?;
    let scaled = header.scaled(scale);
    let (width, height) = (scaled.width, scaled.height);
    let mut pixels = try_alloc(width as u64 * height as u64 * 3)?;
    let output = Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch: width * 3,
        height,
        format: PixelFormat::RGB,
    };
    decompressor.decompress(bytes, output).map_err(invalid)?;
    let side = |v: usize| u32::try_from(v).map_err(|_| Error::internal("JPEG side over u32"));
    Ok(RgbImage {
        width: side(width)?,
        height: side(height)?,
        pixels,
    })
}

fn invalid(error: turbojpeg::Error) -> Error {
    Error::InvalidImage(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_reduction_that_keeps_twice_the_input_size() {
        let stretch = ResizeMode::Stretch;
        // 12 MP for 224: 1/4 gives 1008x756, both at least 448; 1/8 would give 378 rows.
        assert_eq!(reduction(4032, 3024, (224, 224), stretch), 4);
        assert_eq!(reduction(4032, 3024, (513, 513), stretch), 2);
        assert_eq!(reduction(8000, 6000, (224, 224), stretch), 8);
        // 720p for 224: 1/2 would leave 360 rows, under 448.
        assert_eq!(reduction(1280, 720, (224, 224), stretch), 1);
        assert_eq!(reduction(1280, 720, (160, 160), stretch), 2);
        assert_eq!(reduction(100, 100, (224, 224), stretch), 1);
        // A portrait photo needs its target's axes as they are in the stored pixels.
        assert_eq!(reduction(3024, 4032, (224, 224), stretch), 4);
        // The central crop is 0.875 of the short side: 3024 -> 2646; / 4 = 661 >= 600, / 8 < 600.
        assert_eq!(reduction(4032, 3024, (300, 300), ResizeMode::CenterCrop), 4);
        assert_eq!(reduction(4032, 2000, (300, 300), ResizeMode::CenterCrop), 2);
    }
}

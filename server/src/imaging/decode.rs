//! Decoding to packed RGB8, for an image whose header was already parsed and its limits checked
//! ([`super::inspect`]): JPEGs with libjpeg-turbo ([`super::jpeg`]), CMYK/YCCK JPEGs, PNG and BMP with the
//! `image` crate. The pixel buffers are allocated fallibly here (the decoders' own buffers are
//! bounded by the limits checked before), so a request that slips past the estimate gets a 503 instead of
//! aborting the process. Also reads the EXIF orientation (JPEG APP1, PNG eXIf).
use std::io::Cursor;

use image::{ColorType, ImageDecoder, ImageReader, metadata::Orientation};

use super::{
    RgbImage,
    header::{Details, Header, ImageFormat, jpeg_end},
    jpeg, orient,
};
use crate::{
    error::{Error, Result},
    repository::InputSpec,
};

/// A decoded image and how it must be turned to be seen upright.
pub struct Decoded {
    pub image: RgbImage,
    pub orientation: Orientation,
}

/// Decodes `bytes`, whose header is `header`, to RGB8: grey is replicated, alpha dropped, 16-bit samples
/// keep their high byte (as Pillow does for RGB, the reference pipeline), palettes expanded. With
/// `scaled_for`, a JPEG is decoded at the strongest reduction that still covers that input
/// ([`jpeg::reduction`]); everything else is decoded in full.
pub fn decode_rgb(
    bytes: &[u8],
    header: &Header,
    max_alloc: u64,
    scaled_for: Option<&InputSpec>,
) -> Result<Decoded> {
    // Four components are CMYK or YCCK, left to the `image` crate's colour conversion.
    if let Details::Jpeg { components, .. } = header.details
        && components != 4
    {
        let bytes = &bytes[..jpeg_end(bytes)?];
        let orientation = jpeg::orientation(bytes);
        let denom = scaled_for.map_or(1, |spec| {
            let need = orient::resize_target(orientation, spec.width, spec.height);
            jpeg::reduction(header.width, header.height, need, spec.resize)
        });
        let image = jpeg::decode(bytes, (header.width, header.height), denom)?;
        return Ok(Decoded { image, orientation });
    }
    let (bytes, format) = match header.format {
        // Only the image itself: a truncated file is refused, bytes after its EOI are ignored.
        ImageFormat::Jpeg => (&bytes[..jpeg_end(bytes)?], image::ImageFormat::Jpeg),
        ImageFormat::Png => (bytes, image::ImageFormat::Png),
        ImageFormat::Bmp => (bytes, image::ImageFormat::Bmp),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Bounds the decoders' internal buffers (the png crate's rows and zlib output) by the per-image limit.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    let invalid = |e| invalid(e, max_alloc);
    let mut decoder = reader.into_decoder().map_err(invalid)?;
    if decoder.dimensions() != (header.width, header.height) {
        return Err(Error::InvalidImage(
            "the decoder reads other dimensions than the header".into(),
        ));
    }
    // A broken or absent EXIF block is not a reason to refuse the pixels: the image is then upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let color = decoder.color_type();
    let mut raw = try_alloc(decoder.total_bytes())?;
    decoder.read_image(&mut raw).map_err(invalid)?;
    let pixels = to_rgb8(raw, color)?;
    Ok(Decoded {
        image: RgbImage {
            width: header.width,
            height: header.height,
            pixels,
        },
        orientation,
    })
}

/// A zeroed buffer of `len` bytes, or `InsufficientMemory` when the allocator cannot provide it.
pub fn try_alloc(len: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| Error::InsufficientMemory)?;
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| Error::InsufficientMemory)?;
    buffer.resize(len, 0);
    Ok(buffer)
}

/// Packs any 8- or 16-bit grey, grey+alpha, RGB or RGBA buffer as RGB8. 16-bit samples are in native
/// byte order (the `read_image` contract).
fn to_rgb8(raw: Vec<u8>, color: ColorType) -> Result<Vec<u8>> {
    let (channels, wide) = match color {
        ColorType::Rgb8 => return Ok(raw),
        ColorType::L8 => (1, false),
        ColorType::La8 => (2, false),
        ColorType::Rgba8 => (4, false),
        ColorType::L16 => (1, true),
        ColorType::La16 => (2, true),
        ColorType::Rgb16 => (3, true),
        ColorType::Rgba16 => (4, true),
        other => {
            return Err(Error::InvalidImage(format!(
                "unsupported pixel format {other:?}"
            )));
        }
    };
    let sample = |px: &[u8], i: usize| -> u8 {
        if wide {
            (u16::from_ne_bytes([px[2 * i], px[2 * i + 1]]) >> 8) as u8
        } else {
            px[i]
        }
    };
    let pixel_bytes = channels * if wide { 2 } else { 1 };
    let mut out = try_alloc((raw.len() / pixel_bytes * 3) as u64)?;
    for (px, rgb) in raw.chunks_exact(pixel_bytes).zip(out.chunks_exact_mut(3)) {
        if channels < 3 {
            rgb.fill(sample(px, 0));
        } else {
            for (c, value) in rgb.iter_mut().enumerate() {
                *value = sample(px, c);
            }
        }
    }
    Ok(out)
}

fn invalid(error: image::ImageError, max_alloc: u64) -> Error {
    match error {
        // The estimate should have caught it; the decoder's own check is the second line of defence.
        image::ImageError::Limits(_) => Error::ImageMemory {
            bytes: None,
            limit: max_alloc,
        },
        image::ImageError::Unsupported(e) => {
            Error::InvalidImage(format!("unsupported image variant: {e}"))
        }
        other => Error::InvalidImage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_to_rgb8() {
        assert_eq!(
            to_rgb8(vec![9, 200], ColorType::La8).unwrap(),
            vec![9, 9, 9]
        );
        assert_eq!(
            to_rgb8(vec![1, 2, 3, 4], ColorType::Rgba8).unwrap(),
            vec![1, 2, 3]
        );
        let rgb16: Vec<u8> = [0x1234u16, 0xFF00, 0x00FF]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(
            to_rgb8(rgb16, ColorType::Rgb16).unwrap(),
            vec![0x12, 0xFF, 0x00]
        );
        assert!(to_rgb8(vec![0; 12], ColorType::Rgb32F).is_err());
    }

    #[test]
    fn allocation_failure_is_an_error_not_an_abort() {
        assert!(matches!(
            try_alloc(u64::MAX),
            Err(Error::InsufficientMemory)
        ));
        assert!(matches!(try_alloc(1 << 62), Err(Error::InsufficientMemory)));
        assert_eq!(try_alloc(3).unwrap(), vec![0, 0, 0]);
    }
}

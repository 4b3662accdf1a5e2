//! Decoding with a decompression-bomb guard: the format is sniffed from the magic bytes, the dimensions are
//! read from the header, and only an image under the pixel limit is fully decoded.
use std::io::Cursor;

use image::{DynamicImage, ImageReader};

use super::RgbImage;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Bmp,
}

/// The format from the magic bytes; None for anything we do not accept.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
        [b'B', b'M', ..] => Some(ImageFormat::Bmp),
        _ => None,
    }
}

/// Decodes to RGB8 (grey and alpha images are converted; alpha is dropped).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage);
    }
    let format = match sniff_format(bytes) {
        Some(ImageFormat::Jpeg) => image::ImageFormat::Jpeg,
        Some(ImageFormat::Png) => image::ImageFormat::Png,
        Some(ImageFormat::Bmp) => image::ImageFormat::Bmp,
        None => return Err(Error::UnsupportedFormat),
    };
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::InvalidImage(
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        ));
    }
    // The dimensions come from the header alone, read without allocation limits: with them the decoder
    // refuses a huge header as "needs more memory", and the client would not learn it is over the pixel limit.
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    header.no_limits();
    let (width, height) = header.into_dimensions().map_err(invalid)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::ImageTooLarge {
            pixels,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::InvalidImage("the image has no pixels".into()));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The pixel guard above is the real limit; this only stops the decoder allocating absurd buffers.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(invalid)?;
    let image = DynamicImage::from_decoder(decoder).map_err(invalid)?;
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    };
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// The JPEG decoder fills a truncated image with grey rather than failing, so completeness is checked
/// here: an end-of-image marker (FFD9) must follow the last start-of-scan (FFDA). Entropy-coded data
/// stuffs every FF byte, so neither marker can appear inside it by accident.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|sos| bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

fn invalid(error: image::ImageError) -> Error {
    match error {
        image::ImageError::Limits(_) => {
            Error::InvalidImage("the image needs more memory than allowed".into())
        }
        image::ImageError::Unsupported(e) => {
            Error::InvalidImage(format!("unsupported image variant: {e}"))
        }
        other => Error::InvalidImage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(width: u32, height: u32) -> Vec<u8> {
        let image =
            image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png() {
        let image = decode_rgb(&png_bytes(3, 2), 100).unwrap();
        assert_eq!((image.width, image.height), (3, 2));
        assert_eq!(&image.pixels[3..6], &[1, 0, 7]);
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        assert!(matches!(
            decode_rgb(&png_bytes(10, 10), 99),
            Err(Error::ImageTooLarge { pixels: 100, .. })
        ));
    }

    #[test]
    fn a_huge_header_is_over_the_pixel_limit_not_out_of_memory() {
        // A valid PNG header claiming 2^31-1 x 1 pixels, with no image data behind it.
        let mut png = png_bytes(1, 1);
        png[16..20].copy_from_slice(&(i32::MAX as u32).to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_rgb(&png, 40_000_000),
            Err(Error::ImageTooLarge { pixels, .. }) if pixels == i32::MAX as u64
        ));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn truncated_jpeg_is_detected() {
        let image = image::RgbImage::from_fn(16, 16, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let mut jpeg = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(jpeg_is_complete(&jpeg));
        assert!(decode_rgb(&jpeg, 1000).is_ok());
        assert!(!jpeg_is_complete(&jpeg[..jpeg.len() - 10]));
        assert!(matches!(
            decode_rgb(&jpeg[..jpeg.len() - 10], 1000),
            Err(Error::InvalidImage(_))
        ));
    }

    #[test]
    fn rejects_non_images_and_truncation() {
        assert!(matches!(
            decode_rgb(b"hello world", 100),
            Err(Error::UnsupportedFormat)
        ));
        assert!(matches!(decode_rgb(b"", 100), Err(Error::EmptyImage)));
        let png = png_bytes(8, 8);
        assert!(matches!(
            decode_rgb(&png[..png.len() / 2], 100),
            Err(Error::InvalidImage(_))
        ));
    }
}

//! What an image will cost before any of it is decoded: the format from the magic bytes, and from the header
//! alone the dimensions and the few facts that size the decoder's buffers (JPEG: progressive or not, the
//! components and their sampling; PNG: bit depth, colour type, transparency chunk, interlacing; BMP: bits per
//! pixel). Parsed here, by hand and without allocating, because the decoders only tell after they have
//! allocated. Also the JPEG marker walk that finds where the image really ends (a truncated file is refused,
//! trailing bytes after EOI are ignored).
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

/// Most components a JPEG frame may declare (the standard allows 255; baseline decoders handle 4).
pub const MAX_JPEG_COMPONENTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details {
    Jpeg {
        /// Progressive frames keep every DCT coefficient of the image until the last scan.
        progressive: bool,
        /// (horizontal, vertical) sampling factor per component.
        sampling: [(u8, u8); MAX_JPEG_COMPONENTS],
        components: u8,
    },
    Png {
        bit_depth: u8,
        color_type: u8,
        /// A tRNS chunk makes the decoder expand to an alpha channel.
        transparency: bool,
        interlaced: bool,
    },
    Bmp {
        bits_per_pixel: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub details: Details,
}

impl Header {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Reads the header of a JPEG, PNG or BMP.
pub fn parse(bytes: &[u8]) -> Result<Header> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage);
    }
    let header = match sniff_format(bytes) {
        Some(ImageFormat::Jpeg) => jpeg(bytes)?,
        Some(ImageFormat::Png) => png(bytes)?,
        Some(ImageFormat::Bmp) => bmp(bytes)?,
        None => return Err(Error::UnsupportedFormat),
    };
    if header.width == 0 || header.height == 0 {
        return Err(invalid("the image has no pixels"));
    }
    Ok(header)
}

fn invalid(reason: &str) -> Error {
    Error::InvalidImage(reason.to_owned())
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the JPEG segments up to the first frame header (SOF).
fn jpeg(bytes: &[u8]) -> Result<Header> {
    let truncated = || invalid("truncated JPEG header");
    let mut at = 2;
    loop {
        let (marker, next) = next_marker(bytes, at).ok_or_else(truncated)?;
        at = next;
        match marker {
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return Err(invalid("JPEG without a frame header")),
            _ => {}
        }
        let length = usize::from(be16(bytes, at).ok_or_else(truncated)?);
        if length < 2 {
            return Err(invalid("JPEG segment with a bad length"));
        }
        let segment = bytes.get(at + 2..at + length).ok_or_else(truncated)?;
        if is_frame_marker(marker) {
            return jpeg_frame(marker, segment);
        }
        at += length;
    }
}

/// The EXIF block of a JPEG (from its first APP1 segment that starts with `Exif\0\0`, up to the first scan),
/// starting at its TIFF header.
pub fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 2;
    loop {
        let (marker, next) = next_marker(bytes, at)?;
        at = next;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let length = usize::from(be16(bytes, at)?);
        let segment = bytes.get(at + 2..at + length.max(2))?;
        if marker == 0xE1
            && let Some(exif) = segment.strip_prefix(b"Exif\0\0")
        {
            return Some(exif);
        }
        at += length.max(2);
    }
}

/// SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
fn is_frame_marker(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

fn jpeg_frame(marker: u8, segment: &[u8]) -> Result<Header> {
    let bad = || invalid("JPEG frame header too short");
    let height = u32::from(be16(segment, 1).ok_or_else(bad)?);
    let width = u32::from(be16(segment, 3).ok_or_else(bad)?);
    let components = *segment.get(5).ok_or_else(bad)?;
    if height == 0 {
        // The height would come later in a DNL segment, which the decoder does not support.
        return Err(invalid("JPEG with its height deferred to a DNL marker"));
    }
    if components == 0 || usize::from(components) > MAX_JPEG_COMPONENTS {
        return Err(invalid("JPEG with an unsupported number of components"));
    }
    let mut sampling = [(1, 1); MAX_JPEG_COMPONENTS];
    for (i, slot) in sampling
        .iter_mut()
        .enumerate()
        .take(usize::from(components))
    {
        let factors = *segment.get(6 + 3 * i + 1).ok_or_else(bad)?;
        let (h, v) = (factors >> 4, factors & 0x0F);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(invalid("JPEG with bad sampling factors"));
        }
        *slot = (h, v);
    }
    Ok(Header {
        format: ImageFormat::Jpeg,
        width,
        height,
        details: Details::Jpeg {
            // SOF2, SOF6, SOF10, SOF14 are the progressive processes.
            progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
            sampling,
            components,
        },
    })
}

/// The marker at `at` (after any fill bytes): its code and the offset just past it.
fn next_marker(bytes: &[u8], mut at: usize) -> Option<(u8, usize)> {
    if *bytes.get(at)? != 0xFF {
        return None;
    }
    while *bytes.get(at)? == 0xFF {
        at += 1;
    }
    Some((*bytes.get(at)?, at + 1))
}

/// Where the JPEG ends: the offset just past its end-of-image marker. Walks every segment and skips each
/// scan's entropy-coded data (where FF is always stuffed as FF00 or is a restart marker), so that neither
/// a truncated file (the decoder would fill it with grey) nor bytes appended after EOI (cameras append
/// thumbnails and maker data) are mistaken for the image.
pub fn jpeg_end(bytes: &[u8]) -> Result<usize> {
    let truncated = || invalid("truncated JPEG: it ends before its end-of-image marker");
    let mut at = 2;
    loop {
        let (marker, next) = next_marker(bytes, at).ok_or_else(truncated)?;
        at = next;
        match marker {
            0xD9 => return Ok(at),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let length = usize::from(be16(bytes, at).ok_or_else(truncated)?);
        if length < 2 {
            return Err(invalid("JPEG segment with a bad length"));
        }
        at += length;
        if at > bytes.len() {
            return Err(truncated());
        }
        if marker == 0xDA {
            at = skip_entropy_coded(bytes, at).ok_or_else(truncated)?;
        }
    }
}

/// From the start of a scan's data, the offset of the next marker that is not a restart marker.
fn skip_entropy_coded(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let ff = at + bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(ff + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at = ff + 1,
            _ => return Some(ff),
        }
    }
}

/// The IHDR, then the chunks up to the first IDAT, looking for tRNS (which must precede IDAT).
fn png(bytes: &[u8]) -> Result<Header> {
    let bad = || invalid("truncated PNG header");
    if be32(bytes, 8) != Some(13) || bytes.get(12..16) != Some(b"IHDR") {
        return Err(invalid("PNG without an IHDR chunk first"));
    }
    let width = be32(bytes, 16).ok_or_else(bad)?;
    let height = be32(bytes, 20).ok_or_else(bad)?;
    let bit_depth = *bytes.get(24).ok_or_else(bad)?;
    let color_type = *bytes.get(25).ok_or_else(bad)?;
    let interlaced = *bytes.get(28).ok_or_else(bad)? == 1;
    let valid = match color_type {
        0 => matches!(bit_depth, 1 | 2 | 4 | 8 | 16),
        3 => matches!(bit_depth, 1 | 2 | 4 | 8),
        2 | 4 | 6 => matches!(bit_depth, 8 | 16),
        _ => false,
    };
    if !valid {
        return Err(invalid("PNG with a bad bit depth or colour type"));
    }
    // PNG dimensions are at most 2^31 - 1.
    if width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(invalid("PNG dimensions over 2^31 - 1"));
    }
    let mut transparency = false;
    let mut at = 33;
    while let (Some(length), Some(kind)) = (be32(bytes, at), bytes.get(at + 4..at + 8)) {
        match kind {
            b"tRNS" => transparency = true,
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        at = match at.checked_add(12 + length as usize) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(Header {
        format: ImageFormat::Png,
        width,
        height,
        details: Details::Png {
            bit_depth,
            color_type,
            transparency,
            interlaced,
        },
    })
}

/// BITMAPINFOHEADER and later (40+ bytes) or the OS/2 BITMAPCOREHEADER (12 bytes).
fn bmp(bytes: &[u8]) -> Result<Header> {
    let bad = || invalid("truncated BMP header");
    let info_size = le32(bytes, 14).ok_or_else(bad)?;
    let (width, height, bits_per_pixel) = if info_size == 12 {
        (
            u32::from(le16(bytes, 18).ok_or_else(bad)?),
            u32::from(le16(bytes, 20).ok_or_else(bad)?),
            le16(bytes, 24).ok_or_else(bad)?,
        )
    } else {
        let width = le32(bytes, 18).ok_or_else(bad)? as i32;
        // A negative height means top-down rows.
        let height = le32(bytes, 22).ok_or_else(bad)? as i32;
        if width < 0 {
            return Err(invalid("BMP with a negative width"));
        }
        (
            width.unsigned_abs(),
            height.unsigned_abs(),
            le16(bytes, 28).ok_or_else(bad)?,
        )
    };
    Ok(Header {
        format: ImageFormat::Bmp,
        width,
        height,
        details: Details::Bmp { bits_per_pixel },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn encoded(format: image::ImageFormat, image: image::DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn rgb(width: u32, height: u32) -> image::DynamicImage {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([x as u8, y as u8, 7])
        }))
    }

    #[test]
    fn reads_jpeg_frames() {
        let jpeg = encoded(image::ImageFormat::Jpeg, rgb(33, 17));
        let header = parse(&jpeg).unwrap();
        assert_eq!((header.width, header.height), (33, 17));
        let Details::Jpeg {
            progressive,
            components,
            sampling,
        } = header.details
        else {
            panic!("{header:?}")
        };
        assert!(!progressive);
        assert_eq!(components, 3);
        // The image crate's encoder does not subsample chroma.
        assert_eq!(&sampling[..3], &[(1, 1), (1, 1), (1, 1)]);
        let cmyk =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cmyk.jpg")).unwrap();
        assert!(matches!(
            parse(&cmyk).unwrap().details,
            Details::Jpeg { components: 4, .. }
        ));
    }

    #[test]
    fn reads_png_and_bmp_headers() {
        let la = image::DynamicImage::ImageLumaA16(image::ImageBuffer::new(5, 300));
        let header = parse(&encoded(image::ImageFormat::Png, la)).unwrap();
        assert_eq!((header.width, header.height), (5, 300));
        assert_eq!(
            header.details,
            Details::Png {
                bit_depth: 16,
                color_type: 4,
                transparency: false,
                interlaced: false
            }
        );
        let bmp = parse(&encoded(image::ImageFormat::Bmp, rgb(7, 9))).unwrap();
        assert_eq!(
            (bmp.format, bmp.width, bmp.height),
            (ImageFormat::Bmp, 7, 9)
        );
        assert_eq!(bmp.details, Details::Bmp { bits_per_pixel: 24 });
    }

    #[test]
    fn the_jpeg_ends_at_its_eoi() {
        let jpeg = encoded(image::ImageFormat::Jpeg, rgb(64, 48));
        assert_eq!(jpeg_end(&jpeg).unwrap(), jpeg.len());
        // Trailing bytes, even ones that look like markers, are not part of the image.
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 2, 3, 0xFF, 0xD8]);
        assert_eq!(jpeg_end(&trailing).unwrap(), jpeg.len());
        for cut in [jpeg.len() - 1, jpeg.len() - 2, jpeg.len() / 2, 4] {
            assert!(jpeg_end(&jpeg[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(matches!(parse(b""), Err(Error::EmptyImage)));
        assert!(matches!(parse(b"hello"), Err(Error::UnsupportedFormat)));
        for bytes in [
            &[0xFF, 0xD8, 0xFF][..],
            &[0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x01],
            &[0xFF, 0xD8, 0xFF, 0xD9],
            b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR",
            b"BM",
        ] {
            assert!(
                matches!(parse(bytes), Err(Error::InvalidImage(_))),
                "{bytes:?}"
            );
            let _ = jpeg_end(bytes);
        }
    }
}

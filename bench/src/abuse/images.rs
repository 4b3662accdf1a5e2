//! Hostile images, crafted here so the suite needs no fixtures: small files whose headers promise a lot.
//!
//! - [`png_zeros`]: a valid PNG of any size, colour type and depth whose pixels are all zero. Every byte of
//!   the raw stream (filter byte 0 and the samples) is zero, so zlib compresses it about 1,000:1: the
//!   39,000,000 x 1 RGB image of issue 14 is ~114 KB.
//! - [`progressive_jpeg_bomb`]: a progressive JPEG (SOF2) of huge dimensions whose scans hold a few bytes.
//!   Every Huffman code used is the single bit `0` (DC difference 0, AC end-of-block), so the zero padding a
//!   decoder supplies past the scan's end decodes as valid blocks: the decoder must keep coefficient
//!   buffers for the whole image (2 bytes x 64 per block per component) and run every scan over them.
//! - [`truncated`]: the first part of a real JPEG, cut in its entropy-coded data.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

/// PNG colour types (PNG spec 11.2.2) used here.
#[derive(Debug, Clone, Copy)]
pub enum PngColor {
    Rgb = 2,
    Rgba = 6,
}

impl PngColor {
    fn channels(self) -> u64 {
        match self {
            PngColor::Rgb => 3,
            PngColor::Rgba => 4,
        }
    }
}

/// An all-zero `width` x `height` PNG with `depth` bits per sample (8 or 16).
pub fn png_zeros(width: u32, height: u32, color: PngColor, depth: u8) -> Vec<u8> {
    let row = 1 + u64::from(width) * color.channels() * u64::from(depth) / 8;
    let raw_len = row * u64::from(height);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![0u8; 1 << 20];
    let mut left = raw_len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        // Writing into a Vec cannot fail.
        z.write_all(&zeros[..n]).expect("zlib into memory");
        left -= n as u64;
    }
    let idat = z.finish().expect("zlib into memory");

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // depth, colour type, compression 0, filter method 0, no interlace
    ihdr.extend_from_slice(&[depth, color as u8, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A progressive YCbCr JPEG of `width` x `height`: a DC first scan (point transform 1) and a DC refinement
/// scan over the three components, then one AC scan per component, each carrying `scan_bytes` bytes of
/// entropy-coded data.
pub fn progressive_jpeg_bomb(width: u16, height: u16, scan_bytes: usize) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // DQT: table 0, 8-bit, all ones.
    segment(&mut j, 0xDB, &[&[0x00][..], &[1u8; 64]].concat());
    // SOF2: 8-bit precision, height, width, 3 components with 1x1 sampling and quantisation table 0.
    let mut sof = vec![8];
    sof.extend_from_slice(&height.to_be_bytes());
    sof.extend_from_slice(&width.to_be_bytes());
    sof.push(3);
    for id in 1..=3u8 {
        sof.extend_from_slice(&[id, 0x11, 0]);
    }
    segment(&mut j, 0xC2, &sof);
    // DHT: DC table 0 and AC table 0, each one code of length 1 (`0`) for symbol 0x00: a DC difference of
    // 0, an AC end-of-block.
    let one_code = |class_id: u8| {
        let mut t = vec![class_id, 1];
        t.extend_from_slice(&[0u8; 15]);
        t.push(0x00);
        t
    };
    segment(&mut j, 0xC4, &one_code(0x00));
    segment(&mut j, 0xC4, &one_code(0x10));
    let data = vec![0u8; scan_bytes];
    // DC first scan of all three components, successive approximation Ah=0 Al=1.
    scan(&mut j, &[1, 2, 3], (0, 0), 0x01, &data);
    // DC refinement (Ah=1 Al=0): one raw bit per block.
    scan(&mut j, &[1, 2, 3], (0, 0), 0x10, &data);
    // One AC scan per component over the whole band 1..63 (progressive AC scans hold one component).
    for id in 1..=3 {
        scan(&mut j, &[id], (1, 63), 0x00, &data);
    }
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// SOS over `components` (each with DC table 0 and AC table 0), spectral band `band`, `approx` = Ah<<4|Al,
/// followed by its entropy-coded `data` (zeros, so no 0xFF byte needs stuffing).
fn scan(out: &mut Vec<u8>, components: &[u8], band: (u8, u8), approx: u8, data: &[u8]) {
    let mut sos = vec![components.len() as u8];
    for &id in components {
        sos.extend_from_slice(&[id, 0x00]);
    }
    sos.extend_from_slice(&[band.0, band.1, approx]);
    segment(out, 0xDA, &sos);
    out.extend_from_slice(data);
}

/// The first `fraction` of `jpeg`, without its end: a client that stopped sending mid-image.
pub fn truncated(jpeg: &[u8], fraction: f64) -> Vec<u8> {
    let keep = ((jpeg.len() as f64) * fraction.clamp(0.0, 1.0)) as usize;
    jpeg[..keep.max(2).min(jpeg.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{GenericImageView, ImageReader};

    use super::*;

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .unwrap()
            .into_dimensions()
            .unwrap()
    }

    #[test]
    fn a_small_crafted_png_decodes_to_zeros() {
        let png = png_zeros(33, 7, PngColor::Rgba, 16);
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(img.dimensions(), (33, 7));
        assert!(matches!(img, image::DynamicImage::ImageRgba16(_)));
        assert!(img.to_rgba16().as_raw().iter().all(|&v| v == 0));
        let rgb = image::load_from_memory(&png_zeros(5, 4, PngColor::Rgb, 8)).unwrap();
        assert!(matches!(rgb, image::DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn the_issues_extreme_png_is_small_and_says_39_megapixels() {
        let png = png_zeros(39_000_000, 1, PngColor::Rgb, 8);
        assert!(png.len() < 200_000, "{} bytes", png.len());
        assert_eq!(dimensions(&png), (39_000_000, 1));
    }

    #[test]
    fn a_small_bomb_is_a_valid_progressive_jpeg() {
        let jpeg = progressive_jpeg_bomb(40, 24, 8);
        assert!(jpeg.windows(2).any(|w| w == [0xFF, 0xC2]), "SOF2");
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(img.dimensions(), (40, 24));
    }

    #[test]
    fn the_bomb_header_says_what_it_costs() {
        let jpeg = progressive_jpeg_bomb(65_000, 600, 64);
        assert!(jpeg.len() < 1_000);
        assert_eq!(dimensions(&jpeg), (65_000, 600));
    }

    #[test]
    fn truncation_keeps_the_start() {
        let jpeg = [0xFF, 0xD8, 1, 2, 3, 4, 5, 6, 0xFF, 0xD9];
        assert_eq!(truncated(&jpeg, 0.5), vec![0xFF, 0xD8, 1, 2, 3]);
        assert_eq!(truncated(&jpeg, 0.0), vec![0xFF, 0xD8]);
    }
}

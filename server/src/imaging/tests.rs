//! End-to-end pre-processing tests: real encoded files (made here, or under `tests/data`) through
//! [`prepare_checked`], checking the pixels that reach the tensor, not only that decoding succeeded.
//! A target the size of the source makes the resize a copy, so the tensor is the decoded image.
use std::io::Cursor;

use super::*;
use crate::{
    error::Error,
    repository::{InputDtype, Layout, ResizeMode},
};

fn spec(width: u32, height: u32) -> InputSpec {
    InputSpec {
        name: "x".into(),
        layout: Layout::Nhwc,
        dtype: InputDtype::Uint8,
        height,
        width,
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: ResizeMode::Stretch,
    }
}

/// The decoded RGB pixels of `bytes` (which must be `width` x `height` once upright).
fn pixels(bytes: &[u8], width: u32, height: u32) -> Vec<u8> {
    let prepared = prepare_checked(bytes, &spec(width, height), &ImageLimits::default()).unwrap();
    assert_eq!((prepared.width, prepared.height), (width, height));
    match prepared.data {
        InputData::U8(v) => v,
        InputData::F32(_) => unreachable!(),
    }
}

fn encoded(format: image::ImageFormat, image: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// A 32 x 16 image, red on the left half and green on the right.
fn red_green() -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 16, |x, _| {
        if x < 16 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 255, 0])
        }
    }))
}

fn close(actual: &[u8], expected: [u8; 3], tolerance: u8) -> bool {
    actual
        .iter()
        .zip(expected)
        .all(|(&a, e)| a.abs_diff(e) <= tolerance)
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

/// A PNG with its IHDR dimensions replaced (and its CRC fixed): a header that lies about its size.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encoded(image::ImageFormat::Png, red_green());
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A big-endian TIFF block with one IFD entry: Orientation (0x0112) = `orientation`.
fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    tiff
}

#[test]
fn png_pixels_reach_the_tensor() {
    let image = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let png = encoded(
        image::ImageFormat::Png,
        image::DynamicImage::ImageRgb8(image),
    );
    assert_eq!(&pixels(&png, 3, 2)[3..6], &[1, 0, 7]);
}

#[test]
fn limits_are_checked_from_the_header_before_decoding() {
    let tight = ImageLimits {
        max_pixels: 511,
        ..ImageLimits::default()
    };
    let png = encoded(image::ImageFormat::Png, red_green());
    assert!(matches!(
        prepare_checked(&png, &spec(8, 8), &tight),
        Err(Error::ImageTooLarge { pixels: 512, .. })
    ));
    // Headers that claim far more than the file holds: refused by the limits, never allocated.
    let defaults = ImageLimits::default();
    assert!(matches!(
        prepare_checked(&png_claiming(i32::MAX as u32, 1), &spec(8, 8), &defaults),
        Err(Error::ImageTooLarge { .. })
    ));
    // The 39,000,000 x 1 PNG that aborted the server, and its transpose: under the pixel limit, over the side.
    for (w, h) in [(39_000_000, 1), (1, 39_000_000)] {
        assert!(matches!(
            prepare_checked(&png_claiming(w, h), &spec(224, 224), &defaults),
            Err(Error::ImageShape(_))
        ));
    }
    // Within the side limit but a 1:1000 strip.
    assert!(matches!(
        prepare_checked(&png_claiming(20_000, 20), &spec(224, 224), &defaults),
        Err(Error::ImageShape(m)) if m.contains("aspect")
    ));
    let small_memory = ImageLimits {
        max_memory_bytes: 2 << 20,
        ..ImageLimits::default()
    };
    assert!(matches!(
        prepare_checked(&png_claiming(2000, 2000), &spec(224, 224), &small_memory),
        Err(Error::ImageMemory { .. })
    ));
}

#[test]
fn truncated_jpeg_is_refused_and_trailing_bytes_are_ignored() {
    let jpeg = encoded(image::ImageFormat::Jpeg, red_green());
    let expected = pixels(&jpeg, 32, 16);
    assert!(close(&expected[..3], [255, 0, 0], 8));
    for cut in [10, jpeg.len() / 2, jpeg.len() - 2] {
        assert!(
            matches!(
                prepare_checked(&jpeg[..cut], &spec(32, 16), &ImageLimits::default()),
                Err(Error::InvalidImage(_))
            ),
            "cut at {cut}"
        );
    }
    // Cameras append thumbnails and maker data after EOI.
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(&jpeg);
    trailing.extend_from_slice(b"\xFF\xDA trailing garbage \xFF");
    assert_eq!(pixels(&trailing, 32, 16), expected);
}

#[test]
fn jpeg_exif_orientation_is_applied() {
    let jpeg = encoded(image::ImageFormat::Jpeg, red_green());
    // An APP1 Exif segment right after SOI, with Orientation = 6 (turn 90 degrees clockwise to view).
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(exif_tiff(6));
    let mut rotated = jpeg[..2].to_vec();
    rotated.extend_from_slice(&[0xFF, 0xE1]);
    rotated.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    rotated.extend(payload);
    rotated.extend_from_slice(&jpeg[2..]);
    // Upright, the image is 16 x 32: the stored left half (red) is now on top.
    let upright = pixels(&rotated, 16, 32);
    assert!(close(&upright[..3], [255, 0, 0], 8), "{:?}", &upright[..3]);
    let bottom = upright.len() - 3;
    assert!(
        close(&upright[bottom..], [0, 255, 0], 8),
        "{:?}",
        &upright[bottom..]
    );
}

#[test]
fn png_exif_orientation_is_applied() {
    let png = encoded(image::ImageFormat::Png, red_green());
    // An eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk), Orientation = 8.
    let data = exif_tiff(8);
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    let rotated = [&png[..33], &chunk, &png[33..]].concat();
    // Orientation 8 turns 90 degrees counter-clockwise: the stored right half (green) is on top.
    let upright = pixels(&rotated, 16, 32);
    assert_eq!(&upright[..3], &[0, 255, 0]);
    assert_eq!(&upright[upright.len() - 3..], &[255, 0, 0]);
}

#[test]
fn cmyk_and_ycck_jpegs_decode_to_the_colours_pillow_gives() {
    // Made by Pillow from CMYK (10, 20, 30, 40): Pillow reads it back as RGB (207, 198, 190).
    let cmyk = include_bytes!("../../tests/data/cmyk.jpg");
    let rgb = pixels(cmyk, 64, 48);
    assert!(close(&rgb[..3], [207, 198, 190], 6), "{:?}", &rgb[..3]);
    // YCCK (Adobe transform 2), made with libjpeg through imagecodecs: CMYK (10, 20, 30, 40) on the left,
    // (200, 0, 0, 0) on the right; Pillow reads (207, 198, 191) and (55, 255, 253).
    let ycck = include_bytes!("../../tests/data/ycck.jpg");
    let rgb = pixels(ycck, 16, 16);
    assert!(
        close(&rgb[3 * 3..3 * 4], [207, 198, 191], 6),
        "{:?}",
        &rgb[9..12]
    );
    assert!(
        close(&rgb[3 * 12..3 * 13], [55, 255, 253], 6),
        "{:?}",
        &rgb[36..39]
    );
}

#[test]
fn sixteen_bit_grey_alpha_and_palette_pngs_decode_to_their_colours() {
    // 16-bit RGB keeps the high byte of each sample.
    let rgb16 = image::ImageBuffer::from_pixel(2, 2, image::Rgb([0x1234u16, 0xFF00, 0x00FF]));
    let png = encoded(
        image::ImageFormat::Png,
        image::DynamicImage::ImageRgb16(rgb16),
    );
    assert_eq!(&pixels(&png, 2, 2)[..3], &[0x12, 0xFF, 0x00]);
    // 16-bit RGBA: alpha dropped.
    let rgba16 = image::ImageBuffer::from_pixel(2, 2, image::Rgba([0xAB00u16, 0x0100, 0xFFFF, 0]));
    let png = encoded(
        image::ImageFormat::Png,
        image::DynamicImage::ImageRgba16(rgba16),
    );
    assert_eq!(&pixels(&png, 2, 2)[..3], &[0xAB, 0x01, 0xFF]);
    // Grey + alpha, 8 and 16 bits: the grey replicated, alpha dropped.
    let la8 = image::ImageBuffer::from_pixel(2, 2, image::LumaA([90u8, 10]));
    let png = encoded(
        image::ImageFormat::Png,
        image::DynamicImage::ImageLumaA8(la8),
    );
    assert_eq!(&pixels(&png, 2, 2)[..3], &[90, 90, 90]);
    let la16 = image::ImageBuffer::from_pixel(2, 2, image::LumaA([0x7F80u16, 0]));
    let png = encoded(
        image::ImageFormat::Png,
        image::DynamicImage::ImageLumaA16(la16),
    );
    assert_eq!(&pixels(&png, 2, 2)[..3], &[0x7F, 0x7F, 0x7F]);
    // Palette with a tRNS chunk: the palette colours, transparency ignored as Pillow's convert("RGB") does.
    let mut png = Vec::new();
    {
        let mut encoder = ::png::Encoder::new(&mut png, 2, 1);
        encoder.set_color(::png::ColorType::Indexed);
        encoder.set_depth(::png::BitDepth::Eight);
        encoder.set_palette(vec![10, 20, 30, 200, 100, 50]);
        encoder.set_trns(vec![0, 255]);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[1, 0]).unwrap();
    }
    let header = header::parse(&png).unwrap();
    assert!(matches!(
        header.details,
        header::Details::Png {
            transparency: true,
            color_type: 3,
            ..
        }
    ));
    assert_eq!(pixels(&png, 2, 1), vec![200, 100, 50, 10, 20, 30]);
}

#[test]
fn bmp_decodes() {
    let bmp = encoded(image::ImageFormat::Bmp, red_green());
    let rgb = pixels(&bmp, 32, 16);
    assert_eq!(
        (&rgb[..3], &rgb[rgb.len() - 3..]),
        (&[255, 0, 0][..], &[0, 255, 0][..])
    );
}

#[test]
fn non_images_are_refused() {
    let limits = ImageLimits::default();
    assert!(matches!(
        prepare_checked(b"hello world", &spec(8, 8), &limits),
        Err(Error::UnsupportedFormat)
    ));
    assert!(matches!(
        prepare_checked(b"", &spec(8, 8), &limits),
        Err(Error::EmptyImage)
    ));
    let png = encoded(image::ImageFormat::Png, red_green());
    assert!(matches!(
        prepare_checked(&png[..png.len() / 2], &spec(8, 8), &limits),
        Err(Error::InvalidImage(_))
    ));
}

//! The memory an image will take to decode and resize, estimated from its header before anything is
//! allocated. Deliberately an upper bound: every buffer alive at some point is added, as if all were alive at
//! once, so the decode budget can only be over-counted, never exceeded.
//!
//! What is counted, per format (from reading the decoders this server uses):
//! - JPEG (zune-jpeg through `image`): the copy of the file the decoder keeps; the output buffer; per
//!   component, MCU-row buffers, or for a progressive frame every DCT coefficient (2 bytes each, at the
//!   component's own sampled size) plus the component planes they are transformed into.
//! - PNG (`png`): the output after expansion (palette and low bit depths to 8 bits, tRNS to an alpha
//!   channel, 16-bit samples kept), and the current and previous raw rows the unfiltering needs.
//! - BMP: an RGBA output buffer and its rows.
//! - Then the conversion to packed RGB8 unless the decoder produced it, and the resize: `fast_image_resize`
//!   runs the vertical pass first for u8 images into a buffer as wide as the source and as tall as the
//!   target, and precomputes, per output pixel and axis, a window of coefficients whose width grows with
//!   the downscaling factor (a 39,000,000 x 1 image resized to 224 x 224 would need 26 GB for that buffer
//!   and 0.8 GB of coefficients, which is why the shape is bounded too).
use super::header::{Details, Header};
use crate::repository::ResizeMode;

/// Share of the shorter side kept by `center_crop` (the classic ImageNet 224/256 crop).
pub const CENTER_CROP_FRACTION: f64 = 0.875;
/// Half-width of the bilinear kernel, in source pixels at scale 1.
const BILINEAR_SUPPORT: f64 = 1.0;
/// Bytes per resize coefficient: the f64 weight and its i16 fixed-point copy, rounded up.
const COEFFICIENT_BYTES: u64 = 12;
/// Decoder state that does not scale with the image (Huffman and quantisation tables, zlib window, ...),
/// and a margin: the measured peaks come within 2% of the estimate for grey and wide RGB PNGs
/// (`tests/image_memory.rs`).
const FIXED_OVERHEAD: u64 = 4 << 20;

/// Estimated peak bytes to decode `header` (an encoded file of `input_len` bytes) and resize it to
/// `width` x `height` with `mode`. Saturates instead of overflowing.
pub fn estimate(
    header: &Header,
    input_len: usize,
    width: u32,
    height: u32,
    mode: ResizeMode,
) -> u64 {
    let decode = decode_bytes(header, input_len as u64);
    // The EXIF orientation, read only when decoding, may swap the target's axes: count the worse one.
    let resize =
        resize_bytes(header, width, height, mode).max(resize_bytes(header, height, width, mode));
    FIXED_OVERHEAD.saturating_add(decode).saturating_add(resize)
}

fn decode_bytes(header: &Header, input_len: u64) -> u64 {
    let (w, h) = (u64::from(header.width), u64::from(header.height));
    let pixels = w.saturating_mul(h);
    let rgb = pixels.saturating_mul(3);
    match header.details {
        Details::Jpeg {
            progressive,
            sampling,
            components,
        } => {
            let sampling = &sampling[..usize::from(components)];
            let h_max = u64::from(sampling.iter().map(|s| s.0).max().unwrap_or(1));
            let v_max = u64::from(sampling.iter().map(|s| s.1).max().unwrap_or(1));
            let mut working = 0u64;
            for &(hs, vs) in sampling {
                let comp_w = pad8(w.saturating_mul(u64::from(hs)).div_ceil(h_max));
                let comp_h = pad8(h.saturating_mul(u64::from(vs)).div_ceil(v_max));
                let per_component = if progressive {
                    // i16 coefficients plus the u8 plane they become.
                    comp_w.saturating_mul(comp_h).saturating_mul(3)
                } else {
                    // A few MCU rows (at most 4 x 8 lines each) of the component.
                    comp_w.saturating_mul(64)
                };
                working = working.saturating_add(per_component);
            }
            let output = pixels.saturating_mul(u64::from(components.min(3)));
            let conversion = if components == 1 { rgb } else { 0 };
            sum(&[input_len, working, output, conversion])
        }
        Details::Png {
            bit_depth,
            color_type,
            transparency,
            interlaced,
        } => {
            let raw_channels: u64 = match color_type {
                0 | 3 => 1,
                2 => 3,
                4 => 2,
                _ => 4,
            };
            let expanded_channels: u64 = match color_type {
                0 => 1 + u64::from(transparency),
                2 | 3 => 3 + u64::from(transparency),
                4 => 2,
                _ => 4,
            };
            let sample_bytes = if bit_depth == 16 { 2 } else { 1 };
            let output = pixels
                .saturating_mul(expanded_channels)
                .saturating_mul(sample_bytes);
            let stride = w
                .saturating_mul(raw_channels)
                .saturating_mul(u64::from(bit_depth))
                .div_ceil(8)
                .saturating_add(1);
            // Current and previous rows, the decompressed-but-unfiltered buffer, and for Adam7 a pass row.
            let rows = stride.saturating_mul(if interlaced { 5 } else { 4 });
            let conversion = if expanded_channels == 3 && sample_bytes == 1 {
                0
            } else {
                rgb
            };
            sum(&[output, rows, conversion])
        }
        Details::Bmp { .. } => {
            let output = pixels.saturating_mul(4);
            let rows = w.saturating_mul(8);
            sum(&[input_len, output, rows, rgb])
        }
    }
}

fn resize_bytes(header: &Header, width: u32, height: u32, mode: ResizeMode) -> u64 {
    let (src_w, src_h) = (f64::from(header.width), f64::from(header.height));
    let (crop_w, crop_h) = match mode {
        ResizeMode::Stretch => (src_w, src_h),
        ResizeMode::CenterCrop => {
            let side = src_w.min(src_h) * CENTER_CROP_FRACTION;
            (side, side)
        }
    };
    let coefficients = |crop: f64, out: u32| -> u64 {
        let scale = (crop / f64::from(out.max(1))).max(1.0);
        let window = (BILINEAR_SUPPORT * scale).ceil() as u64 * 2 + 1;
        window
            .saturating_mul(u64::from(out))
            .saturating_mul(COEFFICIENT_BYTES)
            .saturating_add(u64::from(out) * 16)
    };
    // The vertical pass writes every source column the horizontal pass will read, at the target height.
    let temp = u64::from(header.width)
        .saturating_mul(u64::from(height))
        .saturating_mul(3);
    let output = u64::from(width) * u64::from(height) * 3;
    sum(&[
        coefficients(crop_w, width),
        coefficients(crop_h, height),
        temp,
        output,
    ])
}

fn pad8(n: u64) -> u64 {
    n.div_ceil(8).saturating_mul(8)
}

fn sum(parts: &[u64]) -> u64 {
    parts.iter().fold(0u64, |acc, &p| acc.saturating_add(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::header::ImageFormat;

    fn png(width: u32, height: u32, bit_depth: u8, color_type: u8) -> Header {
        Header {
            format: ImageFormat::Png,
            width,
            height,
            details: Details::Png {
                bit_depth,
                color_type,
                transparency: false,
                interlaced: false,
            },
        }
    }

    fn jpeg(width: u32, height: u32, progressive: bool) -> Header {
        let mut sampling = [(1, 1); 4];
        sampling[0] = (2, 2);
        Header {
            format: ImageFormat::Jpeg,
            width,
            height,
            details: Details::Jpeg {
                progressive,
                sampling,
                components: 3,
            },
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_photo_costs_a_few_times_its_pixels() {
        // A 12 MP phone photo: about 36 MB of RGB, plus MCU rows, plus the resize.
        let cost = estimate(
            &jpeg(4000, 3000, false),
            3 << 20,
            224,
            224,
            ResizeMode::Stretch,
        );
        assert!((36 * MIB..60 * MIB).contains(&cost), "{}", cost / MIB);
    }

    #[test]
    fn progressive_jpeg_counts_its_coefficients() {
        let baseline = estimate(&jpeg(4000, 3000, false), 0, 224, 224, ResizeMode::Stretch);
        let progressive = estimate(&jpeg(4000, 3000, true), 0, 224, 224, ResizeMode::Stretch);
        // 4:2:0 progressive: 1.5 samples per pixel, 3 bytes each (coefficient + plane).
        let extra = progressive - baseline;
        assert!((50 * MIB..60 * MIB).contains(&extra), "{}", extra / MIB);
    }

    #[test]
    fn sixteen_bit_alpha_png_counts_eight_bytes_a_pixel() {
        let rgba16 = estimate(&png(1000, 1000, 16, 6), 0, 224, 224, ResizeMode::Stretch);
        let rgb8 = estimate(&png(1000, 1000, 8, 2), 0, 224, 224, ResizeMode::Stretch);
        // 8 bytes of output plus a 3-byte conversion, against 3 bytes and no conversion.
        let per_pixel = (rgba16 - rgb8) as f64 / 1e6;
        assert!((7.9..8.2).contains(&per_pixel), "{per_pixel}");
    }

    #[test]
    fn extreme_aspect_ratios_cost_what_the_resizer_would_allocate() {
        // The 39,000,000 x 1 PNG that aborted the server: a 26 GB vertical-pass buffer.
        let wide = estimate(
            &png(39_000_000, 1, 8, 2),
            113_000,
            224,
            224,
            ResizeMode::Stretch,
        );
        assert!(wide > 26_000_000_000, "{wide}");
        // 1 x 39,000,000: about 0.9 GB of vertical-pass coefficients (what raised the server's RSS by 0.9 GB).
        let tall = estimate(
            &png(1, 39_000_000, 8, 2),
            150_000,
            224,
            224,
            ResizeMode::Stretch,
        );
        assert!(tall > 800 * MIB, "{}", tall / MIB);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge = png(i32::MAX as u32, i32::MAX as u32, 16, 6);
        assert_eq!(
            estimate(&huge, usize::MAX, 513, 513, ResizeMode::Stretch),
            u64::MAX
        );
    }
}

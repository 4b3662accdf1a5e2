//! Bilinear resize with `fast_image_resize`. Its convolution filter widens the kernel when downscaling, as
//! PIL's `Image.resize(BILINEAR)` does, which is what the reference outputs were computed with.
use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    images::{Image, ImageRef},
};

use super::{RgbImage, cost::CENTER_CROP_FRACTION};
use crate::{
    error::{Error, Result},
    repository::ResizeMode,
};

/// Resizes `image` to `width` x `height` per `mode`: the whole image (stretch) or its central square.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> Result<RgbImage> {
    let src = ImageRef::new(image.width, image.height, &image.pixels, PixelType::U8x3)
        .map_err(Error::internal)?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    if mode == ResizeMode::CenterCrop {
        let side = f64::from(image.width.min(image.height)) * CENTER_CROP_FRACTION;
        let left = (f64::from(image.width) - side) / 2.0;
        let top = (f64::from(image.height) - side) / 2.0;
        options = options.crop(left, top, side, side);
    }
    // A Resizer is cheap to build; keeping one per thread would save little next to the resize itself.
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(Error::internal)?;
    Ok(RgbImage {
        width,
        height,
        pixels: dst.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(width: u32, height: u32, rgb: [u8; 3]) -> RgbImage {
        RgbImage {
            width,
            height,
            pixels: rgb.repeat((width * height) as usize),
        }
    }

    #[test]
    fn output_has_the_requested_size() {
        let out = resize_rgb(&uniform(640, 480, [1, 2, 3]), 224, 224, ResizeMode::Stretch).unwrap();
        assert_eq!(
            (out.width, out.height, out.pixels.len()),
            (224, 224, 224 * 224 * 3)
        );
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let out = resize_rgb(
            &uniform(100, 37, [10, 200, 30]),
            13,
            57,
            ResizeMode::CenterCrop,
        )
        .unwrap();
        assert!(out.pixels.chunks(3).all(|p| p == [10, 200, 30]));
    }

    #[test]
    fn downscale_averages_like_a_box_for_factor_two() {
        // 2x2 -> 1x1 with a widened triangle kernel weighs the four pixels equally.
        let src = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![0, 0, 0, 100, 100, 100, 100, 100, 100, 200, 200, 200],
        };
        let out = resize_rgb(&src, 1, 1, ResizeMode::Stretch).unwrap();
        assert_eq!(out.pixels, vec![100, 100, 100]);
    }

    #[test]
    fn center_crop_ignores_the_borders() {
        // A wide image with red sides and a green centre square: the crop sees only green.
        let (w, h) = (300u32, 100u32);
        let mut pixels = Vec::new();
        for _y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(if (100..200).contains(&x) {
                    &[0, 255, 0]
                } else {
                    &[255, 0, 0]
                });
            }
        }
        let out = resize_rgb(
            &RgbImage {
                width: w,
                height: h,
                pixels,
            },
            8,
            8,
            ResizeMode::CenterCrop,
        )
        .unwrap();
        assert!(out.pixels.chunks(3).all(|p| p == [0, 255, 0]));
    }
}

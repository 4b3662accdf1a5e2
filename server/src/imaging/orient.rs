//! EXIF orientation: a phone stores a portrait photo as landscape pixels plus a tag saying how to turn them.
//! The turn is applied after the resize, to the small network-sized image (a 90-degree turn of a 12 MP
//! photo would copy 36 MB; of a 224 x 224 one, 150 KB): resizing to the target with its axes swapped, then
//! turning, gives the same pixels as turning first, because the bilinear resize is separable and symmetric.
use image::{DynamicImage, metadata::Orientation};

use super::RgbImage;
use crate::error::{Error, Result};

/// Whether the orientation turns the image by 90 or 270 degrees (its width becomes its height).
pub fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The (width, height) to resize to, so that after [`apply`] the image is `width` x `height`.
pub fn resize_target(orientation: Orientation, width: u32, height: u32) -> (u32, u32) {
    if swaps_axes(orientation) {
        (height, width)
    } else {
        (width, height)
    }
}

/// Turns `image` upright.
pub fn apply(image: RgbImage, orientation: Orientation) -> Result<RgbImage> {
    if orientation == Orientation::NoTransforms {
        return Ok(image);
    }
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels)
        .ok_or_else(|| Error::internal("pixel buffer does not match its size"))?;
    let mut turned = DynamicImage::ImageRgb8(buffer);
    turned.apply_orientation(orientation);
    let turned = turned.into_rgb8();
    Ok(RgbImage {
        width: turned.width(),
        height: turned.height(),
        pixels: turned.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 x 1 image: red then green.
    fn red_green() -> RgbImage {
        RgbImage {
            width: 2,
            height: 1,
            pixels: vec![255, 0, 0, 0, 255, 0],
        }
    }

    #[test]
    fn rotate_90_puts_the_left_pixel_on_top() {
        // EXIF 6: the stored image must be turned 90 degrees clockwise to be upright.
        let upright = apply(red_green(), Orientation::from_exif(6).unwrap()).unwrap();
        assert_eq!((upright.width, upright.height), (1, 2));
        assert_eq!(upright.pixels, vec![255, 0, 0, 0, 255, 0]);
        let upright = apply(red_green(), Orientation::from_exif(8).unwrap()).unwrap();
        assert_eq!(upright.pixels, vec![0, 255, 0, 255, 0, 0]);
    }

    #[test]
    fn mirror_and_identity() {
        let mirrored = apply(red_green(), Orientation::from_exif(2).unwrap()).unwrap();
        assert_eq!(mirrored.pixels, vec![0, 255, 0, 255, 0, 0]);
        assert_eq!(
            apply(red_green(), Orientation::NoTransforms)
                .unwrap()
                .pixels,
            red_green().pixels
        );
        assert_eq!(resize_target(Orientation::Rotate90, 300, 200), (200, 300));
        assert_eq!(resize_target(Orientation::Rotate180, 300, 200), (300, 200));
    }
}

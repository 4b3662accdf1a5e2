//! Draws detections on the image: one outlined box per detection and a filled label tag above it, coloured by
//! class so that neighbouring boxes of different classes stay distinguishable.

use image::{Rgb, RgbImage};

use crate::font;
use crate::types::Detection;

/// Distinct, saturated colours; class `i` takes `PALETTE[i % len]`.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [0, 128, 128],
];

/// Draws every detection on `image` in place. Boxes are given in pixels of this image (the server's `box`).
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    // Thicker lines and a bigger font on big photos, so the overlay stays readable when viewed scaled down.
    let side = image.width().max(image.height());
    let thickness = (side / 300).max(2);
    let scale = (side / 400).max(1);
    for det in detections {
        let colour = Rgb(PALETTE[det.class_index as usize % PALETTE.len()]);
        let x1 = clamp(det.bbox.x1, image.width());
        let y1 = clamp(det.bbox.y1, image.height());
        let x2 = clamp(det.bbox.x2, image.width());
        let y2 = clamp(det.bbox.y2, image.height());
        draw_rect(image, x1, y1, x2, y2, thickness, colour);
        let text = format!("{} {:.2}", det.label, det.score);
        // The tag sits above the box, or inside its top when the box touches the image's top edge.
        let tag_h = (font::GLYPH_HEIGHT + 2) * scale;
        let tag_y = if y1 >= tag_h { y1 - tag_h } else { y1 };
        draw_label(image, x1, tag_y, &text, scale, colour);
    }
}

fn clamp(v: f32, limit: u32) -> u32 {
    if v.is_nan() || limit == 0 {
        return 0;
    }
    (v.round().max(0.0) as u32).min(limit - 1)
}

fn fill(image: &mut RgbImage, x1: u32, y1: u32, x2: u32, y2: u32, colour: Rgb<u8>) {
    let x2 = x2.min(image.width());
    let y2 = y2.min(image.height());
    for y in y1..y2 {
        for x in x1..x2 {
            image.put_pixel(x, y, colour);
        }
    }
}

/// An outline `thickness` pixels wide, drawn inside the box so that it never leaves the image.
fn draw_rect(
    image: &mut RgbImage,
    x1: u32,
    y1: u32,
    x2: u32,
    y2: u32,
    thickness: u32,
    colour: Rgb<u8>,
) {
    let (x2, y2) = (x2 + 1, y2 + 1);
    fill(image, x1, y1, x2, (y1 + thickness).min(y2), colour);
    fill(
        image,
        x1,
        y2.saturating_sub(thickness).max(y1),
        x2,
        y2,
        colour,
    );
    fill(image, x1, y1, (x1 + thickness).min(x2), y2, colour);
    fill(
        image,
        x2.saturating_sub(thickness).max(x1),
        y1,
        x2,
        y2,
        colour,
    );
}

/// A filled tag in the class colour with the text in black or white, whichever contrasts more.
fn draw_label(image: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, colour: Rgb<u8>) {
    let w = (font::text_width(text) + 2) * scale;
    let h = (font::GLYPH_HEIGHT + 2) * scale;
    fill(image, x, y, x + w, y + h, colour);
    let [r, g, b] = colour.0;
    let luma = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
    let ink = if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    let mut pen_x = x + scale;
    for c in text.chars() {
        for gx in 0..font::GLYPH_WIDTH {
            for gy in 0..font::GLYPH_HEIGHT {
                if font::pixel(c, gx, gy) {
                    let px = pen_x + gx * scale;
                    let py = y + scale + gy * scale;
                    fill(image, px, py, px + scale, py + scale, ink);
                }
            }
        }
        pen_x += (font::GLYPH_WIDTH + 1) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BoxCorners;

    fn detection(x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class_index: 0,
            label: "cat".into(),
            score: 0.9,
            bbox: BoxCorners { x1, y1, x2, y2 },
            box_normalized: BoxCorners::default(),
        }
    }

    #[test]
    fn draws_the_outline_and_leaves_the_inside() {
        let mut img = RgbImage::new(100, 100);
        draw_detections(&mut img, &[detection(20.0, 40.0, 80.0, 90.0)]);
        let red = Rgb(PALETTE[0]);
        assert_eq!(img.get_pixel(20, 60), &red);
        assert_eq!(img.get_pixel(80, 60), &red);
        assert_eq!(img.get_pixel(50, 90), &red);
        assert_eq!(img.get_pixel(50, 60), &Rgb([0, 0, 0]));
        // The label tag sits above the box.
        assert_eq!(img.get_pixel(20, 39), &red);
    }

    #[test]
    fn survives_boxes_outside_the_image() {
        let mut img = RgbImage::new(10, 10);
        draw_detections(&mut img, &[detection(-50.0, f32::NAN, 500.0, 500.0)]);
    }
}

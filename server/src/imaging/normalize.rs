//! Normalisation and layout: an RGB8 image at the network size → one batch row of the input tensor, in the
//! model's layout (NHWC/NCHW) and dtype (raw uint8, or float32 `(pixel - mean) / std` per channel).
use super::RgbImage;
use crate::repository::{InputDtype, InputSpec, Layout};

/// One image's worth of input tensor data (H*W*3 elements).
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl InputData {
    pub fn len(&self) -> usize {
        match self {
            InputData::U8(v) => v.len(),
            InputData::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is one batch row of `spec`'s tensor: its dtype, and height x width x 3 values.
    pub fn fits(&self, spec: &InputSpec) -> bool {
        let dtype = match self {
            InputData::U8(_) => InputDtype::Uint8,
            InputData::F32(_) => InputDtype::Float32,
        };
        dtype == spec.dtype && self.len() == spec.elements()
    }
}

/// Converts a resized image (already at `spec.width` x `spec.height`) into tensor data. The uint8 NHWC case,
/// the common one for quantised models, reuses the pixel buffer without copying.
pub fn to_tensor(image: RgbImage, spec: &InputSpec) -> InputData {
    let plane = (image.width * image.height) as usize;
    match (spec.dtype, spec.layout) {
        (InputDtype::Uint8, Layout::Nhwc) => InputData::U8(image.pixels),
        (InputDtype::Uint8, Layout::Nchw) => {
            let mut out = vec![0u8; plane * 3];
            for (i, px) in image.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = px[c];
                }
            }
            InputData::U8(out)
        }
        (InputDtype::Float32, layout) => {
            // Multiply by the reciprocal: one division per channel instead of per element.
            let scale = spec.std.map(|s| 1.0 / s);
            let mut out = vec![0f32; plane * 3];
            for (i, px) in image.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    let v = (f32::from(px[c]) - spec.mean[c]) * scale[c];
                    match layout {
                        Layout::Nhwc => out[i * 3 + c] = v,
                        Layout::Nchw => out[c * plane + i] = v,
                    }
                }
            }
            InputData::F32(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::ResizeMode;

    fn spec(dtype: InputDtype, layout: Layout) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout,
            dtype,
            height: 1,
            width: 2,
            mean: [127.5; 3],
            std: [127.5; 3],
            resize: ResizeMode::Stretch,
        }
    }

    fn two_pixels() -> RgbImage {
        RgbImage {
            width: 2,
            height: 1,
            pixels: vec![0, 255, 51, 255, 0, 102],
        }
    }

    #[test]
    fn uint8_nhwc_is_the_pixels() {
        assert_eq!(
            to_tensor(two_pixels(), &spec(InputDtype::Uint8, Layout::Nhwc)),
            InputData::U8(two_pixels().pixels)
        );
    }

    #[test]
    fn uint8_nchw_is_planar() {
        let out = to_tensor(two_pixels(), &spec(InputDtype::Uint8, Layout::Nchw));
        assert_eq!(out, InputData::U8(vec![0, 255, 255, 0, 51, 102]));
    }

    #[test]
    fn float_is_mean_std_normalised() {
        let InputData::F32(out) = to_tensor(two_pixels(), &spec(InputDtype::Float32, Layout::Nchw))
        else {
            panic!("expected f32")
        };
        let expected = [
            -1.0,
            1.0,
            1.0,
            -1.0,
            51.0 / 127.5 - 1.0,
            102.0 / 127.5 - 1.0,
        ];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}

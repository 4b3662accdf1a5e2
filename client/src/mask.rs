//! Segmentation masks: the server's run-length encoding → a class map → an indexed PNG.
//!
//! The PNG's pixel values are the class indices themselves (so tools can read the map back exactly), and the
//! palette is PASCAL VOC's, so it also looks like the masks people know.

use crate::types::RleMask;

/// A decoded class map, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMap {
    pub width: u32,
    pub height: u32,
    pub classes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("mask runs cover {covered} pixels, the mask is {width}x{height}")]
    Length {
        covered: u64,
        width: u32,
        height: u32,
    },
    #[error("mask has {values} values but {lengths} lengths")]
    Runs { values: usize, lengths: usize },
    #[error("class index {0} does not fit an 8-bit PNG")]
    Class(u32),
    #[error("cannot write the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// Expands the runs, checking them first: a corrupt answer must not allocate without bound.
pub fn decode_rle(mask: &RleMask) -> Result<ClassMap, MaskError> {
    if mask.values.len() != mask.lengths.len() {
        return Err(MaskError::Runs {
            values: mask.values.len(),
            lengths: mask.lengths.len(),
        });
    }
    let covered: u64 = mask.lengths.iter().map(|&l| u64::from(l)).sum();
    let pixels = u64::from(mask.width) * u64::from(mask.height);
    if covered != pixels {
        return Err(MaskError::Length {
            covered,
            width: mask.width,
            height: mask.height,
        });
    }
    let mut classes = Vec::with_capacity(pixels as usize);
    for (&value, &length) in mask.values.iter().zip(&mask.lengths) {
        let class = u8::try_from(value).map_err(|_| MaskError::Class(value))?;
        classes.resize(classes.len() + length as usize, class);
    }
    Ok(ClassMap {
        width: mask.width,
        height: mask.height,
        classes,
    })
}

/// The PASCAL VOC colour map: the bits of the class index spread over the high bits of R, G and B.
pub fn voc_palette() -> Vec<u8> {
    let mut palette = Vec::with_capacity(256 * 3);
    for index in 0..256u32 {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = index;
        for bit in 0..8 {
            r |= ((c & 1) as u8) << (7 - bit);
            g |= (((c >> 1) & 1) as u8) << (7 - bit);
            b |= (((c >> 2) & 1) as u8) << (7 - bit);
            c >>= 3;
        }
        palette.extend_from_slice(&[r, g, b]);
    }
    palette
}

/// Encodes the class map as an 8-bit indexed PNG.
pub fn encode_png(map: &ClassMap) -> Result<Vec<u8>, MaskError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, map.width, map.height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(voc_palette());
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&map.classes)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rle(width: u32, height: u32, values: Vec<u32>, lengths: Vec<u32>) -> RleMask {
        RleMask {
            encoding: "rle".into(),
            width,
            height,
            values,
            lengths,
        }
    }

    #[test]
    fn expands_runs_row_major() {
        let map = decode_rle(&rle(3, 2, vec![0, 15, 0], vec![2, 3, 1])).unwrap();
        assert_eq!(map.classes, vec![0, 0, 15, 15, 15, 0]);
    }

    #[test]
    fn rejects_runs_that_do_not_cover_the_mask() {
        assert!(matches!(
            decode_rle(&rle(2, 2, vec![1], vec![3])),
            Err(MaskError::Length { .. })
        ));
        assert!(matches!(
            decode_rle(&rle(2, 2, vec![1, 2], vec![4])),
            Err(MaskError::Runs { .. })
        ));
        assert!(matches!(
            decode_rle(&rle(1, 1, vec![300], vec![1])),
            Err(MaskError::Class(300))
        ));
    }

    #[test]
    fn palette_matches_voc() {
        let p = voc_palette();
        assert_eq!(&p[0..3], &[0, 0, 0]); // background
        assert_eq!(&p[3..6], &[128, 0, 0]); // aeroplane
        assert_eq!(&p[15 * 3..16 * 3], &[192, 128, 128]); // person
    }

    #[test]
    fn png_round_trips_class_indices() {
        let map = decode_rle(&rle(4, 1, vec![0, 15], vec![1, 3])).unwrap();
        let bytes = encode_png(&map).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 15, 15, 15]);
    }
}

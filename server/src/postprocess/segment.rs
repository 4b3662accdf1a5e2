//! Segmentation: class map from the graph (argmax of logits, or the graph's own map), nearest-neighbour
//! resize to the original image, per-class pixel fractions, and the two mask encodings (RLE, palette PNG).
use super::{ClassMap, Row, Values, bad_output};
use crate::{error::Result, repository::Layout};

/// A `[H, W]` integer map from the graph.
pub fn from_map(row: &Row<'_>) -> Result<ClassMap> {
    let (height, width) = (row.dim(0), row.dim(1));
    if row.values.len() != height * width {
        return Err(bad_output("class map is not [N, H, W]"));
    }
    let classes = (0..height * width)
        .map(|i| row.values.f32_at(i).clamp(0.0, 255.0) as u8)
        .collect();
    Ok(ClassMap {
        width: width as u32,
        height: height as u32,
        classes,
    })
}

/// Argmax over the class axis of `[H, W, C]` (NHWC) or `[C, H, W]` (NCHW) logits.
pub fn argmax(row: &Row<'_>, layout: Layout) -> Result<ClassMap> {
    let Values::F32(logits) = row.values else {
        return Err(bad_output("logits are not float32"));
    };
    let (height, width, channels) = match layout {
        Layout::Nhwc => (row.dim(0), row.dim(1), row.dim(2)),
        Layout::Nchw => (row.dim(1), row.dim(2), row.dim(0)),
    };
    if logits.len() != height * width * channels || channels == 0 {
        return Err(bad_output("logits shape"));
    }
    let plane = height * width;
    let classes = match layout {
        Layout::Nhwc => logits
            .chunks_exact(channels)
            .map(|px| {
                px.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (c, &v)| if v > b.1 { (c, v) } else { b },
                    )
                    .0 as u8
            })
            .collect(),
        Layout::Nchw => {
            // Walk plane by plane so memory is read sequentially.
            let mut best = logits[..plane].to_vec();
            let mut classes = vec![0u8; plane];
            for c in 1..channels {
                for (i, &v) in logits[c * plane..(c + 1) * plane].iter().enumerate() {
                    if v > best[i] {
                        best[i] = v;
                        classes[i] = c as u8;
                    }
                }
            }
            classes
        }
    };
    Ok(ClassMap {
        width: width as u32,
        height: height as u32,
        classes,
    })
}

/// Upper bound of the memory to finish `map` at the image's `width` x `height`: the full-size map, and its
/// run-length encoding (two u32 per run, and their JSON text, up to about 16 bytes a run). Upscaled by
/// nearest neighbour, a row has at most as many runs as the map has columns.
pub fn finish_cost(map: &ClassMap, width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let runs = pixels.min(u64::from(height) * u64::from(map.width.max(1)));
    pixels + runs * 24
}

/// Nearest-neighbour resize (pixel centres), so class indices are never blended.
pub fn resize_nearest(map: &ClassMap, width: u32, height: u32) -> ClassMap {
    if (map.width, map.height) == (width, height) {
        return map.clone();
    }
    let src_x: Vec<usize> = (0..width)
        .map(|x| {
            (((x as f64 + 0.5) * map.width as f64 / width as f64) as usize)
                .min(map.width as usize - 1)
        })
        .collect();
    let mut classes = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        let sy = (((y as f64 + 0.5) * map.height as f64 / height as f64) as usize)
            .min(map.height as usize - 1);
        let src_row = &map.classes[sy * map.width as usize..(sy + 1) * map.width as usize];
        classes.extend(src_x.iter().map(|&sx| src_row[sx]));
    }
    ClassMap {
        width,
        height,
        classes,
    }
}

/// Row-major run-length encoding: `(values, lengths)`.
pub fn run_length(classes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let (mut values, mut lengths) = (Vec::new(), Vec::<u32>::new());
    for &c in classes {
        match (values.last(), lengths.last_mut()) {
            (Some(&v), Some(n)) if v == u32::from(c) => *n += 1,
            _ => {
                values.push(u32::from(c));
                lengths.push(1);
            }
        }
    }
    (values, lengths)
}

/// Share of pixels per class, for the classes present, by class index.
pub fn fractions(classes: &[u8]) -> Vec<(u32, f32)> {
    let mut counts = [0u64; 256];
    classes.iter().for_each(|&c| counts[c as usize] += 1);
    let total = classes.len().max(1) as f32;
    (0..256u32)
        .filter(|&c| counts[c as usize] > 0)
        .map(|c| (c, counts[c as usize] as f32 / total))
        .collect()
}

/// The PASCAL VOC colour map (the usual bit-interleaved palette), so masks look as in the VOC tools.
fn voc_palette() -> Vec<u8> {
    let mut palette = Vec::with_capacity(256 * 3);
    for i in 0..256u32 {
        let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, i);
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        palette.extend_from_slice(&[r, g, b]);
    }
    palette
}

/// An indexed PNG whose pixel values are the class indices.
pub fn to_png(map: &ClassMap) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, map.width, map.height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(voc_palette());
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .map_err(crate::error::Error::internal)?;
    writer
        .write_image_data(&map.classes)
        .map_err(crate::error::Error::internal)?;
    writer.finish().map_err(crate::error::Error::internal)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_both_layouts() {
        // 1x2 image, 3 classes: pixel 0 -> class 2, pixel 1 -> class 0.
        let nhwc = [0.1, 0.2, 0.9, 5.0, 1.0, 2.0];
        let row = Row {
            shape: &[1, 2, 3],
            values: Values::F32(&nhwc),
        };
        assert_eq!(argmax(&row, Layout::Nhwc).unwrap().classes, vec![2, 0]);
        let nchw = [0.1, 5.0, 0.2, 1.0, 0.9, 2.0];
        let row = Row {
            shape: &[3, 1, 2],
            values: Values::F32(&nchw),
        };
        assert_eq!(argmax(&row, Layout::Nchw).unwrap().classes, vec![2, 0]);
    }

    #[test]
    fn nearest_resize_up_and_down() {
        let map = ClassMap {
            width: 2,
            height: 1,
            classes: vec![1, 2],
        };
        assert_eq!(
            resize_nearest(&map, 4, 2).classes,
            vec![1, 1, 2, 2, 1, 1, 2, 2]
        );
        let big = ClassMap {
            width: 4,
            height: 1,
            classes: vec![1, 1, 2, 2],
        };
        assert_eq!(resize_nearest(&big, 2, 1).classes, vec![1, 2]);
    }

    #[test]
    fn rle_round_trips() {
        let classes = [0, 0, 0, 5, 5, 0, 7];
        let (values, lengths) = run_length(&classes);
        assert_eq!(
            (values.clone(), lengths.clone()),
            (vec![0, 5, 0, 7], vec![3, 2, 1, 1])
        );
        let decoded: Vec<u8> = values
            .iter()
            .zip(&lengths)
            .flat_map(|(&v, &n)| std::iter::repeat_n(v as u8, n as usize))
            .collect();
        assert_eq!(decoded, classes);
        assert_eq!(run_length(&[]), (vec![], vec![]));
    }

    #[test]
    fn fractions_sum_to_one() {
        let f = fractions(&[0, 0, 3, 3, 3, 15, 0, 0]);
        assert_eq!(f, vec![(0, 0.5), (3, 0.375), (15, 0.125)]);
    }

    #[test]
    fn png_is_indexed_with_class_values() {
        let map = ClassMap {
            width: 3,
            height: 2,
            classes: vec![0, 1, 2, 15, 15, 0],
        };
        let bytes = to_png(&map).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().color_type, png::ColorType::Indexed);
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..frame.buffer_size()], &map.classes[..]);
    }
}

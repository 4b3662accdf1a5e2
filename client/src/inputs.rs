//! What to send: a single file as given, or the images directly inside a folder, in name order so that runs are
//! reproducible.

use std::io;
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// A file is taken whatever its extension (the server judges its content); a folder contributes its files with
/// an image extension, not recursing.
pub fn collect(path: &Path) -> io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        // Surface "not found" here rather than as a confusing read error later.
        std::fs::metadata(path)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        let is_image = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if p.is_file() && is_image {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Where to write a per-image output (mask or overlay): `out` itself for a single input, or `out/<stem>.png`
/// when the input was a folder.
pub fn output_path(out: &Path, input: &Path, many: bool) -> PathBuf {
    if many {
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.join(format!("{stem}.png"))
    } else {
        out.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_yields_sorted_images_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.JPG", "a.png", "notes.txt", "c.bmp"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.jpg")).unwrap();
        let names: Vec<_> = collect(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.png", "b.JPG", "c.bmp"]);
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(collect(Path::new("/definitely/not/here.jpg")).is_err());
    }

    #[test]
    fn output_paths() {
        assert_eq!(
            output_path(Path::new("m.png"), Path::new("x/cat.jpg"), false),
            Path::new("m.png")
        );
        assert_eq!(
            output_path(Path::new("out"), Path::new("x/cat.jpg"), true),
            Path::new("out/cat.png")
        );
    }
}

"""Writes the crafted seed corpus of each fuzz target: `python fuzz/seeds.py OUT_DIR`.

Generated rather than committed, so every case is readable here. scripts/fuzz.sh adds the photos of
TEST_IMAGES and server/tests/data/cmyk.jpg to the decode seeds. Deterministic: the same bytes on every run.

PNGs are written by hand (stdlib zlib), so headers can claim what no encoder would write; JPEGs and BMPs come
from Pillow (the project venv), the only encoder here that writes progressive JPEG.
"""

import io
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image


# --- PNG, by hand ------------------------------------------------------------------------------------------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, bit_depth, color_type, rows, extra=b""):
    """`rows` yields each scanline without its filter byte; `extra` chunks go between IHDR and IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(b"\x00" + row) for row in rows) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def with_length_class(png_bytes, residue):
    """Adds a tEXt chunk before IEND so that len % 4 == residue (the decode target's model input choice)."""
    iend = png_bytes[-12:]
    base = len(png_bytes) + 12 + len(b"Comment\0")
    text = b"Comment\0" + b"." * ((residue - base) % 4)
    return png_bytes[:-12] + chunk(b"tEXt", text) + iend


def gradient_rows(width, height, channels, bytes_per_sample):
    for y in range(height):
        row = bytearray()
        for x in range(width):
            for c in range(channels):
                v = (x * 37 + y * 11 + c * 80) % 256
                row += bytes([v] * bytes_per_sample)
        yield bytes(row)


def zero_png(width, height, bit_depth, color_type, row_bytes):
    """An all-zero image: filter bytes and pixels alike are zero, so the raw stream is built in one piece."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(bytes(height * (1 + row_bytes)), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def small_png():
    return png(16, 12, 8, 2, gradient_rows(16, 12, 3, 1))


def png_cases():
    yield "png_rgb8.png", small_png()
    # The two shapes of issue 14: under the 40 MP limit, but one aborted the server (resize buffer of 26 GB)
    # and the other doubled its RSS. Zero pixels compress to about 120 KB each.
    # Padded to a length of 0 mod 4, which the decode target maps to 224x224 uint8 stretch: the default
    # classifier of issue 14's report.
    yield "png_39000000x1.png", with_length_class(zero_png(39_000_000, 1, 8, 2, 39_000_000 * 3), 0)
    yield "png_1x39000000.png", zero_png(1, 39_000_000, 8, 2, 3)
    # A header alone claiming 2^31-1 x 1: refused from the header, before any pixel is read.
    ihdr = struct.pack(">IIBBBBB", 2**31 - 1, 1, 8, 2, 0, 0, 0)
    yield "png_header_only_huge.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    yield "png_rgb16.png", png(16, 12, 16, 2, gradient_rows(16, 12, 3, 2))
    yield "png_rgba16.png", png(8, 8, 16, 6, gradient_rows(8, 8, 4, 2))
    yield "png_grey_alpha.png", png(16, 12, 8, 4, gradient_rows(16, 12, 2, 1))
    yield "png_grey1.png", zero_png(16, 12, 1, 0, 2)
    palette = bytes(v for i in range(4) for v in (i * 60, 255 - i * 60, 128))
    trns = bytes([0, 128, 255, 255])
    rows = (bytes((x + y) % 4 for x in range(16)) for y in range(12))
    extra = chunk(b"PLTE", palette) + chunk(b"tRNS", trns)
    yield "png_palette_trns.png", png(16, 12, 8, 3, rows, extra)
    # eXIf with orientation 6 (rotate 90 clockwise), a little-endian TIFF header.
    exif = b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    exif += b"\x00\x00\x00\x00"
    yield "png_exif_orientation6.png", png(16, 12, 8, 2, gradient_rows(16, 12, 3, 1), chunk(b"eXIf", exif))
    yield "png_interlaced.png", interlaced_png()


def interlaced_png():
    """Adam7, by hand (Pillow cannot write it): seven passes, each a sub-image with its own scanlines."""
    width, height = 16, 12
    pixels = list(gradient_rows(width, height, 3, 1))
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        for y in range(y0, height, dy):
            raw += b"\x00" + b"".join(pixels[y][3 * x : 3 * x + 3] for x in range(x0, width, dx))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --- JPEG and BMP, through Pillow --------------------------------------------------------------------------


def encoded(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg_rgb():
    return Image.frombytes("RGB", (64, 48), b"".join(gradient_rows(64, 48, 3, 1)))


def jpeg_cases():
    rgb = jpeg_rgb()
    baseline = encoded(rgb, "JPEG", quality=80)
    yield "jpeg_baseline.jpg", baseline
    yield "jpeg_progressive.jpg", encoded(rgb, "JPEG", quality=80, progressive=True)
    yield "jpeg_grey.jpg", encoded(rgb.convert("L"), "JPEG")
    yield "jpeg_cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG")
    yield "jpeg_subsampling_444.jpg", encoded(rgb, "JPEG", subsampling=0)
    yield "jpeg_restart_interval.jpg", encoded(rgb, "JPEG", restart_marker_blocks=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    yield "jpeg_exif_orientation6.jpg", encoded(rgb, "JPEG", exif=exif)
    # Cut inside the entropy-coded data: no EOI after the last scan.
    yield "jpeg_truncated.jpg", baseline[: len(baseline) * 2 // 3]
    # Valid up to EOI, then bytes that some cameras and uploaders append.
    yield "jpeg_trailing_bytes.jpg", baseline + b"\x00" * 16 + b"trailing garbage"


def bmp_cases():
    rgb = Image.frombytes("RGB", (16, 12), b"".join(gradient_rows(16, 12, 3, 1)))
    yield "bmp_rgb24.bmp", encoded(rgb, "BMP")
    yield "bmp_palette8.bmp", encoded(rgb.convert("P"), "BMP")
    yield "bmp_mono1.bmp", encoded(rgb.convert("1"), "BMP")


# --- requests ----------------------------------------------------------------------------------------------


def multipart(boundary: bytes, fields):
    body = b""
    for name, filename, data in fields:
        disposition = b'form-data; name="' + name + b'"'
        if filename:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        body += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def http_cases(small_png, small_jpeg):
    """http_extract input: selector byte (content type index, bit 3 = 256-byte limit), query, `\\n`, body."""
    image_field = [(b"image", b"a.png", small_png)]
    yield "multipart_image.txt", b"\x00top_k=3\n" + multipart(b"fuzzboundary", image_field)
    yield "multipart_quoted_boundary.txt", b"\x01format=png\n" + multipart(b"quoted boundary", image_field)
    yield "multipart_two_fields.txt", b"\x00model=ssd_mobilenet_v1_300&score_threshold=0.3\n" + multipart(
        b"fuzzboundary", [(b"note", None, b"hello"), (b"image", b"b.jpg", small_jpeg)]
    )
    yield "multipart_no_image.txt", b"\x00\n" + multipart(b"fuzzboundary", [(b"file", b"a.png", small_png)])
    yield "multipart_empty_image.txt", b"\x00\n" + multipart(b"fuzzboundary", [(b"image", b"a.png", b"")])
    yield "multipart_unterminated.txt", b"\x00\n" + multipart(b"fuzzboundary", image_field)[:-20]
    yield "multipart_over_limit.txt", b"\x08\n" + multipart(b"fuzzboundary", [(b"image", b"a", b"x" * 400)])
    yield "multipart_no_boundary.txt", b"\x02\n" + multipart(b"fuzzboundary", image_field)
    yield "raw_jpeg.txt", b"\x03resolution=224&precision=int8\n" + small_jpeg
    yield "raw_octet_stream.txt", b"\x04width=1.0\n" + small_png
    yield "raw_no_content_type.txt", b"\x05\n" + small_png
    yield "raw_over_limit.txt", b"\x0b\n" + b"\xff" * 400
    yield "raw_empty.txt", b"\x04\n"
    yield "unsupported_type.txt", b"\x06\nhello"
    yield "image_wildcard_type.txt", b"\x07max_detections=5&iou_threshold=0.6\n" + small_png


QUERIES = [
    "top_k=3",
    "top_k=1000",
    "top_k=0",
    "top_k=-1",
    "top_k=abc",
    "top_k=1&top_k=2",
    "model=mobilenet_v2_1.0_224&width=1.0&resolution=224&precision=int8",
    "model=&precision=",
    "width=0.5&precision=FLOAT32",
    "width=NaN",
    "width=inf&resolution=0",
    "score_threshold=0.5&iou_threshold=0.4&max_detections=10",
    "score_threshold=1e40&iou_threshold=-0",
    "max_detections=4294967296",
    "format=png",
    "format=json",
    "format=gif",
    "model=%E2%9C%93%FF&unknown=1",
    "%ZZ=1&=&&",
    "top_k=%20%203%20",
]


# Protobuf, by hand: the three requests share image = 1 (bytes) and model = 2 (ModelSelector).


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_float(number, value):
    return varint(number << 3 | 5) + struct.pack("<f", value)


def selector(model=b"", width=None, resolution=None, precision=b""):
    out = field_bytes(1, model) if model else b""
    out += field_float(2, width) if width is not None else b""
    out += field_varint(3, resolution) if resolution is not None else b""
    out += field_bytes(4, precision) if precision else b""
    return field_bytes(2, out)


def grpc_cases(small_png):
    image = field_bytes(1, small_png)
    yield "classify.bin", image + selector(b"mobilenet_v2_1.0_224") + field_varint(3, 3)
    yield "classify_top_k_0.bin", image + field_varint(3, 0)
    yield "classify_selector.bin", image + selector(width=1.0, resolution=224, precision=b"int8")
    yield "classify_bad_width.bin", image + selector(width=-1.0, precision=b"fp16")
    yield "classify_nan_width.bin", image + selector(width=float("nan"), resolution=0)
    yield "detect.bin", image + field_float(3, 0.3) + field_float(4, 0.5) + field_varint(5, 10)
    yield "detect_out_of_range.bin", image + field_float(3, 2.0) + field_float(4, float("inf"))
    yield "detect_max_0.bin", image + field_varint(5, 0)
    yield "segment_png.bin", image + selector(b"deeplabv3_mnv2_257") + field_varint(3, 1)
    yield "segment_bad_format.bin", image + field_varint(3, 7)
    yield "segment_negative_format.bin", image + field_varint(3, 2**64 - 1)


def main():
    out = Path(sys.argv[1])
    small_jpeg = encoded(jpeg_rgb().resize((16, 12)), "JPEG")
    targets = {
        "decode": [*png_cases(), *jpeg_cases(), *bmp_cases()],
        "http_extract": list(http_cases(small_png(), small_jpeg)),
        "query": [(f"query_{i:02}.txt", q.encode()) for i, q in enumerate(QUERIES)],
        "grpc_request": list(grpc_cases(small_png())),
    }
    for target, cases in targets.items():
        directory = out / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in cases:
            (directory / name).write_bytes(data)
        print(f"{target}: {len(cases)} crafted seeds")


if __name__ == "__main__":
    main()

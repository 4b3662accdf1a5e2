"""Docker build helper: copy libonnxruntime.so* out of an onnxruntime wheel (argv[1]) into a folder (argv[2]),
with a stable `libonnxruntime.so` link to the versioned file (the path ORT_DYLIB_PATH names)."""
import os
import re
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so[.\d]*", n)]
    if not libs:
        sys.exit(f"no libonnxruntime.so* in {wheel}")
    for name in libs:
        with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
            out.write(src.read())
versioned = sorted(os.path.basename(n) for n in libs)[-1]
link = os.path.join(dest, "libonnxruntime.so")
if versioned != "libonnxruntime.so":
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned, link)
print(f"{wheel} -> {dest}/{versioned}")

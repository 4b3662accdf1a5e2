"""Print the path of the ONNX Runtime shared library inside the installed onnxruntime wheel.

The wheel ships only a versioned `libonnxruntime.so.1.x`, so the server is pointed at it explicitly
(ORT_DYLIB_PATH) rather than relying on a linker search path."""
import glob
import os
import sys

import onnxruntime

capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
found = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))
if not found:
    sys.exit(f"no libonnxruntime.so* under {capi}")
print(found[-1])

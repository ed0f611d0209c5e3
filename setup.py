"""Build the Cython extensions in ``csrc/``; all metadata lives in pyproject.toml.

Every ``csrc/<name>.pyx`` becomes the extension module ``recjax._ext.<name>``:
adding a kernel is adding a ``.pyx`` file.  OpenMP is used when the compiler
accepts ``-fopenmp``; without it the kernels still build and run single-threaded.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

CSRC = Path("csrc")


def _compiler_accepts(flag: str) -> bool:
    """True when the C compiler builds a trivial OpenMP program with ``flag``."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        result = subprocess.run(
            [cc, flag, str(src), "-o", str(Path(tmp, "probe"))], capture_output=True
        )
    return result.returncode == 0


OPENMP = sys.platform != "win32" and _compiler_accepts("-fopenmp")

extensions = [
    Extension(
        f"recjax._ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[str(CSRC), np.get_include()],
        # -O3: the scoring loops must vectorise; no -ffast-math, which would break
        # the IEEE comparisons the tie-breaking and NaN checks rely on.
        extra_compile_args=["-O3"] + (["-fopenmp"] if OPENMP else []),
        extra_link_args=["-fopenmp"] if OPENMP else [],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(CSRC.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,  # bounds are validated once, at the Python boundary
            "wraparound": False,  # no negative indexing inside kernels
            "cdivision": True,  # C division semantics, no ZeroDivisionError checks
            "initializedcheck": False,  # memoryviews are always initialised by the driver
        },
    ),
)

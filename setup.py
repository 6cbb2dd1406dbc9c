"""Builds the Cython extensions; everything else is declared in pyproject.toml."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILE_ARGS = ["-O3", "-fno-strict-aliasing"]


def ext(name: str, libraries=()) -> Extension:
    return Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        include_dirs=[numpy.get_include(), "rmq_common"],
        libraries=list(libraries),
        extra_compile_args=COMPILE_ARGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


EXTENSIONS = [
    ext("rmq_common._record", libraries=["z"]),
    ext("rmq_store._mapped"),
    ext("rmq_store._consumequeue"),
    ext("rmq_store._index"),
    ext("rmq_store._commitlog", libraries=["z"]),
    ext("rmq_remoting._frame"),
    ext("rmq_client._decode"),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": True,   # list[-1] in the orchestration code; hot loops use pointers
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)

"""Build and install latentseek-fast.

The native latent update (``csrc/``) is optional: the CPU op is always built,
the CUDA op only when torch was built with CUDA and ``nvcc`` is found. It builds against the
installed torch (``pip install --no-build-isolation``), with ``setuptools``, ``wheel`` and
``ninja`` installed first; these are build tools, not runtime requirements, and the C++ headers
it needs (pybind11's included) ship with torch.

Environment switches:
- ``LATENTSEEK_NO_EXT=1``: skip the native build (the package falls back to torch).
- ``USE_CUDA=auto|0|1``: build the CUDA op (``auto``: when CUDA torch and nvcc exist).
- ``CUDA_HOME``: the toolkit to build with (default: the one the ``nvcc`` on PATH belongs to).
- ``TORCH_CUDA_ARCH_LIST``: GPU architectures, e.g. ``"8.0;9.0"`` (read by torch's builder).
- ``MAX_JOBS``: parallel compile jobs (read by torch's ninja builder).
"""

import os
import shutil
import subprocess

from setuptools import setup

PACKAGES = [
    "latentseek_fast",
    "latentseek_fast.decoding",
    "latentseek_fast.app",
    "latentseek_fast.app.cli",
    "latentseek_fast.app.torchrun",
    "latentseek_fast.engine",
    "latentseek_fast.ops",
    "latentseek_fast.rewards",
    "latentseek_fast.kernels",
]
PACKAGE_DIR = {"latentseek_fast.kernels": "kernels/lpg"}


def _nvcc_toolkit():
    """The CUDA toolkit root of the ``nvcc`` on PATH, as nvcc itself reports it, or None.

    torch's builder takes CUDA_HOME as the parent of nvcc's folder, which is wrong for a wrapper
    script (e.g. /usr/local/bin/nvcc exec-ing /usr/local/cuda-13.0/bin/nvcc): the link then
    fails with "cannot find -lcudart". ``nvcc --dryrun`` prints the real root as ``TOP=``.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            top = os.path.realpath(line.split("=", 1)[1].strip())
            if os.path.isdir(os.path.join(top, "include")):
                return top
    return None


def _extensions():
    """The native op's extension list and build command class, or nothing."""
    if os.environ.get("LATENTSEEK_NO_EXT", "0") == "1":
        return [], {}
    use_cuda = os.environ.get("USE_CUDA", "auto").lower()
    if use_cuda not in ("auto", "0", "1"):
        raise ValueError(f"USE_CUDA={use_cuda!r}: allowed values are auto, 0, 1")
    if use_cuda != "0" and not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
        toolkit = _nvcc_toolkit()  # before cpp_extension is imported: it reads CUDA_HOME once
        if toolkit is not None:
            os.environ["CUDA_HOME"] = toolkit
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # an isolated build env without torch: install torch first, then
        # `pip install --no-build-isolation -e .` (an unpinned torch here would pull a CUDA build)
        print("latentseek-fast: torch is not importable at build time; skipping the native op")
        return [], {}

    cuda_ok = torch.version.cuda is not None and (
        cpp_extension.CUDA_HOME is not None or shutil.which("nvcc") is not None
    )
    if use_cuda == "1" and not cuda_ok:
        raise RuntimeError("USE_CUDA=1 but torch has no CUDA build or nvcc was not found")
    with_cuda = cuda_ok and use_cuda != "0"

    sources = ["csrc/latent_adam.cpp"]
    # -fno-math-errno lets GCC vectorise sqrt; -ffp-contract=off keeps torch.optim.Adam's fp32
    # roundings (no silent a*b+c -> fma contraction).
    # The C++ standard is left to torch's builder (it passes -std=c++20 in torch 2.13).
    extra = {"cxx": ["-O3", "-fno-math-errno", "-ffp-contract=off"]}
    ext_cls = cpp_extension.CppExtension
    if with_cuda:
        sources.append("csrc/latent_adam_cuda.cu")
        # No --use_fast_math: the kernel relies on IEEE sqrt/div (it also uses the explicit
        # __f*_rn intrinsics, so --fmad cannot fuse what torch.optim.Adam rounds separately).
        extra["nvcc"] = ["-O3"]
        ext_cls = cpp_extension.CUDAExtension
    ext = ext_cls(
        "latentseek_fast._C",
        sources,
        extra_compile_args=extra,
        py_limited_api=False,
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


# Each floor is the lowest version the whole suite passed on: `bash .ci/floors` installs exactly
# these versions in a scratch venv and runs the tests (run by hand when a floor moves, not in CI;
# the last run is recorded in docs/dependencies.md). No upper bounds: CI resolves the newest
# versions on every run and is the alarm when a release breaks us.
INSTALL_REQUIRES = [
    "torch>=2.13",  # the only CPU build this project's machines can install; older is untested
    "transformers>=5.25",  # 5.0-5.24 fail the suite (docs/dependencies.md)
    "tqdm>=4.66",
    "gguf>=0.16",  # the first whose reader runs on numpy 2 (earlier: ndarray.newbyteorder)
    "accelerate>=1.2",  # transformers 5.0 imports accelerate's get_module_size_with_ties
    "math-verify>=0.8",  # 0.7 fails the suite's judge test outside the main thread
    "pyarrow>=16",  # the first release built for numpy 2
    "triton>=3.9; platform_system == 'Linux'",  # 3.6-3.8 fail the suite (docs/dependencies.md)
]
EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8.0",
        "pytest-benchmark>=4.0",
        "hypothesis>=6.100",
        "ruff>=0.5",
        "matplotlib>=3.9",  # the first release built for numpy 2
    ],
    "bench": ["matplotlib>=3.9", "pytest-benchmark>=4.0"],
    "report": ["matplotlib>=3.9"],
}

ext_modules, cmdclass = _extensions()

setup(
    name="latentseek-fast",
    version="0.1.0",
    description="Fused kernels and a KV-cached seek loop for LatentSeek test-time latent policy gradient",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"latentseek_fast.app": ["demo_problems.jsonl"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["latentseek-fast=latentseek_fast.app.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)

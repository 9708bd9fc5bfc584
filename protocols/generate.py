"""Regenerate the protobuf and gRPC code from ``protocols/dropline/v1/*.proto``.

Run from anywhere: ``python -m protocols.generate``. The output is committed; tests regenerate
it into a temporary folder and fail on any difference, so the pinned grpcio-tools and
mypy-protobuf versions (pyproject.toml) are the only source of the generated files.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protocols/dropline/v1")


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules under ``out_root`` (mirroring the repository); return them."""
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / PROTO_DIR).glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    out = str(out_root)
    bindir = Path(sys.executable).parent
    plugins = [
        f"--plugin=protoc-gen-{name}={bindir / ('protoc-gen-' + name)}" for name in ("mypy", "mypy_grpc")
    ]
    args = [
        "protoc",
        *plugins,
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((out_root / PROTO_DIR).glob("*_pb2*"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, ROOT / PROTO_DIR / path.name)
            print(PROTO_DIR / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

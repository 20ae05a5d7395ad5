"""Generate the Python stubs in `paygate/v1` from `protos/`.

The generated files are committed (so a checkout imports without a build step) and a unit test runs this
generator into a temporary directory and compares, so they can never drift from the protos or be hand-edited.
Run `python -m scripts.gen_protos` (or `make protos`) after changing a .proto file.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(proto_root.glob("paygate/**/*.proto"))


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto under `proto_root` into `out_dir`."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    files = proto_files(proto_root)
    if not files:
        raise RuntimeError(f"no .proto files under {proto_root}")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(f.relative_to(proto_root)) for f in files),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its message above")
    return sorted(p for p in (out_dir / "paygate").rglob("*_pb2*") if p.suffix in {".py", ".pyi"})


def main() -> int:
    produced = generate(REPO_ROOT)
    for path in produced:
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

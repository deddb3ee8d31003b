#!/usr/bin/env python3
"""Packages the built filter into dist/: the .wasm, its sha256, a Dockerfile, and an OCI image
layout of the image that Dockerfile builds, made without Docker.

Usage: package.py [--wasm PATH] [--out DIR] [--tag TAG]

Writes into DIR (default dist/; its oci/ is replaced, other files are left alone):

  eisodos.wasm          the filter, copied from --wasm
  eisodos.wasm.sha256   its digest in `sha256sum` format (for `vm_config.code.remote.sha256`)
  Dockerfile            FROM scratch, one layer: plugin.wasm at the root
  THIRD-PARTY-NOTICES.txt, THIRD-PARTY-NOTICES-rust-std.html
                        the notices of what the .wasm holds besides eisodos (tools/notices.py)
  oci/                  an OCI image layout (oci-layout, index.json, blobs/sha256/...) of that
                        image, tagged TAG (annotation org.opencontainers.image.ref.name),
                        by default the workspace version from Cargo.toml

The image is the "compat" variant of the Wasm image spec (solo-io/wasm, spec-compat.md): one
layer of media type application/vnd.oci.image.layer.v1.tar+gzip whose tar holds plugin.wasm.
Istio's and Envoy Gateway's image fetchers (pkg/wasm/imagefetcher.go, internal/wasm/
imagefetcher.go) take the last layer of an OCI manifest, require that media type, gunzip and
untar it and read the entry named plugin.wasm; `docker build` on the Dockerfile makes the same
kind of image (with Docker's or OCI's media types, depending on the builder: both accepted).

Reproducible: the same .wasm gives the same bytes, so the same digests: the tar entry has mtime 0,
owner 0:0 and mode 0644; the gzip header has mtime 0 and no file name; JSON is written with sorted
keys and no spaces; nothing records the time or the machine. Only the Python standard library.
"""

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import notices

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "eisodos.wasm"

# Media types of an OCI image (image-spec v1.1, media-types.md).
OCI_LAYOUT_VERSION = "1.0.0"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# The third-party notices beside the .wasm.
NOTICES_FILE = "THIRD-PARTY-NOTICES.txt"

# The file name both fetchers look for inside the layer.
PLUGIN_FILE = "plugin.wasm"

DOCKERFILE = f"""\
# The image of dist/oci, for those who push with Docker: one layer holding {PLUGIN_FILE} at its
# root, the "compat" variant of the Wasm image spec that Istio's WasmPlugin and Envoy Gateway's
# EnvoyExtensionPolicy fetch. From dist/:
#   docker build -t REGISTRY/eisodos:TAG . && docker push REGISTRY/eisodos:TAG
FROM scratch
COPY eisodos.wasm /{PLUGIN_FILE}
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value) -> bytes:
    """JSON with sorted keys and no whitespace: the same value always gives the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(wasm: bytes) -> bytes:
    """A tar with one regular file, plugin.wasm, at its root; no time, owner or host in it."""
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(wasm)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return buffer.getvalue()


def descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256(blob)}", "size": len(blob)}


def write_layout(out: Path, wasm: bytes, tag: str) -> dict:
    """Writes the OCI image layout into `out` (replaced); returns the blobs by role."""
    tar = layer_tar(wasm)
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    # The platform a .wasm built for wasm32-wasip1 has, in Go's terms as the image spec asks.
    # Neither fetcher looks at it: they take a single manifest as it is.
    config = canonical_json(
        {
            "architecture": "wasm",
            "os": "wasip1",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, config),
            "layers": [descriptor(LAYER, layer)],
        }
    )
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{**descriptor(MANIFEST, manifest), "annotations": {REF_NAME: tag}}],
        }
    )

    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    (out / "index.json").write_bytes(index)
    roles = {"manifest": manifest, "config": config, "layer": layer}
    for blob in roles.values():
        (blobs / sha256(blob)).write_bytes(blob)
    return roles


def workspace_version() -> str:
    """`[workspace.package] version` of Cargo.toml."""
    text = (ROOT / "Cargo.toml").read_text()
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        section = text.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
        match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
        if not match:
            sys.exit("no [workspace.package] version in Cargo.toml: pass --tag")
        return match.group(1)
    return tomllib.loads(text)["workspace"]["package"]["version"]


def package(wasm_path: Path, out: Path, tag: str) -> None:
    wasm = wasm_path.read_bytes()
    if not wasm.startswith(b"\0asm"):
        sys.exit(f"{wasm_path} is not a WebAssembly module (build it first: just build)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eisodos.wasm").write_bytes(wasm)
    (out / "eisodos.wasm.sha256").write_text(f"{sha256(wasm)}  eisodos.wasm\n")
    (out / "Dockerfile").write_text(DOCKERFILE)
    (out / NOTICES_FILE).write_text(notices.notices(notices.metadata()))
    shutil.copyfile(notices.rust_std_notices(), out / notices.RUST_STD_FILE)
    roles = write_layout(out / "oci", wasm, tag)
    print_listing(out, wasm, roles, tag)


def print_listing(out: Path, wasm: bytes, roles: dict, tag: str) -> None:
    """Like `ls`: each file written, with its size (a blob's name is its sha256); the digests."""
    names = ["eisodos.wasm", "eisodos.wasm.sha256", "Dockerfile", NOTICES_FILE]
    names += [notices.RUST_STD_FILE]
    names += ["oci/oci-layout", "oci/index.json"]
    rows = [(name, (out / name).stat().st_size, "") for name in names]
    rows += [(f"oci/blobs/sha256/{sha256(b)}", len(b), role) for role, b in roles.items()]
    width = max(len(name) for name, _, _ in rows)
    print(f"{out}/")
    for name, size, role in rows:
        print(f"  {name:<{width}}  {size:>7}  {role}".rstrip())
    print(f"wasm sha256:  {sha256(wasm)}  (eisodos.wasm: vm_config.code.remote.sha256)")
    print(f"image digest: sha256:{sha256(roles['manifest'])}  (oci:// images: WasmPlugin and")
    print("              EnvoyExtensionPolicy sha256, once pushed as is)")
    print(f"layout:       oci:{out / 'oci'}:{tag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help="the built filter")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where to write (dist/)")
    parser.add_argument("--tag", help="the layout's tag (default: the workspace version)")
    args = parser.parse_args()
    package(args.wasm, args.out, args.tag or workspace_version())


if __name__ == "__main__":
    main()

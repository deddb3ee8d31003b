//! `just package`: the packager's dist/ holds the built filter, its digest, a Dockerfile and an
//! OCI image layout that an independent reader (`eisodos_tests::oci`) opens and extracts
//! `plugin.wasm` from, byte for byte; and packaging is reproducible.

use std::path::Path;
use std::process::Command;

use eisodos_tests::oci::{self, Image};
use eisodos_tests::{packager, paths};

fn built_wasm() -> Vec<u8> {
    std::fs::read(paths::wasm_path()).expect("read the built eisodos.wasm")
}

fn package() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("eisodos-dist-")
        .tempdir()
        .expect("create a tempdir");
    let listing =
        packager::package_into(&dir.path().join("dist")).unwrap_or_else(|e| panic!("{e}"));
    (dir, listing)
}

fn read_image(dist: &Path) -> Image {
    oci::read_image(&dist.join("oci")).unwrap_or_else(|e| panic!("dist/oci: {e}"))
}

#[test]
fn the_layout_holds_the_built_wasm_as_plugin_wasm_at_the_root_of_one_layer() {
    let (dir, listing) = package();
    let dist = dir.path().join("dist");
    let wasm = built_wasm();
    let image = read_image(&dist);

    let [entry] = image.entries.as_slice() else {
        panic!(
            "one entry expected in the layer, got {:?}",
            image.entries.iter().map(|e| &e.path).collect::<Vec<_>>()
        );
    };
    assert_eq!(entry.path, "plugin.wasm");
    assert!(entry.regular, "plugin.wasm is a regular file");
    assert!(
        entry.data == wasm,
        "plugin.wasm ({} bytes) is not byte-identical to the built eisodos.wasm ({} bytes)",
        entry.data.len(),
        wasm.len()
    );
    // Nothing of the machine or the moment in the tar.
    assert_eq!((entry.mode, entry.owner, entry.mtime), (0o644, (0, 0), 0));
    assert_eq!(image.layer_gzip_mtime, 0, "no time in the gzip header");

    assert_eq!(
        image.tag,
        env!("CARGO_PKG_VERSION"),
        "tagged with the workspace version"
    );
    assert_eq!(image.config["architecture"], "wasm");
    assert_eq!(image.config["os"], "wasip1");

    // The .wasm beside it, and its digest in `sha256sum` format.
    let hex = oci::sha256_hex(&wasm);
    assert!(std::fs::read(dist.join("eisodos.wasm")).unwrap() == wasm);
    assert_eq!(
        std::fs::read_to_string(dist.join("eisodos.wasm.sha256")).unwrap(),
        format!("{hex}  eisodos.wasm\n")
    );

    // The Dockerfile builds the same kind of image: scratch plus one layer with plugin.wasm.
    let dockerfile = std::fs::read_to_string(dist.join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        instructions,
        ["FROM scratch", "COPY eisodos.wasm /plugin.wasm"]
    );

    // The notices of what the .wasm holds besides eisodos (tools/test_notices.py checks the
    // list against `cargo tree`).
    let notices = std::fs::read_to_string(dist.join("THIRD-PARTY-NOTICES.txt")).unwrap();
    for part in [
        "serde_json",
        "md5",
        "fastrand",
        "wasi-libc",
        "Permission is hereby granted",
    ] {
        assert!(
            notices.contains(part),
            "THIRD-PARTY-NOTICES.txt lacks {part}"
        );
    }
    let std_notices =
        std::fs::read_to_string(dist.join("THIRD-PARTY-NOTICES-rust-std.html")).unwrap();
    assert!(std_notices.contains("Rust Standard Library"));

    // The listing ends with both digests a user needs.
    assert!(
        listing.contains(&format!("wasm sha256:  {hex}")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("image digest: {}", image.manifest_digest)),
        "{listing}"
    );
    eprintln!("{listing}");
}

#[test]
fn packaging_the_same_wasm_twice_gives_the_same_bytes_and_digests() {
    let (first, _) = package();
    let (second, _) = package();
    let (a, b) = (first.path().join("dist"), second.path().join("dist"));
    assert_eq!(
        read_image(&a).manifest_digest,
        read_image(&b).manifest_digest
    );
    let files = |dist: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        let mut pending = vec![dist.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let name = path.strip_prefix(dist).unwrap().display().to_string();
                    files.push((name, std::fs::read(&path).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let (files_a, files_b) = (files(&a), files(&b));
    assert_eq!(
        files_a.len(),
        10,
        "5 files, oci-layout, index.json, 3 blobs"
    );
    assert!(files_a == files_b, "the two dist/ differ");
}

/// A second, outside opinion where it is installed: containers/image (skopeo) reads the layout
/// by its tag and copies it to a plain directory, as `skopeo copy oci:dist/oci:TAG docker://…`
/// would to a registry, keeping the manifest's digest.
#[test]
fn skopeo_copies_the_layout_unchanged_when_installed() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let (dir, _) = package();
    let dist = dir.path().join("dist");
    let image = read_image(&dist);
    let source = format!("oci:{}:{}", dist.join("oci").display(), image.tag);
    let copy = dir.path().join("copy");
    let output = Command::new("skopeo")
        .args(["copy", "--preserve-digests", &source])
        .arg(format!("dir:{}", copy.display()))
        .output()
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo copy: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = std::fs::read(copy.join("manifest.json")).unwrap();
    assert_eq!(
        format!("sha256:{}", oci::sha256_hex(&manifest)),
        image.manifest_digest
    );
}

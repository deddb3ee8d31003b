//! Reads an OCI image layout the way an image fetcher would, independently of the packager
//! that wrote it (`tools/package.py`): its own JSON walk, gunzip (`flate2`), untar (`tar`) and
//! digests (`sha2`).
//!
//! [`read_image`] follows `index.json` -> manifest -> config and layer (OCI image-spec v1.1,
//! `image-layout.md`, `manifest.md`, `config.md`), checks every blob against its descriptor
//! (digest and size), checks the media types of the single-layer "compat" Wasm image that
//! Istio's and Envoy Gateway's fetchers accept (an OCI manifest whose last layer is
//! `application/vnd.oci.image.layer.v1.tar+gzip`), and returns the layer's entries.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `oci-layout`'s `imageLayoutVersion`.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Media type of `index.json`.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image config.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed tar layer: the one both mesh fetchers read `plugin.wasm` from.
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation that names a manifest in a layout (its tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One entry of the layer's tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as stored in the tar.
    pub path: String,
    /// Whether it is a regular file.
    pub regular: bool,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group ids.
    pub owner: (u64, u64),
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The content.
    pub data: Vec<u8>,
}

/// What [`read_image`] found, every blob verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's tag (`org.opencontainers.image.ref.name` in `index.json`).
    pub tag: String,
    /// The manifest's digest, `sha256:<hex>`: the image digest a registry reports.
    pub manifest_digest: String,
    /// The manifest.
    pub manifest: Value,
    /// The image config.
    pub config: Value,
    /// The modification time in the layer's gzip header (0: none recorded).
    pub layer_gzip_mtime: u32,
    /// The layer's entries, in tar order.
    pub entries: Vec<Entry>,
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens the image layout at `layout` (the directory holding `oci-layout`), which must hold
/// exactly one tagged manifest of one layer, and verifies all of it.
///
/// # Errors
/// The first thing that does not hold, named.
pub fn read_image(layout: &Path) -> Result<Image, String> {
    let marker = read_json(&layout.join("oci-layout"))?;
    expect_str(&marker, "/imageLayoutVersion", LAYOUT_VERSION, "oci-layout")?;

    let index = read_json(&layout.join("index.json"))?;
    expect_schema_2(&index, INDEX, "index.json")?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or("index.json has no manifests array")?;
    let [descriptor] = manifests.as_slice() else {
        return Err(format!(
            "index.json lists {} manifests, expected 1",
            manifests.len()
        ));
    };
    expect_str(descriptor, "/mediaType", MANIFEST, "index.json's manifest")?;
    let tag = descriptor
        .pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("index.json's manifest has no {REF_NAME} annotation"))?
        .to_owned();

    let mut referenced = BTreeSet::new();
    let manifest_bytes = read_blob(layout, descriptor, &mut referenced)?;
    let manifest: Value = parse(&manifest_bytes, "the manifest")?;
    expect_schema_2(&manifest, MANIFEST, "the manifest")?;

    let config_descriptor = &manifest["config"];
    expect_str(
        config_descriptor,
        "/mediaType",
        CONFIG,
        "the config descriptor",
    )?;
    let config: Value = parse(
        &read_blob(layout, config_descriptor, &mut referenced)?,
        "the config",
    )?;

    let layers = manifest["layers"]
        .as_array()
        .ok_or("the manifest has no layers array")?;
    let [layer_descriptor] = layers.as_slice() else {
        return Err(format!(
            "the manifest has {} layers, expected 1",
            layers.len()
        ));
    };
    expect_str(
        layer_descriptor,
        "/mediaType",
        LAYER,
        "the layer descriptor",
    )?;
    let layer = read_blob(layout, layer_descriptor, &mut referenced)?;
    let (tar, layer_gzip_mtime) = gunzip(&layer)?;

    // The config names the uncompressed layer by its digest (its "diff id").
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or("the config has no rootfs.diff_ids")?;
    expect_str(&config, "/rootfs/type", "layers", "the config")?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    if diff_ids.len() != 1 || diff_ids[0] != diff_id.as_str() {
        return Err(format!(
            "the config's diff_ids {diff_ids:?} do not name the layer's tar ({diff_id})"
        ));
    }
    for field in ["/architecture", "/os"] {
        if config.pointer(field).and_then(Value::as_str).is_none() {
            return Err(format!(
                "the config has no {field} (required by image-spec)"
            ));
        }
    }

    let stored = stored_blobs(layout)?;
    if stored != referenced {
        return Err(format!(
            "blobs/sha256 holds {stored:?}, the manifest references {referenced:?}"
        ));
    }

    Ok(Image {
        tag,
        manifest_digest: format!("sha256:{}", sha256_hex(&manifest_bytes)),
        manifest,
        config,
        layer_gzip_mtime,
        entries: untar(&tar)?,
    })
}

/// Reads the blob a descriptor names and checks its size and digest; records its hex.
fn read_blob(
    layout: &Path,
    descriptor: &Value,
    referenced: &mut BTreeSet<String>,
) -> Result<Vec<u8>, String> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or_else(|| format!("descriptor without digest: {descriptor}"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| format!("digest {digest:?} is not sha256:<64 lower-case hex>"))?;
    let size = descriptor["size"]
        .as_u64()
        .ok_or_else(|| format!("descriptor without size: {descriptor}"))?;
    let path = layout.join("blobs").join("sha256").join(hex);
    let data = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if data.len() as u64 != size {
        return Err(format!(
            "blob {digest} has {} bytes, its descriptor says {size}",
            data.len()
        ));
    }
    let actual = sha256_hex(&data);
    if actual != hex {
        return Err(format!("blob {digest} hashes to sha256:{actual}"));
    }
    referenced.insert(hex.to_owned());
    Ok(data)
}

/// The names of the files in `blobs/sha256`.
fn stored_blobs(layout: &Path) -> Result<BTreeSet<String>, String> {
    let dir = layout.join("blobs").join("sha256");
    std::fs::read_dir(&dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .map(|entry| {
            entry
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| format!("read {}: {e}", dir.display()))
        })
        .collect()
}

/// Decompresses a whole gzip stream (every member, as Go's `gzip.Reader` does); returns it
/// with the first header's modification time.
fn gunzip(data: &[u8]) -> Result<(Vec<u8>, u32), String> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| format!("the layer is not gzip: {e}"))?;
    let mtime = decoder.header().map_or(0, flate2::GzHeader::mtime);
    Ok((out, mtime))
}

fn untar(tar: &[u8]) -> Result<Vec<Entry>, String> {
    let mut archive = tar::Archive::new(tar);
    let mut entries = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("the layer is not a tar: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("a tar entry: {e}"))?;
        let header = entry.header().clone();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("read {path} from the tar: {e}"))?;
        entries.push(Entry {
            regular: header.entry_type().is_file(),
            mode: header.mode().map_err(|e| format!("{path}: mode: {e}"))?,
            owner: (
                header.uid().map_err(|e| format!("{path}: uid: {e}"))?,
                header.gid().map_err(|e| format!("{path}: gid: {e}"))?,
            ),
            mtime: header.mtime().map_err(|e| format!("{path}: mtime: {e}"))?,
            path,
            data,
        });
    }
    Ok(entries)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

fn parse(bytes: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what} is not JSON: {e}"))
}

/// `schemaVersion` 2 and the expected `mediaType` (image-spec says SHOULD; a registry needs it
/// to tell a manifest from an index).
fn expect_schema_2(value: &Value, media_type: &str, what: &str) -> Result<(), String> {
    if value["schemaVersion"] != 2 {
        return Err(format!(
            "{what}: schemaVersion is {}, expected 2",
            value["schemaVersion"]
        ));
    }
    expect_str(value, "/mediaType", media_type, what)
}

fn expect_str(value: &Value, pointer: &str, expected: &str, what: &str) -> Result<(), String> {
    match value.pointer(pointer).and_then(Value::as_str) {
        Some(actual) if actual == expected => Ok(()),
        other => Err(format!(
            "{what}: {pointer} is {other:?}, expected {expected:?}"
        )),
    }
}

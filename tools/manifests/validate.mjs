// Validates Kubernetes manifests against their CRDs' published schemas, every YAML document of
// every file, by apiVersion and kind:
//
//   *.istio.io                     @kubernetes-models/istio (Istio's CRD schemas)
//   gateway.networking.k8s.io      @kubernetes-models/gateway-api (Gateway API's)
//   gateway.envoyproxy.io          each CRD's spec.versions[].schema.openAPIV3Schema, read from
//                                  ../shared/crds/envoy-gateway/ (Envoy Gateway publishes no
//                                  npm models); skipped, saying so, where that folder is absent
//   Kubernetes' own (v1, apps/v1)  kubernetes-models
//
// Any other apiVersion or kind is an error. The models validate with ajv, and so do the Envoy
// Gateway schemas here, with the models' formats. Not checked, as by any schema alone: the
// CEL rules (x-kubernetes-validations) an API server evaluates, and, for the kinds the models
// cover, unknown fields (their schemas allow them; an API server prunes them, or refuses them
// under kubectl's strict field validation). For Envoy Gateway's kinds unknown fields are errors.
//
//   node validate.mjs [DIR_OR_FILE ...]     (default: ../../deploy)

import { readFileSync, readdirSync, statSync, existsSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { formats } from "@kubernetes-models/validate";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "../..");
/** Where Envoy Gateway's CRDs are, in the project's checkout layout (see ../shared/crds/README.md). */
export const DEFAULT_CRD_DIR = resolve(repoRoot, "../shared/crds/envoy-gateway");

const MODEL_PACKAGES = [
  [(group) => group.endsWith(".istio.io"), "@kubernetes-models/istio"],
  [(group) => group === "gateway.networking.k8s.io" || group === "gateway.networking.x-k8s.io",
    "@kubernetes-models/gateway-api"],
  [(group) => group === "" || !group.includes(".") || group.endsWith(".k8s.io"), "kubernetes-models"],
];

/** Every *.yaml / *.yml file under `path` (or `path` itself), sorted. */
export function manifestFiles(path) {
  if (statSync(path).isFile()) return [path];
  return readdirSync(path, { withFileTypes: true })
    .flatMap((entry) => {
      const full = join(path, entry.name);
      if (entry.isDirectory()) return manifestFiles(full);
      return /\.ya?ml$/.test(entry.name) ? [full] : [];
    })
    .sort();
}

/** Adds additionalProperties: false wherever a structural schema lists its properties and
 * does not keep unknown fields, as an API server's strict field validation does. */
function strict(schema) {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== "object") return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, strict(v)]));
  if (out.properties && out.additionalProperties === undefined
      && !out["x-kubernetes-preserve-unknown-fields"]) {
    out.additionalProperties = false;
  }
  return out;
}

/** Validators for the CRDs in `dir`, by "group/version/Kind"; null when `dir` is absent. */
export function loadCrdValidators(dir) {
  if (!existsSync(dir)) return null;
  const ajv = new Ajv({ strict: false, allErrors: true });
  for (const [name, format] of Object.entries(formats)) ajv.addFormat(name, format);
  const validators = new Map();
  for (const file of manifestFiles(dir)) {
    for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
      const crd = doc.toJS();
      if (crd?.kind !== "CustomResourceDefinition") continue;
      for (const version of crd.spec.versions) {
        const key = `${crd.spec.group}/${version.name}/${crd.spec.names.kind}`;
        validators.set(key, ajv.compile(strict(version.schema.openAPIV3Schema)));
      }
    }
  }
  return validators;
}

async function modelFor(apiVersion, kind) {
  const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.lastIndexOf("/")) : "";
  const entry = MODEL_PACKAGES.find(([matches]) => matches(group));
  if (!entry) return null;
  try {
    const module = await import(`${entry[1]}/${apiVersion}`);
    return module[kind] ?? null;
  } catch {
    return null;
  }
}

/** Envoy Gateway kinds the manifests use whose CRDs are not among ../shared/crds: known, so
 * not an error, but skipped, saying so. */
const SCHEMA_LESS = new Set(["gateway.envoyproxy.io/v1alpha1/EnvoyProxy"]);

/**
 * Validates one parsed document. Returns { status: "valid" | "invalid" | "skipped", message }.
 * `crdValidators` is loadCrdValidators()'s result (null: Envoy Gateway's CRDs are absent).
 */
export async function validateDocument(doc, crdValidators) {
  const { apiVersion, kind } = doc ?? {};
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    return { status: "invalid", message: "no apiVersion or kind" };
  }
  if (apiVersion.startsWith("gateway.envoyproxy.io/")) {
    if (crdValidators === null) {
      return { status: "skipped", message: `no Envoy Gateway CRDs at ${DEFAULT_CRD_DIR}` };
    }
    const validate = crdValidators.get(`${apiVersion}/${kind}`);
    if (!validate && SCHEMA_LESS.has(`${apiVersion}/${kind}`)) {
      return { status: "skipped", message: `no published schema for ${kind} at ${DEFAULT_CRD_DIR}` };
    }
    if (!validate) return { status: "invalid", message: `unknown kind ${apiVersion} ${kind}` };
    if (validate(doc)) return { status: "valid" };
    const errors = validate.errors.map((e) => {
      const extra = e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : "";
      return `${e.instancePath || "/"} ${e.message}${extra}`;
    });
    return { status: "invalid", message: errors.join("; ") };
  }
  const Model = await modelFor(apiVersion, kind);
  if (!Model) return { status: "invalid", message: `unknown kind ${apiVersion} ${kind}` };
  try {
    new Model(doc).validate();
    return { status: "valid" };
  } catch (e) {
    return { status: "invalid", message: e.message };
  }
}

/** Validates every document of every file; returns one result per document. */
export async function validateFiles(files, crdValidators) {
  const results = [];
  for (const file of files) {
    const docs = parseAllDocuments(readFileSync(file, "utf8"));
    for (const [index, doc] of docs.entries()) {
      const where = `${file}#${index}`;
      if (doc.errors.length > 0) {
        results.push({ where, status: "invalid", message: doc.errors.map((e) => e.message).join("; ") });
        continue;
      }
      const value = doc.toJS();
      if (value === null) continue;
      const name = `${value?.kind ?? "?"} ${value?.metadata?.namespace ?? ""}/${value?.metadata?.name ?? "?"}`;
      results.push({ where, name, ...(await validateDocument(value, crdValidators)) });
    }
  }
  return results;
}

async function main(args) {
  const paths = args.length > 0 ? args : [join(repoRoot, "deploy")];
  const files = paths.flatMap((p) => manifestFiles(resolve(p)));
  const crdValidators = loadCrdValidators(DEFAULT_CRD_DIR);
  if (crdValidators === null) {
    console.log(`Envoy Gateway CRDs not found at ${DEFAULT_CRD_DIR}: gateway.envoyproxy.io kinds are skipped`);
  }
  const results = await validateFiles(files, crdValidators);
  const counts = { valid: 0, invalid: 0, skipped: 0 };
  for (const r of results) {
    counts[r.status] += 1;
    const shown = r.where.startsWith(repoRoot) ? r.where.slice(repoRoot.length + 1) : r.where;
    console.log(`${r.status}: ${shown} ${r.name ?? ""}${r.message ? `: ${r.message}` : ""}`);
  }
  console.log(`${counts.valid} valid, ${counts.invalid} invalid, ${counts.skipped} skipped, in ${files.length} files`);
  if (results.length === 0) {
    console.log("no manifests found");
    return 1;
  }
  return counts.invalid > 0 ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}

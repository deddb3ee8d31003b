// The validator's own tests (node --test): the shipped manifests pass, and each kind of
// validator refuses a manifest broken on purpose, so a pass means something.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_CRD_DIR, loadCrdValidators, manifestFiles, validateDocument, validateFiles,
} from "./validate.mjs";

const deploy = resolve(dirname(fileURLToPath(import.meta.url)), "../../deploy");
const crds = loadCrdValidators(DEFAULT_CRD_DIR);
const noCrds = crds === null ? `no Envoy Gateway CRDs at ${DEFAULT_CRD_DIR}` : false;

const wasmPlugin = () => ({
  apiVersion: "extensions.istio.io/v1alpha1",
  kind: "WasmPlugin",
  metadata: { name: "eisodos", namespace: "istio-system" },
  spec: { url: "oci://registry.example.com/eisodos:0.1.0", failStrategy: "FAIL_RELOAD", pluginConfig: { a: 5 } },
});

const patchPolicy = () => ({
  apiVersion: "gateway.envoyproxy.io/v1alpha1",
  kind: "EnvoyPatchPolicy",
  metadata: { name: "eisodos", namespace: "default" },
  spec: {
    targetRef: { group: "gateway.networking.k8s.io", kind: "Gateway", name: "eg" },
    type: "JSONPatch",
    jsonPatches: [{
      type: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
      name: "default/eg/http",
      operation: { op: "add", path: "/virtual_hosts/0/routes/0", value: { name: "x" } },
    }],
  },
});

test("every manifest under deploy/ is valid", async () => {
  const files = manifestFiles(deploy);
  assert.ok(files.length > 0, "deploy/ has manifests");
  const results = await validateFiles(files, crds);
  const bad = results.filter((r) => r.status === "invalid");
  assert.deepEqual(bad, []);
  // Skipped only where Envoy Gateway's CRDs are absent, and the kinds without a published
  // schema here (EnvoyProxy), which say so.
  if (crds !== null) {
    const skipped = results.filter((r) => r.status === "skipped");
    assert.deepEqual(skipped.map((r) => r.name), ["EnvoyProxy default/eisodos"]);
    assert.match(skipped[0].message, /no published schema for EnvoyProxy/);
  }
});

test("Istio's schemas refuse a broken WasmPlugin and EnvoyFilter", async () => {
  assert.equal((await validateDocument(wasmPlugin(), crds)).status, "valid");
  const badEnum = wasmPlugin();
  badEnum.spec.failStrategy = "FAIL_SOMETIMES";
  const r1 = await validateDocument(badEnum, crds);
  assert.equal(r1.status, "invalid");
  assert.match(r1.message, /failStrategy/);
  // A YAML 0000... is a number, not the string sha256 must be.
  const badType = wasmPlugin();
  badType.spec.sha256 = 0;
  assert.match((await validateDocument(badType, crds)).message, /sha256 must be string/);
  const envoyFilter = {
    apiVersion: "networking.istio.io/v1alpha3",
    kind: "EnvoyFilter",
    metadata: { name: "x" },
    spec: { configPatches: [{ applyTo: "HTTP_ROUT", patch: { operation: "INSERT_FIRST" } }] },
  };
  assert.match((await validateDocument(envoyFilter, crds)).message, /applyTo/);
});

test("Gateway API's schemas refuse a broken HTTPRoute", async () => {
  const route = {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    metadata: { name: "shop" },
    spec: { parentRefs: [{ name: "eg" }], rules: [{ backendRefs: [{ name: "svc-a", port: 80 }] }] },
  };
  assert.equal((await validateDocument(route, crds)).status, "valid");
  route.spec.rules[0].backendRefs[0].port = "eighty";
  const result = await validateDocument(route, crds);
  assert.equal(result.status, "invalid");
  assert.match(result.message, /port/);
});

test("Envoy Gateway's CRD schemas refuse a broken EnvoyPatchPolicy", { skip: noCrds }, async () => {
  assert.deepEqual(await validateDocument(patchPolicy(), crds), { status: "valid" });
  const badEnum = patchPolicy();
  badEnum.spec.type = "MergePatch";
  assert.match((await validateDocument(badEnum, crds)).message, /spec\/type/);
  // Unknown fields are errors, as under kubectl's strict field validation.
  const unknown = patchPolicy();
  unknown.spec.jsonPatchez = [];
  assert.match((await validateDocument(unknown, crds)).message, /jsonPatchez/);
});

test("Envoy Gateway's kinds are skipped, saying why, without the CRDs", async () => {
  const result = await validateDocument(patchPolicy(), null);
  assert.equal(result.status, "skipped");
  assert.match(result.message, /no Envoy Gateway CRDs/);
});

test("an unknown kind, a document without one, and bad YAML are errors", async () => {
  const unknownKind = { apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugins", metadata: { name: "x" } };
  assert.match((await validateDocument(unknownKind, crds)).message, /unknown kind/);
  const unknownGroup = { apiVersion: "example.com/v1", kind: "Thing", metadata: { name: "x" } };
  assert.match((await validateDocument(unknownGroup, crds)).message, /unknown kind/);
  assert.match((await validateDocument({ kind: "Gateway" }, crds)).message, /no apiVersion/);
  const dir = mkdtempSync(join(tmpdir(), "eisodos-manifests-"));
  const file = join(dir, "bad.yaml");
  writeFileSync(file, "apiVersion: v1\nkind: [unclosed\n");
  const [result] = await validateFiles([file], crds);
  assert.equal(result.status, "invalid");
});
